"""``smap-bench data info`` and ``data fetch``: the summary, the JSON and the one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smap_bench.config import get_settings
from smap_bench.data.cli import data_app

runner = CliRunner()


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SMAP_DATA_DIR", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_info_on_the_real_dataset(
    shared_smap: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMAP_DATA_DIR", str(shared_smap))
    out = tmp_path / "info.json"
    result = runner.invoke(data_app, ["info", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert f"directory {shared_smap}" in result.output
    summary = json.loads(out.read_text())
    assert summary["source"] == "directory" and summary["path"] == str(shared_smap)
    assert summary["channels"] == 54 and summary["anomalies"] == 69
    assert summary["anomalies_by_kind"] == {"point": 43, "contextual": 26}
    assert summary["channels_by_subsystem"]["ACS"] == 9
    assert sum(summary["channels_by_subsystem"].values()) == 54


def test_info_without_data_says_synthetic(no_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "info.json"
    result = runner.invoke(data_app, ["info", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "source     synthetic" in result.output
    summary = json.loads(out.read_text())
    assert summary["source"] == "synthetic" and summary["path"] is None
    assert summary["channels"] == 54 and summary["anomalies"] > 0


def test_info_with_a_wrong_setting_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMAP_DATA_DIR", str(tmp_path / "absent"))
    result = runner.invoke(data_app, ["info"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: SMAP_DATA_DIR=")
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_fetch_offline_is_one_line(tmp_path: Path) -> None:
    dest = tmp_path / "data" / "smap"
    args = ["fetch", "--dest", str(dest), "--attempts", "1", "--timeout", "2"]
    args += ["--data-url", "http://127.0.0.1:9/data.zip"]
    args += ["--labels-url", "http://127.0.0.1:9/labeled_anomalies.csv"]
    result = runner.invoke(data_app, args)
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: cannot download http://127.0.0.1:9/")
    assert len(result.output.strip().splitlines()) == 1
    assert not dest.exists()


def test_fetch_leaves_an_existing_dataset_alone(small_dataset: Path) -> None:
    result = runner.invoke(data_app, ["fetch", "--dest", str(small_dataset)])
    assert result.exit_code == 0
    assert "already holds a dataset" in result.output
