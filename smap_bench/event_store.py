"""Anomaly events in PostgreSQL, and the events stage's batch handler.

:class:`EventStore` applies :func:`smap_bench.anomaly_events.plan` to the
``anomaly_events`` table: one transaction per Kafka batch, a per-stream advisory lock so
that two events processes never interleave on one stream, the touching events read
``FOR UPDATE``, then an insert (``ON CONFLICT`` on the UNIQUE (satellite_id, subsystem,
loop, start_record_index), growing end, peak and detectors only), an update, or a merge. A new
event also gets its ``alarm_history`` row (NULL -> 'open'). A merge (a late window
joining two events, rare) deletes the later event with its history and notes it in the
history of the event it joined. Re-applying a batch changes nothing, so the stage may
commit its Kafka offsets after the transaction and be redelivered freely.

:class:`EventsHandler` is the ``handle`` of :func:`smap_bench.stage.run_kafka_stage` for
``pipeline/events.py``: validate results, dead-letter the bad ones, decide each window
(under the confirmed rule, once its history has arrived), apply the anomalous ones, then
write every decided window's ``anomaly_alarm`` sample (0/1,
:func:`smap_bench.metrics.alarm_lines`) to VictoriaMetrics, the served decision the
dashboard shows. Both writes are retried while their service is unreachable and both
are done before ``handle`` (or ``tick``) returns, so the Kafka offsets are committed
only after both; on a redelivery both rewrite what they wrote (same events, same
samples at the same timestamps).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import psycopg
from confluent_kafka import TopicPartition
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from smap_bench.anomaly_events import (
    Event,
    Plan,
    WindowSpan,
    detectors_list,
    feature_errors_from_json,
    feature_errors_json,
    plan,
    span_of,
)
from smap_bench.confirmation import ResultConfirmation
from smap_bench.metrics import ORIGIN_STAGE, alarm_lines
from smap_bench.schema import DETECTORS, InferenceResult, decode, describe, encode
from smap_bench.stage import StageMetrics
from smap_bench.writing import DeadLetterSink, KafkaMessage, call_with_retry, retryable

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_COLUMNS = (
    "event_id, satellite_id, subsystem, loop, start_record_index, end_record_index,"
    " start_time, end_time, peak_score, model_name, threshold, top_features, state,"
    " detected_by"
)


def _event(row: Sequence[Any]) -> Event:
    return Event(
        event_id=row[0],
        satellite_id=row[1],
        subsystem=row[2],
        loop=row[3],
        start_record_index=row[4],
        end_record_index=row[5],
        start_time=row[6],
        end_time=row[7],
        peak_score=row[8],
        model_name=row[9],
        threshold=row[10],
        feature_errors=feature_errors_from_json(row[11]),
        state=row[12],
        detected_by=frozenset(row[13] or ()),
    )


@dataclass
class ApplyCounts:
    """What one :meth:`EventStore.apply` did, per anomalous window."""

    created: int = 0
    extended: int = 0  #: events grown, or given a detector they lacked
    merged: int = 0  #: events absorbed into an earlier one
    unchanged: int = 0  #: windows already part of an event with their detectors (redeliveries)

    @property
    def changed(self) -> int:
        return self.created + self.extended


def retryable_db_error(error: BaseException) -> bool:
    """A lost or refused connection, worth retrying; anything else is a bug or bad data."""
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)


class EventStore:
    """The ``anomaly_events`` table of ``dsn``; reconnects after a lost connection."""

    def __init__(self, dsn: str, actor: str = "events", gap: int = 0) -> None:
        self.dsn = dsn
        self.actor = actor
        self.gap = gap  #: the event rule (:func:`smap_bench.anomaly_events.plan`)
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, connect_timeout=5)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def apply(self, spans: Sequence[WindowSpan]) -> ApplyCounts:
        """Apply anomalous windows in one transaction (stream and record order)."""
        counts = ApplyCounts()
        if not spans:
            return counts
        ordered = sorted(spans, key=lambda s: (*s.stream, s.start_record_index))
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                locked: set[tuple[str, str]] = set()
                for span in ordered:
                    stream = (span.satellite_id, span.subsystem)
                    if stream not in locked:
                        cur.execute(
                            "SELECT pg_advisory_xact_lock(hashtext(%s))",
                            (f"anomaly_events/{span.satellite_id}/{span.subsystem}",),
                        )
                        locked.add(stream)
                    self._apply_one(cur, span, counts)
        except psycopg.Error:
            if conn.closed or conn.broken:
                self.close()
            raise
        return counts

    def _apply_one(self, cur: psycopg.Cursor[Any], span: WindowSpan, counts: ApplyCounts) -> None:
        # Events of a stream are disjoint and more than ``gap`` records apart, so the ones
        # touching the span are among the few that start last at or before its
        # end + 1 + gap.
        cur.execute(
            f"SELECT {_COLUMNS} FROM anomaly_events"
            " WHERE satellite_id = %s AND subsystem = %s AND loop = %s"
            " AND start_record_index <= %s"
            " ORDER BY start_record_index DESC LIMIT 4 FOR UPDATE",
            (span.satellite_id, span.subsystem, span.loop, span.end_record_index + 1 + self.gap),
        )
        change = plan(span, [_event(row) for row in cur.fetchall()], self.gap)
        if change is None:
            counts.unchanged += 1
            return
        if change.creates:
            self._insert(cur, change, span)
            counts.created += 1
        else:
            self._update(cur, change)
            counts.extended += 1
            counts.merged += len(change.absorbed)

    def _insert(self, cur: psycopg.Cursor[Any], change: Plan, span: WindowSpan) -> None:
        event = change.event
        cur.execute(
            "INSERT INTO anomaly_events (satellite_id, subsystem, model_name, loop,"
            " start_record_index, end_record_index, start_time, end_time, peak_score,"
            " threshold, top_features, detected_by)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (satellite_id, subsystem, loop, start_record_index) DO UPDATE SET"
            "  end_record_index = GREATEST(anomaly_events.end_record_index,"
            "                              EXCLUDED.end_record_index),"
            "  end_time = GREATEST(anomaly_events.end_time, EXCLUDED.end_time),"
            "  peak_score = GREATEST(anomaly_events.peak_score, EXCLUDED.peak_score),"
            "  detected_by = ARRAY(SELECT d FROM (SELECT DISTINCT unnest("
            "    anomaly_events.detected_by || EXCLUDED.detected_by) AS d) AS u"
            "    ORDER BY array_position(%s::text[], d), d),"
            "  updated_at = now()"
            " RETURNING event_id, (xmax = 0) AS inserted",
            (
                event.satellite_id,
                event.subsystem,
                event.model_name,
                event.loop,
                event.start_record_index,
                event.end_record_index,
                event.start_time,
                event.end_time,
                event.peak_score,
                event.threshold,
                Jsonb(feature_errors_json(event.feature_errors)),
                detectors_list(event.detected_by),
                list(DETECTORS),
            ),
        )
        row = cur.fetchone()
        if row is not None and row[1]:
            cur.execute(
                "INSERT INTO alarm_history (event_id, from_state, to_state, actor, comment)"
                " VALUES (%s, NULL, 'open', %s, %s)",
                (row[0], self.actor, f"opened by window {span.job_id}"),
            )

    def _update(self, cur: psycopg.Cursor[Any], change: Plan) -> None:
        event = change.event
        for absorbed in change.absorbed:
            cur.execute(
                "DELETE FROM anomaly_events WHERE event_id = %s"
                " RETURNING start_record_index, end_record_index, state",
                (absorbed,),
            )
            row = cur.fetchone()
            if row is None:
                continue
            cur.execute(
                "INSERT INTO alarm_history (event_id, from_state, to_state, actor, comment)"
                " VALUES (%s, %s, %s, %s, %s)",
                (
                    event.event_id,
                    event.state,
                    event.state,
                    self.actor,
                    f"merged event {absorbed} (records {row[0]}..{row[1]}, {row[2]}):"
                    " a late window joined the two",
                ),
            )
        cur.execute(
            "UPDATE anomaly_events SET start_record_index = %s, end_record_index = %s,"
            " start_time = %s, end_time = %s, peak_score = %s, top_features = %s,"
            " detected_by = %s, updated_at = now() WHERE event_id = %s",
            (
                event.start_record_index,
                event.end_record_index,
                event.start_time,
                event.end_time,
                event.peak_score,
                Jsonb(feature_errors_json(event.feature_errors)),
                detectors_list(event.detected_by),
                event.event_id,
            ),
        )

    def events(self, satellite_id: str, subsystem: str | None = None) -> list[Event]:
        """A satellite's stored events (optionally one subsystem), in stream order."""
        conn = self._connection()
        query = f"SELECT {_COLUMNS} FROM anomaly_events WHERE satellite_id = %s"
        params: list[Any] = [satellite_id]
        if subsystem is not None:
            query += " AND subsystem = %s"
            params.append(subsystem)
        query += " ORDER BY subsystem, loop, start_record_index"
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(query, params)
            return [_event(row) for row in cur.fetchall()]


