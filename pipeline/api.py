"""Operations API service: the FastAPI app of :mod:`smap_bench.api` under uvicorn.

Listens on ``settings.bind_host:settings.api_port`` (127.0.0.1:8080 locally); nginx
passes ``/api/...`` on unchanged, so routes, the OpenAPI document (``/api/openapi.json``)
and the docs (``/api/docs``) all live under ``/api``. ``--root-path`` is for a proxy that
strips a prefix in front of ``/api``.

Run::

    python -m pipeline.api
    python -m pipeline.api --port 8081
"""

from __future__ import annotations

import argparse
import gc
import logging
from collections.abc import Sequence

import uvicorn
from prometheus_client import start_http_server

from smap_bench.api.main import create_app
from smap_bench.config import get_settings
from smap_bench.priority import set_niceness
from smap_bench.stage import STAGE_METRICS_PORTS

log = logging.getLogger("smap_bench.api")

#: Seconds an idle keep-alive connection stays open (uvicorn's default is 5).
KEEP_ALIVE_S = 75


def main(argv: Sequence[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m pipeline.api", description=__doc__)
    parser.add_argument("--host", default=settings.bind_host)
    parser.add_argument("--port", type=int, default=settings.api_port)
    parser.add_argument("--root-path", default="", help="prefix a proxy strips before /api")
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=STAGE_METRICS_PORTS["api"],
        help=f"self-metrics port (default {STAGE_METRICS_PORTS['api']}; 0: none)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    # One line per VictoriaMetrics request is a write under a lock on every API read.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    set_niceness(settings.operator_nice, "the API")
    if settings.api_token is None:
        log.warning("SMAP_API_TOKEN is not set: mutating routes answer 503")
    app = create_app(settings)
    if args.metrics_port:
        start_http_server(
            args.metrics_port, addr=settings.bind_host, registry=app.state.metrics_registry
        )
    # What start-up imported lives as long as the process: out of the collector's way, so
    # that a full collection scans only what requests allocate (shorter pauses).
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        root_path=args.root_path,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        log_level=args.log_level,
        access_log=False,
        # Longer than nginx's keepalive_timeout for its upstream connections (60 s), so
        # that nginx, not the API, closes an idle one: never mid-request.
        timeout_keep_alive=KEEP_ALIVE_S,
    )


if __name__ == "__main__":
    main()
