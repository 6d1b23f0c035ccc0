"""Browser tests: headless Chromium (Debian ``chromium``) through nginx on the live stack.

Never skipped: a missing browser, a stack that will not come up or a dashboard that does
not answer fails with what to do. The dashboard and the API are part of ``make up``; when
one of them is not listening, the fixture starts it for the session and stops it after.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from smap_bench.config import PROJECT_ROOT, Settings
from tests.integration.conftest import live_stack, settings  # noqa: F401 (shared fixtures)

#: Where screenshots go (gitignored; CI keeps them as artifacts).
SCREENSHOTS = PROJECT_ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as error:  # a service still starting answers with errors
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every_s)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what} (last: {last!r})")


def listening(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Debian Chromium binary; the test fails (never skips) without it."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(
            "chromium is not installed: run `apt-get update && apt-get install -y chromium "
            "chromium-driver` (scripts/bootstrap.sh does it)"
        )
    return path


def _start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        argv,
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="session")
def api_token(live_stack: Settings) -> str:  # noqa: F811
    from smap_bench.api.auth import ensure_api_token

    return ensure_api_token(live_stack)


@pytest.fixture(scope="session")
def api(live_stack: Settings, api_token: str) -> Iterator[httpx.Client]:  # noqa: F811
    """A client of the operations API (started for the session if it is not running)."""
    stack = live_stack
    started = None
    if not listening(stack.host, stack.api_port):
        started = _start(
            [sys.executable, "-m", "pipeline.api", "--metrics-port", "0"],
            SCREENSHOTS.parent / "browser-api.log",
            {"SMAP_API_TOKEN": api_token},
        )
    base = f"http://{stack.host}:{stack.api_port}"
    with httpx.Client(
        base_url=base, timeout=10, headers={"Authorization": f"Bearer {api_token}"}
    ) as client:
        wait_for(f"the API at {base}", lambda: client.get("/api/health/live").is_success, 60)
        yield client
    if started is not None:
        started.terminate()
        started.wait(10)


@pytest.fixture(scope="session")
def dashboard_url(live_stack: Settings, api: httpx.Client) -> Iterator[str]:  # noqa: F811
    """The dashboard through nginx (Panel started for the session if it is not running)."""
    stack = live_stack
    started = None
    if not listening(stack.host, stack.panel_port):
        origins = [
            f"127.0.0.1:{stack.nginx_port}",
            f"localhost:{stack.nginx_port}",
            f"127.0.0.1:{stack.panel_port}",
        ]
        started = _start(
            [
                sys.executable,
                "-m",
                "panel",
                "serve",
                "apps/dashboard.py",
                "--address",
                stack.host,
                "--port",
                str(stack.panel_port),
                *(f"--allow-websocket-origin={o}" for o in origins),
            ],
            SCREENSHOTS.parent / "browser-panel.log",
        )
    url = stack.dashboard_url
    wait_for(
        f"the dashboard at {url}",
        lambda: httpx.get(url, follow_redirects=True, timeout=10).is_success,
        90,
    )
    yield url
    if started is not None:
        started.terminate()
        started.wait(10)


@pytest.fixture(scope="session")
def live_replay(api: httpx.Client) -> Iterator[dict[str, Any]]:
    """A running replay (started for the session, 2 satellites at 1 Hz, when none is)."""
    state = api.get("/api/replay").json()
    started = False
    if not state["live"] or (state["state"] or {}).get("state") not in ("running", "paused"):
        answer = api.post("/api/replay/start", json={"satellites": 2, "speed": 1.0})
        assert answer.status_code == 202, answer.text
        started = True
    state = wait_for(
        "the simulator to publish its state",
        lambda: (s := api.get("/api/replay").json())["live"] and s,
        90,
    )
    if state["state"]["state"] == "paused":
        api.post("/api/replay/resume", params={"wait": "true"})
    yield state
    if started:
        api.post("/api/replay/stop")


@pytest.fixture
def alarm(live_stack: Settings) -> Iterator[int]:  # noqa: F811
    """One open anomaly event of a satellite no replay uses; deleted afterwards."""
    import psycopg

    satellite = f"sat{900_000_000 + os.getpid() % 99_999_999}"
    with psycopg.connect(live_stack.postgres_dsn) as conn:
        event_id = conn.execute(
            "INSERT INTO anomaly_events (satellite_id, subsystem, model_name, loop,"
            " start_record_index, end_record_index, start_time, end_time, peak_score,"
            " threshold, top_features) VALUES (%s, 'ACS', 'SMAP_A-1', 1, 100, 140,"
            " now() - interval '2 minutes', now() - interval '80 seconds', 0.9, 0.2,"
            " '[0, 4, 9]') RETURNING event_id",
            (satellite,),
        ).fetchone()[0]
    yield int(event_id)
    with psycopg.connect(live_stack.postgres_dsn) as conn:
        conn.execute("DELETE FROM anomaly_events WHERE event_id = %s", (event_id,))
