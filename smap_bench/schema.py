"""The pipeline's messages, field for field as in the seed, validated at every boundary.

- :class:`TelemetryMessage`: one record of one satellite, all subsystems
  (simulator -> ``satellite-telemetry-raw``).
- :class:`SubsystemRecord`: one subsystem of one record
  (router -> ``telemetry.{subsystem}.{satellite_id}``).
- :class:`InferenceTask`: one window to score (scheduler -> Celery ``run_inference_task``).
- :class:`InferenceResult`: the scores of one window (worker -> ``inference-results``).

Every seed field keeps its name and meaning. Fields the seed lacks but a stage needs
(``job_id`` on results, ``channel``, ``loop`` and record indices for replay scoring,
``run_window_start`` for the confirmation, ``stages`` for latency) are added, and
unknown extra fields are kept (``extra="allow"``).
Timestamps are timezone-aware and written in ISO 8601 as the seed does
(``2025-11-12T10:00:00+00:00``). ``stages`` maps a stage name (``simulator``, ``router``,
``scheduler``, ``worker`` ...) to the wall-clock time, in seconds since the epoch, at
which that stage handled the message.

Rejected: a missing field, a feature vector whose length is not 25 or disagrees with
``num_features``, NaN or infinity anywhere, an unknown subsystem name, a ``code`` that is
not the subsystem's, and ragged or wrongly sized windows. :func:`describe` turns any of
these errors into the one-line reason written to the dead-letter topic.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Self, TypeVar

import numpy as np
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    PlainSerializer,
    ValidationError,
    model_validator,
)

from smap_bench.catalog import Subsystem

#: Features per subsystem record (column 0: telemetry value, 1..24: command one-hots).
NUM_FEATURES = 25
#: Records per inference window in the seed (the scheduler's setting may change it).
DEFAULT_WINDOW_SIZE = 30

#: Namespace of :func:`deterministic_job_id` (fixed: changing it changes every job id).
JOB_ID_NAMESPACE = uuid.UUID("0f6a3c1e-5b0e-4d55-9a57-2f3c7f0e9b21")

Timestamp = Annotated[
    AwareDatetime,
    PlainSerializer(lambda value: value.isoformat(), return_type=str, when_used="json"),
]
"""A timezone-aware datetime, written as ``datetime.isoformat()`` (``+00:00``, not ``Z``)."""

SatelliteId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
"""A satellite id; restricted to the characters allowed in Kafka topic names."""

NonNegInt = Annotated[int, Field(ge=0)]
Stages = dict[str, FiniteFloat]

#: What judges a window anomalous: TranAD's score over the model's threshold, the context
#: detector's distance, or its hold (:mod:`smap_bench.model.context`), or the linear
#: forecaster's smoothed error over its threshold (:mod:`smap_bench.model.forecaster`).
#: Results may name others (a newer worker's): consumers keep them, so an upgrade order
#: never dead-letters.
DETECTORS: tuple[str, ...] = ("model", "context", "hold", "forecaster")
#: Command masks (:func:`smap_bench.windows.command_masks`): -1 is a record whose commands
#: a mask cannot carry.
CommandMask = Annotated[int, Field(ge=-1)]
DetectorName = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")]

M = TypeVar("M", bound="Message")


class Message(BaseModel):
    """Base of every message: extra fields kept, values re-validated on assignment."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, protected_namespaces=())


def _check_features(features: list[float], num_features: int) -> None:
    if num_features != NUM_FEATURES:
        raise ValueError(f"num_features is {num_features}, expected {NUM_FEATURES}")
    if len(features) != num_features:
        raise ValueError(f"features has {len(features)} values but num_features is {num_features}")


def _check_code(subsystem: Subsystem, code: str) -> None:
    if code != subsystem.code:
        raise ValueError(
            f"code {code!r} does not match subsystem {subsystem.value} "
            f"(expected {subsystem.code!r})"
        )


def _check_matrix(name: str, rows: list[list[float]], n_rows: int | None) -> None:
    if not rows:
        raise ValueError(f"{name} is empty")
    if n_rows is not None and len(rows) != n_rows:
        raise ValueError(f"{name} has {len(rows)} rows, expected {n_rows}")
    for i, row in enumerate(rows):
        if len(row) != NUM_FEATURES:
            raise ValueError(f"{name} row {i} has {len(row)} values, expected {NUM_FEATURES}")


def _check_run_start(run_window_start: int | None, record_index_start: int | None) -> None:
    if run_window_start is None:
        return
    if record_index_start is None:
        raise ValueError("run_window_start needs record_index_start")
    if run_window_start > record_index_start:
        raise ValueError(
            f"run_window_start {run_window_start} is after record_index_start {record_index_start}"
        )


