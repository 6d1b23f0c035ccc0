"""Series of one stream over a time range, from VictoriaMetrics.

The query is built here from validated parameters (:mod:`smap_bench.api.queries`); no
client-supplied query text reaches VictoriaMetrics. Without ``step`` the samples come
raw, at their records' own timestamps (``/api/v1/export``, no latency offset); with a
step they come on a grid (``/api/v1/query_range``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from smap_bench.api.deps import VictoriaDep
from smap_bench.api.models import SeriesData, SeriesParams, SeriesPublic
from smap_bench.api.queries import (
    METRIC_OF,
    SeriesKind,
    feature_index_of,
    series_selector,
    step_param,
    time_window,
)
from smap_bench.metrics import VictoriaMetrics

router = APIRouter(prefix="/series", tags=["series"])

Params = Annotated[SeriesParams, Query()]


def read_series(victoria: VictoriaMetrics, kind: SeriesKind, params: SeriesParams) -> SeriesPublic:
    """One stream's ``kind`` series over the requested range (see module)."""
    window = time_window(params.start, params.end, params.step, now=datetime.now(UTC))
    selector = series_selector(kind, params.satellite_id, params.subsystem, params.features)
    start, end = window.start.timestamp(), window.end.timestamp()
    if window.step_s is None:
        found = victoria.export(selector, start=start, end=end)
    else:
        found = victoria.query_range(selector, start, end, step=step_param(window.step_s))
    series = sorted(
        (SeriesData.of(s.labels, feature_index_of(s.labels), s.samples) for s in found),
        key=lambda s: (s.feature_index if s.feature_index is not None else -1, sorted(s.labels)),
    )
    return SeriesPublic(
        kind=kind,
        metric=METRIC_OF[kind],
        satellite_id=params.satellite_id,
        subsystem=params.subsystem,
        start=window.start,
        end=window.end,
        step=window.step_s,
        series=series,
    )


@router.get("/telemetry", response_model=SeriesPublic)
def telemetry(victoria: VictoriaDep, params: Params) -> SeriesPublic:
    """Raw telemetry (``smap_feature``) of the chosen features."""
    return read_series(victoria, SeriesKind.TELEMETRY, params)


@router.get("/scores", response_model=SeriesPublic)
def scores(victoria: VictoriaDep, params: Params) -> SeriesPublic:
    """Anomaly score of each record (``inference_anomaly_score``)."""
    return read_series(victoria, SeriesKind.SCORES, params)


@router.get("/thresholds", response_model=SeriesPublic)
def thresholds(victoria: VictoriaDep, params: Params) -> SeriesPublic:
    """The threshold each window was judged against (``inference_threshold``)."""
    return read_series(victoria, SeriesKind.THRESHOLDS, params)


@router.get("/reconstructions", response_model=SeriesPublic)
def reconstructions(victoria: VictoriaDep, params: Params) -> SeriesPublic:
    """The model's reconstruction of the chosen features (``inference_reconstruction``)."""
    return read_series(victoria, SeriesKind.RECONSTRUCTIONS, params)


@router.get("/detections", response_model=SeriesPublic)
def detections(victoria: VictoriaDep, params: Params) -> SeriesPublic:
    """Whether each window was anomalous, 0 or 1 (``inference_anomaly_detected``)."""
    return read_series(victoria, SeriesKind.DETECTIONS, params)
