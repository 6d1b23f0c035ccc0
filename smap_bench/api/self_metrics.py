"""The API's own metrics: requests and their durations by route, in flight now.

A pure ASGI middleware (no per-request objects beyond a closure), labelled by the
matched route's template (``/api/events/{event_id}``), never the raw path, so the label
set stays bounded whatever clients send; an unmatched path counts as ``unmatched``. The
service exports the registry on its stage self-metrics port (``pipeline.api``), scraped
into VictoriaMetrics like every stage's counters.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Upper bounds (seconds): fine where the API's target is (p99 < 20 ms), coarse beyond.
REQUEST_BUCKETS = (
    0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


#: Methods counted by name; any other is counted as ``other`` (a bounded label).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """Counts every HTTP request by method, route and status, and times it from the
    first byte in to the last byte out."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry, prefix: str = "") -> None:
        """``prefix``: the path the routers are included under (a route's template holds
        only its own router's part of the path)."""
        self.app = app
        self.prefix = prefix
        self.requests = Counter(
            "smap_api_requests",
            "Requests answered, by route and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.seconds = Histogram(
            "smap_api_request_seconds",
            "Seconds from a request's arrival to the end of its answer",
            ["method", "route"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "smap_api_requests_in_flight", "Requests being answered now", registry=registry
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = 500  # what the client gets if the app fails before it answers

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.in_flight.inc()
        try:
            await self.app(scope, receive, send_counted)
        finally:
            self.in_flight.dec()
            route = route_label(scope, self.prefix)
            method = scope.get("method", "")
            method = method if method in METHODS else "other"
            self.requests.labels(method, route, str(status)).inc()
            self.seconds.labels(method, route).observe(perf_counter() - started)


def route_label(scope: dict[str, Any] | Scope, prefix: str = "") -> str:
    """``prefix`` and the template of the route the request matched (set by the router),
    else ``unmatched``."""
    path = getattr(scope.get("route"), "path", None)
    if not isinstance(path, str):
        return "unmatched"
    # FastAPI versions that flatten included routers already hold the prefix.
    return path if path == prefix or path.startswith(prefix + "/") else prefix + path
