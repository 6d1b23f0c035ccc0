"""How long a dashboard refresh of one stream takes in the Panel server.

:func:`bench_refresh` times, over and over, what one periodic refresh of the timeline
and the heatmap costs a session's server side: the store's fetch (one ``/api/series/view``
call turned into frames), applying it, the derived values the views read (spans,
threshold, error matrix, top features), and, with ``views=True``, the views redrawing
their Bokeh models in a document (as in a served session; the browser's drawing is not
included). The issue's target: p99 < 100 ms for the last 10 minutes of one stream.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from smap_bench.bench.api import percentile
from smap_bench.config import Settings


def _stats(values: list[float]) -> dict[str, float | None]:
    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 2)

    return {
        "p50": ms(percentile(values, 50)),
        "p90": ms(percentile(values, 90)),
        "p99": ms(percentile(values, 99)),
        "max": ms(max(values, default=None)),
        "mean": ms(statistics.fmean(values) if values else None),
    }


def bench_refresh(
    settings: Settings,
    satellite_id: str = "sat1",
    subsystem: str = "ACS",
    window_s: int = 600,
    repeats: int = 100,
    period_s: float = 0.0,
    views: bool = True,
) -> dict[str, Any]:
    """Refresh one stream's timeline and heatmap ``repeats`` times (every ``period_s``
    seconds, 0: back to back) and return the phases' p50/p90/p99/max in milliseconds:
    ``fetch`` (API call and frames), ``api_server`` (the API's own time, from its answer),
    ``apply`` (parameters written; with ``views`` the views redraw their models in it),
    ``derive`` (values the views read) and ``total`` (fetch + apply + derive)."""
    import panel as pn
    from bokeh.document import Document

    from smap_bench.dashboard.store import DashboardStore
    from smap_bench.dashboard.views import AnomalyTimeline, ReconstructionHeatmap

    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    store = DashboardStore.from_settings(settings, window_s=window_s)
    if not store.refresh_fleet():
        raise RuntimeError(f"the dashboard store could not read the fleet: {store.message}")
    store.select_stream(satellite_id, subsystem)
    if views:
        document = Document()
        for view in (AnomalyTimeline(store=store), ReconstructionHeatmap(store=store)):
            pn.panel(view).get_root(document)  # type: ignore[attr-defined]
    phases: dict[str, list[float]] = {
        k: [] for k in ("fetch", "api_server", "apply", "derive", "total")
    }
    original = store.client.stream_view
    server_ms: list[float] = []

    def recording(*args: Any, **kwargs: Any) -> dict[str, Any]:
        got = original(*args, **kwargs)
        if got.get("server_ms") is not None:
            server_ms.append(float(got["server_ms"]) / 1000)
        return got

    store.client.stream_view = recording
    try:
        for i in range(repeats + 1):  # the first refresh warms caches up, unrecorded
            began = time.perf_counter()
            got = store._fetch_stream()
            fetched = time.perf_counter()
            if got is None:
                raise RuntimeError("no stream selected")
            # The apply writes the parameters; with views, their watchers redraw the models
            # synchronously here, so the redraw is timed as part of it.
            store._apply_stream(got)
            applied = time.perf_counter()
            store.spans()
            store.threshold()
            store.top_features()
            store.heatmap_range()
            derived = time.perf_counter()
            if i > 0:
                phases["fetch"].append(fetched - began)
                phases["apply"].append(applied - fetched)
                phases["derive"].append(derived - applied)
                phases["total"].append(derived - began)
            if period_s > 0:
                time.sleep(max(0.0, period_s - (time.perf_counter() - began)))
    finally:
        store.client.stream_view = original
    phases["api_server"] = server_ms[1:]
    return {
        "satellite_id": satellite_id,
        "subsystem": subsystem,
        "window_s": window_s,
        "repeats": repeats,
        "views": views,
        "records": len(store.scores),
        "heatmap_records": len(store.errors()),
        "unit": "ms",
        "phases": {name: _stats(values) for name, values in phases.items()},
    }
