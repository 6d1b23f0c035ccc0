"""The metrics writer and the events stage as real processes on the live stack.

Each test uses its own topics, consumer groups and satellite id (passed to the processes
through SMAP_* settings), so the running pipeline neither sees nor disturbs them; the
topics, the test's series in VictoriaMetrics and its rows in PostgreSQL are removed at
the end. The outage test runs its own VictoriaMetrics on a free port, so the shared one
is never stopped.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import psycopg
import pytest
from confluent_kafka import Consumer, Producer

from smap_bench.anomaly_events import InMemoryEvents, span_of
from smap_bench.catalog import Subsystem
from smap_bench.config import PROJECT_ROOT, Settings
from smap_bench.event_store import EventStore
from smap_bench.kafka import TopicSpec, admin_client, consumer_config, ensure_topics
from smap_bench.metrics import Series, VictoriaMetrics
from smap_bench.model.repository import read_metadata
from smap_bench.model.stream_rule import confirmed_flags, stream_rule_from_metadata
from smap_bench.schema import NUM_FEATURES, encode
from tests.unit.result_samples import result, score_of, telemetry

pytestmark = pytest.mark.integration

T = TypeVar("T")


@dataclass
class Isolated:
    settings: Settings
    env: dict[str, str]
    satellite_id: str
    t0: datetime
    logs: Path

    @property
    def topics(self) -> list[str]:
        s = self.settings
        return [s.topic_raw, s.topic_results, s.topic_dead_letter]


@pytest.fixture
def isolated(live_stack: Settings, tmp_path: Path) -> Iterator[Isolated]:
    tag = uuid.uuid4().hex[:8]
    values = {
        "topic_raw": f"it-{tag}-raw",
        "topic_results": f"it-{tag}-results",
        "topic_dead_letter": f"it-{tag}-dead-letter",
    }
    settings = live_stack.model_copy(update=values)
    env = {**os.environ, **{f"SMAP_{k.upper()}": v for k, v in values.items()}}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    # The events stage's event rule: the test's events, 10 records apart, stay two events
    # under a gap of 5 (the unit tests cover joining; the e2e test the default gap).
    env["SMAP_EVENT_GAP"] = "5"
    # Recent whole seconds: inside VictoriaMetrics' retention, never in the future.
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    iso = Isolated(settings, env, f"itw{tag}", t0, tmp_path)
    ensure_topics(
        settings,
        [
            TopicSpec(settings.topic_raw, 2),
            TopicSpec(settings.topic_results, 2),
            TopicSpec(settings.topic_dead_letter),
        ],
    )
    try:
        yield iso
    finally:
        for future in admin_client(settings).delete_topics(iso.topics).values():
            with contextlib.suppress(Exception):  # never created: nothing to delete
                future.result(10)
        with psycopg.connect(settings.postgres_dsn, connect_timeout=5) as conn:
            conn.execute("DELETE FROM anomaly_events WHERE satellite_id = %s", (iso.satellite_id,))
        httpx.post(
            f"{settings.victoria_url}/api/v1/admin/tsdb/delete_series",
            params={"match[]": f'{{satellite_id="{iso.satellite_id}"}}'},
            timeout=10,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """A pipeline module run as ``python -m`` with its output in a log file."""

    def __init__(self, module: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.metrics_port = free_port()
        self._out = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args, "--metrics-port", str(self.metrics_port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text()

    def counter(self, name: str) -> float:
        """A self-metric counter's value (summed over its label sets); 0 before it is served."""
        if self.process.poll() is not None:
            raise AssertionError(f"{self.log.stem} exited:\n{self.output()}")
        try:
            text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return 0.0
        pattern = re.compile(rf"^smap_stage_{name}_total(?:\{{[^}}]*\}})? (\S+)$", re.M)
        return sum(float(v) for v in pattern.findall(text))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._out.close()
        return code


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def produce(settings: Settings, topic: str, messages: list[tuple[str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
    for key, value in messages:
        producer.produce(topic, key=key.encode(), value=value)
    assert producer.flush(15) == 0


def samples_by_time(series: list[Series]) -> dict[float, set[float]]:
    """All values of one series by timestamp (a redelivery may store a sample twice)."""
    (only,) = series
    out: dict[float, set[float]] = {}
    for ts, value in only.samples:
        out.setdefault(ts, set()).add(value)
    return out


def complete(
    victoria: VictoriaMetrics, match: str, n_series: int, n_times: int
) -> list[Series] | None:
    """The series matching ``match`` once there are ``n_series``, each at ``n_times`` times."""
    series = victoria.export(match)
    if len(series) == n_series and all(len({ts for ts, _ in s.samples}) == n_times for s in series):
        return series
    return None


def header_texts(headers: Any) -> dict[str, str]:
    items = headers.items() if isinstance(headers, dict) else headers or []
    return {str(k): v.decode() if isinstance(v, bytes) else str(v or "") for k, v in items}


def dead_letters(settings: Settings, n: int) -> list[dict[str, Any]]:
    consumer = Consumer(consumer_config(settings, f"it-dl-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([settings.topic_dead_letter])
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 30
        while len(found) < n and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            found.append({"value": message.value(), **header_texts(message.headers())})
    finally:
        consumer.close()
    return found


def test_writer_and_events_round_trip(isolated: Isolated) -> None:
    s, sat, t0 = isolated.settings, isolated.satellite_id, isolated.t0
    writer = Service(
        "pipeline.writer",
        ["--group", f"{s.topic_raw}-writer"],
        isolated.env,
        isolated.logs / "writer.log",
    )
    events = Service(
        "pipeline.events",
        ["--group", f"{s.topic_raw}-events"],
        isolated.env,
        isolated.logs / "events.log",
    )
    try:
        records = 40
        produce(
            s,
            s.topic_raw,
            [(sat, encode(telemetry(sat, r, loop=2, t0=t0))) for r in range(records)],
        )
        errors = [0.01] * NUM_FEATURES
        errors[7] = 0.9
        errors[2] = 0.4
        stages = {"simulator": time.time() - 0.3, "router": time.time() - 0.2}
        windows = [
            result(0, satellite_id=sat, loop=2, t0=t0, stages=stages),
            result(10, satellite_id=sat, loop=2, t0=t0, anomalous=True, stages=stages),
            result(20, satellite_id=sat, loop=2, t0=t0, anomalous=True, feature_errors=errors),
            result(30, satellite_id=sat, loop=2, t0=t0),
            result(40, satellite_id=sat, loop=2, t0=t0, anomalous=True, feature_errors=errors),
        ]
        batch = [(sat, encode(w)) for w in windows] + [(sat, b"{broken")]
        produce(s, s.topic_results, batch)

        with VictoriaMetrics(s.victoria_url) as victoria:
            features = wait_for(
                "175 smap_feature series of 40 records",
                lambda: complete(victoria, f'smap_feature{{satellite_id="{sat}"}}', 175, 40),
            )
            eps0 = next(
                x
                for x in features
                if x.labels["subsystem"] == "EPS" and x.labels["feature_index"] == "3"
            )
            first = t0.timestamp()
            assert sorted(eps0.samples)[5] == (first + 5, pytest.approx(5 + 0.2 + 0.003))

            # Window 0 judges records 0..29, every later one its newest ten: 0..69 once each.
            match = f'inference_anomaly_score{{satellite_id="{sat}"}}'
            scores = wait_for(
                "70 records of anomaly scores", lambda: complete(victoria, match, 1, 70)
            )
            assert scores[0].labels == {
                "__name__": "inference_anomaly_score",
                "satellite_id": sat,
                "subsystem": "EPS",
                "model_name": "SMAP_E-1",
            }
            by_time = samples_by_time(scores)
            for r in range(70):
                anomalous = 30 <= r < 50 or 60 <= r < 70
                (value,) = by_time[first + r]
                assert value == pytest.approx(score_of(r) + 10 * anomalous)
            detected = samples_by_time(
                victoria.export(f'inference_anomaly_detected{{satellite_id="{sat}"}}')
            )
            ends = [first + 29 + 10 * k for k in range(len(windows))]
            assert detected == {
                t: {float(w.is_anomaly)} for t, w in zip(ends, windows, strict=True)
            }
            latency = wait_for(
                "writer latency samples",
                lambda: victoria.export(
                    f'smap_e2e_latency_seconds{{satellite_id="{sat}",stage="writer"}}'
                ),
            )
            assert {ts for ts, _ in latency[0].samples} == {first + 29, first + 39}
            assert all(0.3 <= v < 30 for _, v in latency[0].samples)

        store_rows = wait_for("two anomaly events", lambda: event_rows(s, sat, 2))
        assert [(r["loop"], r["start"], r["end"]) for r in store_rows] == [(2, 30, 49), (2, 60, 69)]
        first_event, second_event = store_rows
        assert first_event["start_time"] == t0 + timedelta(seconds=30)
        assert first_event["end_time"] == t0 + timedelta(seconds=49)
        assert first_event["peak"] == pytest.approx(score_of(49) + 10)
        assert [f["feature_index"] for f in second_event["top_features"][:2]] == [7, 2]
        # The first event's errors come from window 20 only (window 10 had none).
        assert first_event["top_features"][0]["mse"] == pytest.approx(0.9)
        assert all(r["history"] == ["open"] for r in store_rows)
        # The events stage writes its decision on every window it decided, normal ones too,
        # on the worker's series labels and timestamps: every flag here stands (these results
        # carry no floor, so no stream rule: counted unconfirmed).
        alarm_match = f'anomaly_alarm{{satellite_id="{sat}"}}'
        with VictoriaMetrics(s.victoria_url) as victoria:
            alarms = wait_for(
                "the events stage's decisions on the 5 windows",
                lambda: complete(victoria, alarm_match, 1, len(windows)),
            )
        assert alarms[0].labels == {
            "__name__": "anomaly_alarm",
            "satellite_id": sat,
            "subsystem": "EPS",
            "model_name": "SMAP_E-1",
        }
        decided = samples_by_time(alarms)
        assert decided == detected
        metrics = httpx.get(f"http://127.0.0.1:{events.metrics_port}/metrics", timeout=2).text
        assert re.search(r"^smap_events_unconfirmed_total 3\.0$", metrics, re.M)  # 10, 20, 40

        reasons = dead_letters(s, 2)
        assert sorted(d["stage"] for d in reasons) == ["events", "writer"]
        assert all(d["value"] == b"{broken" and "JSON" in d["reason"] for d in reasons)

        # Redelivery: the same results again change no event and no score.
        produce(s, s.topic_results, [(sat, encode(w)) for w in windows])
        wait_for(
            "the events stage to read the redelivery", lambda: events.counter("received") >= 11
        )
        wait_for("the writer to read the redelivery", lambda: writer.counter("received") >= 51)
        assert event_rows(s, sat, 2) == store_rows
        with VictoriaMetrics(s.victoria_url) as victoria:
            again = samples_by_time(victoria.export(match))
            alarms_again = samples_by_time(victoria.export(alarm_match))
        assert set(again) == set(by_time) and all(len(v) == 1 for v in again.values())
        assert alarms_again == decided  # the same decisions, one value per window
        assert writer.counter("rejected") == 1 and events.counter("rejected") == 1
    finally:
        codes = {"writer": writer.stop(), "events": events.stop()}
    assert codes == {"writer": 0, "events": 0}, writer.output() + events.output()


def event_rows(settings: Settings, satellite_id: str, n: int) -> list[dict[str, Any]] | None:
    with psycopg.connect(settings.postgres_dsn, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT e.event_id, e.loop, e.start_record_index, e.end_record_index, e.start_time,"
            " e.end_time, e.peak_score, e.top_features, e.subsystem, e.updated_at,"
            " array(SELECT h.to_state FROM alarm_history h WHERE h.event_id = e.event_id"
            "       ORDER BY h.id)"
            " FROM anomaly_events e WHERE e.satellite_id = %s ORDER BY e.start_record_index",
            (satellite_id,),
        ).fetchall()
    out = [
        {
            "id": row[0],
            "loop": row[1],
            "start": row[2],
            "end": row[3],
            "start_time": row[4],
            "end_time": row[5],
            "peak": row[6],
            "top_features": row[7],
            "subsystem": row[8],
            "updated_at": row[9],
            "history": row[10],
        }
        for row in rows
    ]
    return out if len(out) == n else None


class PrivateVictoria:
    """A VictoriaMetrics of the test's own, on a free port, that can be stopped."""

    def __init__(self, data: Path) -> None:
        binary = shutil.which("victoria-metrics")
        if binary is None:
            pytest.fail("victoria-metrics is not on PATH; `make up` installs it")
        self.binary = binary
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={self.data}",
                "-loggerLevel=ERROR",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def healthy() -> bool:
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the private VictoriaMetrics to start", healthy)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def test_writer_holds_its_batch_while_victoria_is_down(isolated: Isolated) -> None:
    s, sat, t0 = isolated.settings, isolated.satellite_id, isolated.t0
    vm = PrivateVictoria(isolated.logs / "vm-data")
    vm.start()
    env = {**isolated.env, "SMAP_VICTORIA_URL": vm.url}
    writer = Service(
        "pipeline.writer", ["--group", f"{s.topic_raw}-writer"], env, isolated.logs / "writer.log"
    )
    one = (Subsystem.TCS,)
    match = f'smap_feature{{satellite_id="{sat}"}}'
    try:
        produce(
            s,
            s.topic_raw,
            [(sat, encode(telemetry(sat, r, t0=t0, subsystems=one))) for r in range(10)],
        )
        with VictoriaMetrics(vm.url) as victoria:
            wait_for("the first 10 records", lambda: complete(victoria, match, NUM_FEATURES, 10))
        vm.stop()
        produce(
            s,
            s.topic_raw,
            [(sat, encode(telemetry(sat, r, t0=t0, subsystems=one))) for r in range(10, 30)],
        )
        wait_for("the writer to retry", lambda: writer.counter("retried") >= 2)
        vm.start()
        with VictoriaMetrics(vm.url) as victoria:
            series = wait_for(
                "all 30 records after the outage",
                lambda: complete(victoria, match, NUM_FEATURES, 30),
            )
        first = t0.timestamp()
        for item in series:
            j = int(item.labels["feature_index"])
            by_time = samples_by_time([item])
            assert sorted(by_time) == [first + r for r in range(30)]
            for r in range(30):
                (value,) = by_time[first + r]
                assert value == pytest.approx(r + j / 1000)
        assert writer.counter("received") == 30 and writer.counter("rejected") == 0
    finally:
        code = writer.stop()
        vm.stop()
    assert code == 0, writer.output()
    assert "retrying" in writer.output()


def test_a_stop_during_an_outage_commits_nothing(isolated: Isolated) -> None:
    """A writer stopped while VictoriaMetrics is down exits without committing, so the
    next writer of the group writes the batch."""
    s, sat, t0 = isolated.settings, isolated.satellite_id, isolated.t0
    vm = PrivateVictoria(isolated.logs / "vm-data")
    vm.start()
    vm.stop()
    env = {**isolated.env, "SMAP_VICTORIA_URL": vm.url}
    group = f"{s.topic_raw}-writer"
    one = (Subsystem.ACS,)
    produce(
        s, s.topic_raw, [(sat, encode(telemetry(sat, r, t0=t0, subsystems=one))) for r in range(5)]
    )
    writer = Service("pipeline.writer", ["--group", group], env, isolated.logs / "writer1.log")
    try:
        wait_for("the writer to retry", lambda: writer.counter("retried") >= 1)
    finally:
        code = writer.stop()
    assert code == 0 and "not committed" in writer.output()
    vm.start()
    second = Service("pipeline.writer", ["--group", group], env, isolated.logs / "writer2.log")
    try:
        with VictoriaMetrics(vm.url) as victoria:
            wait_for(
                "the batch written by the next writer",
                lambda: complete(
                    victoria, f'smap_feature{{satellite_id="{sat}"}}', NUM_FEATURES, 5
                ),
            )
    finally:
        assert second.stop() == 0, second.output()
        vm.stop()


def test_event_store_applies_the_same_rules_as_the_in_memory_table(live_stack: Settings) -> None:
    """Shuffled, redelivered and bridging windows on PostgreSQL end as they do in memory."""
    sat = f"itw{uuid.uuid4().hex[:8]}"
    flags = [True, True, True, False, True, True, True, False, True, True]
    errors = [[float((k + j) % 5) for j in range(NUM_FEATURES)] for k in range(len(flags))]
    spans = [
        span
        for k, flag in enumerate(flags)
        if (
            span := span_of(
                result(
                    k * 10,
                    satellite_id=sat,
                    loop=1,
                    anomalous=flag,
                    feature_errors=errors[k],
                    detected_by=(["hold"] if k == 5 else ["model"]) if flag else [],
                ),
                10,
            )
        )
    ]
    expected = InMemoryEvents()
    for span in spans:
        expected.apply(span)
    # Windows 10 and 50 arrive last, each bridging two events already stored.
    late = [spans[1], spans[4]]
    early = [x for x in spans if x not in late]
    try:
        with EventStore(live_stack.postgres_dsn, actor="it-events") as store:
            first = store.apply(early)
            assert (first.created, first.extended) == (5, 1)
            second = store.apply(late)
            assert (second.extended, second.merged) == (2, 2)
            again = store.apply(spans)
            assert again.unchanged == len(spans) and again.changed == 0
            # a redelivered window judged anomalous by the context too adds its detector
            wider = replace(spans[-1], detected_by=frozenset({"model", "context"}))
            assert store.apply([wider]).extended == 1
            expected.apply(wider)
            stored = store.events(sat)
        want = expected.stream_events(sat, "EPS")
        ranges = [(e.start_record_index, e.end_record_index) for e in stored]
        assert ranges == [(e.start_record_index, e.end_record_index) for e in want]
        assert ranges == [(0, 49), (60, 89), (100, 119)]
        for got, exp in zip(stored, want, strict=True):
            assert got.peak_score == pytest.approx(exp.peak_score)
            assert got.start_time == exp.start_time and got.end_time == exp.end_time
            assert got.feature_errors == pytest.approx(exp.feature_errors)
            assert got.detected_by == exp.detected_by
        assert [e.detected_by for e in stored] == [
            {"model"},
            {"model", "hold"},
            {"model", "context"},
        ]
        with psycopg.connect(live_stack.postgres_dsn, connect_timeout=5) as conn:
            (order,) = conn.execute(
                "SELECT detected_by FROM anomaly_events WHERE satellite_id = %s"
                " ORDER BY start_record_index DESC LIMIT 1",
                (sat,),
            ).fetchone() or (None,)
        assert order == ["model", "context"]  # stored in DETECTORS order
        with psycopg.connect(live_stack.postgres_dsn, connect_timeout=5) as conn:
            history = conn.execute(
                "SELECT h.event_id, h.to_state, h.comment FROM alarm_history h"
                " JOIN anomaly_events e USING (event_id) WHERE e.satellite_id = %s"
                " ORDER BY h.id",
                (sat,),
            ).fetchall()
        opened = [row for row in history if row[2].startswith("opened")]
        merged = [row for row in history if row[2].startswith("merged")]
        assert {row[0] for row in opened} == {e.event_id for e in stored}
        assert len(merged) == 2 and all(row[1] == "open" for row in history)
    finally:
        with psycopg.connect(live_stack.postgres_dsn, connect_timeout=5) as conn:
            conn.execute("DELETE FROM anomaly_events WHERE satellite_id = %s", (sat,))


def test_events_confirm_flagged_windows_in_order_across_a_restart(isolated: Isolated) -> None:
    """A stream whose scores rise into a new regime: every raised window is flagged by
    the workers, and the events stage keeps only those the stream rule confirms, as the
    offline evaluation does, with results out of order and the stage restarted midway
    (it reads the history back from the topic)."""
    s, sat, t0 = isolated.settings, isolated.satellite_id, isolated.t0
    rule = stream_rule_from_metadata("SMAP_E-1", read_metadata(s.model_repository, "E-1"))
    rng = random.Random(7)
    n = 400
    stats = [rule.floor * (0.5 + 0.05 * rng.random()) for _ in range(n)]
    for i in range(200, n):  # the raised regime: above the static threshold throughout
        stats[i] = rule.static * (3.0 + 0.1 * rng.random())
    for i in (252, 260, 330):  # excursions that stand out against it (252: at the restart)
        stats[i] = rule.static * 9.0
    expected = confirmed_flags(np.asarray(stats), rule)
    assert 0 < expected.sum() < (np.asarray(stats) > rule.static).sum() / 2
    assert expected[252]

    def window(i: int) -> tuple[str, bytes]:
        flagged = stats[i] > rule.static
        body = result(
            10 * i,
            satellite_id=sat,
            t0=t0,
            anomalous=flagged,
            scores=[stats[i]] * 30,
            detected_by=["model"] if flagged else [],
            threshold=rule.static,
            stream_floor=rule.floor,  # the rule the worker flagged by, carried
        )
        return sat, encode(body)

    order = list(range(n))
    for start in range(0, n, 8):  # results overtake each other within eight windows
        block = order[start : start + 8]
        rng.shuffle(block)
        order[start : start + 8] = block
    args = ["--group", f"{s.topic_results}-events"]
    events = Service("pipeline.events", args, isolated.env, isolated.logs / "events-1.log")
    try:
        produce(s, s.topic_results, [window(i) for i in order[:250]])
        wait_for("250 results taken in", lambda: events.counter("received") >= 250)
        time.sleep(1.0)  # the last batch applied and committed
    finally:
        assert events.stop() == 0
    events = Service("pipeline.events", args, isolated.env, isolated.logs / "events-2.log")
    try:
        produce(s, s.topic_results, [window(i) for i in order[250:]])
        wait_for("150 more taken in", lambda: events.counter("received") >= 150)
        book = InMemoryEvents(gap=5)
        for i in np.flatnonzero(expected):
            body = result(10 * int(i), satellite_id=sat, t0=t0, anomalous=True)
            span = span_of(body, 10)
            assert span is not None
            book.apply(span)
        want = [(e.start_record_index, e.end_record_index) for e in book.stream_events(sat, "EPS")]
        rows = wait_for(
            f"{len(want)} confirmed events", lambda: event_rows(s, sat, len(want)), timeout=60
        )
        assert [(r["start"], r["end"]) for r in rows] == want
        # Every window's served decision in VictoriaMetrics: the confirmed flags, not the
        # workers' (most raised windows were flagged, few confirmed), across the restart.
        first = t0.timestamp()
        ends = {i: first + 10 * i + 29 for i in range(n)}  # the last ones after now
        alarm_match = f'anomaly_alarm{{satellite_id="{sat}"}}'
        with VictoriaMetrics(s.victoria_url) as victoria:

            def all_decisions() -> list[Series] | None:
                found = victoria.export(alarm_match, start=first, end=ends[n - 1] + 1)
                return found if found and len(found[0].samples) >= n else None

            alarms = wait_for(f"the decisions on all {n} windows", all_decisions, timeout=60)
        assert samples_by_time(alarms) == {ends[i]: {float(expected[i])} for i in range(n)}
        metrics = httpx.get(f"http://127.0.0.1:{events.metrics_port}/metrics", timeout=2).text
        assert re.search(r"^smap_events_confirmation_incomplete_total 0\.0$", metrics, re.M)
        assert re.search(r"^smap_events_confirmation_waiting 0\.0$", metrics, re.M)
        read_back = re.search(r"(\d+) results read back as history", events.output())
        assert read_back and int(read_back.group(1)) >= 210
    finally:
        assert events.stop() == 0


def test_a_flag_whose_history_window_never_comes_is_decided_once_patience_runs_out(
    isolated: Isolated,
) -> None:
    """Liveness, in the real stage: a history window dead-lettered upstream never reaches
    the events stage, and its flagged successor is judged on what came once its patience
    (10 s) ran out, counted as judged on an incomplete history."""
    s, sat, t0 = isolated.settings, isolated.satellite_id, isolated.t0
    rule = stream_rule_from_metadata("SMAP_E-1", read_metadata(s.model_repository, "E-1"))
    flagged_at, missing = 5, 3

    def window(i: int) -> tuple[str, bytes]:
        flagged = i == flagged_at
        statistic = rule.static * 2.0 if flagged else rule.floor * 0.5
        body = result(
            10 * i,
            satellite_id=sat,
            t0=t0,
            anomalous=flagged,
            scores=[statistic] * 30,
            detected_by=["model"] if flagged else [],
            threshold=rule.static,
            stream_floor=rule.floor,
        )
        return sat, encode(body)

    args = ["--group", f"{s.topic_results}-events"]
    events = Service("pipeline.events", args, isolated.env, isolated.logs / "events.log")
    try:
        started = time.monotonic()
        produce(s, s.topic_results, [window(i) for i in range(flagged_at + 1) if i != missing])
        wait_for("5 results taken in", lambda: events.counter("received") >= flagged_at)
        rows = wait_for("the flagged window's event", lambda: event_rows(s, sat, 1), timeout=40)
        waited = time.monotonic() - started
        # under min_history the static threshold decides: the window is an alarm
        span = span_of(result(10 * flagged_at, satellite_id=sat, t0=t0, anomalous=True), 10)
        assert span is not None
        assert [(r["start"], r["end"]) for r in rows] == [
            (span.start_record_index, span.end_record_index)
        ]
        assert 10.0 <= waited < 40.0  # it waited out its patience for window 3
        metrics = httpx.get(f"http://127.0.0.1:{events.metrics_port}/metrics", timeout=2).text
        assert re.search(r"^smap_events_confirmation_incomplete_total 1\.0$", metrics, re.M)
        assert re.search(r"^smap_events_confirmation_waiting 0\.0$", metrics, re.M)
    finally:
        assert events.stop() == 0
