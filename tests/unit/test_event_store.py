"""The events stage's batch handler, with the store replaced by the in-memory event table."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import psycopg
import pytest

from smap_bench.anomaly_events import InMemoryEvents, WindowSpan
from smap_bench.confirmation import Confirmer, ResultConfirmation
from smap_bench.event_store import ApplyCounts, EventsHandler, retryable_db_error
from smap_bench.metrics import timestamp_ms
from smap_bench.model.stream_rule import StreamRule
from smap_bench.schema import NUM_FEATURES, encode
from smap_bench.stage import StageMetrics
from smap_bench.writing import Stopped
from tests.unit.result_samples import FakeDeadLetter, FakeMessage, result

TOPIC = "results-topic"


class MemoryStore:
    """Applies spans to :class:`InMemoryEvents`, failing the first ``failures`` calls."""

    def __init__(self, failures: int = 0) -> None:
        self.book = InMemoryEvents()
        self.failures = failures
        self.calls: list[list[WindowSpan]] = []

    def apply(self, spans: list[WindowSpan]) -> ApplyCounts:
        self.calls.append(list(spans))
        if self.failures:
            self.failures -= 1
            raise psycopg.OperationalError("connection refused")
        counts = ApplyCounts()
        for span in sorted(spans, key=lambda s: (*s.stream, s.start_record_index)):
            change = self.book.apply(span)
            if change is None:
                counts.unchanged += 1
            elif change.creates:
                counts.created += 1
            else:
                counts.extended += 1
                counts.merged += len(change.absorbed)
        return counts


def make_handler(store: MemoryStore, **kwargs: Any) -> tuple[EventsHandler, FakeDeadLetter]:
    metrics = StageMetrics("events")
    dead = FakeDeadLetter(metrics)
    kwargs.setdefault("sleep", lambda s: None)
    return EventsHandler(store.apply, metrics, dead, stride=10, **kwargs), dead


def msg(start: int, **kwargs: Any) -> FakeMessage:
    return FakeMessage(TOPIC, encode(result(start, **kwargs)))


def test_anomalous_windows_become_events_and_normal_ones_are_only_counted() -> None:
    store = MemoryStore()
    handler, dead = make_handler(store)
    handler.handle([msg(0), msg(10, anomalous=True), msg(20, anomalous=True), msg(30)])
    handler.handle([msg(40, anomalous=True), msg(50)])
    events = store.book.stream_events("sat1", "EPS")
    assert [(e.start_record_index, e.end_record_index) for e in events] == [(30, 49), (60, 69)]
    assert handler.metrics.counts == {
        "received": 6,
        "produced": 3,
        "rejected": 0,
        "retried": 0,
        "lost": 0,
    }
    assert (handler.totals.created, handler.totals.extended) == (2, 1)
    assert dead.sent == []
    handler.handle([msg(0)])  # no anomalous window: the store is not called
    assert len(store.calls) == 2


def test_a_redelivered_batch_changes_nothing() -> None:
    store = MemoryStore()
    handler, _ = make_handler(store)
    batch = [msg(10, anomalous=True), msg(20, anomalous=True), msg(40, anomalous=True)]
    handler.handle(batch)
    before = dict(store.book.events)
    handler.handle(batch)
    assert store.book.events == before
    assert handler.totals.unchanged == 3
    assert handler.metrics.counts["produced"] == 3  # 2 created + 1 extended, then nothing


def test_bad_results_go_to_the_dead_letter_topic() -> None:
    store = MemoryStore()
    handler, dead = make_handler(store)
    bad_errors = json.loads(encode(result(20, anomalous=True)))
    bad_errors["feature_errors"] = [1.0] * (NUM_FEATURES - 1)
    handler.handle(
        [
            FakeMessage(TOPIC, b"[]"),
            FakeMessage(TOPIC, None),
            msg(10, anomalous=True, threshold=None),
            msg(10, anomalous=True, with_position=False),
            FakeMessage(TOPIC, json.dumps(bad_errors).encode()),
            msg(30, anomalous=True),
        ]
    )
    reasons = [reason for _, reason in dead.sent]
    assert len(reasons) == 5
    assert "no threshold" in reasons[2]
    assert "no loop/record_index_start" in reasons[3]
    assert "feature_errors must be a list of 25 numbers, got 24" in reasons[4]
    assert len(store.book.events) == 1
    assert handler.metrics.counts["rejected"] == 5


def test_an_unreachable_database_is_retried_then_applied_once() -> None:
    store = MemoryStore(failures=3)
    handler, _ = make_handler(store)
    handler.handle([msg(10, anomalous=True)])
    assert handler.metrics.counts["retried"] == 3
    assert len(store.calls) == 4 and len(store.book.events) == 1
    assert retryable_db_error(psycopg.OperationalError("x"))
    assert not retryable_db_error(psycopg.errors.UniqueViolation("x"))


def test_stopping_while_the_database_is_down_raises() -> None:
    store = MemoryStore(failures=10**9)
    handler, _ = make_handler(store, should_stop=lambda: len(store.calls) >= 2)
    with pytest.raises(Stopped):
        handler.handle([msg(10, anomalous=True)])
    assert handler.metrics.counts["produced"] == 0


def test_latency_is_observed_per_stored_window() -> None:
    store = MemoryStore()
    handler, _ = make_handler(store, clock=lambda: 1000.5)
    handler.handle([msg(10, anomalous=True, stages={"simulator": 1000.0}), msg(20)])
    histogram = handler.metrics.registry.get_sample_value(
        "smap_stage_latency_seconds_sum", {"stage": "events"}
    )
    assert histogram == pytest.approx(0.5)


# --- the served decision in VictoriaMetrics -------------------------------------------------


class MemoryVictoria:
    """Takes ``anomaly_alarm`` lines, refusing the first ``failures`` writes."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls = 0
        self.written: list[list[str]] = []

    def write(self, lines: list[str]) -> int:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise httpx.ConnectError("connection refused")
        self.written.append(list(lines))
        return len(lines)

    def alarms(self) -> list[tuple[int, float]]:
        """(timestamp ms, value) of every sample written, in order."""
        samples = [line.rsplit(" ", 2) for batch in self.written for line in batch]
        return [(int(ts), float(value)) for _, value, ts in samples]


