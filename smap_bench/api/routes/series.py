"""Series of one stream over a time range, from VictoriaMetrics, and a stream's whole
view (timeline and heatmap) in one answer.

The query is built here from validated parameters (:mod:`smap_bench.api.queries`); no
client-supplied query text reaches VictoriaMetrics. Without ``step`` the samples come
raw, at their records' own timestamps (``/api/v1/export``, no latency offset); with a
step they come on a grid (``/api/v1/query_range``). The routes are coroutines awaiting
VictoriaMetrics (:mod:`smap_bench.api.victoria`): no worker thread is held per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from smap_bench.api import crud
from smap_bench.api.deps import PoolDep, SettingsDep, VictoriaAsyncDep
from smap_bench.api.models import (
    SeriesData,
    SeriesParams,
    SeriesPublic,
    StreamViewParams,
    StreamViewPublic,
)
from smap_bench.api.queries import (
    METRIC_OF,
    QueryError,
    SeriesKind,
    TimeWindow,
    as_utc,
    feature_index_of,
    series_selector,
    step_param,
    time_window,
)
from smap_bench.api.stream_view import HEATMAP_KINDS, TIMELINE_KINDS, heatmap_window, split_by_kind
from smap_bench.api.victoria import AsyncVictoria
from smap_bench.metrics import Series

router = APIRouter(prefix="/series", tags=["series"])

Params = Annotated[SeriesParams, Query()]
ViewParams = Annotated[StreamViewParams, Query()]
#: How far before the shown range a view looks for events still running into it.
EVENT_LOOKBACK = timedelta(hours=1)


def series_data(found: Sequence[Series]) -> list[SeriesData]:
    """Read-back series as answer items, by feature index (per-stream kinds first)."""
    return sorted(
        (SeriesData.of(s.labels, feature_index_of(s.labels), s.samples) for s in found),
        key=lambda s: (s.feature_index if s.feature_index is not None else -1, sorted(s.labels)),
    )


async def read_series(
    victoria: AsyncVictoria, kind: SeriesKind, params: SeriesParams
) -> SeriesPublic:
    """One stream's ``kind`` series over the requested range (see module)."""
    window = time_window(params.start, params.end, params.step, now=datetime.now(UTC))
    selector = series_selector(kind, params.satellite_id, params.subsystem, params.features)
    start, end = window.start.timestamp(), window.end.timestamp()
    if window.step_s is None:
        found = await victoria.export(selector, start=start, end=end)
    else:
        found = await victoria.query_range(selector, start, end, step=step_param(window.step_s))
    return SeriesPublic(
        kind=kind,
        metric=METRIC_OF[kind],
        satellite_id=params.satellite_id,
        subsystem=params.subsystem,
        start=window.start,
        end=window.end,
        step=window.step_s,
        series=series_data(found),
    )


@router.get("/telemetry", response_model=SeriesPublic)
async def telemetry(victoria: VictoriaAsyncDep, params: Params) -> SeriesPublic:
    """Raw telemetry (``smap_feature``) of the chosen features."""
    return await read_series(victoria, SeriesKind.TELEMETRY, params)


@router.get("/scores", response_model=SeriesPublic)
async def scores(victoria: VictoriaAsyncDep, params: Params) -> SeriesPublic:
    """Anomaly score of each record (``inference_anomaly_score``)."""
    return await read_series(victoria, SeriesKind.SCORES, params)


@router.get("/thresholds", response_model=SeriesPublic)
async def thresholds(victoria: VictoriaAsyncDep, params: Params) -> SeriesPublic:
    """The threshold each window was judged against (``inference_threshold``)."""
    return await read_series(victoria, SeriesKind.THRESHOLDS, params)


@router.get("/reconstructions", response_model=SeriesPublic)
async def reconstructions(victoria: VictoriaAsyncDep, params: Params) -> SeriesPublic:
    """The model's reconstruction of the chosen features (``inference_reconstruction``)."""
    return await read_series(victoria, SeriesKind.RECONSTRUCTIONS, params)


@router.get("/detections", response_model=SeriesPublic)
async def detections(victoria: VictoriaAsyncDep, params: Params) -> SeriesPublic:
    """Whether each window was decided anomalous, 0 or 1 (``anomaly_alarm``, the events
    stage's served decision: under the confirmed rule, only confirmed windows are 1)."""
    return await read_series(victoria, SeriesKind.DETECTIONS, params)


@router.get("/verdicts", response_model=SeriesPublic)
async def verdicts(victoria: VictoriaAsyncDep, params: Params) -> SeriesPublic:
    """Whether the workers flagged each window, 0 or 1 (``inference_anomaly_detected``,
    before the events stage's confirmation: a 1 here that is 0 in ``/detections`` is a
    window the stream rule did not confirm)."""
    return await read_series(victoria, SeriesKind.VERDICTS, params)


@router.get("/forecasts", response_model=SeriesPublic)
async def forecasts(victoria: VictoriaAsyncDep, params: Params) -> SeriesPublic:
    """The linear forecaster's statistic per window (``inference_forecast_statistic``: its
    smoothed error over the window's newest records; none when it is not served)."""
    return await read_series(victoria, SeriesKind.FORECASTS, params)


