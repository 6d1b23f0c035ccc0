"""The simulator and the router as real processes on the live Kafka.

Each test works on its own topics (raw, subsystem, dead-letter, control, status: names
with a unique prefix, passed to the processes through SMAP_* settings), so the running
pipeline neither sees nor disturbs them; the topics are deleted at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Producer

from smap_bench.catalog import SUBSYSTEMS, satellite_ids
from smap_bench.config import PROJECT_ROOT, Settings
from smap_bench.kafka import TopicSpec, admin_client, consumer_config, ensure_topics
from smap_bench.routing import (
    MALFORMED_JSON,
    MISSING_SUBSYSTEM,
    NON_FINITE,
    UNKNOWN_SATELLITE,
    WRONG_FEATURE_COUNT,
)
from smap_bench.schema import SubsystemRecord, TelemetryMessage, decode
from smap_bench.simulation import SimulatorControl, SimulatorState
from smap_bench.windows import Rejection

pytestmark = pytest.mark.integration

SATELLITES = 2
REPLAY_RECORDS = 30


@dataclass
class Isolated:
    settings: Settings
    env: dict[str, str]
    prefix: str

    def topics(self) -> list[str]:
        s = self.settings
        subsystem_topics = [
            s.subsystem_topic(sub.value, sat)
            for sat in satellite_ids(SATELLITES)
            for sub in SUBSYSTEMS
        ]
        return [
            s.topic_raw,
            s.topic_dead_letter,
            s.topic_control,
            s.topic_status,
            *subsystem_topics,
        ]


@pytest.fixture
def isolated(live_stack: Settings) -> Iterator[Isolated]:
    prefix = f"simrouter-{uuid.uuid4().hex[:8]}"
    values = {
        "topic_raw": f"{prefix}-raw",
        "topic_dead_letter": f"{prefix}-dead-letter",
        "topic_control": f"{prefix}-control",
        "topic_status": f"{prefix}-status",
        "topic_subsystem_template": prefix + ".{subsystem}.{satellite_id}",
        "satellites": SATELLITES,
    }
    settings = live_stack.model_copy(update=values)
    env = {**os.environ, **{f"SMAP_{k.upper()}": str(v) for k, v in values.items()}}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    iso = Isolated(settings, env, prefix)
    specs = [TopicSpec(t) for t in iso.topics()]
    specs[0] = TopicSpec(settings.topic_raw, 2)
    ensure_topics(settings, specs)
    try:
        yield iso
    finally:
        admin = admin_client(settings)  # kept alive until the deletions are done
        futures = admin.delete_topics(iso.topics(), operation_timeout=10)
        for future in futures.values():
            with contextlib.suppress(Exception):  # a topic never created: nothing to delete
                future.result(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(module: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop_process(process: subprocess.Popen[str], timeout: float = 15.0) -> tuple[int, str]:
    """SIGTERM, wait; returns (exit code, output). Kills it if it does not stop."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        return -9, output
    return process.returncode, output


