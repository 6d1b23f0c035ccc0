"""The inference benchmark's measuring, its JSON and its command, on the fixture models
(Triton paths only as unreachable servers: the integration tests cover a live one)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from smap_bench.bench import cli as bench_cli
from smap_bench.bench.inference import Budget, measure, run_inference_bench, summarize
from smap_bench.config import Settings, get_settings

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "triton-repository"


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_summarize_percentiles_and_throughput() -> None:
    latencies = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    point = summarize(batch=8, latencies_s=latencies, wall_s=2.0)
    assert point.calls == 100
    assert point.p50_ms == pytest.approx(50.5)
    assert point.p99_ms == pytest.approx(99.01)
    assert point.mean_ms == pytest.approx(50.5)
    assert point.windows_per_s == pytest.approx(8 * 100 / 2.0)


def test_measure_counts_calls_after_warmup() -> None:
    calls: list[int] = []
    point = measure(lambda: calls.append(1), batch=4, budget=Budget(duration_s=60, max_calls=7))
    assert point.calls == 7 and len(calls) == 7 + Budget().warmup


def test_measure_stops_at_the_deadline_after_min_calls() -> None:
    point = measure(lambda: None, batch=1, budget=Budget(duration_s=0.0, min_calls=5, warmup=0))
    assert point.calls == 5


def test_bench_on_fixture_model() -> None:
    settings = Settings(
        model_repository=FIXTURES, triton_host="127.0.0.1", triton_grpc_port=dead_port()
    )
    result = run_inference_bench(
        settings,
        batch_sizes=[1, 16],
        budget=Budget(duration_s=0, max_calls=5),
        paths=["onnx", "ort-ceiling", "triton-grpc"],
    )
    assert result["model"] == "SMAP_T-1"  # the first in the repository
    paths = result["paths"]
    assert paths["triton-grpc"]["error"].startswith("SMAP_T-1: cannot reach Triton")
    assert paths["triton-grpc"]["points"] == []
    for name in ("onnx", "ort-ceiling"):
        assert paths[name]["error"] is None
        assert [p["batch"] for p in paths[name]["points"]] == [1, 16]
        assert all(p["calls"] == 5 and p["windows_per_s"] > 0 for p in paths[name]["points"])
        assert paths[name]["latency_ms"]["p50"] == paths[name]["points"][0]["p50_ms"]
    ceiling16 = paths["ort-ceiling"]["points"][1]["windows_per_s"]
    onnx16 = paths["onnx"]["points"][1]["windows_per_s"]
    assert paths["onnx"]["ratio_to_ceiling"]["16"] == pytest.approx(ceiling16 / onnx16)
    assert result["settings"]["ceiling_intra_op_threads"] == settings.onnx_intra_op_threads
    json.dumps(result)  # JSON-ready


def test_unknown_model_is_reported_per_path() -> None:
    result = run_inference_bench(
        Settings(model_repository=FIXTURES),
        model="SMAP_X-9",
        batch_sizes=[1],
        budget=Budget(duration_s=0, max_calls=1),
        paths=["onnx", "ort-ceiling"],
    )
    assert result["paths"]["onnx"]["error"].startswith("SMAP_X-9: no such model")
    assert result["paths"]["ort-ceiling"]["error"].startswith("SMAP_X-9: not in")


def test_bad_paths_and_empty_repository(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown benchmark paths \['torch'\]"):
        run_inference_bench(Settings(model_repository=FIXTURES), paths=["torch"])
    with pytest.raises(ValueError, match="no ONNX models in"):
        run_inference_bench(Settings(model_repository=tmp_path), paths=["onnx"])


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("SMAP_MODEL_REPOSITORY", str(FIXTURES))
    monkeypatch.setenv("SMAP_TRITON_HTTP_PORT", str(dead_port()))
    get_settings.cache_clear()
    app = typer.Typer()
    bench_cli.register(app)
    app.command("noop")(lambda: None)  # keep typer in multi-command mode
    yield app
    get_settings.cache_clear()


def test_command_writes_json_and_table(app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["bench-inference", "--model", "SMAP_T-2", "--batch-sizes", "1,4", "--requests", "3"]
    args += ["--duration", "0", "--paths", "onnx,ort-ceiling", "--json", str(out)]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    assert "Inference benchmark: SMAP_T-2" in run.output and "ort-ceiling" in run.output
    data = json.loads(out.read_text())
    assert data["batch_sizes"] == [1, 4] and set(data["paths"]) == {"onnx", "ort-ceiling"}


def test_command_fails_when_a_path_fails(app: typer.Typer) -> None:
    args = ["bench-inference", "--requests", "1", "--duration", "0", "--batch-sizes", "1"]
    run = CliRunner().invoke(app, [*args, "--paths", "onnx,triton-http"])
    assert run.exit_code == 1
    assert "cannot reach Triton" in run.output


@pytest.mark.parametrize("text", ["1,x", "0,8", ""])
def test_batch_sizes_must_be_positive_integers(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        bench_cli.parse_int_list(text, "--batch-sizes")
    assert bench_cli.parse_int_list("1, 8,64", "--batch-sizes") == [1, 8, 64]


def test_windows_have_the_contract_shape() -> None:
    from smap_bench.bench.inference import make_windows

    x = make_windows(3)
    assert x.shape == (3, 30, 25) and x.dtype == np.float32