@router.get("/forecast_thresholds", response_model=SeriesPublic)
async def forecast_thresholds(victoria: VictoriaAsyncDep, params: Params) -> SeriesPublic:
    """The forecaster's static threshold per window (``inference_forecast_threshold``)."""
    return await read_series(victoria, SeriesKind.FORECAST_THRESHOLDS, params)


@router.get("/record_index", response_model=SeriesPublic)
async def record_index(victoria: VictoriaAsyncDep, params: Params) -> SeriesPublic:
    """The record index of each record of the satellite (``record_index``; the same for
    every subsystem): places labeled ranges, given in record indices, on the time axis."""
    return await read_series(victoria, SeriesKind.RECORD_INDEX, params)


def _heatmap_range(params: StreamViewParams, now: datetime) -> TimeWindow | None:
    given = (params.heatmap_start is not None, params.heatmap_end is not None)
    if given == (False, False):
        return None
    if given != (True, True):
        raise QueryError("heatmap_start and heatmap_end: give both, or neither")
    return time_window(params.heatmap_start, params.heatmap_end, None, now=now)


def _held_range(params: StreamViewParams) -> tuple[datetime, datetime] | None:
    start, end = params.held_heatmap_start, params.held_heatmap_end
    if (start is None) != (end is None):
        raise QueryError("held_heatmap_start and held_heatmap_end: give both, or neither")
    return (as_utc(start), as_utc(end)) if start is not None and end is not None else None


@router.get("/view", response_model=StreamViewPublic)
async def view(
    victoria: VictoriaAsyncDep, pool: PoolDep, settings: SettingsDep, params: ViewParams
) -> StreamViewPublic:
    """A stream's timeline (telemetry of the chosen features, score, threshold,
    detections, the workers' verdicts, record index, events) and heatmap (every
    feature's telemetry and reconstruction over the newest flagged window, or the given
    heatmap range): what a dashboard refresh shows, in two VictoriaMetrics reads and one
    PostgreSQL query (one, when the client holds the heatmap of the range shown: see
    held_heatmap_start)."""
    began = time.perf_counter()
    now = datetime.now(UTC)
    window = time_window(params.start, params.end, None, now=now)
    explicit = _heatmap_range(params, now)
    # A client that holds the heatmap of the range the answer shows gets no heat series
    # again (the window moves once a stride of records; most refreshes show the same one).
    held = _held_range(params)
    sat, sub = params.satellite_id, params.subsystem
    matches = [series_selector(k, sat, sub, params.features) for k in TIMELINE_KINDS]
    start, end = window.start.timestamp(), window.end.timestamp()
    filters = crud.EventFilter(
        satellite_id=sat,
        subsystem=sub.value,
        since=window.start - EVENT_LOOKBACK,
        until=window.end,
        limit=200,
    )
    heat: list[Series] = []

    async def read_heat(heat_window: TimeWindow) -> list[Series]:
        selectors = [series_selector(k, sat, sub, "all") for k in HEATMAP_KINDS]
        return await victoria.export_many(
            selectors, heat_window.start.timestamp(), heat_window.end.timestamp()
        )

    timeline_job = victoria.export_many(matches, start, end)
    events_job = run_in_threadpool(_stream_events, pool, filters)
    heat_range = (explicit.start, explicit.end) if explicit is not None else None
    if explicit is not None and heat_range != held:
        found, (events, _), heat = await asyncio.gather(
            timeline_job, events_job, read_heat(explicit)
        )
    else:
        found, (events, _) = await asyncio.gather(timeline_job, events_job)
    parts = split_by_kind(found)
    if explicit is None:
        heat_range = heatmap_window(
            parts.get(SeriesKind.DETECTIONS, []),
            parts.get(SeriesKind.SCORES, []),
            settings.window_size,
        )
        if heat_range is not None and heat_range != held:
            heat = await read_heat(TimeWindow(heat_range[0], heat_range[1], None))
    heat_parts = split_by_kind(heat)
    return StreamViewPublic(
        satellite_id=sat,
        subsystem=sub,
        start=window.start,
        end=window.end,
        telemetry=series_data(parts.get(SeriesKind.TELEMETRY, [])),
        scores=series_data(parts.get(SeriesKind.SCORES, [])),
        thresholds=series_data(parts.get(SeriesKind.THRESHOLDS, [])),
        detections=series_data(parts.get(SeriesKind.DETECTIONS, [])),
        verdicts=series_data(parts.get(SeriesKind.VERDICTS, [])),
        record_index=series_data(parts.get(SeriesKind.RECORD_INDEX, [])),
        forecasts=series_data(parts.get(SeriesKind.FORECASTS, [])),
        forecast_thresholds=series_data(parts.get(SeriesKind.FORECAST_THRESHOLDS, [])),
        events=events,
        heatmap_start=heat_range[0] if heat_range else None,
        heatmap_end=heat_range[1] if heat_range else None,
        heat_input=series_data(heat_parts.get(SeriesKind.TELEMETRY, [])),
        heat_output=series_data(heat_parts.get(SeriesKind.RECONSTRUCTIONS, [])),
        heatmap_held=heat_range is not None and heat_range == held,
        server_ms=round((time.perf_counter() - began) * 1000, 3),
    )


def _stream_events(pool: Any, filters: crud.EventFilter) -> tuple[list[crud.Row], int]:
    with pool.connection() as conn:
        return crud.list_events(conn, filters)
