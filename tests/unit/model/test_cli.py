from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from smap_bench.config import get_settings
from smap_bench.data.synthetic import write_synthetic_dataset
from smap_bench.model import cli
from smap_bench.model.repository import list_models, read_metadata
from smap_bench.model.train import TrainConfig
from tests.unit.model.conftest import TINY


@pytest.fixture
def app(tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("SMAP_DATA_DIR", str(tiny_dataset))
    monkeypatch.setenv("SMAP_MODEL_REPOSITORY", str(tmp_path / "repo"))
    monkeypatch.setenv("SMAP_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(
        cli,
        "_config",
        lambda e, w, s, h=0: TrainConfig(
            **{
                **{k: getattr(TINY, k) for k in ("train_stride", "threshold")},
                "network": replace(TINY.network, horizon=h),
                "epochs": e,
                "window": w,
                "seed": s,
            }
        ),
    )
    get_settings.cache_clear()
    app = typer.Typer()
    app.command()(cli.train)
    app.command()(cli.evaluate)
    yield app
    get_settings.cache_clear()


def test_train_writes_models_and_resumes(app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    args = ["train", "--channels", "A-1,E-1,Z-9", "--epochs", "1", "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report["channels"]) == {"A-1", "E-1"}
    assert report["missing_channels"] == ["Z-9"]
    assert report["channels"]["A-1"]["epochs"] == 1
    assert report["channels"]["A-1"]["threshold"] > 0
    repo = tmp_path / "repo"
    assert list_models(repo) == ["A-1", "E-1"]
    assert read_metadata(repo, "A-1")["threshold"] == report["channels"]["A-1"]["threshold"]

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert all(c["skipped"] for c in json.loads(out.read_text())["channels"].values())


def test_evaluate_reports_the_pooled_fields(app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    args = ["evaluate", "--channels", "A-1,E-1", "--seeds", "2", "--epochs", "1"]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    for key in (
        "event",
        "point_adjusted",
        "random_baseline",
        "false_alarms_per_10k",
        "detection_latency",
        "channels",
        "seeds",
        "per_channel",
    ):
        assert key in report
    assert report["seeds"] == 2 and report["channels"] == 2
    assert {r["channel"] for r in report["per_channel"]} == {"A-1", "E-1"}
    assert 0.0 <= report["event"]["f1"] <= 1.0
    assert report["std_over_seeds"]["event"]["f1"] is not None
    assert len(report["runs"]) == 2
    # settings other than the served ones (1 epoch) train into a cache of their own, one
    # repository per seed, never over the served repository
    cache = tmp_path / "run" / "model-seeds" / "window-30-epochs-1"
    assert list_models(cache / "seed-0") == list_models(cache / "seed-1") == ["A-1", "E-1"]
    assert not (tmp_path / "repo").exists()
    # the served decision rule by default
    assert report["rule"]["rule"] == "confirmed" and report["horizon"] == 0


def test_evaluate_with_the_stream_rule_and_a_horizon(app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    args = ["evaluate", "--channels", "A-1", "--seeds", "1", "--epochs", "1", "--horizon", "10"]
    result = CliRunner().invoke(app, [*args, "--rule", "stream", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["rule"]["rule"] == "stream" and report["rule"]["history"] == 210
    assert report["horizon"] == 10
    repository = tmp_path / "run" / "model-seeds" / "window-30-epochs-1-horizon-10" / "seed-0"
    assert read_metadata(repository, "A-1")["network"]["horizon"] == 10
    result = CliRunner().invoke(app, [*args, "--rule", "nearest"])
    assert result.exit_code != 0 and "unknown rule" in result.output


def test_evaluate_with_the_linear_forecaster_or_ed_in(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Train splits long enough for 250 lags: the forecaster is fitted and only adds
    flags; the tiny dataset's 300 train records are too short, and it never flags."""
    data = write_synthetic_dataset(
        tmp_path / "long", ["A-1"], seed=3, train_rows=1500, test_rows=900
    )
    monkeypatch.setenv("SMAP_DATA_DIR", str(data))
    get_settings.cache_clear()
    args = ["evaluate", "--channels", "A-1", "--seeds", "1", "--epochs", "1"]
    reports = {}
    for option in ("--no-forecaster", "--forecaster"):
        out = tmp_path / f"eval{option}.json"
        result = CliRunner().invoke(app, [*args, option, "--json", str(out)])
        assert result.exit_code == 0, result.output
        reports[option] = json.loads(out.read_text())
    with_it, without = reports["--forecaster"], reports["--no-forecaster"]
    assert without["forecaster"] is None
    assert with_it["forecaster"] == {
        "lags": 250,
        "ridge": 10.0,
        "min_rows": 2.0,
        "span": 10,
        "burn_in": 200,
    }
    channel = with_it["runs"][0]["per_channel"][0]
    assert channel["forecaster_threshold"] > 0
    assert "forecaster_threshold" not in without["runs"][0]["per_channel"][0]
    # or'ed in: every range found without it is found with it, and the forecaster finds
    # one of the synthetic ranges itself
    assert with_it["runs"][0]["event"]["tp"] >= max(without["runs"][0]["event"]["tp"], 1)


def test_seed_repositories_keep_settings_apart(app: typer.Typer, tmp_path: Path) -> None:
    settings = get_settings()
    assert cli.seed_repository(settings, 0) == settings.model_repository
    assert cli.seed_repository(settings, 2) == tmp_path / "run" / "model-seeds" / "seed-2"
    other = cli.seed_repository(settings, 0, window=10)
    assert other == tmp_path / "run" / "model-seeds" / "window-10-epochs-5" / "seed-0"


def test_training_in_processes_gives_the_same_models(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["train", "--channels", "A-1,E-1", "--epochs", "1"]
    alone = CliRunner().invoke(app, [*args, "--jobs", "1"])
    assert alone.exit_code == 0, alone.output
    first = {c: read_metadata(tmp_path / "repo", c) for c in ("A-1", "E-1")}
    monkeypatch.setenv("SMAP_MODEL_REPOSITORY", str(tmp_path / "repo2"))
    get_settings.cache_clear()
    together = CliRunner().invoke(app, [*args, "--jobs", "2"])
    assert together.exit_code == 0, together.output
    for channel, meta in first.items():
        other = read_metadata(tmp_path / "repo2", channel)
        assert other["threshold"] == meta["threshold"]
        assert other["metrics"]["train_loss_by_epoch"] == meta["metrics"]["train_loss_by_epoch"]
        assert other["settings_hash"] == meta["settings_hash"]
