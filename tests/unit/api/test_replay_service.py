"""Replay control helpers: the state follower's bookkeeping, the simulator command line."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from smap_bench.api.replay_service import ReplayMonitor, ReplayRequest, simulator_env
from smap_bench.config import Settings
from smap_bench.simulation import SimulatorState


def state(simulator_id: str = "sim", published_at: float = 100.0, **changes: Any) -> SimulatorState:
    fields: dict[str, Any] = {
        "simulator_id": simulator_id,
        "published_at": published_at,
        "started_at": 50.0,
        "state": "running",
        "speed": 1.0,
        "period_s": 1.0,
        "split": "test",
        "satellites": 1,
        "loops": 0,
        "produced": 10,
        "rejected": 0,
        "loop_min": 0,
        "loop_max": 0,
        "record_index_min": 10,
        "record_index_max": 10,
        "positions": {},
    }
    return SimulatorState(**(fields | changes))


def test_latest_keeps_the_newest_state_and_forgets_stale_ones() -> None:
    monitor = ReplayMonitor(Settings(), fresh_s=10)
    monitor.record(state(published_at=100, produced=10))
    monitor.record(state(published_at=99, produced=5))  # late arrival: older, ignored
    latest = monitor.latest("sim", now=105)
    assert latest is not None and latest.produced == 10
    assert monitor.latest("sim", now=111) is None
    assert monitor.latest("other", now=100) is None


def test_wait_for_returns_a_matching_state_published_after_since() -> None:
    monitor = ReplayMonitor(Settings())
    now = time.time()
    monitor.record(state(published_at=now - 1, state="paused"))

    def publish_later() -> None:
        time.sleep(0.2)
        monitor.record(state(published_at=now + 0.1, state="paused"))

    threading.Thread(target=publish_later).start()
    found = monitor.wait_for("sim", lambda s: s.state == "paused", since=now, timeout_s=5)
    assert found is not None and found.published_at == now + 0.1


def test_wait_for_gives_up_after_its_timeout() -> None:
    monitor = ReplayMonitor(Settings())
    started = time.monotonic()
    assert monitor.wait_for("sim", lambda s: True, since=0, timeout_s=0.2) is None
    assert 0.15 < time.monotonic() - started < 2


def test_the_simulator_command_line() -> None:
    request = ReplayRequest("sim-2", "train", satellites=3, speed="max", loops=1, limit=50)
    argv = request.argv()
    assert argv[1:3] == ["-m", "pipeline.simulator"]
    assert argv[3:] == [
        "--simulator-id=sim-2",
        "--split=train",
        "--satellites=3",
        "--speed=max",
        "--loops=1",
        "--limit=50",
        "--metrics-port=0",
    ]


def test_a_launched_simulator_shares_the_apis_topics(tmp_path: Path) -> None:
    settings = Settings(topic_control="c1", topic_status="s1", topic_raw="r1", run_dir=tmp_path)
    env = simulator_env(settings, {"PATH": "/bin", "SMAP_TOPIC_RAW": "stale"})
    assert env["PATH"] == "/bin"
    assert (env["SMAP_TOPIC_CONTROL"], env["SMAP_TOPIC_STATUS"], env["SMAP_TOPIC_RAW"]) == (
        "c1",
        "s1",
        "r1",
    )
    assert env["SMAP_RUN_DIR"] == str(tmp_path)
