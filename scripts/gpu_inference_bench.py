#!/usr/bin/env python
"""Inference throughput and latency of a TranAD-shaped model on one NVIDIA GPU.

Self-contained (needs numpy and torch; onnxruntime optional; no network, no smap_bench):
copy the checkout to the GPU machine and run

    python scripts/gpu_inference_bench.py --out "$OUT"

It measures PyTorch eager (fp32, inference mode) at batch sizes 1..16384 and p50/p99 of
one window, on a TranAD-shaped module with random weights (speed does not depend on the
weights): transformer encoder and two decoders, d_model 50 (two times 25 features), 25
heads, feed-forward 16, window 30, two-phase self-conditioning, about 58k parameters.
If onnxruntime is importable it also runs an ONNX model (the first committed one under
triton-repository/onnx, else this module exported) with the CUDA provider when
onnxruntime has it, and with the CPU provider for reference. Results go to
``<out>/gpu_inference_bench.json``. ``--device cpu`` runs the same on the CPU (smoke test).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

WINDOW, FEATURES = 30, 25
DEFAULT_BATCHES = [2**i for i in range(15)]  # 1 .. 16384
ROOT = Path(__file__).resolve().parent.parent


class Attention(nn.Module):
    """Multi-head attention from plain linear layers (exports to ONNX with any exporter)."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads, self.d_head = heads, d_model // heads
        self.q, self.k, self.v = (nn.Linear(d_model, d_model) for _ in range(3))
        self.out = nn.Linear(d_model, d_model)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        b, t, d = query.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, -1, self.heads, self.d_head).transpose(1, 2)

        q, k, v = split(self.q(query)), split(self.k(memory)), split(self.v(memory))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.d_head), dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; residuals around each."""

    def __init__(self, d_model: int, heads: int, ff: int, cross: bool) -> None:
        super().__init__()
        self.self_attn = Attention(d_model, heads)
        self.cross_attn = Attention(d_model, heads) if cross else None
        self.ff = nn.Sequential(nn.Linear(d_model, ff), nn.ReLU(), nn.Linear(ff, d_model))

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(x, x)
        if self.cross_attn is not None and memory is not None:
            x = x + self.cross_attn(x, memory)
        return x + self.ff(x)


class TranADShaped(nn.Module):
    """Same tensors and cost as a TranAD per-channel model: input [B, 30, 25] ->
    reconstruction [B, 30, 25], score [B, 30] (mean squared error over features)."""

    pe: torch.Tensor

    def __init__(self, features: int = FEATURES, window: int = WINDOW, ff: int = 16) -> None:
        super().__init__()
        d_model = 2 * features
        position = torch.arange(window).unsqueeze(1)
        freq = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(window, d_model)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(position * freq), torch.cos(position * freq)
        self.register_buffer("pe", pe)
        self.scale = math.sqrt(features)
        self.encoder = Block(d_model, features, ff, cross=False)
        self.decoder1 = Block(d_model, features, ff, cross=True)
        self.decoder2 = Block(d_model, features, ff, cross=True)
        self.fcn = nn.Sequential(nn.Linear(d_model, features), nn.Sigmoid())

    def forward(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tgt = torch.cat([src, src], dim=-1)

        def encode(context: torch.Tensor) -> torch.Tensor:
            return self.encoder(torch.cat([src, context], dim=-1) * self.scale + self.pe)

        x1 = self.fcn(self.decoder1(tgt, encode(torch.zeros_like(src))))
        x2 = self.fcn(self.decoder2(tgt, encode((x1 - src) ** 2)))
        return x2, ((x2 - src) ** 2).mean(dim=-1)


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "calls": len(ms),
    }


def timed_loop(call: Callable[[], Any], seconds: float, sync: Callable[[], None]) -> list[float]:
    """Per-call wall times of ``call`` (synchronised) for about ``seconds``."""
    for _ in range(3):
        call()
    sync()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def sweep(
    run: Callable[[np.ndarray], Any],
    batches: list[int],
    seconds: float,
    sync: Callable[[], None],
    latency_seconds: float,
) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    points = []
    for batch in batches:
        x = rng.normal(size=(batch, WINDOW, FEATURES)).astype(np.float32)
        try:
            times = timed_loop(functools.partial(run, x), seconds, sync)
        except (RuntimeError, MemoryError) as exc:  # out of device memory at large batches
            points.append({"batch": batch, "error": str(exc).splitlines()[0]})
            break
        stats = percentiles(times)
        points.append({"batch": batch, "windows_per_s": batch * len(times) / sum(times), **stats})
        print(f"  batch {batch:>6}: {points[-1]['windows_per_s']:>12,.0f} windows/s", flush=True)
    x1 = rng.normal(size=(1, WINDOW, FEATURES)).astype(np.float32)
    latency = percentiles(timed_loop(lambda: run(x1), latency_seconds, sync))
    print(f"  batch 1 latency p50 {latency['p50_ms']:.3f} ms, p99 {latency['p99_ms']:.3f} ms")
    return {"latency_batch1": latency, "throughput": points}


def bench_torch(
    device: str, batches: list[int], seconds: float, latency_s: float
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = TranADShaped().to(device).eval()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run(x: np.ndarray) -> Any:
        with torch.inference_mode():
            rec, score = model(torch.from_numpy(x).to(device, non_blocking=True))
            return rec.cpu(), score.cpu()  # results back on the host, as a server returns them

    print(f"torch eager fp32 on {device}", flush=True)
    result = sweep(run, batches, seconds, sync, latency_s)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    return result


def onnx_model_path(tmp: Path) -> tuple[Path, str]:
    """The first committed per-channel ONNX model, else the TranAD-shaped one exported."""
    committed = sorted((ROOT / "triton-repository" / "onnx").glob("*/[0-9]*/model.onnx"))
    if committed:
        return committed[0], f"committed {committed[0].relative_to(ROOT)}"
    path = tmp / "tranad_shaped.onnx"
    torch.onnx.export(
        TranADShaped().eval(),
        (torch.zeros(1, WINDOW, FEATURES),),
        str(path),
        input_names=["input"],
        output_names=["reconstruction", "score"],
        dynamic_axes={"input": {0: "batch"}, "reconstruction": {0: "batch"}, "score": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return path, "TranAD-shaped module exported (random weights)"


def run_session(session: Any, x: np.ndarray) -> Any:
    return session.run(["reconstruction", "score"], {"input": x})


def bench_onnxruntime(
    device: str, batches: list[int], seconds: float, latency_s: float, tmp: Path
) -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return {"skipped": f"onnxruntime not importable: {exc}"}
    path, source = onnx_model_path(tmp)
    results: dict[str, Any] = {
        "model": source,
        "version": ort.__version__,
        "available_providers": ort.get_available_providers(),
    }
    wanted = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            wanted.insert(0, "CUDAExecutionProvider")
        else:
            results["cuda"] = {"skipped": "this onnxruntime has no CUDAExecutionProvider"}
    for provider in wanted:
        providers = (
            [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        )
        session = ort.InferenceSession(str(path), providers=providers)
        got = session.get_providers()
        key = "cuda" if provider.startswith("CUDA") else "cpu"
        print(f"onnxruntime {key}: session providers {got}", flush=True)
        cpu_batches = (
            [b for b in batches if b <= 1024] if key == "cpu" and device != "cpu" else batches
        )
        result = sweep(
            functools.partial(run_session, session),
            cpu_batches,
            seconds,
            lambda: None,
            latency_s,
        )
        results[key] = {"session_providers": got, **result}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)))
    parser.add_argument("--seconds", type=float, default=1.0, help="per batch size")
    parser.add_argument("--latency-seconds", type=float, default=3.0)
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for the JSON")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device visible to torch; use --device cpu for a smoke test")
    started = time.time()
    report: dict[str, Any] = {
        "device": args.device,
        "gpu": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "batches": batches,
        "seconds_per_point": args.seconds,
    }
    report["torch_eager_fp32"] = bench_torch(
        args.device, batches, args.seconds, args.latency_seconds
    )
    with tempfile.TemporaryDirectory() as tmp:
        report["onnxruntime"] = bench_onnxruntime(
            args.device, batches, args.seconds, args.latency_seconds, Path(tmp)
        )
    report["wall_s"] = time.time() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_inference_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / 'gpu_inference_bench.json'} in {report['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
