"""API read latency at a fixed request rate (the issue's target: p99 < 20 ms at 50 req/s).

Open loop: requests are sent on a fixed schedule (``rps`` per second for ``duration_s``),
whatever the answers' speed, from a small thread pool, so a slow answer does not slow
the sending down and hide itself. Latency is measured per request from the moment it
is sent to the end of its body. The read paths rotate over the API's routes a dashboard
refresh uses. Loopback only: this is a probe of the local stack, not a load tool.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

#: Reads a dashboard refresh makes, rotated request by request.
DEFAULT_PATHS: tuple[str, ...] = (
    "/api/health/live",
    "/api/fleet/satellites",
    "/api/events?limit=50",
    "/api/replay",
    "/api/series/scores?satellite_id=sat1&subsystem=ACS",
    "/api/series/telemetry?satellite_id=sat1&subsystem=ACS&features=0",
)
#: A request that starts later than this after its slot counts as late (client overload).
LATE_S = 0.010


def check_loopback(base_url: str) -> None:
    """Refuse anything but a loopback address (127.0.0.0/8, ::1, localhost)."""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"bench_api only probes loopback addresses, not {host!r} ({base_url})")


def schedule(rps: float, duration_s: float) -> list[float]:
    """Send offsets (seconds from the start) of an open-loop run: ``rps`` per second."""
    if not (math.isfinite(rps) and rps > 0):
        raise ValueError(f"rps must be a positive number, got {rps}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive number, got {duration_s}")
    return [i / rps for i in range(max(int(rps * duration_s), 1))]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by linear interpolation; ``None`` for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Sample:
    path: str
    latency_s: float
    status: int  #: 0 when the request failed without an answer
    late_s: float


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def summarize(samples: Sequence[Sample], rps: float, elapsed_s: float) -> dict[str, Any]:
    """p50 / p99 / max latency in milliseconds, overall and per path, with error and
    lateness counts. Latencies of answered requests only (errors are counted apart)."""
    ok = [s for s in samples if 200 <= s.status < 400]
    latencies = [s.latency_s for s in ok]
    by_path: dict[str, dict[str, Any]] = {}
    for path in sorted({s.path for s in samples}):
        mine = [s.latency_s for s in ok if s.path == path]
        by_path[path] = {
            "requests": sum(1 for s in samples if s.path == path),
            "p50": _ms(percentile(mine, 50)),
            "p99": _ms(percentile(mine, 99)),
        }
    return {
        "p50": _ms(percentile(latencies, 50)),
        "p99": _ms(percentile(latencies, 99)),
        "max": _ms(max(latencies, default=None)),
        "unit": "ms",
        "rps": rps,
        "achieved_rps": round(len(samples) / elapsed_s, 2) if elapsed_s > 0 else None,
        "requests": len(samples),
        "errors": len(samples) - len(ok),
        "late": sum(1 for s in samples if s.late_s > LATE_S),
        "paths": by_path,
    }


def bench_api(
    base_url: str,
    rps: float = 50,
    duration_s: float = 20,
    *,
    paths: Sequence[str] = DEFAULT_PATHS,
    workers: int = 8,
    timeout_s: float = 5.0,
) -> dict[str, Any]:
    """Read the API at ``rps`` requests/s for ``duration_s`` s; latency percentiles (ms).

    Returns ``{"p50", "p99", "max", "requests", "errors", "late", "achieved_rps",
    "paths": {path: {"requests", "p50", "p99"}}, ...}``.
    """
    check_loopback(base_url)
    if not paths:
        raise ValueError("bench_api needs at least one path")
    offsets = schedule(rps, duration_s)
    samples: list[Sample] = []
    lock = threading.Lock()
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s, limits=limits) as client:
        # One warm-up request per path: connection set-up and first-call costs are not
        # what a running dashboard sees.
        for path in paths:
            with contextlib.suppress(httpx.HTTPError):
                client.get(path)

        def one(path: str, due: float) -> None:
            sent = time.perf_counter()
            try:
                response = client.get(path)
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            sample = Sample(path, time.perf_counter() - sent, status, sent - due)
            with lock:
                samples.append(sample)

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench-api") as pool:
            start = time.perf_counter()
            for i, offset in enumerate(offsets):
                due = start + offset
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(one, paths[i % len(paths)], due)
        elapsed = time.perf_counter() - start
    return summarize(samples, rps, elapsed)
