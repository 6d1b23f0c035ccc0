"""The HTTP client against a mock transport: URLs, parameters, token and error mapping."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from smap_bench.dashboard.client import ApiClient, ApiError, ApiUnavailable

T = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def client(handler, token: str | None = "secret") -> tuple[ApiClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    return ApiClient("http://api", token, transport=httpx.MockTransport(record)), seen


def test_series_sends_the_stream_range_and_features() -> None:
    body = {"series": [{"feature_index": 2, "timestamps": [T.timestamp()], "values": [1.5]}]}
    api, seen = client(lambda r: httpx.Response(200, json=body))
    frame = api.series("telemetry", "sat1", "ACS", T, T, features=(2, 5))
    assert seen[0].url.path == "/api/series/telemetry"
    params = seen[0].url.params
    assert params["satellite_id"] == "sat1" and params["subsystem"] == "ACS"
    assert params.get_list("features") == ["2", "5"]
    assert params["start"] == "2026-01-01T12:00:00+00:00"
    assert frame["value"].tolist() == [1.5] and frame["feature"].tolist() == [2]


def test_a_422_reports_the_apis_one_line_message() -> None:
    body = {"detail": [{"loc": ["query", "start"]}], "message": "start: not a datetime"}
    api, _ = client(lambda r: httpx.Response(422, json=body))
    with pytest.raises(ApiError, match="HTTP 422: start: not a datetime") as caught:
        api.series("scores", "sat1", "ACS", T, T)
    assert caught.value.status_code == 422


def test_a_core_series_kind_missing_is_an_error_an_optional_one_is_remembered() -> None:
    api, seen = client(lambda r: httpx.Response(404, json={"detail": "Not Found"}))
    with pytest.raises(ApiError, match="404"):
        api.series("scores", "sat1", "ACS", T, T)
    assert api.series("record_index", "sat1", "ACS", T, T).empty
    assert api.series("record_index", "sat1", "ACS", T, T).empty
    assert sum(r.url.path == "/api/series/record_index" for r in seen) == 1


def test_nothing_listening_is_api_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    api, _ = client(refuse)
    with pytest.raises(ApiUnavailable, match="not reachable"):
        api.streams()


def test_mutating_calls_carry_the_bearer_token_and_refuse_without_one() -> None:
    api, seen = client(lambda r: httpx.Response(200, json={"event_id": 3, "history": []}))
    api.act(3, "shelve", operator="alice", comment="later", shelved_until=T)
    request = seen[0]
    assert request.method == "POST" and request.url.path == "/api/events/3/transitions"
    assert request.headers["Authorization"] == "Bearer secret"
    assert json.loads(request.content) == {
        "action": "shelve",
        "operator": "alice",
        "comment": "later",
        "shelved_until": "2026-01-01T12:00:00+00:00",
    }
    anonymous, sent = client(lambda r: httpx.Response(200, json={}), token=None)
    with pytest.raises(ApiError, match="no API token"):
        anonymous.comment(3, "hello", operator="alice")
    assert sent == []


def test_replay_commands_send_their_body_without_waiting() -> None:
    api, seen = client(lambda r: httpx.Response(202, json={"command": "seek"}))
    api.replay("seek", record_index=10)
    api.replay("pause")
    assert seen[0].url.path == "/api/replay/seek" and "wait" not in seen[0].url.params
    assert json.loads(seen[0].content) == {"record_index": 10}
    assert seen[1].content == b""
    with pytest.raises(ValueError, match="unknown replay command"):
        api.replay("rewind")


def test_events_asks_once_per_state() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        state = request.url.params["state"]
        item = {
            "event_id": 1 if state == "open" else 2,
            "satellite_id": "sat1",
            "subsystem": "ACS",
            "start_time": T.isoformat(),
            "end_time": T.isoformat(),
            "state": state,
        }
        return httpx.Response(200, json={"data": [item], "count": 1})

    api, seen = client(answer)
    events = api.events(states=("open", "shelved"), satellite_id="sat1", start=T)
    assert [r.url.params["state"] for r in seen] == ["open", "shelved"]
    assert seen[0].url.params["since"] == T.isoformat()
    assert sorted(events["event_id"]) == [1, 2]


def test_streams_skip_satellites_the_api_serves_no_series_for() -> None:
    body = [
        {
            "satellite_id": "sat1",
            "active": True,
            "streams": [
                {
                    "satellite_id": "sat1",
                    "subsystem": "ACS",
                    "channel": "A-1",
                    "model_name": "SMAP_A-1",
                }
            ],
        },
        {
            "satellite_id": "test-abc",
            "active": True,
            "streams": [
                {
                    "satellite_id": "test-abc",
                    "subsystem": "ACS",
                    "channel": "A-1",
                    "model_name": "SMAP_A-1",
                }
            ],
        },
        {
            "satellite_id": "sat2",
            "active": False,
            "streams": [
                {
                    "satellite_id": "sat2",
                    "subsystem": "ACS",
                    "channel": "A-2",
                    "model_name": "SMAP_A-2",
                }
            ],
        },
    ]
    api, _ = client(lambda r: httpx.Response(200, json=body))
    assert api.streams()["satellite_id"].tolist() == ["sat1"]


def test_latest_falls_back_to_each_streams_detections_without_the_route() -> None:
    satellites = [
        {
            "satellite_id": "sat1",
            "streams": [
                {"satellite_id": "sat1", "subsystem": "ACS", "channel": "A-1", "model_name": "m"}
            ],
        }
    ]
    detections = {
        "series": [{"feature_index": None, "timestamps": [T.timestamp()], "values": [1.0]}]
    }

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/fleet/latest":
            return httpx.Response(404, json={"detail": "Not Found"})
        if path == "/api/fleet/satellites":
            return httpx.Response(200, json=satellites)
        assert path == "/api/series/detections"
        return httpx.Response(200, json=detections)

    api, seen = client(answer)
    latest = api.latest()
    assert latest[["satellite_id", "subsystem", "detected"]].values.tolist() == [
        ["sat1", "ACS", 1.0]
    ]
    api.latest()
    assert sum(r.url.path == "/api/fleet/latest" for r in seen) == 1


def test_a_connection_closed_under_the_client_is_tried_once_more() -> None:
    failures = [httpx.RemoteProtocolError("closed")]

    def answer(request: httpx.Request) -> httpx.Response:
        if failures:
            raise failures.pop()
        return httpx.Response(202, json={"command": "pause"})

    api, seen = client(answer)
    assert api.replay("pause") == {"command": "pause"}
    assert len(seen) == 2


def test_stream_view_is_one_call_with_the_heatmap_range_when_given() -> None:
    one = [{"feature_index": None, "timestamps": [T.timestamp()], "values": [0.5]}]
    body = {
        "telemetry": [{"feature_index": 0, "timestamps": [T.timestamp()], "values": [1.0]}],
        "scores": one,
        "thresholds": one,
        "detections": one,
        "record_index": one,
        "events": [],
        "heatmap_start": "2026-01-01T11:59:30Z",
        "heatmap_end": "2026-01-01T12:00:00Z",
        "heat_input": [{"feature_index": 3, "timestamps": [T.timestamp()], "values": [2.0]}],
        "heat_output": [],
        "server_ms": 4.2,
    }
    api, seen = client(lambda r: httpx.Response(200, json=body))
    got = api.stream_view("sat1", "ACS", T, T, features=(0, 4))
    assert [r.url.path for r in seen] == ["/api/series/view"]
    assert "heatmap_start" not in seen[0].url.params
    assert seen[0].url.params.get_list("features") == ["0", "4"]
    assert got["scores"]["value"].tolist() == [0.5]
    assert got["verdicts"].empty  # an API older than the verdicts: none, no error
    assert got["heat_input"]["feature"].tolist() == [3] and got["heat_output"].empty
    assert got["stream_events"].empty
    assert got["heatmap"] == (datetime(2026, 1, 1, 11, 59, 30, tzinfo=UTC), T)
    api.stream_view("sat1", "ACS", T, T, heatmap=(T, T))
    assert seen[1].url.params["heatmap_start"] == seen[1].url.params["heatmap_end"]
    assert "held_heatmap_start" not in seen[1].url.params
    body["heatmap_held"], body["heat_input"] = True, []  # the held range shown: left out
    got = api.stream_view("sat1", "ACS", T, T, held_heatmap=(T, T))
    assert seen[2].url.params["held_heatmap_end"] == "2026-01-01T12:00:00+00:00"
    assert got["heat_input"] is None and got["heat_output"] is None
    body["verdicts"] = [{"feature_index": None, "timestamps": [T.timestamp()], "values": [1.0]}]
    got = api.stream_view("sat1", "ACS", T, T)
    assert got["verdicts"]["value"].tolist() == [1.0]  # beside the served decision
    assert got["detections"]["value"].tolist() == [0.5]
