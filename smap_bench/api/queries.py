"""Series queries built server-side from validated parameters (no PromQL from clients).

A client names a stream (satellite, subsystem), a kind of series, feature indices where
the kind has them, and a time range; these pure functions turn that into a
VictoriaMetrics series selector and a checked time window. Metric names and labels are
the writer's schema (:mod:`smap_bench.metrics`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

from smap_bench.catalog import Subsystem
from smap_bench.schema import NUM_FEATURES

#: Satellite ids as the catalog makes them (``sat1``, ``sat2``, ...), bounded in length.
SATELLITE_ID_PATTERN = r"^sat[1-9][0-9]{0,8}$"
_SATELLITE_ID = re.compile(SATELLITE_ID_PATTERN)

#: The longest time range one request may cover.
MAX_RANGE = timedelta(hours=24)
#: Raw samples (no step) only for ranges up to this long; longer ranges need a step.
MAX_RAW_RANGE = timedelta(hours=1)
#: The range when a request gives neither start nor end.
DEFAULT_RANGE = timedelta(minutes=10)
#: At most this many points per series on a step grid (Prometheus' own limit).
MAX_POINTS = 11_000
#: Times outside this window are refused (they are typos, and datetime arithmetic overflows).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class SeriesKind(StrEnum):
    """The kinds of series the API serves for a stream."""

    TELEMETRY = "telemetry"
    SCORES = "scores"
    THRESHOLDS = "thresholds"
    RECONSTRUCTIONS = "reconstructions"
    DETECTIONS = "detections"
    VERDICTS = "verdicts"
    RECORD_INDEX = "record_index"
    FORECASTS = "forecasts"
    FORECAST_THRESHOLDS = "forecast_thresholds"


#: Kind -> metric name (smap_bench.metrics' schema).
METRIC_OF: dict[SeriesKind, str] = {
    SeriesKind.TELEMETRY: "smap_feature",
    SeriesKind.SCORES: "inference_anomaly_score",
    SeriesKind.THRESHOLDS: "inference_threshold",
    SeriesKind.RECONSTRUCTIONS: "inference_reconstruction",
    SeriesKind.DETECTIONS: "anomaly_alarm",  # the served decision, not the worker's verdict
    SeriesKind.VERDICTS: "inference_anomaly_detected",  # the worker's, before confirmation
    SeriesKind.RECORD_INDEX: "record_index",
    # the linear forecaster's window statistic and its static threshold (when served)
    SeriesKind.FORECASTS: "inference_forecast_statistic",
    SeriesKind.FORECAST_THRESHOLDS: "inference_forecast_threshold",
}

#: Kinds with one series per feature (label ``feature_index``).
PER_FEATURE: frozenset[SeriesKind] = frozenset({SeriesKind.TELEMETRY, SeriesKind.RECONSTRUCTIONS})
#: Kinds with one series per satellite (no ``subsystem`` label): the simulator's position.
PER_SATELLITE: frozenset[SeriesKind] = frozenset({SeriesKind.RECORD_INDEX})


def describe_span(span: timedelta) -> str:
    """A duration for messages: ``90 s``, ``25 min``, ``36.5 h``."""
    seconds = span.total_seconds()
    if seconds < 120:
        return f"{seconds:.4g} s"
    if seconds < 7200:
        return f"{seconds / 60:.4g} min"
    return f"{seconds / 3600:.4g} h"


class QueryError(ValueError):
    """Parameters that make no query; the message names the parameter and the problem."""


def _quote(value: str) -> str:
    # Values are validated before they get here; escaping keeps a selector well-formed anyway.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def check_features(features: Sequence[int]) -> list[int]:
    """Distinct feature indices in ascending order; each must be in 0..NUM_FEATURES-1."""
    if not features:
        raise QueryError("features: give at least one feature index")
    bad = [f for f in features if not 0 <= f < NUM_FEATURES]
    if bad:
        raise QueryError(f"features: {bad} outside 0..{NUM_FEATURES - 1}")
    return sorted(set(features))


def series_selector(
    kind: SeriesKind,
    satellite_id: str,
    subsystem: Subsystem,
    features: Sequence[int] | Literal["all"] | None = None,
) -> str:
    """The series selector of one stream's ``kind``, e.g.
    ``smap_feature{satellite_id="sat1",subsystem="ACS",feature_index=~"0|3"}``.

    ``features`` applies to per-feature kinds only (default: feature 0; ``"all"``: every
    feature, with no ``feature_index`` matcher). Per-satellite kinds (the record index)
    ignore ``subsystem``: every subsystem of a satellite shares the satellite's position.
    """
    if not _SATELLITE_ID.fullmatch(satellite_id):
        raise QueryError(f"satellite_id {satellite_id!r} does not match {SATELLITE_ID_PATTERN}")
    matchers = [f"satellite_id={_quote(satellite_id)}"]
    if kind not in PER_SATELLITE:
        matchers.append(f"subsystem={_quote(subsystem.value)}")
    if kind in PER_FEATURE and features != "all":
        chosen = check_features(features if features is not None else [0])
        if len(chosen) == 1:
            matchers.append(f'feature_index="{chosen[0]}"')
        else:
            matchers.append('feature_index=~"' + "|".join(str(f) for f in chosen) + '"')
    return f"{METRIC_OF[kind]}{{{','.join(matchers)}}}"


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise QueryError(f"time {value.isoformat()} is out of range in UTC") from None


@dataclass(frozen=True)
class TimeWindow:
    """A checked time range, and the step of its grid (``None``: raw samples)."""

    start: datetime
    end: datetime
    step_s: float | None

    @property
    def points(self) -> int | None:
        """Points per series on the step grid (``None`` for raw samples)."""
        if self.step_s is None:
            return None
        return math.floor((self.end - self.start).total_seconds() / self.step_s) + 1


def time_window(
    start: datetime | None,
    end: datetime | None,
    step_s: float | None,
    now: datetime,
    default_range: timedelta = DEFAULT_RANGE,
) -> TimeWindow:
    """Resolve and check a requested range.

    Missing ``end`` is ``now``; missing ``start`` is ``end - default_range``. The range must
    be non-empty, at most :data:`MAX_RANGE`, within 1970..2200; without a step at most
    :data:`MAX_RAW_RANGE`; with one, at most :data:`MAX_POINTS` points per series.
    """
    for name, value in (("start", start), ("end", end)):
        if value is not None and not EARLIEST <= as_utc(value) < LATEST:
            raise QueryError(f"{name} {value.isoformat()} is outside 1970..2200")
    stop = as_utc(end) if end is not None else as_utc(now)
    begin = as_utc(start) if start is not None else stop - default_range
    if begin >= stop:
        raise QueryError(f"start {begin.isoformat()} is not before end {stop.isoformat()}")
    span = stop - begin
    if span > MAX_RANGE:
        raise QueryError(
            f"range {describe_span(span)} is longer than the maximum {describe_span(MAX_RANGE)}"
        )
    if step_s is None:
        if span > MAX_RAW_RANGE:
            raise QueryError(
                f"range {describe_span(span)} is longer than {describe_span(MAX_RAW_RANGE)}: "
                "give a step (seconds) "
                "for a grid instead of raw samples"
            )
        return TimeWindow(begin, stop, None)
    if not (math.isfinite(step_s) and step_s > 0):
        raise QueryError(f"step {step_s} must be a positive number of seconds")
    # Compared as a float first: a tiny step (a denormal) makes the ratio infinite.
    ratio = span.total_seconds() / step_s
    if not ratio < MAX_POINTS:
        smallest = span.total_seconds() / (MAX_POINTS - 1)
        points = f"{math.floor(ratio) + 1}" if math.isfinite(ratio) else "too many"
        raise QueryError(
            f"range {describe_span(span)} at step {step_s:g} s gives {points} points "
            f"per series, more than {MAX_POINTS}: use a step of at least "
            f"{math.ceil(smallest * 1000) / 1000} s"
        )
    return TimeWindow(begin, stop, step_s)


def step_param(step_s: float) -> str:
    """A step as VictoriaMetrics takes it: whole milliseconds, e.g. ``1500ms``."""
    return f"{max(round(step_s * 1000), 1)}ms"


def feature_index_of(labels: dict[str, str]) -> int | None:
    """The ``feature_index`` label as a number, if the series has a valid one."""
    value = labels.get("feature_index")
    return int(value) if value is not None and value.isdigit() else None