def wait_until(condition: Callable[[], Any], timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def counters(port: int) -> dict[str, float]:
    """The stage's counters from its metrics endpoint (rejected summed over reasons)."""
    found: dict[str, float] = dict.fromkeys(("received", "produced", "rejected"), 0.0)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    for line in text.splitlines():
        for name in ("received", "produced", "rejected"):
            if line.startswith(f"smap_stage_{name}_total"):
                found[name] += float(line.rsplit(" ", 1)[1])
    return dict(found)


class Reader:
    """Consumes topics with a fresh group, keeping every message."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        group = f"it-reader-{uuid.uuid4().hex[:8]}"
        self.consumer = Consumer(consumer_config(settings, group))
        self.consumer.subscribe(topics)
        self.messages: list[Any] = []

    def read_until(self, done: Callable[[list[Any]], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.messages):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what} "
                    f"({len(self.messages)} messages read)"
                )
            for message in self.consumer.consume(500, timeout=0.5):
                if message.error() is None:
                    self.messages.append(message)

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for message in self.consumer.consume(500, timeout=0.2):
                if message.error() is None:
                    self.messages.append(message)

    def close(self) -> None:
        self.consumer.close()


def telemetry(satellite: str, loop: int, record_index: int) -> dict[str, Any]:
    return {
        "satellite_id": satellite,
        "timestamp": "2025-11-12T10:00:00+00:00",
        "loop": loop,
        "record_index": record_index,
        "subsystems": {
            s.value: {"code": s.code, "features": [0.5] * 25, "num_features": 25}
            for s in SUBSYSTEMS
        },
    }


def bad_inputs() -> list[tuple[bytes, bytes, set[str], str | None]]:
    """(key, value, subsystems routed, reason kind) for one of each kind, in send order."""
    everything = {s.value for s in SUBSYSTEMS}
    cases: list[tuple[bytes, bytes, set[str], str | None]] = []

    def add(msg: dict[str, Any] | bytes, routed: set[str], kind: str | None) -> None:
        value = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
        key = b"sat999" if b'"sat999"' in value else b"sat1"
        cases.append((key, value, routed, kind))

    add(b'{"satellite_id": "sat1", "loop": ', set(), MALFORMED_JSON)
    missing = telemetry("sat1", 5, 0)
    del missing["subsystems"]["TCS"]
    add(missing, everything - {"TCS"}, MISSING_SUBSYSTEM)
    short = telemetry("sat1", 5, 1)
    short["subsystems"]["ACS"]["features"] = [0.5] * 24
    add(short, everything - {"ACS"}, WRONG_FEATURE_COUNT)
    with_nan = telemetry("sat1", 5, 2)
    with_nan["subsystems"]["EPS"]["features"][10] = 12345.5
    nan = json.dumps(with_nan).replace("12345.5", "NaN").encode()  # a JSON NaN literal
    add(nan, {"ACS", "Data", "FSW", "PS", "SS", "TCS"}, NON_FINITE)
    add(telemetry("sat999", 5, 0), set(), UNKNOWN_SATELLITE)
    add(telemetry("sat1", 5, 3), everything, None)
    add(telemetry("sat1", 5, 3), set(), Rejection.DUPLICATE.value)
    add(telemetry("sat1", 5, 5), everything, None)
    add(telemetry("sat1", 5, 4), set(), Rejection.OUT_OF_ORDER.value)
    add(telemetry("sat1", 4, 0), set(), Rejection.STALE_LOOP.value)
    return cases


def test_replay_and_bad_input_through_the_router(isolated: Isolated) -> None:
    settings, env = isolated.settings, isolated.env
    port = free_port()
    router = start(
        "pipeline.router",
        ["--group", f"{isolated.prefix}-router", "--metrics-port", str(port), "--no-db"],
        env,
    )
    outputs = [t for t in isolated.topics() if t.startswith(f"{isolated.prefix}.")]
    reader = Reader(settings, [*outputs, settings.topic_dead_letter])
    try:
        simulator = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.simulator",
                "--satellites",
                str(SATELLITES),
                "--loops",
                "1",
                "--limit",
                str(REPLAY_RECORDS),
                "--speed",
                "max",
                "--first-loop",
                "0",
                "--metrics-port",
                "0",
                "--simulator-id",
                f"{isolated.prefix}-sim",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert simulator.returncode == 0, simulator.stdout + simulator.stderr

        cases = bad_inputs()
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
        for key, value, _, _ in cases:
            producer.produce(settings.topic_raw, key=key, value=value)
        assert producer.flush(10) == 0

        expected: Counter[tuple[str, str]] = Counter()
        for sat in satellite_ids(SATELLITES):
            for sub in SUBSYSTEMS:
                expected[(sub.value, sat)] = REPLAY_RECORDS
        for _, _, routed, _ in cases:
            for name in routed:
                expected[(name, "sat1")] += 1
        expected_kinds = Counter(kind for _, _, _, kind in cases if kind is not None)
        total = sum(expected.values()) + sum(expected_kinds.values())

        with contextlib.suppress(AssertionError):  # the counts below say what is missing
            reader.read_until(lambda got: len(got) >= total, 40, f"{total} messages")
        reader.drain(1.0)  # anything beyond the expected would show in the counts below
        records: dict[tuple[str, str], list[SubsystemRecord]] = {}
        dead: list[Any] = []
        for message in reader.messages:
            if message.topic() == settings.topic_dead_letter:
                dead.append(message)
                continue
            record = decode(SubsystemRecord, message.value())
            assert message.topic() == settings.subsystem_topic(
                record.subsystem.value, record.satellite_id
            )
            assert message.key() == record.satellite_id.encode()
            records.setdefault((record.subsystem.value, record.satellite_id), []).append(record)

        assert Counter({k: len(v) for k, v in records.items()}) == expected
        for stream in records.values():
            replayed = [r for r in stream if r.loop == 0]
            assert [r.record_index for r in replayed] == list(range(REPLAY_RECORDS))
            assert all(r.channel and r.channel[0] == r.code for r in replayed)
            assert all(set(r.stages or {}) == {"simulator", "router"} for r in replayed)
            assert all(r.stages["router"] >= r.stages["simulator"] for r in replayed)  # type: ignore[index]

        headers = [dict(m.headers() or []) for m in dead]
        kinds = Counter(h["reason"].decode().split(":", 1)[0] for h in headers)
        assert kinds == expected_kinds
        assert {h["stage"] for h in headers} == {b"router"}
        assert {h["source_topic"] for h in headers} == {settings.topic_raw.encode()}

        wanted = {
            "received": SATELLITES * REPLAY_RECORDS + len(cases),
            "produced": sum(expected.values()),
            "rejected": sum(expected_kinds.values()),
        }
        wait_until(lambda: counters(port) == wanted, 10, f"router counters {wanted}")
    finally:
        reader.close()
        code, output = stop_process(router)
    assert code == 0, output
    assert "router: received" in output


def test_simulator_obeys_control_commands(isolated: Isolated) -> None:
    settings, env = isolated.settings, isolated.env
    simulator_id = f"{isolated.prefix}-sim"
    process = start(
        "pipeline.simulator",
        [
            "--satellites",
            "1",
            "--rate-hz",
            "20",
            "--loops",
            "0",
            "--first-loop",
            "0",
            "--metrics-port",
            "0",
            "--simulator-id",
            simulator_id,
        ],
        env,
    )
    control = SimulatorControl(settings, simulator_id)
    try:
        running = control.wait_for(lambda s: s.state == "running" and s.produced > 0, 30)
        assert running.split == "test" and running.satellites == 1

        control.pause()
        paused = control.wait_for(lambda s: s.paused, 10)
        later = control.wait_for(lambda s: s.published_at > paused.published_at + 1.0, 10)
        assert later.paused and later.produced == paused.produced

        control.seek(100)
        sought = control.wait_for(lambda s: s.positions["sat1"].loop == 1, 10)
        assert sought.positions["sat1"].record_index == 100

        control.set_speed(2.0)
        assert control.wait_for(lambda s: s.speed == 2.0, 10).paused

        bad = Producer({"bootstrap.servers": settings.kafka_bootstrap})
        bad.produce(settings.topic_control, value=b'{"command": "explode"}')
        assert bad.flush(10) == 0

        control.resume()
        resumed = control.wait_for(
            lambda s: s.state == "running" and s.produced > later.produced, 10
        )
        assert resumed.rejected == 1

        reader = Reader(settings, [settings.topic_raw, settings.topic_dead_letter])
        try:
            reader.read_until(
                lambda got: (
                    any(m.topic() == settings.topic_raw and b'"loop":1,' in m.value() for m in got)
                    and any(m.topic() == settings.topic_dead_letter for m in got)
                ),
                20,
                "a record of loop 1 and the refused command",
            )
            raw = [
                decode(TelemetryMessage, m.value())
                for m in reader.messages
                if m.topic() == settings.topic_raw
            ]
            (refused,) = [m for m in reader.messages if m.topic() == settings.topic_dead_letter]
        finally:
            reader.close()
        first_loop = [m.record_index for m in raw if m.loop == 0]
        assert first_loop == list(range(len(first_loop)))
        assert next(m.record_index for m in raw if m.loop == 1) == 100
        assert dict(refused.headers())["reason"].startswith(b"invalid command")

        control.stop()
        process.wait(15)
        final = control.latest_state(within_s=10)
        assert isinstance(final, SimulatorState) and final.state == "stopped"
    finally:
        control.close()
        code, output = stop_process(process)
    assert code == 0, output
