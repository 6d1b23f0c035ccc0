"""The application factory: routers under ``/api``, resources built in the lifespan, and
error handlers that turn a service being down into a 503 and bad input into a 422.

Nothing is built at import time: ``create_app(settings)`` returns an app whose database
pool, VictoriaMetrics client and replay follower start when the server starts it and
close when it stops.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import psycopg
from fastapi import APIRouter, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from smap_bench import __version__
from smap_bench.alarms import IllegalTransition, InvalidShelf
from smap_bench.api.cache import RecentAnswers
from smap_bench.api.crud import NotFound
from smap_bench.api.deps import Replay
from smap_bench.api.queries import QueryError
from smap_bench.api.replay_service import ReplayLauncher, ReplayMonitor, SubprocessLauncher
from smap_bench.api.routes import events, fleet, health, replay, series
from smap_bench.api.self_metrics import RequestMetrics
from smap_bench.api.victoria import AsyncVictoria, VictoriaRefused, VictoriaUnavailable
from smap_bench.config import Settings, get_settings
from smap_bench.metrics import VictoriaMetrics

log = logging.getLogger("smap_bench.api")

#: nginx passes ``/api/...`` on unchanged, so the routes live under this prefix.
API_PREFIX = "/api"

DESCRIPTION = """Operations API of smap-bench: the fleet, telemetry and anomaly series,
anomaly events with their alarm lifecycle, replay control and pipeline health.

Mutating routes (POST, PATCH) need `Authorization: Bearer <token>` (the local stack
writes the token to `.run/api-token`); `X-Operator: <name>` says who acts."""


def api_router() -> APIRouter:
    router = APIRouter()
    for module in (fleet, series, events, replay, health):
        router.include_router(module.router)
    return router


def _message(status_code: int, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status_code, content={"detail": detail})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def install_error_handlers(app: FastAPI) -> None:
    """Map library errors to HTTP answers with one clear sentence each."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        parts = []
        for error in errors[:5]:
            where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
            parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
        content: dict[str, Any] = {
            "detail": jsonable_errors(errors),
            "message": "; ".join(parts) or "invalid request",
        }
        return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content=content)

    @app.exception_handler(QueryError)
    async def bad_query(_: Request, exc: QueryError) -> JSONResponse:
        return _message(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))

    @app.exception_handler(InvalidShelf)
    async def bad_shelf(_: Request, exc: InvalidShelf) -> JSONResponse:
        return _message(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))

    @app.exception_handler(IllegalTransition)
    async def illegal(_: Request, exc: IllegalTransition) -> JSONResponse:
        return _message(status.HTTP_409_CONFLICT, str(exc))

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _message(status.HTTP_404_NOT_FOUND, str(exc))

    @app.exception_handler(PoolTimeout)
    async def pool_timeout(_: Request, exc: PoolTimeout) -> JSONResponse:
        return _message(503, f"PostgreSQL unavailable: no connection ({_first_line(exc)})")

    @app.exception_handler(psycopg.OperationalError)
    async def db_down(_: Request, exc: psycopg.OperationalError) -> JSONResponse:
        return _message(503, f"PostgreSQL unavailable: {_first_line(exc)}")

    @app.exception_handler(psycopg.DataError)
    async def db_data(_: Request, exc: psycopg.DataError) -> JSONResponse:
        return _message(status.HTTP_422_UNPROCESSABLE_CONTENT, f"invalid value: {_first_line(exc)}")

    @app.exception_handler(psycopg.IntegrityError)
    async def db_conflict(_: Request, exc: psycopg.IntegrityError) -> JSONResponse:
        return _message(status.HTTP_409_CONFLICT, f"conflicts with stored data: {_first_line(exc)}")

    @app.exception_handler(httpx.HTTPStatusError)
    async def victoria_refused(_: Request, exc: httpx.HTTPStatusError) -> JSONResponse:
        body = exc.response.text.strip().splitlines()
        reason = body[0][:300] if body else f"HTTP {exc.response.status_code}"
        if 400 <= exc.response.status_code < 500:
            return _message(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"VictoriaMetrics refused: {reason}"
            )
        return _message(503, f"VictoriaMetrics unavailable: {reason}")

    @app.exception_handler(VictoriaRefused)
    async def victoria_refused_async(_: Request, exc: VictoriaRefused) -> JSONResponse:
        if 400 <= exc.status < 500:
            return _message(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"VictoriaMetrics refused: {exc.reason}"
            )
        return _message(503, f"VictoriaMetrics unavailable: {exc.reason}")

    @app.exception_handler(VictoriaUnavailable)
    async def victoria_down_async(_: Request, exc: VictoriaUnavailable) -> JSONResponse:
        return _message(503, f"VictoriaMetrics unavailable: {_first_line(exc)}")

    @app.exception_handler(httpx.HTTPError)
    async def victoria_down(_: Request, exc: httpx.HTTPError) -> JSONResponse:
        return _message(503, f"VictoriaMetrics unavailable: {_first_line(exc)}")

    @app.exception_handler(TimeoutError)
    async def timed_out(_: Request, exc: TimeoutError) -> JSONResponse:
        return _message(503, f"timed out: {_first_line(exc)}")

    from confluent_kafka import KafkaException

    @app.exception_handler(KafkaException)
    async def kafka_down(_: Request, exc: KafkaException) -> JSONResponse:
        return _message(503, f"Kafka unavailable: {_first_line(exc)}")

    @app.exception_handler(BufferError)
    async def kafka_full(_: Request, exc: BufferError) -> JSONResponse:
        return _message(503, f"Kafka producer queue full: {_first_line(exc)}")


