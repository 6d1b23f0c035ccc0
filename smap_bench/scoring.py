"""Scoring windows: inference tasks in, one inference result per window out.

The worker (``pipeline/worker.py``) is a thin Celery shell around :func:`score_tasks`; it
decides window anomalies by the rule the offline evaluation applies
(:mod:`smap_bench.model.offline`), so live and offline detections agree by construction.

**The anomaly rule.** A window is anomalous when its window statistic exceeds the model's
threshold: :func:`smap_bench.model.threshold.window_is_anomalous`, whose statistic
(:func:`~smap_bench.model.threshold.window_statistic`, the mean of the window's
per-record scores) is the one the threshold was fitted on from training windows;
comparing any other number with that threshold would change its false-alarm rate. A
flagged window marks the records it is responsible for
(:func:`smap_bench.windows.responsible_range`, turned into record flags by
:func:`smap_bench.windows.record_flags_from_windows`).

**The context detector.** When the scheduler sends a window's ``context`` (the telemetry
value of the last ``context_length`` records) and the worker serves a detector for the
channel (:class:`ContextDetectors`, fitted on the train split as the offline evaluation
fits it), the window is also anomalous when the context's distance exceeds the
detector's threshold or its hold the hold threshold (:mod:`smap_bench.model.context`).
The result carries those numbers, and ``detected_by`` names what flagged the window
(``model``, ``context``, ``hold``, ``forecaster``) for the events it joins.

**The forecaster.** When the scheduler sends a window's forecast context (the value and
command masks of its last records) and the worker serves the linear forecaster
(``SMAP_FORECASTER``; :class:`Forecasters`, fitted as the offline evaluation fits it), the
window carries the forecaster's statistic
(:func:`smap_bench.model.forecaster.context_statistic`) and is flagged ``forecaster``
when it exceeds the forecaster's static threshold; the events stage confirms that flag
under the stream rule, as TranAD's.

**Feature errors.** Each result carries ``feature_errors``: the mean squared difference
between input and reconstruction per feature (raw units, as the model's reconstruction
is), over the records the window is responsible for, so the events builder can name the
features that contributed most without overlapping windows counting a record twice.

**Delivery.** A result is published once: when Kafka fails to confirm some of a task's
results, the retry carries only those windows (:func:`undelivered_tasks`).

**Failures.** A window that can never be scored (invalid task, unknown model, no
threshold, a window the model refuses) is *rejected* with a reason for the dead-letter
topic; a window whose model is only unavailable for now (server down, model loading) is
*deferred* for the worker to retry.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from pydantic import TypeAdapter, ValidationError

from smap_bench.data.loader import load_channel
from smap_bench.inference.base import (
    BackendUnavailableError,
    InferenceBackend,
    InferenceError,
    InvalidWindowError,
    ModelNotReadyError,
)
from smap_bench.inference.repository import onnx_models_dir, read_metadata
from smap_bench.model.context import ContextConfig, ContextDetector, detector_from_metadata
from smap_bench.model.forecaster import (
    ChannelForecaster,
    LinearForecasterConfig,
    context_statistic,
    linear_channel_forecaster,
)
from smap_bench.model.stream_rule import stream_rule_from_metadata
from smap_bench.model.threshold import window_is_anomalous as threshold_rule
from smap_bench.schema import DETECTORS, InferenceResult, InferenceTask, describe
from smap_bench.stage import stamp
from smap_bench.windows import responsible_range

__all__ = [
    "SERVICE",
    "STAGE",
    "BatchOutcome",
    "ContextDetectors",
    "Forecasters",
    "MetadataThresholds",
    "Rejected",
    "ScoreThreshold",
    "TrainFitted",
    "batch_feature_errors",
    "feature_errors",
    "load_threshold",
    "parse_tasks",
    "responsible_rows",
    "score_concurrently",
    "score_tasks",
    "score_threshold_from_metadata",
    "threshold_from_metadata",
    "undelivered_tasks",
    "warm_up",
    "window_is_anomalous",
    "windows_anomalous",
    "worker_index",
]

#: Stage name (logger, metric label, ``stages`` key) and the seed's ``service`` field.
STAGE = "worker"
log = logging.getLogger(f"smap_bench.{STAGE}")
SERVICE = "inference-worker"

#: Decimals kept of reconstructed values: float32 holds about 7 significant digits, and
#: shorter numbers halve the size of a result message.
RECONSTRUCTION_DECIMALS = 6

D = TypeVar("D")

_TASK_LIST: TypeAdapter[list[InferenceTask]] = TypeAdapter(list[InferenceTask])

#: Errors that say "not now" rather than "never": the task is retried later.
TRANSIENT_ERRORS: tuple[type[InferenceError], ...] = (BackendUnavailableError, ModelNotReadyError)


# --------------------------------------------------------------------------------------
# The decision rule (shared with the offline evaluation)
# --------------------------------------------------------------------------------------


def windows_anomalous(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Anomaly flag of each window ``[B]`` from per-record scores ``[B, window]``.

    The rule is :func:`smap_bench.model.threshold.window_is_anomalous` (window statistic
    above the threshold), which the offline evaluation also applies: one rule, one place.
    """
    return np.asarray(threshold_rule(np.asarray(scores, dtype=np.float64), threshold), dtype=bool)


