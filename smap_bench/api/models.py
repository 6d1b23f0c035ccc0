"""Request and response schemas of the operations API, in Base / Create / Update / Public
families: ``*Create`` and ``*Update`` are what a client sends, ``*Public`` what it gets."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from smap_bench.alarms import AlarmAction, AlarmState
from smap_bench.api.queries import SATELLITE_ID_PATTERN, SeriesKind
from smap_bench.catalog import Subsystem
from smap_bench.schema import NUM_FEATURES

#: Operator names: letters, digits, space and ``._@-``, up to 64 characters.
OPERATOR_PATTERN = r"^[\w .@\-]{1,64}$"

#: The ``responses`` argument of a route: extra status codes and their schemas.
Responses = dict[int | str, dict[str, Any]]

SatelliteId = Annotated[str, Field(pattern=SATELLITE_ID_PATTERN, examples=["sat1"])]
OperatorName = Annotated[str, Field(pattern=OPERATOR_PATTERN, examples=["alice"])]


def _printable(value: str) -> str:
    bad = sorted({f"U+{ord(c):04X}" for c in value if ord(c) < 32 and c not in "\n\t"})
    if bad:
        raise ValueError(f"control characters are not allowed (found {', '.join(bad)})")
    return value


#: Free text (comments, names): no control characters other than newline and tab.
Text = Annotated[str, AfterValidator(_printable)]


class Strict(BaseModel):
    """Request bodies: unknown fields are refused, so a typo is a 422 and not ignored."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- fleet


class SubsystemPublic(BaseModel):
    name: Subsystem
    code: str
    description: str


class SatelliteBase(BaseModel):
    display_name: Annotated[Text, Field(max_length=100)] | None = None
    active: bool = True


class SatelliteUpdate(Strict):
    """Fields an operator may change on a satellite; those left out stay as they are."""

    display_name: Annotated[Text, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="null clears the name"
    )
    active: bool | None = Field(default=None, description="true or false (not null)")

    @field_validator("active")
    @classmethod
    def _active_not_null(cls, value: bool | None) -> bool:
        # Runs only for a value given explicitly: an explicit null is refused.
        if value is None:
            raise ValueError("active must be true or false")
        return value


class AssignmentPublic(BaseModel):
    """Which SMAP channel a (satellite, subsystem) stream replays, and its model."""

    satellite_id: str
    subsystem: Subsystem
    channel: str
    model_name: str
    assigned_at: datetime


class SatellitePublic(SatelliteBase):
    satellite_id: str
    created_at: datetime
    streams: list[AssignmentPublic] = Field(default_factory=list)


class ModelPublic(BaseModel):
    """A model of the registry: the ``models`` table, or the repository's metadata.json."""

    model_name: str
    version: int
    channel: str | None
    threshold: float | None
    onnx_sha256: str | None
    metadata: dict[str, Any]
    registered_at: datetime | None
    source: Literal["database", "repository"]


# --------------------------------------------------------------------------- series


class SeriesParams(BaseModel):
    """One stream and a time range; times are ISO 8601 (naive = UTC) or Unix seconds."""

    satellite_id: SatelliteId
    subsystem: Subsystem
    features: list[Annotated[int, Field(ge=0, lt=NUM_FEATURES)]] = Field(
        default_factory=lambda: [0],
        max_length=NUM_FEATURES,
        description="Feature indices (telemetry and reconstructions only); default 0",
    )
    start: datetime | None = Field(default=None, description="Default: end minus 10 minutes")
    end: datetime | None = Field(default=None, description="Default: now")
    step: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="Seconds between points of a grid; unset: raw samples (ranges up to 1 h)",
    )


class SeriesData(BaseModel):
    labels: dict[str, str]
    feature_index: int | None
    timestamps: list[float] = Field(description="Unix seconds")
    values: list[float | None]

    @classmethod
    def of(
        cls, labels: dict[str, str], feature_index: int | None, samples: list[tuple[float, float]]
    ) -> SeriesData:
        return cls(
            labels=labels,
            feature_index=feature_index,
            timestamps=[t for t, _ in samples],
            values=[v if math.isfinite(v) else None for _, v in samples],
        )


class StreamViewParams(SeriesParams):
    """A stream's timeline range, and optionally the heatmap's (both ends or neither)."""

    heatmap_start: datetime | None = Field(
        default=None, description="Start of the heatmap's range; unset: the newest window"
    )
    heatmap_end: datetime | None = Field(default=None, description="End of the heatmap's range")
    held_heatmap_start: datetime | None = Field(
        default=None,
        description=(
            "Start of a heatmap range whose series the client already holds: when the"
            " answer's range is that one, its heat series are left out (heatmap_held)"
        ),
    )
    held_heatmap_end: datetime | None = Field(
        default=None, description="End of the held heatmap range"
    )


class SeriesPublic(BaseModel):
    kind: SeriesKind
    metric: str
    satellite_id: str
    subsystem: Subsystem
    start: datetime
    end: datetime
    step: float | None
    series: list[SeriesData]


class StreamLatest(BaseModel):
    """A stream's newest telemetry sample and its latest window's detection."""

    satellite_id: str
    subsystem: Subsystem
    last_time: datetime | None = Field(description="Record time of the newest telemetry sample")
    detected: float | None = Field(
        description="Latest decided window anomalous (1) or not (0): the served decision"
    )
    detected_time: datetime | None = Field(description="End of that window (record time)")


