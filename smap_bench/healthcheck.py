"""`python -m smap_bench.healthcheck SERVICE`: a container health check for one process.

Exits 0 when the service answers, 1 with one line on stderr when it does not. Pipeline
stages are checked through their self-metrics endpoint (alive and serving counters),
the API through its health route. Imports nothing heavy: it runs every few seconds.
"""

from __future__ import annotations

import sys

from smap_bench import health
from smap_bench.config import get_settings
from smap_bench.stage import STAGE_METRICS_PORTS


def check(service: str) -> None:
    settings = get_settings()
    if service == "api":
        health.check_http(f"http://127.0.0.1:{settings.api_port}/api/health/live")
        return
    if service not in STAGE_METRICS_PORTS:
        known = ", ".join(sorted({*STAGE_METRICS_PORTS, "api"}))
        raise health.Unhealthy(f"unknown service {service!r} (known: {known})")
    port = STAGE_METRICS_PORTS[service]
    health.check_http(f"http://127.0.0.1:{port}/metrics", expect="smap_stage_received")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m smap_bench.healthcheck SERVICE", file=sys.stderr)
        return 2
    try:
        check(argv[0])
    except health.Unhealthy as exc:
        print(f"{argv[0]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