def window_is_anomalous(scores: Sequence[float] | np.ndarray, threshold: float) -> bool:
    """Whether one window, given its per-record scores ``[window]``, is anomalous."""
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"window_is_anomalous: scores have shape {values.shape}, need (window,)")
    return bool(windows_anomalous(values[None, :], threshold)[0])


def responsible_rows(record_index_start: int | None, window: int, stride: int) -> slice:
    """Rows of a window that it is responsible for (see :mod:`smap_bench.windows`).

    A window without a record index, or off the stride grid (not formed by the
    scheduler), is taken as responsible for all its rows.
    """
    if record_index_start is None or record_index_start % stride or stride > window:
        return slice(0, window)
    lo, hi = responsible_range(record_index_start, window, stride)
    return slice(lo - record_index_start, hi - record_index_start)


def feature_errors(window: np.ndarray, reconstruction: np.ndarray, rows: slice) -> np.ndarray:
    """Mean squared reconstruction error per feature ``[features]`` over ``rows``."""
    diff = np.asarray(window, dtype=np.float64)[rows] - np.asarray(reconstruction)[rows]
    return (diff * diff).mean(axis=0)


def batch_feature_errors(
    windows: np.ndarray, reconstruction: np.ndarray, rows: Sequence[slice]
) -> np.ndarray:
    """:func:`feature_errors` of a batch ``[B, window, features]``, one row slice per window."""
    mask = np.zeros(windows.shape[:2], dtype=np.float64)
    for i, selected in enumerate(rows):
        mask[i, selected] = 1.0
    diff = np.asarray(windows, dtype=np.float64) - np.asarray(reconstruction, dtype=np.float64)
    weighted = np.einsum("bw,bwf->bf", mask, diff * diff)
    return weighted / mask.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------------------
# Thresholds from the model repository
# --------------------------------------------------------------------------------------


def threshold_from_metadata(model_name: str, metadata: dict[str, Any]) -> float:
    """The threshold in a model's metadata.json: ``"threshold": x`` or ``{"value": x}``."""
    value = metadata.get("threshold")
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ValueError(f"{model_name}: metadata.json has no finite threshold (got {value!r})")
    return float(value)


@dataclass(frozen=True, slots=True)
class ScoreThreshold:
    """A model's threshold on the window statistic (what the worker flags by) and the
    floor of its stream rule (POT's initial threshold of its training statistics,
    ``threshold_parameters.pot_initial``; None: metadata without one). The result carries
    both, so the events stage confirms a flag by the rule of the metadata the worker
    read when it flagged the window."""

    value: float
    floor: float | None = None


def score_threshold_from_metadata(model_name: str, metadata: dict[str, Any]) -> ScoreThreshold:
    """A model's :class:`ScoreThreshold` from its metadata.json (``ValueError`` without a
    finite threshold; a floor that is missing or not finite is None), parsed as the
    offline evaluation parses it
    (:func:`~smap_bench.model.stream_rule.stream_rule_from_metadata`)."""
    try:
        rule = stream_rule_from_metadata(model_name, metadata)
    except ValueError:  # no finite floor (or no threshold, which this says): the threshold
        return ScoreThreshold(threshold_from_metadata(model_name, metadata))
    return ScoreThreshold(rule.static, rule.floor)


