"""The API's request metrics: labelled by route template and status, never by raw path."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from smap_bench.api.self_metrics import RequestMetrics, route_label


def _app(registry: CollectorRegistry) -> FastAPI:
    app, router = FastAPI(), APIRouter(prefix="/things")

    @router.get("/{thing_id}")
    def thing(thing_id: int) -> dict[str, int]:
        return {"thing_id": thing_id}

    @router.get("/broken/now")
    def broken() -> None:
        raise RuntimeError("bug")

    app.include_router(router, prefix="/api")
    app.add_middleware(RequestMetrics, registry=registry, prefix="/api")
    return app


def _count(registry: CollectorRegistry, route: str, status: str) -> float:
    value = registry.get_sample_value(
        "smap_api_requests_total", {"method": "GET", "route": route, "status": status}
    )
    return value or 0.0


def test_requests_are_counted_by_route_template_and_status() -> None:
    registry = CollectorRegistry()
    client = TestClient(_app(registry), raise_server_exceptions=False)
    for thing_id in (1, 2, 3):
        assert client.get(f"/api/things/{thing_id}").status_code == 200
    assert client.get("/api/things/not-a-number").status_code == 422
    assert client.get("/api/things/broken/now").status_code == 500
    assert client.get("/no/such/path").status_code == 404

    assert _count(registry, "/api/things/{thing_id}", "200") == 3
    assert _count(registry, "/api/things/{thing_id}", "422") == 1
    assert _count(registry, "/api/things/broken/now", "500") == 1
    assert _count(registry, "unmatched", "404") == 1
    timed = registry.get_sample_value(
        "smap_api_request_seconds_count", {"method": "GET", "route": "/api/things/{thing_id}"}
    )
    assert timed == 4
    assert registry.get_sample_value("smap_api_requests_in_flight") == 0


def test_a_route_already_holding_the_prefix_is_not_prefixed_twice() -> None:
    class Route:
        path = "/api/things/{thing_id}"

    assert route_label({"route": Route()}, "/api") == "/api/things/{thing_id}"
    assert route_label({}, "/api") == "unmatched"