class Decided(NamedTuple):
    """The windows a batch (or a tick) decided, bad ones dead-lettered and left out."""

    results: list[InferenceResult]  #: every decided window with its final verdict
    spans: list[WindowSpan]  #: the anomalous ones, for the event table
    origins: list[float]  #: production times of the anomalous ones (stage latency)


class EventsHandler:
    """Handles one Kafka batch of results for the events stage (see module docstring).

    ``apply`` stores anomalous windows (:meth:`EventStore.apply`); ``write`` sends the
    decided windows' ``anomaly_alarm`` lines to VictoriaMetrics
    (``VictoriaMetrics.import_prometheus``; None: none are written). Counts: ``received``
    per message, ``produced`` per event created or extended, ``rejected`` per dead
    letter, ``retried`` per failed database or VictoriaMetrics attempt, and the stage
    latency (record produced -> event stored) per anomalous window.
    """

    def __init__(
        self,
        apply: Callable[[list[WindowSpan]], ApplyCounts],
        metrics: StageMetrics,
        dead_letter: DeadLetterSink,
        *,
        stride: int,
        should_stop: Callable[[], bool] = lambda: False,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.time,
        max_backoff_s: float = 5.0,
        confirmation: ResultConfirmation | None = None,
        write: Callable[[list[str]], object] | None = None,
    ) -> None:
        self._apply = apply
        self._write = write
        self.confirmation = confirmation
        self.metrics = metrics
        self.dead_letter = dead_letter
        self.stride = stride
        self._should_stop = should_stop
        self._sleep = sleep
        self._clock = clock
        self._max_backoff_s = max_backoff_s
        #: Totals of every apply so far.
        self.totals = ApplyCounts()
        #: ``anomaly_alarm`` samples accepted by VictoriaMetrics so far.
        self.alarms_written = 0
        #: the confirmation's clock when the batch handled since the last tick was
        #: polled (None: no batch, the poll came back empty)
        self._polled: float | None = None

    def decide(self, batch: Sequence[KafkaMessage]) -> Decided:
        """The windows the batch decided; bad results go to the dead-letter topic."""
        decided = Decided([], [], [])
        for message in batch:
            self.metrics.received()
            value = message.value()
            try:
                if value is None:
                    raise ValueError("message has no value")
                result = decode(InferenceResult, value)
                items = self._decide(result, message)
            except (ValidationError, ValueError) as error:
                self._position(message)
                self.dead_letter.send(value, describe(error), message)
                continue
            for item in items:
                # an earlier message's window, let be judged by this one, is refused as itself
                own = item is result
                self._add(decided, item, value if own else None, message if own else None)
        return decided

    def _add(
        self, decided: Decided, result: InferenceResult, value: bytes | None, source: Any
    ) -> None:
        """Add a decided window to ``decided``; an anomalous one that cannot be placed is
        dead-lettered instead (no event, so no alarm either)."""
        try:
            span = span_of(result, self.stride)
        except ValueError as error:
            self.dead_letter.send(value or encode(result), describe(error), source)
            return
        decided.results.append(result)
        if span is not None:
            decided.spans.append(span)
            origin = (result.stages or {}).get(ORIGIN_STAGE)
            if origin is not None:
                decided.origins.append(origin)

    def _position(self, message: KafkaMessage) -> tuple[tuple[str, int], int] | None:
        """The message's Kafka position, noted by the confirmation (None: not known)."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            return None
        position = ((str(topic), int(partition)), int(offset))
        if self.confirmation is not None:
            self.confirmation.seen(*position)
        return position

    def _decide(self, result: InferenceResult, message: KafkaMessage) -> list[InferenceResult]:
        """The results decided by this message: itself, or under the confirmed rule, those
        of its stream that it lets be judged (itself too, unless it waits)."""
        position = self._position(message)
        if self.confirmation is None:
            return [result]
        partition, offset = position if position is not None else (None, None)
        return self.confirmation.offer(result, partition, offset)

    def tick(self) -> None:
        """After every poll: store and write the windows whose patience ran out, counted
        up to that poll (the time spent handling its batch does not count: a history
        window produced just after its flagged one may be in the next poll)."""
        if self.confirmation is None:
            return
        polled, self._polled = self._polled, None
        as_of = self.confirmation.now() if polled is None else polled
        decided = Decided([], [], [])
        for item in self.confirmation.expire(as_of):
            self._add(decided, item, None, None)
        self._store(decided._replace(origins=[]))  # no stage latency for a late decision

    def commit_offsets(self) -> list[TopicPartition]:
        """Per partition, where a restart must read from (waiting windows held back)."""
        assert self.confirmation is not None
        positions = self.confirmation.commit_positions()
        return [
            TopicPartition(topic, partition, offset)
            for (topic, partition), offset in positions.items()
        ]

    def handle(self, batch: Sequence[KafkaMessage]) -> None:
        """Decide, store and write the batch; returns once PostgreSQL and VictoriaMetrics
        have both taken it."""
        if self.confirmation is not None:
            self._polled = self.confirmation.now()
        self._store(self.decide(batch))

    def _store(self, decided: Decided) -> None:
        """Apply the anomalous windows, then write every decided window's alarm sample."""
        if decided.spans:
            self._apply_spans(decided.spans, decided.origins)
        if decided.results and self._write is not None:
            lines = alarm_lines(decided.results)
            self._with_retry(self._write, lines, "VictoriaMetrics", retryable)
            self.alarms_written += len(lines)

    def _with_retry(
        self,
        write: Callable[[T], R],
        arg: T,
        service: str,
        is_retryable: Callable[[BaseException], bool],
    ) -> R:
        """``write(arg)``, retried while ``service`` fails in a retryable way (each retry
        counted and logged) until it succeeds or the stage stops."""

        def on_retry(error: BaseException) -> None:
            self.metrics.retried()
            log.warning("events: %s write failed, retrying: %s", service, error)

        return call_with_retry(
            write,
            arg,
            is_retryable=is_retryable,
            on_retry=on_retry,
            should_stop=self._should_stop,
            sleep=self._sleep,
            max_backoff_s=self._max_backoff_s,
        )

    def _apply_spans(self, spans: list[WindowSpan], origins: list[float]) -> None:
        counts = self._with_retry(self._apply, spans, "PostgreSQL", retryable_db_error)
        now = self._clock()
        for origin in origins:
            self.metrics.latency(now - origin)
        self.metrics.produced(counts.changed)
        for name in ("created", "extended", "merged", "unchanged"):
            setattr(self.totals, name, getattr(self.totals, name) + getattr(counts, name))
        if counts.changed:
            log.info(
                "events: %d created, %d extended, %d merged, %d unchanged",
                counts.created,
                counts.extended,
                counts.merged,
                counts.unchanged,
            )