class SubsystemReading(BaseModel):
    """One subsystem's values inside a :class:`TelemetryMessage` (seed: ``Subsystem``)."""

    model_config = ConfigDict(extra="allow")

    code: str
    features: list[FiniteFloat]
    num_features: int

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_features(self.features, self.num_features)
        return self

    @classmethod
    def from_values(cls, subsystem: Subsystem, values: Any) -> SubsystemReading:
        """A reading of ``subsystem`` from a row of 25 numbers (list or array)."""
        features = np.asarray(values, dtype=np.float64).ravel().tolist()
        return cls(code=subsystem.code, features=features, num_features=len(features))


class TelemetryMessage(Message):
    """One record of one satellite with every subsystem's features (raw topic)."""

    satellite_id: SatelliteId
    timestamp: Timestamp
    loop: NonNegInt
    record_index: NonNegInt
    subsystems: dict[Subsystem, SubsystemReading] = Field(min_length=1)
    stages: Stages | None = None

    @model_validator(mode="after")
    def _codes_match(self) -> Self:
        for subsystem, reading in self.subsystems.items():
            try:
                _check_code(subsystem, reading.code)
            except ValueError as error:
                raise ValueError(f"subsystems.{subsystem.value}: {error}") from None
        return self


class SubsystemRecord(Message):
    """One subsystem of one record, as the router publishes it per subsystem topic."""

    satellite_id: SatelliteId
    subsystem: Subsystem
    code: str
    timestamp: Timestamp
    loop: NonNegInt
    record_index: NonNegInt
    features: list[FiniteFloat]
    num_features: int
    channel: str | None = None
    stages: Stages | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_code(self.subsystem, self.code)
        _check_features(self.features, self.num_features)
        return self

    @classmethod
    def from_message(cls, message: TelemetryMessage, subsystem: Subsystem) -> SubsystemRecord:
        """The record of ``subsystem`` in ``message`` (carries the message's stages)."""
        reading = message.subsystems[subsystem]
        return cls(
            satellite_id=message.satellite_id,
            subsystem=subsystem,
            code=reading.code,
            timestamp=message.timestamp,
            loop=message.loop,
            record_index=message.record_index,
            features=reading.features,
            num_features=reading.num_features,
            channel=getattr(reading, "channel", None),
            stages=dict(message.stages) if message.stages else None,
        )


class InferenceTask(Message):
    """One window of one (satellite, subsystem) to score (Celery ``run_inference_task``).

    ``input_data`` is window_size x 25 (30 x 25 in the seed); any positive number of
    rows is accepted so that the window size stays a setting. ``context`` (an extra field)
    is the telemetry value of the records up to the window's last, for the context
    detector (:mod:`smap_bench.model.context`); absent while the stream is shorter.
    ``forecast_values`` and ``forecast_masks`` are the value and the command mask of the
    run's last records up to the window's last (at most the forecaster's context), for
    the forecaster (:func:`smap_bench.model.forecaster.context_statistic`); absent when
    the scheduler sends none.
    """

    job_id: str = Field(min_length=1)
    satellite_id: SatelliteId
    subsystem: Subsystem
    model_name: str = Field(min_length=1)
    input_data: list[list[FiniteFloat]]
    context: list[FiniteFloat] | None = Field(default=None, min_length=2)
    forecast_values: list[FiniteFloat] | None = Field(default=None, min_length=1)
    forecast_masks: list[CommandMask] | None = Field(default=None, min_length=1)
    window_start: Timestamp
    window_end: Timestamp
    loop: NonNegInt | None = None
    record_index_start: NonNegInt | None = None
    #: the first record of the first window of the stream's current run (the records
    #: since its loop began, or since a gap): no window of the loop between this run's
    #: start and ``record_index_start`` is missing (None: not known, as after a restart)
    run_window_start: NonNegInt | None = None
    channel: str | None = None
    stages: Stages | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_matrix("input_data", self.input_data, None)
        _check_run_start(self.run_window_start, self.record_index_start)
        values, masks = self.forecast_values, self.forecast_masks
        if (values is None) != (masks is None) or (
            values is not None and masks is not None and len(values) != len(masks)
        ):
            raise ValueError(
                f"forecast_values ({_length(values)}) and forecast_masks ({_length(masks)}) "
                "must come together, one per record"
            )
        if self.window_end < self.window_start:
            raise ValueError(
                f"window_end {self.window_end.isoformat()} is before "
                f"window_start {self.window_start.isoformat()}"
            )
        return self

    @property
    def window_size(self) -> int:
        return len(self.input_data)

    def input_array(self) -> np.ndarray:
        """``input_data`` as a float32 array of shape (window_size, 25)."""
        return np.asarray(self.input_data, dtype=np.float32)


