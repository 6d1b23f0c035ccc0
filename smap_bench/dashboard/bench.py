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
    full_repeats: int = 20,
) -> dict[str, Any]:
    """Refresh one stream's timeline and heatmap ``repeats`` times (every ``period_s``
    seconds, 0: back to back) and return the phases' p50/p90/p99/max in milliseconds:
    ``fetch`` (API call and frames), ``api_server`` (the API's own time, from its answer),
    ``apply`` (parameters written; with ``views`` the views redraw their models in it),
    ``derive`` (values the views read) and ``total`` (fetch + apply + derive).

    A refresh replaces only the frames that changed (the store keeps equal ones, and the
    views redraw only what was drawn from a replaced frame), so its cost depends on what
    came: ``replaced`` counts, per frame, the refreshes that replaced it, and
    ``total_by_heatmap`` splits ``total`` by whether the heatmap's frames were replaced
    (once a stride of records, or on a new flagged window). Back to back, most refreshes
    find nothing new; ``period_s=1`` refreshes as the app does. ``full`` then times
    ``full_repeats`` refreshes of a store whose stream data was cleared first (untimed),
    so that every frame is new and every view redraws everything: a first load."""
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
    full: dict[str, list[float]] = {k: [] for k in ("fetch", "apply", "derive", "total")}
    replaced: dict[str, int] = {}
    by_heatmap: dict[str, list[float]] = {"replaced": [], "kept": []}
    original = store.client.stream_view
    server_ms: list[float] = []

    def recording(*args: Any, **kwargs: Any) -> dict[str, Any]:
        got = original(*args, **kwargs)
        if got.get("server_ms") is not None:
            server_ms.append(float(got["server_ms"]) / 1000)
        return got

    store.client.stream_view = recording

    def refresh() -> tuple[float, float, float, set[str]]:
        # Untimed, as the app's fleet refreshes between two of the stream: the stream's
        # newest sample, where the live range ends (else the range would stay put).
        store._apply_latest(store.client_latest())
        began = time.perf_counter()
        got = store._fetch_stream()
        fetched = time.perf_counter()
        if got is None:
            raise RuntimeError("no stream selected")
        held = {name: getattr(store, name) for name in got if name in store.param}
        # The apply writes the parameters; with views, their watchers redraw the models
        # synchronously here, so the redraw is timed as part of it.
        store._apply_stream(got)
        applied = time.perf_counter()
        store.spans()
        store.threshold()
        store.top_features()
        store.heatmap_range()
        derived = time.perf_counter()
        new = {name for name, frame in held.items() if getattr(store, name) is not frame}
        return fetched - began, applied - fetched, derived - applied, new

    try:
        for i in range(repeats + 1):  # the first refresh warms caches up, unrecorded
            began = time.perf_counter()
            fetch_s, apply_s, derive_s, new = refresh()
            if i > 0:
                total = fetch_s + apply_s + derive_s
                for name, value in zip(
                    ("fetch", "apply", "derive", "total"),
                    (fetch_s, apply_s, derive_s, total),
                    strict=True,
                ):
                    phases[name].append(value)
                for name in new:
                    replaced[name] = replaced.get(name, 0) + 1
                heat = bool(new & {"heat_input", "heat_output"})
                by_heatmap["replaced" if heat else "kept"].append(total)
            if period_s > 0:
                time.sleep(max(0.0, period_s - (time.perf_counter() - began)))
        for _ in range(full_repeats):
            # Untimed: the stream's data and held heatmap forgotten (the views redraw empty
            # plots), so that the timed refresh finds nothing to keep.
            store.clear_stream()
            fetch_s, apply_s, derive_s, _ = refresh()
            for name, value in zip(
                ("fetch", "apply", "derive", "total"),
                (fetch_s, apply_s, derive_s, fetch_s + apply_s + derive_s),
                strict=True,
            ):
                full[name].append(value)
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
        "period_s": period_s,
        "replaced": dict(sorted(replaced.items())),
        "total_by_heatmap": {k: {"refreshes": len(v), **_stats(v)} for k, v in by_heatmap.items()},
        "full": {"refreshes": full_repeats, **{k: _stats(v) for k, v in full.items()}},
    }


def _visible_stats(values: list[float]) -> dict[str, Any]:
    return {
        "windows": len(values),
        **_stats(values),
        "within_2s": sum(1 for v in values if v <= 2.0),
    }