def end_ms(start: int) -> int:
    """Timestamp of the window ``[start, start + 30)``'s per-window samples."""
    return timestamp_ms(result(start).window_end_time)


def test_every_decided_window_is_written_as_an_alarm_after_its_events() -> None:
    store, victoria = MemoryStore(), MemoryVictoria()
    order: list[str] = []

    def apply(spans: list[WindowSpan]) -> ApplyCounts:
        order.append("apply")
        return store.apply(spans)

    def write(lines: list[str]) -> int:
        order.append("write")
        return victoria.write(lines)

    metrics = StageMetrics("events")
    handler = EventsHandler(
        apply, metrics, FakeDeadLetter(metrics), stride=10, sleep=lambda s: None, write=write
    )
    handler.handle([msg(0), msg(10, anomalous=True), msg(20)])
    handler.handle([msg(30)])  # nothing anomalous: no apply, still written
    assert order == ["apply", "write", "write"]
    assert victoria.alarms() == [(end_ms(0), 0), (end_ms(10), 1), (end_ms(20), 0), (end_ms(30), 0)]
    (first, *_) = victoria.written[0]
    assert first.startswith('anomaly_alarm{satellite_id="sat1",subsystem="EPS",model_name=')
    assert handler.alarms_written == 4


def test_a_refused_result_is_no_alarm() -> None:
    store, victoria = MemoryStore(), MemoryVictoria()
    handler, dead = make_handler(store, write=victoria.write)
    handler.handle([FakeMessage(TOPIC, b"[]"), msg(10, anomalous=True, threshold=None), msg(20)])
    assert len(dead.sent) == 2
    assert victoria.alarms() == [(end_ms(20), 0)]


def test_an_unreachable_victoriametrics_is_retried_and_the_events_are_applied_once() -> None:
    store, victoria = MemoryStore(), MemoryVictoria(failures=3)
    handler, _ = make_handler(store, write=victoria.write)
    handler.handle([msg(10, anomalous=True), msg(20)])
    assert handler.metrics.counts["retried"] == 3
    assert len(store.calls) == 1 and len(store.book.events) == 1
    assert victoria.calls == 4
    assert victoria.alarms() == [(end_ms(10), 1), (end_ms(20), 0)]


