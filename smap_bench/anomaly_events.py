"""Anomaly events: runs of consecutive anomalous windows of one stream, as pure functions.

An event of a stream (satellite, subsystem) in one loop is a maximal run of records
judged anomalous: the union of the *responsible* record ranges
(:func:`smap_bench.windows.responsible_range`) of the stream's anomalous windows, where
runs parted by at most ``gap`` normal records are one event (the event rule of
:func:`smap_bench.evaluation.bridge_gaps`, setting ``event_gap``). Those ranges tile the
records without overlap, so two anomalous windows belong to one event exactly when their
ranges are at most ``gap`` records apart. Hence:

- more than ``gap`` records of normal or missing windows, or a new loop, end an event by
  themselves (the next anomalous window's range does not touch it); no timer is needed,
  and the events are exactly the predicted segments that the evaluation scores
  (EVALUATION.md);
- arrival order does not matter: a late window that touches an event extends it, and
  one that bridges two events merges them into the earlier one;
- a redelivered window's range already lies inside an event, so it changes nothing
  (:func:`plan` returns None) unless it names a detector the event lacks (a window
  rescored with other settings): replays and restarts are idempotent.

An event's ``start`` is its first record (the first anomalous window's first
responsible record) and ``end`` its last (inclusive, as stored in PostgreSQL); its
times are those records' timestamps. ``peak_score`` is the highest per-record score
over the event's records. ``feature_errors`` is the mean squared reconstruction error
per feature over the event's records, from the worker's optional ``feature_errors``
field (:func:`smap_bench.scoring.feature_errors`: per feature, the mean squared error over
the records the window is responsible for), each window weighted by those records; the
features with the largest errors are the event's top contributors (:func:`top_features`).
Windows without the field leave the errors to those that have it. ``detected_by`` is the
union of its windows' detectors (TranAD's score, the context's distance, its hold: the
worker's ``detected_by``), in :data:`~smap_bench.schema.DETECTORS` order: what an operator
reads first, since a held value or an unusual stretch is not a high reconstruction
error, and an event found by them alone may peak below the model's threshold.

:class:`InMemoryEvents` applies plans to a dict; :class:`smap_bench.event_store.EventStore`
applies the same plans to PostgreSQL.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from smap_bench.metrics import responsible_offsets, timestep_times_ms
from smap_bench.schema import DETECTORS, NUM_FEATURES, InferenceResult

#: How many features :func:`top_features` reports by default.
TOP_FEATURES = 5

StreamKey = tuple[str, str, int]
"""(satellite_id, subsystem, loop): events never span streams or loops."""


@dataclass(frozen=True, slots=True)
class WindowSpan:
    """The records an anomalous window judges, and what it says about them."""

    satellite_id: str
    subsystem: str
    loop: int
    start_record_index: int
    end_record_index: int  #: inclusive
    start_time: datetime
    end_time: datetime
    peak_score: float
    model_name: str
    threshold: float
    feature_errors: tuple[float, ...] | None
    job_id: str
    detected_by: frozenset[str] = frozenset()

    @property
    def stream(self) -> StreamKey:
        return (self.satellite_id, self.subsystem, self.loop)

    @property
    def records(self) -> int:
        return self.end_record_index - self.start_record_index + 1


@dataclass(frozen=True, slots=True)
class Event:
    """One anomaly event (a row of ``anomaly_events``); ``event_id`` None until stored."""

    satellite_id: str
    subsystem: str
    loop: int
    start_record_index: int
    end_record_index: int  #: inclusive
    start_time: datetime
    end_time: datetime
    peak_score: float
    model_name: str
    threshold: float
    feature_errors: tuple[float, ...] | None = None
    event_id: int | None = None
    state: str = "open"
    detected_by: frozenset[str] = frozenset()

    @property
    def stream(self) -> StreamKey:
        return (self.satellite_id, self.subsystem, self.loop)

    @property
    def records(self) -> int:
        return self.end_record_index - self.start_record_index + 1

    def contains(self, span: WindowSpan) -> bool:
        return (
            self.stream == span.stream
            and self.start_record_index <= span.start_record_index
            and span.end_record_index <= self.end_record_index
        )

    def touches(self, span: WindowSpan, gap: int = 0) -> bool:
        """Overlaps the span or is parted from it by at most ``gap`` records."""
        return (
            self.stream == span.stream
            and self.start_record_index <= span.end_record_index + 1 + gap
            and span.start_record_index <= self.end_record_index + 1 + gap
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """What one anomalous window changes.

    ``event`` is the event to write: with an ``event_id`` it updates that stored event
    (which may move its start earlier), without one it is new. ``absorbed`` are stored
    events merged into it, to delete (their alarm history moves to ``event``).
    """

    event: Event
    absorbed: tuple[int, ...] = ()

    @property
    def creates(self) -> bool:
        return self.event.event_id is None


def _feature_errors(value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != NUM_FEATURES:
        size = len(value) if isinstance(value, list) else type(value).__name__
        raise ValueError(f"feature_errors must be a list of {NUM_FEATURES} numbers, got {size}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise ValueError(f"feature_errors[{i}] is not a number: {item!r}")
        number = float(item)
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"feature_errors[{i}] is {number}, expected a finite value >= 0")
        out.append(number)
    return tuple(out)


def span_of(result: InferenceResult, stride: int) -> WindowSpan | None:
    """The span of an anomalous result, None for a normal one.

    Raises ValueError when an anomalous result cannot be placed (no ``loop`` or
    ``record_index_start``), has no ``threshold``, or carries a malformed
    ``feature_errors``.
    """
    if not result.is_anomaly:
        return None
    if result.loop is None or result.record_index_start is None:
        raise ValueError("anomalous result has no loop/record_index_start; events need both")
    if result.threshold is None:
        raise ValueError("anomalous result has no threshold")
    extra = result.model_extra or {}
    errors = _feature_errors(extra.get("feature_errors"))
    offsets = responsible_offsets(result.record_index_start, result.window_size, stride)
    times = timestep_times_ms(result.window_start_time, result.window_end_time, result.window_size)
    first, last = offsets[0], offsets[-1]
    return WindowSpan(
        satellite_id=result.satellite_id,
        subsystem=result.subsystem.value,
        loop=result.loop,
        start_record_index=result.record_index_start + first,
        end_record_index=result.record_index_start + last,
        start_time=datetime.fromtimestamp(times[first] / 1000, UTC),
        end_time=datetime.fromtimestamp(times[last] / 1000, UTC),
        peak_score=max(result.anomaly_scores[i] for i in offsets),
        model_name=result.model_name,
        threshold=result.threshold,
        feature_errors=errors,
        job_id=result.job_id,
        detected_by=frozenset(result.detected_by or ()),
    )


def _weighted_errors(parts: Iterable[Event | WindowSpan]) -> tuple[float, ...] | None:
    total = [0.0] * NUM_FEATURES
    weight = 0
    for part in parts:
        if part.feature_errors is None:
            continue
        n = part.records
        weight += n
        for i, value in enumerate(part.feature_errors):
            total[i] += value * n
    if weight == 0:
        return None
    return tuple(value / weight for value in total)


def event_of(span: WindowSpan) -> Event:
    """A new event made of one window."""
    return Event(
        satellite_id=span.satellite_id,
        subsystem=span.subsystem,
        loop=span.loop,
        start_record_index=span.start_record_index,
        end_record_index=span.end_record_index,
        start_time=span.start_time,
        end_time=span.end_time,
        peak_score=span.peak_score,
        model_name=span.model_name,
        threshold=span.threshold,
        feature_errors=span.feature_errors,
        detected_by=span.detected_by,
    )


def detectors_list(detected_by: Iterable[str]) -> list[str]:
    """The stored form of a set of detectors: known ones in :data:`DETECTORS` order, then
    any other name sorted."""
    names = set(detected_by)
    return [d for d in DETECTORS if d in names] + sorted(names - set(DETECTORS))


def plan(span: WindowSpan, neighbours: Sequence[Event], gap: int = 0) -> Plan | None:
    """How ``span`` changes the stored events; None if it is already part of one, with
    all its detectors.

    ``neighbours`` must include every stored event of the span's stream and loop that
    touches it within ``gap`` records (the event rule; more are fine, they are
    filtered). The result keeps the earliest touching event (its id, model and
    threshold), grows it to cover the span, every other touching event and the normal
    records between them, and absorbs those. A span inside an event changes it only when
    it adds a detector the event did not have.
    """
    touching = sorted(
        (event for event in neighbours if event.touches(span, gap)),
        key=lambda event: event.start_record_index,
    )
    for event in touching:
        if event.contains(span):
            if span.detected_by <= event.detected_by:
                return None
            return Plan(replace(event, detected_by=event.detected_by | span.detected_by))
    if not touching:
        return Plan(event_of(span))
    keep = touching[0]
    parts: list[Event | WindowSpan] = [*touching, span]
    first = min(parts, key=lambda part: part.start_record_index)
    last = max(parts, key=lambda part: part.end_record_index)
    merged = replace(
        keep,
        start_record_index=first.start_record_index,
        start_time=first.start_time,
        end_record_index=last.end_record_index,
        end_time=last.end_time,
        peak_score=max(part.peak_score for part in parts),
        feature_errors=_weighted_errors(parts),
        detected_by=frozenset().union(*(part.detected_by for part in parts)),
    )
    absorbed = tuple(event.event_id for event in touching[1:] if event.event_id is not None)
    return Plan(merged, absorbed)


def top_features(
    feature_errors: Sequence[float] | None, k: int = TOP_FEATURES
) -> list[dict[str, float | int]]:
    """The ``k`` features with the largest error, largest first, with their share of the
    total error: ``[{"feature_index": 0, "mse": 0.8, "share": 0.9}, ...]``."""
    if feature_errors is None:
        return []
    total = math.fsum(feature_errors)
    order = sorted(range(len(feature_errors)), key=lambda i: (-feature_errors[i], i))
    return [
        {
            "feature_index": i,
            "mse": feature_errors[i],
            "share": feature_errors[i] / total if total > 0 else 0.0,
        }
        for i in order[:k]
    ]


def feature_errors_json(feature_errors: Sequence[float] | None) -> list[dict[str, float | int]]:
    """The stored form of an event's feature errors (``anomaly_events.top_features``):
    all features, largest error first, so the first few are the top contributors and
    later windows can still be merged in exactly."""
    return top_features(feature_errors, k=NUM_FEATURES)


def feature_errors_from_json(items: Sequence[dict[str, Any]] | None) -> tuple[float, ...] | None:
    """Inverse of :func:`feature_errors_json`; None when nothing (or not all) was stored."""
    if not items or len(items) != NUM_FEATURES:
        return None
    values = [0.0] * NUM_FEATURES
    for item in items:
        values[int(item["feature_index"])] = float(item["mse"])
    return tuple(values)


class InMemoryEvents:
    """The event table as a dict: applies :func:`plan` as the PostgreSQL store does.

    For tests and offline use; also records the alarm history's 'open' entries.
    """

    def __init__(self, gap: int = 0) -> None:
        self.gap = gap
        self.events: dict[int, Event] = {}
        self.opened: list[int] = []
        self._next_id = 1

    def apply(self, span: WindowSpan) -> Plan | None:
        neighbours = [e for e in self.events.values() if e.stream == span.stream]
        change = plan(span, neighbours, self.gap)
        if change is None:
            return None
        for absorbed in change.absorbed:
            del self.events[absorbed]
        event = change.event
        event_id = event.event_id
        if event_id is None:
            event_id = self._next_id
            self._next_id += 1
            event = replace(event, event_id=event_id)
            self.opened.append(event_id)
        self.events[event_id] = event
        return change

    def stream_events(self, satellite_id: str, subsystem: str) -> list[Event]:
        """The stream's events in record order (all loops)."""
        return sorted(
            (
                e
                for e in self.events.values()
                if e.satellite_id == satellite_id and e.subsystem == subsystem
            ),
            key=lambda e: (e.loop, e.start_record_index),
        )
