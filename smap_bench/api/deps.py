"""Typed dependencies of the routes: settings, a database connection, the VictoriaMetrics
client, replay control, and the bearer token that every mutating route requires.

Everything is built once by :func:`smap_bench.api.main.create_app`'s lifespan and kept
on ``app.state``; these functions only hand it out per request. Those that only look
something up are coroutines: FastAPI runs a plain function dependency in a worker
thread, a hop that costs more than the lookup.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import psycopg
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool

from smap_bench.api.auth import AuthFailure, check_bearer
from smap_bench.api.models import OPERATOR_PATTERN
from smap_bench.api.replay_service import ReplayLauncher, ReplayMonitor
from smap_bench.api.victoria import AsyncVictoria
from smap_bench.config import Settings
from smap_bench.metrics import VictoriaMetrics
from smap_bench.simulation import SimulatorControl

T = TypeVar("T")

#: Who acts when neither the X-Operator header nor the request body names anyone.
DEFAULT_OPERATOR = "operator"
_OPERATOR = re.compile(OPERATOR_PATTERN)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection for the request (committed on success, rolled back on error)."""
    pool: ConnectionPool = request.app.state.pool
    with pool.connection() as conn:
        yield conn


async def get_pool(request: Request) -> ConnectionPool:
    """The connection pool itself, for a coroutine route that runs a query in a thread."""
    pool: ConnectionPool = request.app.state.pool
    return pool


async def in_db(pool: ConnectionPool, read: Callable[..., T], *args: Any) -> T:
    """``read(conn, *args)`` on a pooled connection, in one trip to a worker thread.

    A plain-function route with a generator dependency (:func:`get_db`) costs several
    trips (the dependency's enter and exit, the route, each a thread wake-up and a hand
    over of the GIL); on a busy small machine every trip waits for a core. Read routes
    are coroutines that make exactly one, here.
    """

    def run() -> T:
        with pool.connection() as conn:
            return read(conn, *args)

    return await run_in_threadpool(run)


async def get_victoria_async(request: Request) -> AsyncVictoria:
    victoria: AsyncVictoria = request.app.state.victoria_async
    return victoria


async def get_victoria(request: Request) -> VictoriaMetrics:
    victoria: VictoriaMetrics = request.app.state.victoria
    return victoria


@dataclass
class Replay:
    """What the replay routes use: the command client, the state follower, the launcher."""

    control: SimulatorControl
    monitor: ReplayMonitor
    launcher: ReplayLauncher


async def get_replay(request: Request) -> Replay:
    replay: Replay = request.app.state.replay
    return replay


@dataclass(frozen=True)
class Operator:
    """The person behind a mutating request (X-Operator header; a body field may override)."""

    name: str


_bearer = HTTPBearer(auto_error=False, description="The API token (SMAP_API_TOKEN)")


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Operator:
    """Refuse the request unless it carries the configured bearer token (503 if none is)."""
    settings = get_settings(request)
    expected = settings.api_token.get_secret_value() if settings.api_token else None
    header = (
        f"Bearer {credentials.credentials}"
        if credentials is not None
        else request.headers.get("authorization")
    )
    try:
        check_bearer(header, expected)
    except AuthFailure as failure:
        headers = {"WWW-Authenticate": "Bearer"} if failure.status_code == 401 else None
        raise HTTPException(failure.status_code, failure.detail, headers=headers) from None
    name = request.headers.get("x-operator", DEFAULT_OPERATOR).strip()
    if not _OPERATOR.match(name):
        raise HTTPException(
            422, f"X-Operator header {name[:80]!r} is not a name matching {OPERATOR_PATTERN}"
        )
    return Operator(name)


async def settings_dependency(request: Request) -> Settings:
    return get_settings(request)


SettingsDep = Annotated[Settings, Depends(settings_dependency)]
DbDep = Annotated[psycopg.Connection[Any], Depends(get_db)]
VictoriaDep = Annotated[VictoriaMetrics, Depends(get_victoria)]
VictoriaAsyncDep = Annotated[AsyncVictoria, Depends(get_victoria_async)]
PoolDep = Annotated[ConnectionPool, Depends(get_pool)]
ReplayDep = Annotated[Replay, Depends(get_replay)]
TokenDep = Annotated[Operator, Depends(require_token)]
