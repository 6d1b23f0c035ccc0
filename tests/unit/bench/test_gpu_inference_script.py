"""scripts/gpu_inference_bench.py runs end to end on the CPU (its smoke test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "gpu_inference_bench.py"


def test_cpu_smoke_run(tmp_path: Path) -> None:
    args = ["--device", "cpu", "--batches", "1,4", "--seconds", "0.01"]
    args += ["--latency-seconds", "0.01", "--out", str(tmp_path)]
    run = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_inference_bench.json").read_text())
    eager = report["torch_eager_fp32"]
    assert 50_000 < eager["parameters"] < 65_000  # TranAD-shaped: about 58k
    assert [p["batch"] for p in eager["throughput"]] == [1, 4]
    assert eager["latency_batch1"]["p99_ms"] >= eager["latency_batch1"]["p50_ms"] > 0
    cpu = report["onnxruntime"]["cpu"]
    assert cpu["session_providers"] == ["CPUExecutionProvider"]
    assert [p["batch"] for p in cpu["throughput"]] == [1, 4]