def load_threshold(repository: Path, model_name: str) -> ScoreThreshold:
    """The threshold (and floor) of ``model_name`` from
    ``<repository>/onnx/<model>/metadata.json``."""
    model_dir = onnx_models_dir(repository) / model_name
    if not (model_dir / "metadata.json").is_file():
        raise ValueError(f"{model_name}: no metadata.json in {model_dir}")
    return score_threshold_from_metadata(model_name, read_metadata(model_dir))


class MetadataThresholds:
    """Thresholds read from the repository, cached per model until its metadata changes.

    One ``stat`` per model and call: a retrained model's new threshold (and floor) is used
    without restarting the worker, and the results say which one judged them.
    """

    def __init__(self, repository: Path) -> None:
        self.repository = Path(repository)
        self._cache: dict[str, tuple[int, ScoreThreshold]] = {}

    def __call__(self, model_name: str) -> ScoreThreshold:
        path = onnx_models_dir(self.repository) / model_name / "metadata.json"
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            raise ValueError(f"{model_name}: no metadata.json at {path}") from None
        cached = self._cache.get(model_name)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        value = load_threshold(self.repository, model_name)
        self._cache[model_name] = (mtime, value)
        return value


class TrainFitted(Generic[D]):
    """Something fitted per model on the channel's train split under ``data_dir`` (as the
    offline evaluation resolves it) and the model's metadata, cached until that metadata
    changes (as :class:`MetadataThresholds`).

    A model for which nothing can be fitted (no metadata or normalisation, no train split,
    or one too short) gets None, with a warning saying why; the fit is tried again after
    :attr:`RETRY_S`, so a data directory missing for a while does not switch the detector
    off for the worker's life. Subclasses say what they fit (:meth:`fit`).
    """

    #: Seconds before a model whose fit failed is tried again.
    RETRY_S = 60.0
    #: what is fitted, for the warnings
    WHAT = "detector"

    def __init__(
        self,
        repository: Path,
        data_dir: Path | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repository = Path(repository)
        self.data_dir = data_dir
        self.clock = clock
        self._cache: dict[str, tuple[int, D | None, float]] = {}

    def fit(self, model_name: str, channel: str, train: np.ndarray, metadata: dict[str, Any]) -> D:
        """Fit one model's (its channel's train split and metadata); ``ValueError`` says
        why it cannot be."""
        raise NotImplementedError

    def __call__(self, model_name: str) -> D | None:
        path = onnx_models_dir(self.repository) / model_name / "metadata.json"
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            mtime = -1
        now = self.clock()
        cached = self._cache.get(model_name)
        if cached is not None and cached[0] == mtime:
            kept, fitted_at = cached[1], cached[2]
            if kept is not None or now - fitted_at < self.RETRY_S:
                return kept
        fitted: D | None = None
        try:
            metadata = read_metadata(path.parent)
            if not metadata:
                raise ValueError(f"no metadata.json in {path.parent}")
            channel = str(metadata.get("channel") or model_name.removeprefix("SMAP_"))
            train = load_channel(channel, self.data_dir).train
            fitted = self.fit(model_name, channel, train, metadata)
        except (OSError, ValueError) as error:
            fitted = None
            log.warning(
                "%s: no %s, windows judged without it (%s)", model_name, self.WHAT, describe(error)
            )
        self._cache[model_name] = (mtime, fitted, now)
        return fitted


class ContextDetectors(TrainFitted[ContextDetector]):
    """Context detectors per model (:func:`smap_bench.model.context.detector_from_metadata`;
    see :class:`TrainFitted`): a model without one has its windows judged by the model
    alone."""

    WHAT = "context detector"

    def __init__(
        self,
        repository: Path,
        data_dir: Path | None,
        config: ContextConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.level_margin is not None:  # the worker's judgements do not hold it
            raise ValueError("context: the level check is not served (level_margin must be None)")
        super().__init__(repository, data_dir, clock)
        self.config = config

    def fit(
        self, model_name: str, channel: str, train: np.ndarray, metadata: dict[str, Any]
    ) -> ContextDetector:
        detector = detector_from_metadata(train, metadata, self.config)
        if not math.isfinite(detector.threshold):
            reason = (
                f"train split of {len(train)} records holds no two contexts of "
                f"{self.config.length} records apart"
            )
            if not math.isfinite(detector.hold_threshold):
                raise ValueError(f"{reason}, and the hold is off")
            log.warning("%s: context judged by its hold alone (%s)", model_name, reason)
        return detector


class Forecasters(TrainFitted[ChannelForecaster]):
    """The linear forecaster per model and its decision, fitted on the fit part of the
    train split and thresholded on the whole split as the offline evaluation fits them
    (:func:`smap_bench.model.forecaster.linear_channel_forecaster`; see
    :class:`TrainFitted`). A channel whose fit part is too short gets a forecaster that
    never judges (said once, when fitted)."""

    WHAT = "forecaster"

    def __init__(
        self,
        repository: Path,
        data_dir: Path | None,
        config: LinearForecasterConfig,
        stride: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(repository, data_dir, clock)
        self.config = config
        self.stride = stride

    def fit(
        self, model_name: str, channel: str, train: np.ndarray, metadata: dict[str, Any]
    ) -> ChannelForecaster:
        block = min(self.stride, int(metadata["window"]))
        decided = linear_channel_forecaster(channel, train, metadata, self.config, block)
        if decided.rule is None:
            log.warning(
                "%s: no forecast: a fit part of %d rows is too short for %d lags",
                model_name,
                decided.fit_rows,
                self.config.lags,
            )
        return decided


# --------------------------------------------------------------------------------------
# Scoring a batch of tasks
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejected:
    """A task (or payload item) that cannot be scored, with the dead-letter reason."""

    item: Any  #: the task, or the raw payload item that did not validate
    reason: str
    job_id: str | None = None

    def payload(self) -> bytes:
        """The rejected item as JSON bytes for the dead-letter topic."""
        if isinstance(self.item, InferenceTask):
            return self.item.model_dump_json().encode()
        if isinstance(self.item, bytes):
            return self.item
        try:
            return json.dumps(self.item, default=str).encode()
        except (TypeError, ValueError):
            return repr(self.item).encode()


@dataclass
class BatchOutcome:
    """What became of a batch: results, rejected windows, windows to retry later."""

    results: list[InferenceResult] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    deferred: list[InferenceTask] = field(default_factory=list)
    deferred_reason: str | None = None


def parse_tasks(payload: Any) -> tuple[list[InferenceTask], list[Rejected]]:
    """Validate a Celery payload into tasks, and the items that are not valid tasks.

    Accepted forms: a JSON string of a task array (what the scheduler sends, see
    :func:`smap_bench.scheduling.encode_tasks`), a list of task dicts, or one task dict
    (the seed's form).
    """
    if isinstance(payload, str | bytes):
        try:
            return _TASK_LIST.validate_json(payload), []
        except ValidationError:
            pass  # find the bad items one by one below
        try:
            payload = json.loads(payload)
        except ValueError as error:
            return [], [Rejected(payload, f"payload is not JSON: {describe(error)}")]
    items = [payload] if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        reason = f"payload is a {type(payload).__name__}, expected a list of inference tasks"
        return [], [Rejected(payload, reason)]
    tasks: list[InferenceTask] = []
    rejected: list[Rejected] = []
    for item in items:
        try:
            tasks.append(InferenceTask.model_validate(item))
        except ValidationError as error:
            job_id = item.get("job_id") if isinstance(item, dict) else None
            rejected.append(
                Rejected(item, describe(error), job_id if isinstance(job_id, str) else None)
            )
    return tasks, rejected


def score_tasks(
    tasks: Sequence[InferenceTask],
    backend: InferenceBackend,
    thresholds: Callable[[str], ScoreThreshold],
    *,
    stride: int,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    contexts: Callable[[str], ContextDetector | None] | None = None,
    forecasters: Callable[[str], ChannelForecaster | None] | None = None,
) -> BatchOutcome:
    """Score validated tasks: one backend call per model, one result per window; with
    ``contexts``, windows that carry a context are also judged by the model's context
    detector, with ``forecasters`` windows that carry a forecast context by the
    channel's forecaster."""
    outcome = BatchOutcome()
    by_model: dict[str, list[InferenceTask]] = {}
    for task in tasks:
        by_model.setdefault(task.model_name, []).append(task)
    for model, group in by_model.items():
        try:
            threshold = thresholds(model)
        except (ValueError, OSError) as error:
            outcome.rejected += [Rejected(t, describe(error), t.job_id) for t in group]
            continue
        same_shape = [t for t in group if t.window_size == group[0].window_size]
        for t in group:
            if t.window_size != group[0].window_size:
                reason = (
                    f"{model}: window has {t.window_size} rows, the others of the batch "
                    f"{group[0].window_size}"
                )
                outcome.rejected.append(Rejected(t, reason, t.job_id))
        judges = _Judges(
            contexts(model) if contexts is not None else None,
            forecasters(model) if forecasters is not None else None,
        )
        _score_group(model, same_shape, threshold, backend, stride, now, outcome, judges)
    return outcome


@dataclass(frozen=True, slots=True)
class _Judges:
    """What judges a model's windows beside its score (None: not served for it)."""

    context: ContextDetector | None = None
    forecaster: ChannelForecaster | None = None


def _score_group(
    model: str,
    group: list[InferenceTask],
    threshold: ScoreThreshold,
    backend: InferenceBackend,
    stride: int,
    now: Callable[[], datetime],
    outcome: BatchOutcome,
    judges: _Judges = _Judges(),
) -> None:
    windows = np.stack([t.input_array() for t in group])
    try:
        output = backend.infer(model, windows)
    except TRANSIENT_ERRORS as error:
        outcome.deferred += group
        outcome.deferred_reason = describe(error)
        return
    except InvalidWindowError as error:
        if len(group) > 1:  # find the window(s) at fault, score the others
            for task in group:
                _score_group(model, [task], threshold, backend, stride, now, outcome, judges)
            return
        outcome.rejected.append(Rejected(group[0], describe(error), group[0].job_id))
        return
    except InferenceError as error:  # unknown model, or a model answering off contract
        outcome.rejected += [Rejected(t, describe(error), t.job_id) for t in group]
        return
    scores = np.asarray(output.score, dtype=np.float64)
    reconstruction = np.asarray(output.reconstruction, dtype=np.float64)
    finite = np.isfinite(scores).all(axis=1) & np.isfinite(reconstruction).all(axis=(1, 2))
    flags = windows_anomalous(np.where(finite[:, None], scores, 0.0), threshold.value)
    detector = judges.context
    judgements = _context_judgements(model, group, detector)
    context_threshold = None if detector is None else _finite_or_none(detector.threshold)
    hold_threshold = None if detector is None else _finite_or_none(detector.hold_threshold)
    forecasts = _forecast_statistics(group, judges.forecaster, stride)
    forecast_rule = None if judges.forecaster is None else judges.forecaster.rule
    forecast_threshold = None if forecast_rule is None else forecast_rule.static
    forecast_floor = None if forecast_rule is None else forecast_rule.floor
    rounded = np.round(reconstruction, RECONSTRUCTION_DECIMALS)
    means, maxima = scores.mean(axis=1), scores.max(axis=1)
    rows = [responsible_rows(t.record_index_start, t.window_size, stride) for t in group]
    errors = batch_feature_errors(windows, reconstruction, rows)
    created = now()
    for i, task in enumerate(group):
        judged, forecast = judgements[i], forecasts[i]
        by_forecast = (
            forecast is not None
            and forecast_threshold is not None
            and forecast > forecast_threshold
        )
        detected_by = [
            name
            for name, flagged in zip(
                DETECTORS,
                (bool(flags[i]), judged.by_distance, judged.by_hold, by_forecast),
                strict=True,
            )
            if flagged
        ]
        if not finite[i]:
            reason = f"{model}: model returned NaN or infinity for this window"
            outcome.rejected.append(Rejected(task, reason, task.job_id))
            continue
        # Every value was checked above (finite numbers, shapes from the model contract),
        # so the result is built without a second validation pass.
        outcome.results.append(
            InferenceResult.model_construct(
                satellite_id=task.satellite_id,
                subsystem=task.subsystem,
                model_name=task.model_name,
                window_size=task.window_size,
                window_start_time=task.window_start,
                window_end_time=task.window_end,
                mean_anomaly_score=float(means[i]),
                max_anomaly_score=float(maxima[i]),
                is_anomaly=bool(detected_by),
                anomaly_scores=scores[i].tolist(),
                reconstructions=rounded[i].tolist(),
                inference_time_ms=float(output.elapsed_ms),
                timestamp=created,
                service=SERVICE,
                status="success",
                job_id=task.job_id,
                threshold=threshold.value,
                stream_floor=threshold.floor,
                context_distance=judged.distance,
                context_threshold=None if judged.distance is None else context_threshold,
                context_hold=judged.hold,
                context_hold_threshold=None if judged.hold is None else hold_threshold,
                forecast_statistic=forecast,
                forecast_threshold=None if forecast is None else forecast_threshold,
                forecast_floor=None if forecast is None else forecast_floor,
                detected_by=detected_by,
                loop=task.loop,
                record_index_start=task.record_index_start,
                run_window_start=task.run_window_start,
                channel=task.channel,
                stages=stamp(task.stages, STAGE),
                feature_errors=errors[i].tolist(),
            )
        )


#: Models whose tasks came with a context of another length (warned once per process).
_LENGTH_WARNED: set[str] = set()


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class _ContextJudgement:
    """What the context detector said of one window (None: not judged)."""

    distance: float | None = None
    hold: int | None = None
    by_distance: bool = False
    by_hold: bool = False


_NOT_JUDGED = _ContextJudgement()


def _context_judgements(
    model: str, group: list[InferenceTask], detector: ContextDetector | None
) -> list[_ContextJudgement]:
    """Each task's context distance and hold, and whether each flags it; not judged where
    there is no detector, no context in the task, or a context of another length than the
    detector's (the scheduler and the worker disagree on ``SMAP_CONTEXT_LENGTH``: logged,
    and the model's decision stands, so a settings drift costs the context, not the
    windows). A distance that is not finite is None (it flags nothing); the hold is judged
    all the same."""
    out = [_NOT_JUDGED] * len(group)
    if detector is None:
        return out
    length = detector.config.length
    judged = [i for i, t in enumerate(group) if t.context is not None and len(t.context) == length]
    if len(judged) < sum(t.context is not None for t in group) and model not in _LENGTH_WARNED:
        _LENGTH_WARNED.add(model)
        log.warning(
            "%s: tasks with a context of another length than the detector's %d judged "
            "by the model alone (SMAP_CONTEXT_LENGTH differs between scheduler and worker?)",
            model,
            length,
        )
    if judged:
        rows = np.asarray([group[i].context for i in judged], dtype=np.float64)
        window = group[0].window_size  # one window size per group (score_tasks)
        distances = detector.distances_of(rows)
        holds = detector.holds_of(rows, window)
        found = zip(
            judged,
            distances,
            holds,
            detector.distance_flags(distances),
            detector.hold_flags(holds),
            strict=True,
        )
        for i, distance, hold, by_distance, by_hold in found:
            out[i] = _ContextJudgement(
                _finite_or_none(float(distance)), int(hold), bool(by_distance), bool(by_hold)
            )
    return out


def _forecast_statistics(
    group: list[InferenceTask], decided: ChannelForecaster | None, stride: int
) -> list[float | None]:
    """Each task's forecaster statistic (:func:`~smap_bench.model.forecaster.context_statistic`;
    None: no forecaster, no forecast context, or too short a one)."""
    if decided is None or decided.rule is None:
        return [None] * len(group)
    out: list[float | None] = []
    for task in group:
        statistic = None
        if task.forecast_values is not None and task.forecast_masks is not None:
            statistic = context_statistic(
                decided, np.asarray(task.forecast_values), np.asarray(task.forecast_masks), stride
            )
        out.append(statistic if statistic is None or math.isfinite(statistic) else None)
    return out


def undelivered_tasks(
    tasks: Sequence[InferenceTask],
    results: Sequence[InferenceResult],
    delivered: set[str] | frozenset[str],
) -> list[InferenceTask]:
    """Tasks whose result Kafka has not confirmed (job ids not in ``delivered``), in order.

    What a retry after a failed delivery carries: only those windows, so that a result
    already on the results topic is never scored and published a second time. A window
    without a result (rejected or deferred) is not among them: it is handled apart.
    """
    pending = {r.job_id for r in results} - set(delivered)
    return [t for t in tasks if t.job_id in pending]


# --------------------------------------------------------------------------------------
# A worker process: warm-up and concurrent backend calls
# --------------------------------------------------------------------------------------


def warm_up(
    backend: InferenceBackend, models: Iterable[str], budget_s: float = 60.0
) -> tuple[int, float]:
    """Score one window of zeros with each model, so that no task pays a model's first
    call; returns (models warmed, seconds). A model that fails is skipped (its tasks will
    meet the error and be retried or dead-lettered); an unreachable server ends it; past
    ``budget_s`` the rest are left to warm on first use."""
    started = time.monotonic()
    warmed = 0
    for model in models:
        if time.monotonic() - started > budget_s:
            break
        try:
            signature = backend.signature(model)
            backend.infer(model, np.zeros((1, signature.window, signature.features), np.float32))
        except BackendUnavailableError as error:  # no server: nothing to warm
            log.warning("%s: warm-up stopped: %s", STAGE, error)
            break
        except InferenceError as error:
            log.warning("%s: warm-up of %s failed: %s", STAGE, model, error)
            continue
        warmed += 1
    return warmed, time.monotonic() - started


def score_concurrently(
    tasks: list[InferenceTask],
    backend: InferenceBackend,
    thresholds: Callable[[str], ScoreThreshold],
    stride: int,
    pool: Executor,
    contexts: Callable[[str], ContextDetector | None] | None = None,
    forecasters: Callable[[str], ChannelForecaster | None] | None = None,
) -> BatchOutcome:
    """:func:`~smap_bench.scoring.score_tasks`, one model's windows per thread of ``pool``;
    the outcomes merged in the order of the models' first windows, as ``score_tasks``
    orders them."""
    by_model: dict[str, list[InferenceTask]] = {}
    for task in tasks:
        by_model.setdefault(task.model_name, []).append(task)
    if len(by_model) <= 1:
        return score_tasks(
            tasks, backend, thresholds, stride=stride, contexts=contexts, forecasters=forecasters
        )
    parts = pool.map(
        lambda group: score_tasks(
            group, backend, thresholds, stride=stride, contexts=contexts, forecasters=forecasters
        ),
        by_model.values(),
    )
    merged = BatchOutcome()
    for part in parts:
        merged.results += part.results
        merged.rejected += part.rejected
        merged.deferred += part.deferred
        merged.deferred_reason = merged.deferred_reason or part.deferred_reason
    return merged


# --------------------------------------------------------------------------------------
# Deployment helper
# --------------------------------------------------------------------------------------

_NODE_NUMBER = re.compile(r"(\d+)$")


def worker_index(node_name: str | None, override: str | None = None) -> int:
    """0-based index of a worker process, for its metrics port (base port + index).

    ``override`` (the ``SMAP_WORKER_INDEX`` environment variable) wins; else the number at
    the end of the node name's first part (``worker1@host`` -> 0, ``worker2@host`` -> 1);
    else 0.
    """
    if override not in (None, ""):
        index = int(str(override))
        if index < 0:
            raise ValueError(f"worker index must be >= 0, got {index}")
        return index
    match = _NODE_NUMBER.search((node_name or "").split("@", 1)[0])
    return max(int(match.group(1)) - 1, 0) if match else 0


def elapsed_since(stages: dict[str, float] | None, stage: str = "simulator") -> float | None:
    """Seconds since ``stage`` stamped a message (None when it did not)."""
    if not stages or stage not in stages:
        return None
    return time.time() - stages[stage]
