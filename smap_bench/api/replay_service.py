"""Replay control behind the API: the simulators' latest state, and starting a replay.

Commands (pause, resume, seek, speed, stop) go to the simulators over the control topic
through :class:`smap_bench.simulation.SimulatorControl`. Their state comes back on the
status topic every second; :class:`ReplayMonitor` follows that topic in a background
thread, so reading the replay state costs a dictionary lookup rather than a Kafka round
trip per request. Starting a replay starts a simulator process
(:class:`SubprocessLauncher`; a deployment may plug in another launcher).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pydantic import ValidationError

from smap_bench.config import PROJECT_ROOT, Settings
from smap_bench.simulation import SimulatorState

log = logging.getLogger(__name__)

#: A state older than this (wall clock) means the simulator is gone.
FRESH_S = 10.0


class ReplayMonitor:
    """Follows the status topic; the latest state of each simulator, by id."""

    def __init__(self, settings: Settings, fresh_s: float = FRESH_S) -> None:
        self.settings = settings
        self.fresh_s = fresh_s
        self._states: dict[str, SimulatorState] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="replay-monitor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # A daemon thread: it may still sit in a metadata request when Kafka is down.
            self._thread.join(timeout=1.0)

    # -- reading ----------------------------------------------------------------------
    def latest(self, simulator_id: str, now: float | None = None) -> SimulatorState | None:
        """The simulator's last state if it is fresh (published within ``fresh_s``)."""
        now = time.time() if now is None else now
        with self._lock:
            state = self._states.get(simulator_id)
        if state is None or now - state.published_at > self.fresh_s:
            return None
        return state

    def wait_for(
        self,
        simulator_id: str,
        predicate: Callable[[SimulatorState], bool],
        since: float,
        timeout_s: float,
    ) -> SimulatorState | None:
        """The first state published at or after ``since`` that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                state = self._states.get(simulator_id)
                if state is not None and state.published_at >= since and predicate(state):
                    return state
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def record(self, state: SimulatorState) -> None:
        """Keep ``state`` if it is newer than what is known of its simulator."""
        with self._changed:
            known = self._states.get(state.simulator_id)
            if known is None or state.published_at >= known.published_at:
                self._states[state.simulator_id] = state
                self._changed.notify_all()

    # -- the thread -------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as exc:
                self.error = f"status topic {self.settings.topic_status}: {exc}"
                log.warning("replay monitor: %s; retrying", self.error)
                self._stop.wait(2.0)

    def _follow(self) -> None:
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        from smap_bench.kafka import consumer_config

        topic = self.settings.topic_status
        consumer = Consumer(
            consumer_config(self.settings, f"api-replay-monitor-{uuid.uuid4().hex[:12]}")
        )
        try:
            metadata = consumer.list_topics(topic, timeout=2).topics.get(topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                raise RuntimeError("topic missing (`smap-bench up` creates it)")
            since_ms = int((time.time() - self.fresh_s) * 1000)
            wanted = [TopicPartition(topic, p, since_ms) for p in metadata.partitions]
            offsets = consumer.offsets_for_times(wanted, timeout=5)
            consumer.assign(
                [
                    TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                    for tp in offsets
                ]
            )
            self.error = None
            while not self._stop.is_set():
                for message in consumer.consume(100, timeout=0.2):
                    if message.error() is not None:
                        continue
                    try:
                        self.record(SimulatorState.model_validate_json(message.value() or b""))
                    except ValidationError:
                        continue
        finally:
            consumer.close()


# --------------------------------------------------------------------------- starting


@dataclass(frozen=True)
class ReplayRequest:
    """What to replay: which split, how many satellites, how fast, how many passes."""

    simulator_id: str
    split: Literal["test", "train"]
    satellites: int
    speed: float | Literal["max"]
    loops: int
    limit: int

    def argv(self) -> list[str]:
        """The simulator's command line (``python -m pipeline.simulator ...``)."""
        return [
            sys.executable,
            "-m",
            "pipeline.simulator",
            f"--simulator-id={self.simulator_id}",
            f"--split={self.split}",
            f"--satellites={self.satellites}",
            f"--speed={self.speed}",
            f"--loops={self.loops}",
            f"--limit={self.limit}",
            "--metrics-port=0",
        ]


class ReplayLauncher(Protocol):
    def start(self, request: ReplayRequest) -> str:
        """Start a simulator for ``request``; returns where its log goes."""
        ...


#: Settings a launched simulator must share with the API (as ``SMAP_*`` variables).
SHARED_SETTINGS = (
    "kafka_bootstrap",
    "topic_raw",
    "topic_control",
    "topic_status",
    "topic_dead_letter",
    "data_dir",
    "run_dir",
)


def simulator_env(settings: Settings, base: dict[str, str]) -> dict[str, str]:
    """``base`` plus the settings the simulator must share with this API, so that a
    simulator started for an API built with explicit settings talks to the same topics."""
    env = dict(base)
    for name in SHARED_SETTINGS:
        value = getattr(settings, name)
        if value is not None:
            env[f"SMAP_{name.upper()}"] = str(value)
    return env


class SubprocessLauncher:
    """Starts a simulator as a process of its own session (it outlives an API restart),
    logging to ``<run_dir>/logs/replay-<simulator_id>.log``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._children: list[subprocess.Popen[bytes]] = []

    def start(self, request: ReplayRequest) -> str:
        self._children = [c for c in self._children if c.poll() is None]  # reap the finished
        log_path = Path(self.settings.run_dir) / "logs" / f"replay-{request.simulator_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            child = subprocess.Popen(
                request.argv(),
                cwd=PROJECT_ROOT,
                env=simulator_env(self.settings, dict(os.environ)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._children.append(child)
        log.info("started simulator %s (pid %d): %s", request.simulator_id, child.pid, log_path)
        return str(log_path)