class FleetLatestPublic(BaseModel):
    data: list[StreamLatest]
    lookback_s: float = Field(description="How far back from now samples were looked for")


# --------------------------------------------------------------------------- events


class EventPublic(BaseModel):
    """An anomaly event with its alarm state as seen now (an expired shelf reads open)."""

    event_id: int
    satellite_id: str
    subsystem: Subsystem
    model_name: str
    loop: int
    start_record_index: int
    end_record_index: int
    start_time: datetime
    end_time: datetime
    peak_score: float
    threshold: float
    top_features: Any
    detected_by: list[str] = Field(
        default_factory=list,
        description="What flagged the event's windows: 'model' (TranAD's score), 'context'"
        " (the recent values unlike every stretch of training), 'hold' (the value held still"
        " longer than training ever held it), 'forecaster' (the linear forecaster's smoothed"
        " error, confirmed against the stream's recent windows); empty for events stored"
        " before it was recorded",
    )
    state: AlarmState
    shelved_until: datetime | None
    created_at: datetime
    updated_at: datetime
    allowed_actions: list[AlarmAction]


class EventsPublic(BaseModel):
    data: list[EventPublic]
    count: int = Field(description="Events matching the filters (before limit and offset)")


class StreamViewPublic(BaseModel):
    """A stream's timeline and heatmap in one answer (see smap_bench.api.stream_view)."""

    satellite_id: str
    subsystem: Subsystem
    start: datetime
    end: datetime
    telemetry: list[SeriesData]
    scores: list[SeriesData]
    thresholds: list[SeriesData]
    detections: list[SeriesData] = Field(
        description="The served decision per window (anomaly_alarm: confirmed windows are 1)"
    )
    verdicts: list[SeriesData] = Field(
        default_factory=list,
        description="The workers' verdict per window (inference_anomaly_detected, before"
        " confirmation): a window 1 here and 0 in detections was flagged, not confirmed",
    )
    record_index: list[SeriesData]
    forecasts: list[SeriesData] = Field(
        default_factory=list,
        description="The linear forecaster's window statistic (inference_forecast_statistic:"
        " its smoothed error over the window's newest records; empty when not served)",
    )
    forecast_thresholds: list[SeriesData] = Field(
        default_factory=list,
        description="The forecaster's static threshold per window (inference_forecast_threshold)",
    )
    events: list[EventPublic] = Field(description="The stream's events starting up to 1 h before")
    heatmap_start: datetime | None
    heatmap_end: datetime | None
    heat_input: list[SeriesData] = Field(description="Every feature's telemetry in the heatmap")
    heat_output: list[SeriesData] = Field(description="Every feature's reconstruction there")
    heatmap_held: bool = Field(
        default=False,
        description="The heatmap's range is the held one: heat_input and heat_output left out",
    )
    server_ms: float = Field(description="Time the API spent on this answer")


class AlarmHistoryPublic(BaseModel):
    id: int
    event_id: int
    from_state: AlarmState | None
    to_state: AlarmState
    actor: str
    comment: str | None
    shelved_until: datetime | None
    at: datetime


class EventDetail(EventPublic):
    history: list[AlarmHistoryPublic]


class AlarmTransitionCreate(Strict):
    """An action on an alarm (see smap_bench.alarms for which are legal from which state)."""

    action: AlarmAction
    comment: Annotated[Text, Field(max_length=2000)] | None = None
    shelved_until: datetime | None = Field(
        default=None, description="Required for shelve (at most 30 days ahead); else refused"
    )
    operator: OperatorName | None = Field(
        default=None, description="Who acts; default: the X-Operator header"
    )


class CommentCreate(Strict):
    comment: Annotated[Text, Field(min_length=1, max_length=2000)]
    operator: OperatorName | None = None


# --------------------------------------------------------------------------- health


class ServiceHealth(BaseModel):
    name: str
    url: str
    healthy: bool
    detail: str


class GroupLag(BaseModel):
    group: str
    lag: int | None = Field(description="Messages behind the end of its topics; None: unknown")
    partitions: int
    detail: str = ""


class QueueDepth(BaseModel):
    queue: str
    messages: int | None
    consumers: int | None
    detail: str = ""


class TritonModelState(BaseModel):
    name: str
    version: str | None
    state: str | None
    reason: str | None


class TritonHealth(BaseModel):
    ready: bool
    models: list[TritonModelState]
    detail: str = ""


class StageStats(BaseModel):
    """One stage's rates (per second) and latency quantiles (seconds) over the last minute."""

    stage: str
    received_per_s: float | None
    produced_per_s: float | None
    rejected_per_s: float | None
    #: outputs Kafka refused for good (None: the stage has never lost one since it started)
    lost_per_s: float | None = None
    latency_p50_s: float | None
    latency_p99_s: float | None


class PipelineHealthPublic(BaseModel):
    checked_at: datetime
    services: list[ServiceHealth]
    kafka_lag: list[GroupLag]
    queues: list[QueueDepth]
    triton: TritonHealth
    stages: list[StageStats]
    ingestion_rate: float | None = Field(
        description="Telemetry messages per second taken in by the router (last minute)"
    )
    detail: list[str] = Field(default_factory=list, description="Parts that could not be read")


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"
    service: str = "smap-bench-api"


class Message(BaseModel):
    """An error or a plain answer: what happened, in one sentence."""

    detail: str
