"""The events stage's batch handler, with the store replaced by the in-memory event table."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from smap_bench.anomaly_events import InMemoryEvents, WindowSpan
from smap_bench.event_store import ApplyCounts, EventsHandler, retryable_db_error
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
