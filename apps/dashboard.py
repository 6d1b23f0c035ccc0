"""The operations dashboard: the app shell that places the views in a template.

Run behind the local nginx (http://127.0.0.1:8088/ proxies / here, websockets too)::

    panel serve apps/dashboard.py --address 127.0.0.1 --port 5006 \\
        --allow-websocket-origin=127.0.0.1:8088 --allow-websocket-origin=localhost:8088 \\
        --allow-websocket-origin=127.0.0.1:5006

Every browser session gets its own store on the operations API (settings: ``api_url`` or
host:api_port, the token from ``SMAP_API_TOKEN`` or ``.run/api-token``), refreshed by
periodic callbacks; all logic lives in :mod:`smap_bench.dashboard`.
"""

from __future__ import annotations

import panel as pn

from smap_bench.config import get_settings
from smap_bench.dashboard.store import DashboardStore
from smap_bench.dashboard.views import (
    AlarmList,
    AnomalyTimeline,
    FleetOverview,
    PipelineHealth,
    ReconstructionHeatmap,
    ReplayControl,
    StatusLine,
)

#: Health asks every service (Kafka lag, RabbitMQ, Triton): less often than the data.
HEALTH_PERIOD_MS = 5000

pn.extension("tabulator", sizing_mode="stretch_width", notifications=False)

store = DashboardStore.from_settings(get_settings())
template = pn.template.FastListTemplate(
    title="smap-bench · operations",
    accent="#1f4e79",
    header_background="#1f4e79",
    sidebar_width=360,
    main_layout=None,
    theme_toggle=False,
    sidebar=[ReplayControl(store=store), FleetOverview(store=store)],
    main=[
        StatusLine(store=store),
        AnomalyTimeline(store=store),
        ReconstructionHeatmap(store=store),
        AlarmList(store=store),
        PipelineHealth(store=store),
    ],
)


async def _start_refreshing() -> None:
    # The API calls run off the event loop, so the page answers clicks meanwhile.
    await store.refresh_live_async()
    await store.refresh_health_async()
    # The fleet grid's detections (where a new one shows first) are polled more often and
    # redraw only on a change; the rest, with the shown stream's plots, every second.
    callbacks = [
        pn.state.add_periodic_callback(callback, period=period)
        for callback, period in (
            (store.refresh_latest_async, store.latest_period_ms),
            (store.refresh_live_async, store.refresh_period_ms),
            (store.refresh_health_async, HEALTH_PERIOD_MS),
        )
    ]
    pn.state.on_session_destroyed(lambda _context: [c.stop() for c in callbacks])


pn.state.onload(_start_refreshing)
template.servable()
