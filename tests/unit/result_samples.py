"""Hand-made telemetry messages, inference results and Kafka stand-ins for the writer and
events tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from smap_bench.catalog import SUBSYSTEMS, Subsystem
from smap_bench.schema import (
    NUM_FEATURES,
    InferenceResult,
    SubsystemReading,
    TelemetryMessage,
    deterministic_job_id,
)
from smap_bench.stage import StageMetrics

#: Record 0 of loop 0 (timestamps are one second per record, as the simulator's clock).
T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


def record_time(record_index: int, t0: datetime = T0) -> datetime:
    return t0 + timedelta(seconds=record_index)


def telemetry(
    satellite_id: str = "sat1",
    record_index: int = 0,
    loop: int = 0,
    t0: datetime = T0,
    subsystems: tuple[Subsystem, ...] = SUBSYSTEMS,
    stages: dict[str, float] | None = None,
) -> TelemetryMessage:
    """A record whose feature j of subsystem k is ``record_index + k / 10 + j / 1000``."""
    readings = {
        sub: SubsystemReading.from_values(
            sub, [record_index + k / 10 + j / 1000 for j in range(NUM_FEATURES)]
        )
        for k, sub in enumerate(subsystems)
    }
    return TelemetryMessage(
        satellite_id=satellite_id,
        timestamp=record_time(record_index, t0),
        loop=loop,
        record_index=record_index,
        subsystems=readings,
        stages=stages,
    )


def score_of(record_index: int) -> float:
    """The score every window gives record ``record_index`` in :func:`result` by default."""
    return 0.001 * record_index + 0.5


def result(
    start: int,
    *,
    satellite_id: str = "sat1",
    subsystem: Subsystem = Subsystem.EPS,
    loop: int = 0,
    window: int = 30,
    anomalous: bool = False,
    scores: list[float] | None = None,
    threshold: float | None = 1.0,
    stream_floor: float | None = None,
    t0: datetime = T0,
    stages: dict[str, float] | None = None,
    feature_errors: list[float] | None = None,
    model_name: str = "SMAP_E-1",
    with_position: bool = True,
    context_distance: float | None = None,
    detected_by: list[str] | None = None,
) -> InferenceResult:
    """The result of the window of records ``[start, start + window)``.

    Scores default to :func:`score_of` of each record, plus 10 in a window that is
    anomalous but given no scores; reconstruction ``[i][j]`` is ``score + j``.
    """
    if scores is None:
        scores = [score_of(start + i) + (10.0 if anomalous else 0.0) for i in range(window)]
    extra: dict[str, Any] = {} if feature_errors is None else {"feature_errors": feature_errors}
    if context_distance is not None:  # judged by the context detector, threshold 0.5
        extra |= {"context_distance": context_distance, "context_threshold": 0.5}
        extra |= {"context_hold": 7, "context_hold_threshold": 30.0}
    if detected_by is not None:
        extra["detected_by"] = detected_by
    return InferenceResult(
        satellite_id=satellite_id,
        subsystem=subsystem,
        model_name=model_name,
        window_size=window,
        window_start_time=record_time(start, t0),
        window_end_time=record_time(start + window - 1, t0),
        mean_anomaly_score=sum(scores) / window,
        max_anomaly_score=max(scores),
        is_anomaly=anomalous,
        anomaly_scores=scores,
        reconstructions=[[s + j for j in range(NUM_FEATURES)] for s in scores],
        inference_time_ms=12.5,
        timestamp=record_time(start + window - 1, t0),
        service="inference-worker",
        status="success",
        job_id=deterministic_job_id(satellite_id, subsystem, loop, start),
        threshold=threshold,
        stream_floor=stream_floor,
        loop=loop if with_position else None,
        record_index_start=start if with_position else None,
        stages=stages,
        **extra,
    )


@dataclass
class FakeMessage:
    _topic: str
    _value: bytes | None
    _partition: int = 0
    _offset: int = 0

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


@dataclass
class FakeDeadLetter:
    metrics: StageMetrics
    sent: list[tuple[bytes | None, str]] = field(default_factory=list)

    def send(self, value: bytes | None, reason: str, source: Any = None) -> None:
        self.sent.append((value, reason))
        self.metrics.rejected(reason)