class InferenceResult(Message):
    """The scores of one window (``inference-results``): per-timestep score and reconstruction."""

    satellite_id: SatelliteId
    subsystem: Subsystem
    model_name: str = Field(min_length=1)
    window_size: int = Field(ge=1)
    window_start_time: Timestamp
    window_end_time: Timestamp
    mean_anomaly_score: FiniteFloat
    max_anomaly_score: FiniteFloat
    is_anomaly: bool
    anomaly_scores: list[FiniteFloat]
    reconstructions: list[list[FiniteFloat]]
    inference_time_ms: FiniteFloat = Field(ge=0)
    timestamp: Timestamp
    service: str
    status: str
    job_id: str = Field(min_length=1)
    threshold: FiniteFloat | None = None
    #: the floor of TranAD's stream rule (POT's initial threshold of its training window
    #: statistics, ``threshold_parameters.pot_initial``; not ``threshold_parameters.floor``,
    #: the static threshold's own floor): with ``threshold``, the rule the events stage
    #: confirms a model flag by (None: the model's metadata has none, so its flags stand
    #: unconfirmed; the forecaster's floor is ``forecast_floor``)
    stream_floor: FiniteFloat | None = None
    #: the context detector's distance and threshold (None: the window was not judged)
    context_distance: FiniteFloat | None = None
    context_threshold: FiniteFloat | None = None
    #: the context's hold (records the telemetry value stayed exactly the same, at most the
    #: context's length) and its threshold (None: not judged, or the hold is off)
    context_hold: int | None = Field(default=None, ge=1)
    context_hold_threshold: FiniteFloat | None = None
    #: the forecaster's window statistic and the static threshold it was judged by (None:
    #: not judged; the events stage confirms a flag under the stream rule)
    forecast_statistic: FiniteFloat | None = None
    forecast_threshold: FiniteFloat | None = None
    #: the floor of the forecaster's stream rule (POT's initial threshold of its training
    #: statistics): with ``forecast_threshold``, the rule the events stage confirms by
    forecast_floor: FiniteFloat | None = None
    #: the detectors that flagged the window, in :data:`DETECTORS` order (empty: normal;
    #: None: a producer that does not say)
    detected_by: list[DetectorName] | None = None
    loop: NonNegInt | None = None
    record_index_start: NonNegInt | None = None
    #: as the task's (:attr:`InferenceTask.run_window_start`), passed on by the worker
    run_window_start: NonNegInt | None = None
    channel: str | None = None
    stages: Stages | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_run_start(self.run_window_start, self.record_index_start)
        if len(self.anomaly_scores) != self.window_size:
            raise ValueError(
                f"anomaly_scores has {len(self.anomaly_scores)} values, "
                f"expected window_size {self.window_size}"
            )
        _check_matrix("reconstructions", self.reconstructions, self.window_size)
        if self.detected_by is not None and bool(self.detected_by) != self.is_anomaly:
            raise ValueError(
                f"detected_by {self.detected_by} does not fit is_anomaly {self.is_anomaly}"
            )
        if self.stream_floor is not None and self.threshold is None:
            raise ValueError("stream_floor needs the threshold it goes with")
        if self.forecast_floor is not None and self.forecast_threshold is None:
            raise ValueError("forecast_floor needs the forecast_threshold it goes with")
        return self


def _length(values: list[Any] | None) -> str:
    return "absent" if values is None else f"{len(values)} values"


def deterministic_job_id(
    satellite_id: str, subsystem: Subsystem | str, loop: int, first_record_index: int
) -> str:
    """Job id of a window, the same every time the same window is formed (a UUID5).

    Derived from (satellite, subsystem, loop, first record index), so a re-sent window
    is recognised by every sink.
    """
    name = Subsystem.parse(subsystem).value if isinstance(subsystem, str) else subsystem.value
    key = f"{satellite_id}/{name}/{loop}/{first_record_index}"
    return str(uuid.uuid5(JOB_ID_NAMESPACE, key))


def encode(message: BaseModel) -> bytes:
    """Any message as UTF-8 JSON, ready for Kafka or Celery."""
    return message.model_dump_json().encode()


def decode(model: type[M], raw: bytes | str) -> M:
    """Parse and validate ``raw`` as ``model``; raises ValidationError."""
    return model.model_validate_json(raw)


def describe(error: BaseException, limit: int = 300) -> str:
    """One line saying what is wrong with a message, for dead-letter reasons and logs."""
    if isinstance(error, ValidationError):
        problems = error.errors(include_url=False, include_input=False)
        first = problems[0] if problems else {"loc": (), "msg": str(error)}
        where = ".".join(str(part) for part in first["loc"])
        reason = str(first["msg"]).removeprefix("Value error, ")
        text = f"{error.title}: {where}: {reason}" if where else f"{error.title}: {reason}"
        if len(problems) > 1:
            text += f" (+{len(problems) - 1} more)"
    else:
        text = f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
