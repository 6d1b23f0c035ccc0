"""Inference benchmark: latency of one window and throughput per batch size, for each way
the pipeline can score windows, beside the bare model's ceiling.

Paths: ``triton-http`` and ``triton-grpc`` (tritonclient against a running Triton),
``onnx`` (the in-process backend, input checks included) and ``ort-ceiling`` (ONNX
Runtime ``session.run`` in a tight loop on a prepared input: what the model itself
costs on this machine). One client calls in a closed loop (a call starts when the last
one returned), so the throughput at batch B is what one worker sending B windows per
request gets.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smap_bench.config import Settings
from smap_bench.inference.base import INPUT_NAME, OUTPUT_NAMES, InferenceError
from smap_bench.inference.factory import make_backend
from smap_bench.inference.repository import find_onnx_models

PATHS = ("triton-http", "triton-grpc", "onnx", "ort-ceiling")
DEFAULT_BATCH_SIZES = (1, 8, 64, 256, 1024)


@dataclass(frozen=True)
class Budget:
    """How long to measure one point: exactly ``max_calls`` calls when set, else calls
    for ``duration_s`` seconds (at least ``min_calls``); after ``warmup`` uncounted calls."""

    duration_s: float = 2.0
    max_calls: int | None = None
    min_calls: int = 3
    warmup: int = 3


@dataclass(frozen=True)
class Point:
    """One measured batch size: per-call latency and windows per second."""

    batch: int
    calls: int
    windows_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float


@dataclass
class PathResult:
    """All points of one path; ``error`` says why a path could not be measured."""

    path: str
    points: list[Point] = field(default_factory=list)
    error: str | None = None

    def at(self, batch: int) -> Point | None:
        return next((p for p in self.points if p.batch == batch), None)


def summarize(batch: int, latencies_s: Sequence[float], wall_s: float) -> Point:
    """Percentiles of per-call latency and throughput over the measured wall time."""
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    return Point(
        batch=batch,
        calls=len(ms),
        windows_per_s=batch * len(ms) / wall_s if wall_s > 0 else float("nan"),
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
    )


def measure(call: Callable[[], object], batch: int, budget: Budget) -> Point:
    """Call ``call`` in a closed loop within ``budget``; time each call."""
    for _ in range(budget.warmup):
        call()
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + budget.duration_s
    while True:
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
        latencies.append(t1 - t0)
        if budget.max_calls is not None:
            if len(latencies) >= budget.max_calls:
                break
        elif t1 >= deadline and len(latencies) >= budget.min_calls:
            break
    return summarize(batch, latencies, time.perf_counter() - start)


def make_windows(batch: int, window: int = 30, features: int = 25, seed: int = 0) -> np.ndarray:
    """Random float32 windows [batch, window, features] (speed does not depend on values)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, window, features)).astype(np.float32)


Runner = Callable[[np.ndarray], object]


def backend_runner(
    settings: Settings, kind: str, model: str
) -> tuple[Runner, Callable[[], None], tuple[int, int]]:
    """A call that scores windows through backend ``kind``, how to close it, and the
    model's (window, features).

    Asks for the model's signature first, so an unknown model or an unreachable server
    fails here, with the backend's :class:`InferenceError`, rather than mid-measurement.
    """
    backend = make_backend(settings, kind)
    try:
        signature = backend.signature(model)
    except InferenceError:
        backend.close()
        raise
    shape = (signature.window, signature.features)
    return functools.partial(backend.infer, model), backend.close, shape