def jsonable_errors(errors: Any) -> Any:
    """Validation errors as JSON (as FastAPI's own handler renders them)."""
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(errors)


def create_app(
    settings: Settings | None = None,
    *,
    launcher: ReplayLauncher | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The operations API for ``settings`` (default: the environment's); its request
    metrics go to ``registry`` (default a new one, as ``app.state.metrics_registry``)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from smap_bench.simulation import SimulatorControl

        pool = ConnectionPool(
            settings.postgres_dsn,
            min_size=1,
            max_size=10,
            timeout=3.0,
            open=False,
            name="smap-bench-api",
            kwargs={"connect_timeout": 3, "application_name": "smap-bench-api"},
            check=ConnectionPool.check_connection,
            configure=_configure_connection,
        )
        # Not waiting: the API starts (and reports 503s) while PostgreSQL is still down.
        pool.open(wait=False)
        victoria = VictoriaMetrics(settings.victoria_url, timeout_s=5.0)
        victoria_async = AsyncVictoria(settings.victoria_url, timeout_s=5.0)
        monitor = ReplayMonitor(settings)
        monitor.start()
        control = SimulatorControl(settings, simulator_id=None)
        app.state.pool = pool
        app.state.victoria = victoria
        app.state.victoria_async = victoria_async
        app.state.replay = Replay(control, monitor, launcher or SubprocessLauncher(settings))
        log.info(
            "API ready: PostgreSQL %s, VictoriaMetrics %s",
            _safe_dsn(settings),
            settings.victoria_url,
        )
        try:
            yield
        finally:
            monitor.close()
            control.close()
            victoria.close()
            await victoria_async.aclose()
            pool.close()

    app = FastAPI(
        title="smap-bench operations API",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics_registry = registry = registry or CollectorRegistry()
    # /api/fleet/latest's shared answers, one set per app (and so per event loop).
    app.state.latest_answers = RecentAnswers()
    app.include_router(api_router(), prefix=API_PREFIX)
    app.add_middleware(RequestMetrics, registry=registry, prefix=API_PREFIX)
    install_error_handlers(app)
    return app


def _configure_connection(conn: psycopg.Connection[Any]) -> None:
    """jsonb columns (an event's top features) parsed by orjson: the stdlib's decoder
    was a quarter of the events list's CPU."""
    set_json_loads(orjson.loads, conn)


def _safe_dsn(settings: Settings) -> str:
    """The DSN without its password, for logs."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(settings.postgres_dsn)
    parts.pop("password", None)
    return make_conninfo(**{k: str(v) for k, v in parts.items() if v is not None})
