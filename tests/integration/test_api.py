"""The operations API on the real services, served by ``python -m pipeline.api``.

Isolation from the running stack and from other tests: the API gets a database of its
own on the real PostgreSQL (created and migrated here, dropped at the end), its own
Kafka control / status / raw topics (so no command reaches the stack's simulator and no
replayed record reaches its pipeline), unique satellite ids for the samples written to
the real VictoriaMetrics, and unique consumer groups and queues.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from smap_bench import db
from smap_bench.config import PROJECT_ROOT, Settings
from smap_bench.kafka import TopicSpec, ensure_topics
from smap_bench.metrics import VictoriaMetrics, prometheus_line

pytestmark = pytest.mark.integration

T = TypeVar("T")
FIXTURE_REPOSITORY = PROJECT_ROOT / "tests" / "fixtures" / "triton-repository"
MUTATING = {"post", "put", "patch", "delete"}


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 20.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Api:
    settings: Settings
    base_url: str
    token: str
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_url: str

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=15, headers=headers)

    def authed(self, operator: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        if operator:
            headers["X-Operator"] = operator
        return self.client(**headers)

    def db(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.settings.postgres_dsn, autocommit=True)


@pytest.fixture(scope="module")
def api_settings(live_stack: Settings) -> Iterator[Settings]:
    """Settings of an API isolated from the stack: own database, topics and token."""
    tag = uuid.uuid4().hex[:10]
    dsn = make_conninfo(live_stack.postgres_dsn, dbname=f"smap_bench_api_{tag}")
    db.ensure_database(dsn)
    db.migrate(dsn)
    settings = live_stack.model_copy(
        update={
            "postgres_dsn": dsn,
            "topic_control": f"api-test-control-{tag}",
            "topic_status": f"api-test-status-{tag}",
            "topic_raw": f"api-test-raw-{tag}",
            "api_token": SecretStr(uuid.uuid4().hex),
            "api_port": free_port(),
            "model_repository": FIXTURE_REPOSITORY,
        }
    )
    ensure_topics(
        settings,
        [
            TopicSpec(settings.topic_control),
            TopicSpec(settings.topic_status),
            TopicSpec(settings.topic_raw, 1),
        ],
    )
    yield settings
    with psycopg.connect(db.admin_dsn(dsn), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "smap_bench_api_{tag}" WITH (FORCE)')


def _env(settings: Settings) -> dict[str, str]:
    assert settings.api_token is not None
    return {
        **os.environ,
        "SMAP_POSTGRES_DSN": settings.postgres_dsn,
        "SMAP_TOPIC_CONTROL": settings.topic_control,
        "SMAP_TOPIC_STATUS": settings.topic_status,
        "SMAP_TOPIC_RAW": settings.topic_raw,
        "SMAP_API_TOKEN": settings.api_token.get_secret_value(),
        "SMAP_API_PORT": str(settings.api_port),
        "SMAP_MODEL_REPOSITORY": str(settings.model_repository),
    }


@pytest.fixture(scope="module")
def api(api_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """``python -m pipeline.api`` on a free port, answering its liveness route."""
    log_path = tmp_path_factory.mktemp("api") / "api.log"
    metrics_port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.api",
                "--log-level",
                "warning",
                "--metrics-port",
                str(metrics_port),
            ],
            cwd=PROJECT_ROOT,
            env=_env(api_settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://{api_settings.host}:{api_settings.api_port}"
    assert api_settings.api_token is not None
    handle = Api(
        api_settings,
        base_url,
        api_settings.api_token.get_secret_value(),
        process,
        log_path,
        f"http://{api_settings.host}:{metrics_port}/metrics",
    )

    def live() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the API exited with {process.returncode}: {log_path.read_text()}")
        try:
            return httpx.get(f"{base_url}/api/health/live", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for("the API to answer /api/health/live", live, timeout_s=60)
    yield handle
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


_RECORDS = itertools.count(100, 30)


def unique_satellite() -> str:
    return f"sat9{uuid.uuid4().int % 10**8:08d}"


def insert_event(
    conn: psycopg.Connection[Any],
    satellite_id: str,
    *,
    subsystem: str = "ACS",
    start: datetime | None = None,
    state: str = "open",
    shelved_until: datetime | None = None,
    detected_by: tuple[str, ...] = ("model",),
) -> int:
    start = start or datetime.now(UTC) - timedelta(minutes=5)
    first = next(_RECORDS)
    row = conn.execute(
        "INSERT INTO anomaly_events (satellite_id, subsystem, model_name, loop,"
        " start_record_index, end_record_index, start_time, end_time, peak_score, threshold,"
        " top_features, state, shelved_until, detected_by)"
        " VALUES (%s, %s, 'SMAP_A-1', 0, %s, %s, %s, %s, 2.5, 1.0, %s, %s, %s, %s)"
        " RETURNING event_id",
        (
            satellite_id,
            subsystem,
            first,
            first + 29,
            start,
            start + timedelta(seconds=29),
            Jsonb([{"feature_index": 0, "error": 1.5}]),
            state,
            shelved_until,
            list(detected_by),
        ),
    ).fetchone()
    assert row is not None
    event_id: int = row[0]
    conn.execute(
        "INSERT INTO alarm_history (event_id, from_state, to_state, actor)"
        " VALUES (%s, NULL, 'open', 'events')",
        (event_id,),
    )
    return event_id


# --------------------------------------------------------------------------- the token


def test_every_mutating_route_needs_the_token(api: Api) -> None:
    spec = api.client().get("/api/openapi.json").json()
    values = {"satellite_id": "sat1", "event_id": "1", "model_name": "SMAP_A-1"}
    checked = 0
    with api.client() as anonymous, api.client(Authorization="Bearer wrong") as wrong:
        for path, operations in spec["paths"].items():
            concrete = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
            for method in operations:
                if method not in MUTATING:
                    continue
                for client in (anonymous, wrong):
                    answer = client.request(method, concrete, json={})
                    assert answer.status_code == 401, (method, path, answer.text)
                checked += 1
    assert checked >= 9


def test_self_metrics_count_requests_by_route_template_and_status(api: Api) -> None:
    def count(route: str, status: int) -> float:
        text = httpx.get(api.metrics_url, timeout=5).text
        labels = f'method="GET",route="{route}",status="{status}"'
        pattern = rf"smap_api_requests_total{{{re.escape(labels)}}} (\S+)"
        found = re.search(pattern, text)
        return float(found.group(1)) if found else 0.0

    route = "/api/events/{event_id}"
    before_missing, before_bad = count(route, 404), count(route, 422)
    with api.client() as client:
        for event_id in (987_654_321, 987_654_322):
            assert client.get(f"/api/events/{event_id}").status_code == 404
        assert client.get("/api/events/not-a-number").status_code == 422
    assert count(route, 404) == before_missing + 2
    assert count(route, 422) == before_bad + 1


def test_openapi_and_docs_are_under_api(api: Api) -> None:
    with api.client() as client:
        assert client.get("/api/openapi.json").json()["info"]["title"]
        assert "swagger" in client.get("/api/docs").text.lower()


# --------------------------------------------------------------------------- fleet


def test_fleet_satellites_assignments_and_updates(api: Api) -> None:
    satellite = unique_satellite()
    db.sync_fleet(
        api.settings.postgres_dsn,
        [(satellite, "ACS", "A-1", "SMAP_A-1"), (satellite, "TCS", "T-2", "SMAP_T-2")],
    )
    with api.client() as client:
        listed = client.get("/api/fleet/satellites").json()
        mine = [s for s in listed if s["satellite_id"] == satellite]
        assert len(mine) == 1
        assert {(s["subsystem"], s["channel"]) for s in mine[0]["streams"]} == {
            ("ACS", "A-1"),
            ("TCS", "T-2"),
        }
        one = client.get(f"/api/fleet/satellites/{satellite}").json()
        assert one["active"] is True and one["display_name"] is None
        assignments = client.get("/api/fleet/assignments", params={"satellite_id": satellite})
        assert [a["model_name"] for a in assignments.json()] == ["SMAP_A-1", "SMAP_T-2"]
        assert client.get("/api/fleet/satellites/sat999999999").status_code == 404
        assert client.get("/api/fleet/satellites/not-a-sat").status_code == 422
        subsystems = client.get("/api/fleet/subsystems").json()
        assert [s["code"] for s in subsystems] == list("ADEFPST")
    with api.authed() as client:
        changed = client.patch(
            f"/api/fleet/satellites/{satellite}",
            json={"display_name": "Test bird", "active": False},
        )
        assert changed.status_code == 200, changed.text
        assert (changed.json()["display_name"], changed.json()["active"]) == ("Test bird", False)
        typo = client.patch(f"/api/fleet/satellites/{satellite}", json={"actve": True})
        assert typo.status_code == 422
        null = client.patch(f"/api/fleet/satellites/{satellite}", json={"active": None})
        assert null.status_code == 422 and "true or false" in null.text
    with api.client() as client:
        inactive = client.get("/api/fleet/satellites", params={"active": False}).json()
        assert satellite in {s["satellite_id"] for s in inactive}


def test_models_come_from_the_repository_until_the_registry_has_rows(api: Api) -> None:
    with api.db() as conn:
        conn.execute("DELETE FROM models")
    with api.client() as client:
        models = client.get("/api/fleet/models").json()
        assert {m["model_name"] for m in models} == {"SMAP_T-1", "SMAP_T-2"}
        assert all(m["source"] == "repository" for m in models)
        assert {m["channel"] for m in models} == {"T-1", "T-2"}
        assert models[0]["threshold"] == models[0]["metadata"]["threshold"]
    with api.db() as conn:
        conn.execute(
            "INSERT INTO models (model_name, version, channel, threshold, onnx_sha256, metadata)"
            " VALUES ('SMAP_A-1', 1, 'A-1', 0.25, 'abc', %s),"
            " ('SMAP_A-1', 2, 'A-1', 0.3, 'def', %s)",
            (Jsonb({"threshold": 0.25}), Jsonb({"threshold": 0.3})),
        )
    try:
        with api.client() as client:
            models = client.get("/api/fleet/models").json()
            assert [(m["model_name"], m["version"], m["source"]) for m in models] == [
                ("SMAP_A-1", 2, "database")
            ]
            assert client.get("/api/fleet/models/SMAP_A-1").json()["threshold"] == 0.3
            assert client.get("/api/fleet/models/SMAP_Z-9").status_code == 404
    finally:
        with api.db() as conn:
            conn.execute("DELETE FROM models")


# --------------------------------------------------------------------------- events


def test_alarm_lifecycle_with_history(api: Api) -> None:
    satellite = unique_satellite()
    with api.db() as conn:
        event_id = insert_event(conn, satellite, detected_by=("model", "hold"))
    with api.client() as client:
        listed = client.get("/api/events", params={"satellite_id": satellite}).json()
        assert listed["count"] == 1
        assert listed["data"][0]["allowed_actions"] == ["acknowledge", "shelve"]
        assert listed["data"][0]["detected_by"] == ["model", "hold"]
    with api.authed(operator="alice") as client:
        path = f"/api/events/{event_id}/transitions"
        refused = client.post(path, json={"action": "clear"})
        assert refused.status_code == 409
        assert "cannot clear an alarm that is open" in refused.json()["detail"]
        acked = client.post(path, json={"action": "acknowledge", "comment": "looking"})
        assert acked.status_code == 200, acked.text
        assert acked.json()["state"] == "acknowledged"
        assert client.post(path, json={"action": "shelve"}).status_code == 422
        until = datetime.now(UTC) + timedelta(hours=1)
        shelved = client.post(
            path, json={"action": "shelve", "shelved_until": until.isoformat(), "operator": "bob"}
        ).json()
        assert shelved["state"] == "shelved"
        assert datetime.fromisoformat(shelved["shelved_until"]) == until
        commented = client.post(
            f"/api/events/{event_id}/comments", json={"comment": "valve swap at 14:00"}
        )
        assert commented.status_code == 200
        cleared = client.post(path, json={"action": "clear"}).json()
        assert cleared["state"] == "cleared" and cleared["shelved_until"] is None
        again = client.post(path, json={"action": "acknowledge"})
        assert again.status_code == 409 and "allowed from cleared: reopen" in again.json()["detail"]
    with api.client() as client:
        detail = client.get(f"/api/events/{event_id}").json()
    steps = [(h["from_state"], h["to_state"], h["actor"], h["comment"]) for h in detail["history"]]
    assert steps == [
        (None, "open", "events", None),
        ("open", "acknowledged", "alice", "looking"),
        ("acknowledged", "shelved", "bob", None),
        ("shelved", "shelved", "alice", "valve swap at 14:00"),
        ("shelved", "cleared", "alice", None),
    ]
    assert detail["history"][2]["shelved_until"] is not None


def test_an_expired_shelf_reads_open_and_is_recorded_on_the_next_action(api: Api) -> None:
    satellite = unique_satellite()
    past = datetime.now(UTC) - timedelta(minutes=1)
    with api.db() as conn:
        event_id = insert_event(conn, satellite, state="shelved", shelved_until=past)
    with api.client() as client:
        assert client.get(f"/api/events/{event_id}").json()["state"] == "open"
        found = client.get("/api/events", params={"satellite_id": satellite, "state": "open"})
        assert found.json()["count"] == 1
        hidden = client.get("/api/events", params={"satellite_id": satellite, "state": "shelved"})
        assert hidden.json()["count"] == 0
    with api.authed(operator="carol") as client:
        acked = client.post(f"/api/events/{event_id}/transitions", json={"action": "acknowledge"})
    assert acked.status_code == 200, acked.text
    history = acked.json()["history"]
    assert [(h["from_state"], h["to_state"], h["actor"]) for h in history[-2:]] == [
        ("shelved", "open", "system"),
        ("open", "acknowledged", "carol"),
    ]


def test_event_filters(api: Api) -> None:
    satellite = unique_satellite()
    now = datetime.now(UTC)
    with api.db() as conn:
        old = insert_event(conn, satellite, start=now - timedelta(hours=3))
        new = insert_event(conn, satellite, subsystem="EPS", start=now - timedelta(minutes=1))
        acked = insert_event(conn, satellite, start=now - timedelta(hours=2), state="acknowledged")
    with api.client() as client:

        def ids(**params: Any) -> list[int]:
            answer = client.get("/api/events", params={"satellite_id": satellite, **params})
            assert answer.status_code == 200, answer.text
            return [e["event_id"] for e in answer.json()["data"]]

        assert ids() == [new, acked, old]
        assert ids(state="acknowledged") == [acked]
        assert ids(subsystem="EPS") == [new]
        assert ids(since=(now - timedelta(minutes=30)).isoformat()) == [new]
        assert ids(until=(now - timedelta(minutes=150)).isoformat()) == [old]
        page = client.get(
            "/api/events", params={"satellite_id": satellite, "limit": 1, "offset": 1}
        )
        assert page.json()["count"] == 3 and len(page.json()["data"]) == 1
        assert client.get("/api/events", params={"state": "snoozed"}).status_code == 422
        assert client.get("/api/events/0").status_code == 422
        assert client.get("/api/events/999999999999").status_code == 404


# --------------------------------------------------------------------------- series


def test_series_read_back_what_victoria_holds(api: Api) -> None:
    satellite = unique_satellite()
    base_ms = int((time.time() - 120) * 1000)
    labels = {"satellite_id": satellite, "subsystem": "PS", "model_name": "SMAP_P-1"}
    lines = []
    for i in range(10):
        ts = base_ms + i * 1000
        for feature in range(3):
            tele = {"satellite_id": satellite, "subsystem": "PS", "feature_index": feature}
            lines.append(prometheus_line("smap_feature", tele, feature * 10 + i, ts))
            lines.append(
                prometheus_line(
                    "inference_reconstruction", {**labels, "feature_index": feature}, i / 10, ts
                )
            )
        lines.append(prometheus_line("inference_anomaly_score", labels, i * 0.5, ts))
    lines.append(prometheus_line("inference_threshold", labels, 2.0, base_ms + 9000))
    with VictoriaMetrics(api.settings.victoria_url) as victoria:
        victoria.import_prometheus(lines)
    params: dict[str, Any] = {
        "satellite_id": satellite,
        "subsystem": "PS",
        "start": (base_ms - 1000) / 1000,
        "end": (base_ms + 20_000) / 1000,
    }
    with api.client() as client:

        def telemetry() -> dict[str, Any] | None:
            body = client.get("/api/series/telemetry", params={**params, "features": [0, 2]})
            assert body.status_code == 200, body.text
            found = body.json()
            return found if sum(len(s["values"]) for s in found["series"]) == 20 else None

        found = wait_for("telemetry samples in VictoriaMetrics", telemetry)
        assert [s["feature_index"] for s in found["series"]] == [0, 2]
        assert found["series"][1]["values"] == [20.0 + i for i in range(10)]
        assert found["series"][0]["timestamps"][0] == base_ms / 1000
        scores = client.get("/api/series/scores", params=params).json()
        assert [s["labels"]["model_name"] for s in scores["series"]] == ["SMAP_P-1"]
        assert scores["series"][0]["values"] == [i * 0.5 for i in range(10)]
        thresholds = client.get("/api/series/thresholds", params=params).json()
        assert thresholds["series"][0]["values"] == [2.0]
        recon = client.get("/api/series/reconstructions", params={**params, "features": [1]})
        assert [s["feature_index"] for s in recon.json()["series"]] == [1]
        other = client.get("/api/series/scores", params={**params, "subsystem": "ACS"}).json()
        assert other["series"] == []
        # a grid: one point per 5 s step, the last sample at or before each step
        grid = client.get("/api/series/scores", params={**params, "step": 5}).json()
        assert grid["step"] == 5
        assert 0 < len(grid["series"][0]["values"]) <= 5
        assert set(grid["series"][0]["values"]) <= {i * 0.5 for i in range(10)}
        too_long = client.get(
            "/api/series/scores", params={**params, "start": time.time() - 2 * 86400}
        )
        assert too_long.status_code == 422 and "longer than the maximum" in too_long.text


def test_a_stream_view_and_the_fleets_latest_read_back_what_victoria_holds(api: Api) -> None:
    satellite = unique_satellite()
    base_ms = int((time.time() - 40) * 1000)
    labels = {"satellite_id": satellite, "subsystem": "TCS", "model_name": "SMAP_T-1"}
    lines = []
    for i in range(40):
        ts = base_ms + i * 1000
        for feature in range(25):
            tele = {"satellite_id": satellite, "subsystem": "TCS", "feature_index": feature}
            lines.append(prometheus_line("smap_feature", tele, float(i + feature), ts))
            recon = {**labels, "feature_index": feature}
            lines.append(prometheus_line("inference_reconstruction", recon, float(i), ts))
        lines.append(prometheus_line("inference_anomaly_score", labels, i / 40, ts))
        lines.append(prometheus_line("record_index", {"satellite_id": satellite}, 100 + i, ts))
        if i % 10 == 9:  # windows end every 10 records; the one ending at record 19 flagged
            lines.append(prometheus_line("anomaly_alarm", labels, float(i == 19), ts))
            # the workers flagged the newest window too, which the events stage overruled:
            # the API's detections are the served decision; its verdicts, the workers'
            worker = float(i in (19, 39))
            lines.append(prometheus_line("inference_anomaly_detected", labels, worker, ts))
            lines.append(prometheus_line("inference_threshold", labels, 0.5, ts))
            # the forecaster's statistic and its threshold, per window
            lines.append(prometheus_line("inference_forecast_statistic", labels, i / 100, ts))
            lines.append(prometheus_line("inference_forecast_threshold", labels, 0.25, ts))
    with VictoriaMetrics(api.settings.victoria_url) as victoria:
        victoria.import_prometheus(lines)
    params: dict[str, Any] = {
        "satellite_id": satellite,
        "subsystem": "TCS",
        "start": (base_ms - 1000) / 1000,
        "end": (base_ms + 41_000) / 1000,
        "features": [0, 3],
    }
    with api.client() as client:

        def view() -> dict[str, Any] | None:
            answer = client.get("/api/series/view", params=params)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            complete = body["scores"] and len(body["scores"][0]["values"]) == 40
            return body if complete and len(body["heat_output"]) == 25 else None

        body = wait_for("the stream's samples in VictoriaMetrics", view)
        assert [s["feature_index"] for s in body["telemetry"]] == [0, 3]
        assert body["record_index"][0]["values"] == [100.0 + i for i in range(40)]
        assert body["detections"][0]["values"] == [0.0, 1.0, 0.0, 0.0]
        detections = client.get("/api/series/detections", params=params).json()["series"]
        assert [s["values"] for s in detections] == [[0.0, 1.0, 0.0, 0.0]]
        # beside it, the workers' verdicts: the newest window flagged, not confirmed
        assert [s["values"] for s in body["verdicts"]] == [[0.0, 1.0, 0.0, 1.0]]
        assert body["verdicts"][0]["timestamps"] == body["detections"][0]["timestamps"]
        verdicts = client.get("/api/series/verdicts", params=params).json()
        assert verdicts["metric"] == "inference_anomaly_detected"
        assert [s["values"] for s in verdicts["series"]] == [[0.0, 1.0, 0.0, 1.0]]
        assert [s["values"] for s in body["forecasts"]] == [[0.09, 0.19, 0.29, 0.39]]
        assert [s["values"] for s in body["forecast_thresholds"]] == [[0.25] * 4]
        forecasts = client.get("/api/series/forecasts", params=params).json()
        assert forecasts["metric"] == "inference_forecast_statistic"
        assert [s["values"] for s in forecasts["series"]] == [[0.09, 0.19, 0.29, 0.39]]
        # the heatmap: the newest flagged window (records 0..19 end at 19; 30 wide)
        assert body["heatmap_end"].startswith(
            datetime.fromtimestamp((base_ms + 19_500) / 1000, UTC).isoformat()[:19]
        )
        assert len(body["heat_input"]) == 25
        assert {len(s["values"]) for s in body["heat_input"]} == {20}  # records 0..19 exist
        assert body["server_ms"] > 0
        explicit = client.get(
            "/api/series/view",
            params={
                **params,
                "heatmap_start": (base_ms + 29_500) / 1000,
                "heatmap_end": (base_ms + 39_500) / 1000,
            },
        ).json()
        assert {len(s["values"]) for s in explicit["heat_output"]} == {10}
        assert not body["heatmap_held"] and not explicit["heatmap_held"]
        # A client holding the heatmap shown gets no heat series again; another range, it does.
        held = {
            "held_heatmap_start": body["heatmap_start"],
            "held_heatmap_end": body["heatmap_end"],
        }
        again = client.get("/api/series/view", params={**params, **held}).json()
        assert again["heatmap_held"] and again["heatmap_end"] == body["heatmap_end"]
        assert again["heat_input"] == [] and again["heat_output"] == []
        assert len(again["scores"][0]["values"]) == 40  # the timeline all the same
        chosen = {
            "heatmap_start": explicit["heatmap_start"],
            "heatmap_end": explicit["heatmap_end"],
        }
        other = client.get("/api/series/view", params={**params, **chosen, **held}).json()
        assert not other["heatmap_held"] and len(other["heat_output"]) == 25
        index = client.get("/api/series/record_index", params=params).json()
        assert index["series"][0]["values"][-1] == 139.0
        latest = client.get("/api/fleet/latest", params={"lookback_s": 120}).json()["data"]
        mine = {r["subsystem"]: r for r in latest if r["satellite_id"] == satellite}
        assert len(mine) == 7  # the satellite's record time holds for all its subsystems
        assert mine["TCS"]["detected"] == 0.0 and mine["ACS"]["detected"] is None
        newest = datetime.fromisoformat(mine["TCS"]["last_time"]).timestamp()
        assert newest == (base_ms + 39_000) / 1000


# --------------------------------------------------------------------------- health


def test_pipeline_health_reads_lag_queues_and_triton(api: Api) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from kombu import Connection

    from smap_bench.kafka import consumer_config

    tag = uuid.uuid4().hex[:8]
    topic, group, queue = f"api-test-lag-{tag}", f"api-test-group-{tag}", f"api-test-q-{tag}"
    ensure_topics(api.settings, [TopicSpec(topic, 1)])
    producer = Producer({"bootstrap.servers": api.settings.kafka_bootstrap})
    # One record per batch: Tansu's end offset counts a batch as one offset.
    for _ in range(5):
        producer.produce(topic, value=b"x")
        producer.flush(10)
    consumer = Consumer(consumer_config(api.settings, group))
    consumer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    consumer.close()
    with Connection(api.settings.rabbitmq_url) as connection:
        channel = connection.channel()
        channel.queue_declare(queue=queue, durable=False, auto_delete=False)
        for _ in range(3):
            channel.basic_publish(channel.prepare_message(b"probe"), exchange="", routing_key=queue)
        try:
            with api.client() as client:
                answer = client.get(
                    "/api/health/pipeline", params={"group": [group], "queue": [queue]}
                )
        finally:
            channel.queue_delete(queue)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    services = {s["name"]: s["healthy"] for s in body["services"]}
    assert services["postgres"] and services["kafka"] and services["victoria-metrics"]
    assert body["kafka_lag"] == [{"group": group, "lag": 3, "partitions": 1, "detail": ""}]
    assert body["queues"] == [{"queue": queue, "messages": 3, "consumers": 0, "detail": ""}]
    assert body["triton"]["ready"] is True, body["triton"]
    assert body["detail"] == []


# --------------------------------------------------------------------------- replay


def test_replay_start_pause_resume_speed_seek_stop(api: Api) -> None:
    simulator = f"api-test-{uuid.uuid4().hex[:8]}"
    params = {"simulator_id": simulator, "wait": "true"}
    try:
        with api.authed() as client:
            assert client.post("/api/replay/pause", params=params).status_code == 409
            started = client.post(
                "/api/replay/start",
                params=params,
                json={"split": "test", "satellites": 1, "speed": 1, "limit": 500, "loops": 1},
            )
            assert started.status_code == 202, started.text

            def running() -> dict[str, Any] | None:
                state = client.get("/api/replay", params={"simulator_id": simulator}).json()
                return state if state["live"] and state["state"]["state"] == "running" else None

            state = wait_for("the simulator to report running", running, timeout_s=60)["state"]
            assert (state["split"], state["satellites"]) == ("test", 1)
            again = client.post("/api/replay/start", params=params, json={})
            assert again.status_code == 409 and "already running" in again.json()["detail"]

            paused = client.post("/api/replay/pause", params=params).json()
            assert paused["confirmed"] and paused["state"]["state"] == "paused"
            resumed = client.post("/api/replay/resume", params=params).json()
            assert resumed["confirmed"] and resumed["state"]["state"] == "running"
            fast = client.post("/api/replay/speed", params=params, json={"factor": 4}).json()
            assert fast["confirmed"] and fast["state"]["speed"] == 4
            loop_before = fast["state"]["loop_max"]
            sought = client.post(
                "/api/replay/seek", params=params, json={"record_index": 100}
            ).json()
            assert sought["confirmed"] and sought["state"]["loop_max"] > loop_before
            assert (
                client.post("/api/replay/speed", params=params, json={"factor": 0}).status_code
                == 422
            )
            stopped = client.post("/api/replay/stop", params=params).json()
            assert stopped["confirmed"] and stopped["state"]["state"] == "stopped"
            assert client.post("/api/replay/pause", params=params).status_code == 409
    finally:
        # Whatever failed above, leave no simulator running (a no-op if it stopped).
        from smap_bench.simulation import SimulatorControl

        control = SimulatorControl(api.settings, simulator)
        control.stop()
        control.close()


# --------------------------------------------------------------------------- fuzzing


def test_generated_requests_never_get_a_5xx(api_settings: Settings) -> None:
    """schemathesis against the OpenAPI spec, in-process (a recording launcher, so that no
    generated ``start`` spawns a simulator), with the token so mutating routes are reached.

    Bounded: a few valid and a few invalid cases per operation; the pipeline health route
    (seconds per call) gets one case.
    """
    import schemathesis
    from fastapi.testclient import TestClient
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    from smap_bench.api.main import create_app

    class RecordingLauncher:
        def __init__(self) -> None:
            self.started: list[Any] = []

        def start(self, request: Any) -> str:
            self.started.append(request)
            return "/dev/null"

    # Rows for generated ids to land on (short satellite ids and small event ids are the
    # ones generated most), so mutating routes reach the database, not just a 404.
    db.sync_fleet(
        api_settings.postgres_dsn,
        [(f"sat{n}", "ACS", "A-1", "SMAP_A-1") for n in range(1, 10)],
    )
    with psycopg.connect(api_settings.postgres_dsn, autocommit=True) as conn:
        for n in range(1, 10):
            insert_event(conn, f"sat{n}")
    assert api_settings.api_token is not None
    headers = {"Authorization": f"Bearer {api_settings.api_token.get_secret_value()}"}
    app = create_app(api_settings, launcher=RecordingLauncher())
    failures: list[str] = []
    started = time.monotonic()
    with TestClient(app):
        schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
        for result in schema.get_all_operations():
            operation = result.ok()
            slow = operation.path.endswith("/health/pipeline")
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=1 if slow else 8,
                    deadline=None,
                    database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                def call(case: Any) -> None:
                    if case.query and str(case.query.get("wait")).lower() in ("true", "1"):
                        # No simulator listens here: a confirmation wait only costs 5 s.
                        case.query["wait"] = "false"
                    response = case.call(headers=headers)
                    if response.status_code >= 500:
                        failures.append(
                            f"{response.status_code} {case.method} {case.formatted_path} "
                            f"query={case.query} body={case.body!r}: {response.text[:300]}"
                        )

                try:
                    call()
                except Unsatisfiable:
                    # No invalid input exists for an operation without parameters.
                    assert mode is GenerationMode.NEGATIVE, operation.label
    elapsed = time.monotonic() - started
    assert not failures, "5xx answers:\n" + "\n".join(failures[:10])
    assert elapsed < 60, f"the fuzzing run took {elapsed:.0f} s; keep it under 60 s"
