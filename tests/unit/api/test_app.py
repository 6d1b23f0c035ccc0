"""The app without services: its routes, the token on every mutating route, and the
answers it gives when PostgreSQL, VictoriaMetrics or Kafka are unreachable.

Every service address points at a closed port, so each request that needs one fails
fast; nothing here touches the running stack.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from smap_bench.api.main import create_app
from smap_bench.api.replay_service import ReplayRequest
from smap_bench.config import Settings

MUTATING = {"post", "put", "patch", "delete"}
TOKEN = "unit-test-token"
#: A valid value for each path parameter, so a request reaches its route.
PATH_VALUES = {"satellite_id": "sat1", "event_id": "1", "model_name": "SMAP_A-1"}


class RecordingLauncher:
    def __init__(self) -> None:
        self.started: list[ReplayRequest] = []

    def start(self, request: ReplayRequest) -> str:
        self.started.append(request)
        return "/dev/null"


def offline_settings(tmp_path: Path, token: str | None) -> Settings:
    return Settings(
        api_token=token,
        run_dir=tmp_path,
        model_repository=tmp_path / "models",
        postgres_dsn="postgresql://nobody@127.0.0.1:1/none",
        victoria_url="http://127.0.0.1:1",
        kafka_bootstrap="127.0.0.1:1",
        rabbitmq_url="amqp://u:p@127.0.0.1:1//",
        triton_http_port=1,
    )


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(offline_settings(tmp_path_factory.mktemp("api"), TOKEN))
    with TestClient(app) as test_client:
        yield test_client


def mutating_operations(spec: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for path, operations in spec["paths"].items():
        for method in operations:
            if method in MUTATING:
                concrete = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
                found.append((method, concrete))
    return found


def test_everything_lives_under_api(client: TestClient) -> None:
    spec = client.get("/api/openapi.json").json()
    assert spec["paths"]
    assert all(path.startswith("/api/") for path in spec["paths"])
    assert client.get("/api/docs").status_code == 200
    assert client.get("/openapi.json").status_code == 404
    for resource in ("fleet", "series", "events", "replay", "health"):
        assert any(path.startswith(f"/api/{resource}") for path in spec["paths"]), resource


def test_the_spec_declares_the_bearer_scheme_on_mutating_routes(client: TestClient) -> None:
    spec = client.get("/api/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert any(s.get("scheme") == "bearer" for s in schemes.values())
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            secured = bool(operation.get("security"))
            assert secured == (method in MUTATING), f"{method.upper()} {path}"


def test_every_mutating_route_refuses_a_missing_or_wrong_token(client: TestClient) -> None:
    operations = mutating_operations(client.get("/api/openapi.json").json())
    assert len(operations) >= 9
    for method, path in operations:
        missing = client.request(method, path, json={})
        assert missing.status_code == 401, (method, path, missing.text)
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = client.request(method, path, json={}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401, (method, path, wrong.text)
        assert "invalid API token" in wrong.json()["detail"]


def test_without_a_configured_token_mutating_routes_answer_503(tmp_path: Path) -> None:
    app = create_app(offline_settings(tmp_path, None))
    with TestClient(app) as client:
        operations = mutating_operations(client.get("/api/openapi.json").json())
        for method, path in operations:
            answer = client.request(
                method, path, json={}, headers={"Authorization": "Bearer anything"}
            )
            assert answer.status_code == 503, (method, path)
            assert "no API token configured" in answer.json()["detail"]
        assert client.get("/api/health/live").status_code == 200


def test_a_bad_operator_name_is_a_422(client: TestClient) -> None:
    answer = client.post(
        "/api/replay/pause",
        headers={"Authorization": f"Bearer {TOKEN}", "X-Operator": "a;b<script>"},
    )
    assert answer.status_code == 422
    assert "X-Operator" in answer.json()["detail"]


def test_bad_parameters_are_422_with_a_message(client: TestClient) -> None:
    answer = client.get(
        "/api/series/telemetry",
        params={"satellite_id": "sat1", "subsystem": "XYZ", "features": [0, 25]},
    )
    assert answer.status_code == 422
    message = answer.json()["message"]
    assert "subsystem" in message and "features.1" in message
    answer = client.get(
        "/api/series/scores",
        params={
            "satellite_id": "sat1",
            "subsystem": "ACS",
            "start": "2026-01-02T00:00:00Z",
            "end": "2026-01-01T00:00:00Z",
        },
    )
    assert answer.status_code == 422
    assert "not before end" in answer.json()["detail"]


def test_postgres_down_is_a_503_naming_it(client: TestClient) -> None:
    answer = client.get("/api/fleet/satellites")
    assert answer.status_code == 503
    assert answer.json()["detail"].startswith("PostgreSQL unavailable")


def test_victoria_down_is_a_503_naming_it(client: TestClient) -> None:
    answer = client.get("/api/series/scores", params={"satellite_id": "sat1", "subsystem": "ACS"})
    assert answer.status_code == 503
    assert answer.json()["detail"].startswith("VictoriaMetrics unavailable")


def test_replay_commands_without_a_live_simulator_are_409(client: TestClient) -> None:
    answer = client.post("/api/replay/pause", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 409
    assert "start a replay first" in answer.json()["detail"]
    state = client.get("/api/replay").json()
    assert state["live"] is False and state["state"] is None


def test_start_hands_the_request_to_the_launcher(tmp_path: Path) -> None:
    launcher = RecordingLauncher()
    app = create_app(offline_settings(tmp_path, TOKEN), launcher=launcher)
    with TestClient(app) as client:
        answer = client.post(
            "/api/replay/start",
            params={"simulator_id": "unit-sim"},
            json={"split": "train", "satellites": 2, "speed": "max", "loops": 1},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert answer.status_code == 202, answer.text
    assert answer.json()["confirmed"] is False
    (request,) = launcher.started
    assert (request.simulator_id, request.split, request.satellites) == ("unit-sim", "train", 2)
    assert "--speed=max" in request.argv() and "--split=train" in request.argv()


def test_health_reports_down_services_instead_of_failing(client: TestClient) -> None:
    answer = client.get("/api/health/pipeline", params={"group": ["router"], "queue": ["q1"]})
    assert answer.status_code == 200
    body = answer.json()
    assert body["kafka_lag"][0]["group"] == "router"
    assert body["queues"] == [
        {"queue": "q1", "messages": None, "consumers": None, "detail": body["queues"][0]["detail"]}
    ]
    assert body["queues"][0]["detail"].startswith("RabbitMQ")
    assert body["triton"]["ready"] is False and "Triton" in body["triton"]["detail"]
    assert body["ingestion_rate"] is None


def test_a_view_with_half_a_heatmap_range_is_a_422(client: TestClient) -> None:
    answer = client.get(
        "/api/series/view",
        params={"satellite_id": "sat1", "subsystem": "ACS", "heatmap_start": "2026-01-01T00:00"},
    )
    assert answer.status_code == 422
    assert "give both, or neither" in answer.json()["detail"]
    answer = client.get(
        "/api/series/view",
        params={"satellite_id": "sat1", "subsystem": "ACS", "held_heatmap_end": "2026-01-01"},
    )
    assert answer.status_code == 422
    assert "held_heatmap_start and held_heatmap_end" in answer.json()["detail"]
    answer = client.get("/api/fleet/latest", params={"lookback_s": 1})
    assert answer.status_code == 422


def test_view_and_latest_with_victoria_down_are_503s(client: TestClient) -> None:
    for path, params in (
        ("/api/series/view", {"satellite_id": "sat1", "subsystem": "ACS"}),
        ("/api/series/record_index", {"satellite_id": "sat1", "subsystem": "ACS"}),
        ("/api/series/verdicts", {"satellite_id": "sat1", "subsystem": "ACS"}),
        ("/api/fleet/latest", {}),
    ):
        answer = client.get(path, params=params)
        assert answer.status_code == 503, (path, answer.text)
        assert answer.json()["detail"].startswith("VictoriaMetrics unavailable"), path