def test_stopping_while_victoriametrics_is_down_raises_so_nothing_is_committed() -> None:
    store, victoria = MemoryStore(), MemoryVictoria(failures=10**9)
    handler, _ = make_handler(store, write=victoria.write, should_stop=lambda: victoria.calls >= 2)
    with pytest.raises(Stopped):
        handler.handle([msg(10, anomalous=True)])
    assert victoria.written == [] and handler.alarms_written == 0
    # the batch is read again: its event is already there, its alarm now written
    handler._should_stop = lambda: False
    victoria.failures = 0
    handler.handle([msg(10, anomalous=True)])
    assert handler.totals.unchanged == 1
    assert victoria.alarms() == [(end_ms(10), 1)]


def flagged(index: int, statistic: float, offset: int) -> FakeMessage:
    """Window ``index``, flagged by the worker's score, statistic ``statistic``."""
    body = result(index * 10, anomalous=True, scores=[statistic] * 30, detected_by=["model"])
    return FakeMessage(TOPIC, encode(body), 0, offset)


def normal(index: int, offset: int) -> FakeMessage:
    return FakeMessage(TOPIC, encode(result(index * 10, scores=[1.0] * 30)), 0, offset)


def confirming_handler(
    store: MemoryStore, victoria: MemoryVictoria, clock: Any = time.monotonic
) -> EventsHandler:
    # history of 3 windows (under min_history): a flagged window is kept when above 1.5
    confirmation = ResultConfirmation(
        lambda _: StreamRule(floor=1.2, static=1.5), 10, Confirmer(3, clock=clock)
    )
    handler, _ = make_handler(store, write=victoria.write, confirmation=confirmation)
    return handler


def test_a_waiting_flagged_window_is_written_only_once_decided() -> None:
    store, victoria = MemoryStore(), MemoryVictoria()
    handler = confirming_handler(store, victoria)
    # windows 2 and 3 wait for window 1; 2 is confirmed, 3 (flagged, 1.0) is not
    handler.handle([normal(0, 0), flagged(2, 2.0, 1), flagged(3, 1.0, 2)])
    assert victoria.alarms() == [(end_ms(0), 0)]
    assert store.calls == []
    handler.handle([normal(1, 3)])
    assert victoria.alarms()[1:] == [(end_ms(10), 0), (end_ms(20), 1), (end_ms(30), 0)]
    assert [(e.start_record_index, e.end_record_index) for e in store.book.events.values()] == [
        (40, 49)
    ]


def test_a_window_whose_patience_ran_out_is_written_by_the_tick() -> None:
    now = [0.0]
    store, victoria = MemoryStore(), MemoryVictoria()
    handler = confirming_handler(store, victoria, clock=lambda: now[0])
    handler.handle([normal(0, 0), flagged(2, 2.0, 1)])  # window 1 never comes
    handler.tick()
    assert victoria.alarms() == [(end_ms(0), 0)]
    now[0] = 11.0  # past the 10 s patience
    handler.tick()
    assert victoria.alarms() == [(end_ms(0), 0), (end_ms(20), 1)]
    assert len(store.book.events) == 1
    handler.tick()  # nothing left to decide: nothing written again
    assert len(victoria.written) == 2


def test_patience_does_not_run_out_while_the_stage_is_busy_with_a_batch() -> None:
    now = [0.0]
    store, victoria = MemoryStore(), MemoryVictoria()
    handler = confirming_handler(store, victoria, clock=lambda: now[0])
    handler.handle([normal(0, 0), flagged(2, 2.0, 1)])  # polled at 0 s
    now[0] = 12.0  # storing that batch took 12 s (the database was slow)
    handler.tick()  # as of the poll, window 2 had waited 0 s: it still waits
    assert victoria.alarms() == [(end_ms(0), 0)]
    handler.handle([normal(1, 2)])  # its history came in the next poll
    handler.tick()
    assert victoria.alarms()[1:] == [(end_ms(10), 0), (end_ms(20), 1)]
    assert handler.confirmation is not None
    assert handler.confirmation.counts.incomplete == 0