def ceiling_runner(onnx_path: Path, intra_op_threads: int) -> tuple[Runner, tuple[int, int]]:
    """The bare model: ONNX Runtime ``session.run`` on a prepared input, nothing else;
    and the model's (window, features)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    outputs = list(OUTPUT_NAMES)
    dims = session.get_inputs()[0].shape[1:]
    shape = (
        dims[0] if isinstance(dims[0], int) else 30,
        dims[1] if isinstance(dims[1], int) else 25,
    )

    def run(windows: np.ndarray) -> object:
        return session.run(outputs, {INPUT_NAME: windows})

    return run, shape


def run_inference_bench(
    settings: Settings,
    model: str | None = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    budget: Budget | None = None,
    paths: Sequence[str] = PATHS,
    ceiling_threads: int | None = None,
    on_point: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Benchmark ``model`` (default: the first in the repository) along ``paths``; return
    the JSON-ready result (see :func:`result_json`).

    Paths are measured in turn at each batch size (not one path after the other), so that
    a burst of load from other processes on a shared machine skews every path alike. The
    ceiling runs with ``ceiling_threads`` ONNX Runtime threads (default the in-process
    backend's ``settings.onnx_intra_op_threads``, so that both use the cores alike).
    """
    budget = budget or Budget()
    if ceiling_threads is None:
        ceiling_threads = settings.onnx_intra_op_threads
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        raise ValueError(f"unknown benchmark paths {unknown}; expected some of {list(PATHS)}")
    models = find_onnx_models(settings.model_repository)
    if model is None:
        if not models:
            raise ValueError(f"no ONNX models in {settings.model_repository}; pass --model")
        model = next(iter(models))
    results = {path: PathResult(path) for path in paths}
    runners: dict[str, Runner] = {}
    closers: list[Callable[[], None]] = []
    shape = (30, 25)
    for path in paths:
        if path == "ort-ceiling":
            if model in models:
                runners[path], shape = ceiling_runner(models[model], ceiling_threads)
            else:
                results[path].error = f"{model}: not in {settings.model_repository}"
            continue
        try:
            runners[path], close, shape = backend_runner(settings, path, model)
            closers.append(close)
        except InferenceError as exc:
            results[path].error = str(exc)
    try:
        for batch in batch_sizes:
            windows = make_windows(batch, *shape)
            for path, run in runners.items():
                if results[path].error:
                    continue
                if on_point is not None:
                    on_point(path, batch)
                try:
                    results[path].points.append(
                        measure(functools.partial(run, windows), batch, budget)
                    )
                except InferenceError as exc:
                    results[path].error = str(exc)
    finally:
        for close in closers:
            close()
    return result_json(
        settings, model, batch_sizes, budget, list(results.values()), ceiling_threads
    )


def result_json(
    settings: Settings,
    model: str,
    batch_sizes: Sequence[int],
    budget: Budget,
    results: Sequence[PathResult],
    ceiling_threads: int,
) -> dict[str, Any]:
    """The benchmark's JSON: per path, batch-1 latency and per-batch throughput.

    ``ratio_to_ceiling`` is the ceiling's windows/s divided by the path's, per batch size
    (the issue's target: at most 2 for batched Triton throughput).
    """
    import onnxruntime as ort

    ceiling = next((r for r in results if r.path == "ort-ceiling" and not r.error), None)
    out_paths: dict[str, Any] = {}
    for r in results:
        one = r.at(1)
        ratios = {}
        if ceiling is not None:
            for p in r.points:
                c = ceiling.at(p.batch)
                if c is not None and p.windows_per_s > 0:
                    ratios[str(p.batch)] = c.windows_per_s / p.windows_per_s
        out_paths[r.path] = {
            "error": r.error,
            "latency_ms": {"p50": one.p50_ms, "p99": one.p99_ms, "mean": one.mean_ms}
            if one
            else None,
            "points": [asdict(p) for p in r.points],
            "ratio_to_ceiling": ratios,
        }
    return {
        "model": model,
        "model_repository": str(settings.model_repository),
        "batch_sizes": list(batch_sizes),
        "budget": asdict(budget),
        "paths": out_paths,
        "settings": {
            "triton_http_url": settings.triton_http_url,
            "triton_grpc_url": settings.triton_grpc_url,
            "onnx_intra_op_threads": settings.onnx_intra_op_threads,
            "ceiling_intra_op_threads": ceiling_threads,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "onnxruntime": ort.__version__,
        },
    }