def bench_visible(
    settings: Settings,
    duration_s: float = 120,
    refresh_period_ms: int | None = None,
    latest_period_ms: int | None = None,
    satellite_id: str = "sat1",
    subsystem: str = "ACS",
) -> dict[str, Any]:
    """How soon a window's detection is visible in a dashboard session, counted from the
    production of the window's newest record (the simulator's stamp, read off the raw
    topic), for every window of every live stream.

    The session is the app's: a store with the app's views in a Bokeh document, refreshed
    as ``apps/dashboard.py`` does on an asyncio loop: the fleet's latest detections every
    ``latest_period_ms``, the rest (fleet, alarms, replay, the shown stream) every
    ``refresh_period_ms`` (defaults: the store's), health every 5 s. A window is
    *visible* once a refresh has applied it and the views have redrawn: in the fleet
    grid (every stream, from ``/api/fleet/latest``) and, for the selected stream, in the
    timeline (its detections). What comes after (the patch over the websocket, the
    browser's drawing) is not included.
    """
    import asyncio

    import pandas as pd
    import panel as pn
    from bokeh.document import Document

    from smap_bench.bench.api import ProductionClock
    from smap_bench.dashboard.store import DashboardStore
    from smap_bench.dashboard.views import (
        AlarmList,
        AnomalyTimeline,
        FleetOverview,
        ReconstructionHeatmap,
        StatusLine,
    )

    store = DashboardStore.from_settings(settings)
    if refresh_period_ms is not None:
        store.refresh_period_ms = refresh_period_ms
    if latest_period_ms is not None:
        store.latest_period_ms = latest_period_ms
    if not store.refresh_fleet():
        raise RuntimeError(f"the dashboard store could not read the fleet: {store.message}")
    store.select_stream(satellite_id, subsystem)
    document = Document()
    for view in (
        StatusLine(store=store),
        FleetOverview(store=store),
        AnomalyTimeline(store=store),
        ReconstructionHeatmap(store=store),
        AlarmList(store=store),
    ):
        pn.panel(view).get_root(document)  # type: ignore[attr-defined]

    Key = tuple[str, str, float]
    seen: dict[str, dict[Key, float]] = {"fleet": {}, "timeline": {}}
    counting = False
    refreshes: list[float] = []

    flagged: set[Key] = set()

    def fleet_windows() -> set[Key]:
        rows = store.latest.dropna(subset=["detected_time"])
        keys = [
            (str(sat), str(sub), round(t.timestamp(), 3))
            for sat, sub, t in zip(
                rows["satellite_id"], rows["subsystem"], rows["detected_time"], strict=True
            )
        ]
        flagged.update(k for k, d in zip(keys, rows["detected"], strict=True) if d > 0.5)
        return set(keys)

    def timeline_windows() -> set[Key]:
        times = store.detections["time"]
        sat, sub = str(store.satellite_id), str(store.subsystem)
        return {(sat, sub, round(t.timestamp(), 3)) for t in times}

    def note(kind: str, windows: set[Key]) -> None:
        now = time.time()
        for key in windows:
            if key not in seen[kind]:
                # Windows already shown before the run began are not counted (NaN).
                seen[kind][key] = now if counting else float("nan")

    apply_fleet, apply_latest, apply_stream = (
        store._apply_fleet,
        store._apply_latest,
        store._apply_stream,
    )

    def timed_fleet(got: dict[str, Any]) -> None:
        apply_fleet(got)  # the views redraw in here (param watchers)
        note("fleet", fleet_windows())

    def timed_latest(got: pd.DataFrame) -> None:
        apply_latest(got)
        note("fleet", fleet_windows())

    def timed_stream(got: dict[str, Any]) -> None:
        began = time.perf_counter()
        apply_stream(got)
        refreshes.append(time.perf_counter() - began)
        note("timeline", timeline_windows())

    store._apply_fleet = timed_fleet  # type: ignore[method-assign]
    store._apply_latest = timed_latest  # type: ignore[method-assign,assignment]
    store._apply_stream = timed_stream  # type: ignore[method-assign]

    async def every(period_ms: int, refresh: Any, until: float) -> None:
        # As a served session's periodic callback: one refresh per period, skipped by the
        # store while the previous one still runs.
        loop = asyncio.get_running_loop()
        tick, tasks = loop.time(), set()
        while tick < until:
            task = asyncio.ensure_future(refresh())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            tick += period_ms / 1000
            await asyncio.sleep(max(0.0, tick - loop.time()))
        await asyncio.gather(*tasks)

    async def run() -> None:
        nonlocal counting
        await store.refresh_live_async()
        counting = True
        until = asyncio.get_running_loop().time() + duration_s
        await asyncio.gather(
            every(store.latest_period_ms, store.refresh_latest_async, until),
            every(store.refresh_period_ms, store.refresh_live_async, until),
            every(5000, store.refresh_health_async, until),
        )

    cpu_before, wall_before = time.process_time(), time.perf_counter()
    with ProductionClock(settings) as clock:
        asyncio.run(run())
        cpu_s, wall_s = time.process_time() - cpu_before, time.perf_counter() - wall_before
        time.sleep(0.5)  # the production stamps of the last windows' records
        produced = dict(clock.produced)

    def latencies(kind: str, only: set[Key] | None = None) -> list[float]:
        return [
            at - produced[(key[0], key[2])]
            for key, at in seen[kind].items()
            if at == at and (key[0], key[2]) in produced and (only is None or key in only)
        ]

    counted = {kind: sum(1 for at in got.values() if at == at) for kind, got in seen.items()}
    return {
        "unit": "ms",
        "duration_s": duration_s,
        "refresh_period_ms": store.refresh_period_ms,
        "latest_period_ms": store.latest_period_ms,
        "stream": f"{satellite_id}/{subsystem}",
        "windows_seen": counted,
        "fleet_grid": _visible_stats(latencies("fleet")),
        "fleet_grid_flagged": _visible_stats(latencies("fleet", flagged)),
        "timeline": _visible_stats(latencies("timeline")),
        "stream_refresh_apply": _stats(refreshes),
        "streams": len({(sat, sub) for sat, sub, _ in seen["fleet"]}),
        "session_cpu_share": round(cpu_s / wall_s, 3),  # of one core, this process
        "windows_matched": {kind: len(latencies(kind)) for kind in seen},
    }
