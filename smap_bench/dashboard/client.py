"""A small typed client of the operations API, the dashboard's only way to the pipeline.

It turns the API's JSON into the frames of :mod:`smap_bench.dashboard.frames` and its
errors into two exceptions: :class:`ApiUnavailable` (nothing answered: the stack is down)
and :class:`ApiError` (the API answered with an error; the message carries its
``detail``). :class:`DashboardApi` is the interface the store needs; tests pass any
object with these methods.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
import pandas as pd

from smap_bench.api.queries import SATELLITE_ID_PATTERN
from smap_bench.config import Settings
from smap_bench.dashboard import frames

#: Series kinds the dashboard reads (``smap_bench.api.queries.SeriesKind`` values).
TELEMETRY, SCORES, THRESHOLDS, RECONSTRUCTIONS, DETECTIONS, VERDICTS, RECORD_INDEX = (
    "telemetry",
    "scores",
    "thresholds",
    "reconstructions",
    "detections",  # the served decision per window (anomaly_alarm)
    "verdicts",  # the workers' verdict per window, before confirmation
    "record_index",
)
#: Satellite ids the API serves series for; other rows of the fleet tables are left out.
_SATELLITE_ID = re.compile(SATELLITE_ID_PATTERN)
#: Kinds every API serves; a 404 on another kind means "not served yet" and is remembered.
CORE_KINDS = frozenset({TELEMETRY, SCORES, THRESHOLDS, RECONSTRUCTIONS, DETECTIONS})
#: Newest sample and detection of every stream (see :meth:`ApiClient.latest`).
LATEST_ROUTE = "/api/fleet/latest"
#: A stream's timeline and heatmap in one answer (see :meth:`ApiClient.stream_view`).
VIEW_ROUTE = "/api/series/view"
#: Series of a view answer -> the store's frame names.
VIEW_SERIES = {
    "telemetry": "telemetry",
    "scores": "scores",
    "thresholds": "thresholds",
    "detections": "detections",
    "verdicts": "verdicts",
    "record_index": "record_index",
    "forecasts": "forecasts",  # the forecaster's statistic per window (empty: not served)
    "forecast_thresholds": "forecast_thresholds",
    "heat_input": "heat_input",
    "heat_output": "heat_output",
}
#: How far around now the stop-gap for a missing latest route looks.
FALLBACK_LOOKBACK = timedelta(minutes=30)
#: Replay commands the API accepts (``smap_bench.simulation`` control commands, plus start).
REPLAY_COMMANDS: tuple[str, ...] = ("start", "pause", "resume", "seek", "speed", "stop")


class ApiError(RuntimeError):
    """The API answered with an error; ``status_code`` and the API's ``detail`` kept."""

    def __init__(self, what: str, status_code: int, detail: str) -> None:
        super().__init__(f"{what}: HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class ApiUnavailable(ApiError):
    """Nothing answered at the API's address (the stack or the API is down)."""

    def __init__(self, what: str, base_url: str, reason: str) -> None:
        RuntimeError.__init__(
            self, f"{what}: the operations API at {base_url} is not reachable ({reason})"
        )
        self.status_code = 0
        self.detail = reason


class DashboardApi(Protocol):
    """What the dashboard's store asks of the operations API."""

    def streams(self) -> pd.DataFrame:
        """One row per (satellite, subsystem): ``channel``, ``model_name``."""
        ...

    def series(
        self,
        kind: str,
        satellite_id: str,
        subsystem: str,
        start: datetime,
        end: datetime,
        features: Sequence[int] = (0,),
    ) -> pd.DataFrame:
        """A long series frame (:func:`frames.series_frame`) of one stream."""
        ...

    def latest(self) -> pd.DataFrame:
        """Per stream its newest sample time and whether its latest window was flagged."""
        ...

    def stream_view(
        self,
        satellite_id: str,
        subsystem: str,
        start: datetime,
        end: datetime,
        features: Sequence[int] = (0,),
        heatmap: tuple[datetime, datetime] | None = None,
        held_heatmap: tuple[datetime, datetime] | None = None,
    ) -> dict[str, Any]:
        """A stream's timeline and heatmap in one call: frames ``telemetry``, ``scores``,
        ``thresholds``, ``detections``, ``verdicts`` (empty from an API without them),
        ``record_index``, ``forecasts`` and ``forecast_thresholds`` (empty when the
        forecaster is not served, or from an API without them), ``stream_events``,
        ``heat_input``, ``heat_output``, and ``heatmap`` (the range shown, or None).
        Without ``heatmap`` the newest flagged window (else the newest window) is shown.
        ``held_heatmap``: the range whose heatmap the caller holds; when the range shown
        is that one, ``heat_input`` and ``heat_output`` are None (not sent again)."""
        ...

    def events(
        self,
        *,
        satellite_id: str | None = None,
        subsystem: str | None = None,
        states: Sequence[str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 200,
    ) -> pd.DataFrame:
        """Anomaly events (:func:`frames.events_frame`), newest first."""
        ...

    def event(self, event_id: int) -> dict[str, Any]:
        """One event with its alarm ``history``."""
        ...

    def act(
        self,
        event_id: int,
        action: str,
        *,
        operator: str,
        comment: str | None = None,
        shelved_until: datetime | None = None,
    ) -> dict[str, Any]:
        """Apply an alarm action (acknowledge, shelve, unshelve, clear, reopen)."""
        ...

    def comment(self, event_id: int, text: str, *, operator: str) -> dict[str, Any]:
        """Add an operator comment to an event."""
        ...

    def replay_status(self) -> dict[str, Any]:
        """The simulator's latest state (``smap_bench.simulation.SimulatorState``)."""
        ...

    def replay(self, command: str, **params: Any) -> dict[str, Any]:
        """Send one replay command; returns the state the API reports after it."""
        ...

    def health(self) -> dict[str, Any]:
        """Pipeline health (``PipelineHealthPublic``)."""
        ...


def _iso(value: datetime) -> str:
    return frames.to_utc(value).isoformat()


class ApiClient:
    """:class:`DashboardApi` over HTTP (httpx), with the bearer token for mutating routes."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._missing: set[str] = set()
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout_s,
            limits=httpx.Limits(max_keepalive_connections=8, max_connections=16),
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiClient:
        """The client of the API named by ``settings`` (``api_url`` or host:api_port), with
        the token from ``settings.api_token`` or the local stack's token file."""
        from smap_bench.api.auth import token_path

        url = settings.api_url or f"http://{settings.host}:{settings.api_port}"
        token = settings.api_token.get_secret_value() if settings.api_token else None
        if token is None:
            path = token_path(settings)
            token = path.read_text().strip() if path.is_file() else None
        return cls(url, token or None)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Any = None,
        json: Any = None,
        mutating: bool = False,
    ) -> Any:
        headers = {}
        if mutating:
            if not self._token:
                raise ApiError(what, 401, "no API token configured for the dashboard")
            headers["Authorization"] = f"Bearer {self._token}"
        for attempt in (1, 2):
            try:
                response = self._http.request(
                    method, path, params=params, json=json, headers=headers
                )
                break
            except (httpx.ReadError, httpx.RemoteProtocolError) as error:
                # A pooled connection the server had already closed: one fresh try.
                if attempt == 2:
                    raise ApiUnavailable(what, self.base_url, type(error).__name__) from error
            except httpx.TransportError as error:
                raise ApiUnavailable(what, self.base_url, type(error).__name__) from error
        if response.status_code >= 400:
            raise ApiError(what, response.status_code, _detail(response))
        return response.json() if response.content else None

    def _get(self, path: str, what: str, params: Any = None) -> Any:
        return self._request("GET", path, what, params=params)

    # -- reads ------------------------------------------------------------------------
    def streams(self) -> pd.DataFrame:
        satellites = self._get("/api/fleet/satellites", "fleet")
        rows = [
            {
                "satellite_id": stream["satellite_id"],
                "subsystem": stream["subsystem"],
                "channel": stream["channel"],
                "model_name": stream["model_name"],
            }
            for satellite in satellites
            if satellite.get("active", True) and _SATELLITE_ID.match(satellite["satellite_id"])
            for stream in satellite.get("streams", [])
        ]
        return pd.DataFrame(rows, columns=["satellite_id", "subsystem", "channel", "model_name"])

    def series(
        self,
        kind: str,
        satellite_id: str,
        subsystem: str,
        start: datetime,
        end: datetime,
        features: Sequence[int] = (0,),
    ) -> pd.DataFrame:
        params: list[tuple[str, Any]] = [
            ("satellite_id", satellite_id),
            ("subsystem", subsystem),
            ("start", _iso(start)),
            ("end", _iso(end)),
        ]
        params += [("features", int(f)) for f in features]
        route = f"/api/series/{kind}"
        if route in self._missing:
            return frames.empty_series()
        try:
            payload = self._get(route, f"{kind} of {satellite_id}/{subsystem}", params)
        except ApiError as error:
            if error.status_code != 404 or kind in CORE_KINDS:
                raise
            self._missing.add(route)  # an optional kind this API does not serve (yet)
            return frames.empty_series()
        return frames.series_frame(payload)

    def stream_view(
        self,
        satellite_id: str,
        subsystem: str,
        start: datetime,
        end: datetime,
        features: Sequence[int] = (0,),
        heatmap: tuple[datetime, datetime] | None = None,
        held_heatmap: tuple[datetime, datetime] | None = None,
    ) -> dict[str, Any]:
        params: list[tuple[str, Any]] = [
            ("satellite_id", satellite_id),
            ("subsystem", subsystem),
            ("start", _iso(start)),
            ("end", _iso(end)),
        ]
        params += [("features", int(f)) for f in features]
        if heatmap is not None:
            params += [("heatmap_start", _iso(heatmap[0])), ("heatmap_end", _iso(heatmap[1]))]
        if held_heatmap is not None:
            params += [
                ("held_heatmap_start", _iso(held_heatmap[0])),
                ("held_heatmap_end", _iso(held_heatmap[1])),
            ]
        payload = self._get(VIEW_ROUTE, f"view of {satellite_id}/{subsystem}", params)
        return view_frames(payload)

    def latest(self) -> pd.DataFrame:
        if LATEST_ROUTE not in self._missing:
            try:
                payload = self._get(LATEST_ROUTE, "latest samples")
            except ApiError as error:
                if error.status_code != 404:
                    raise
                self._missing.add(LATEST_ROUTE)
            else:
                rows = payload.get("data", payload) if isinstance(payload, Mapping) else payload
                return frames.latest_frame(rows)
        return self._latest_from_detections()

    def _latest_from_detections(self) -> pd.DataFrame:
        """Stop-gap while the API has no latest route: each stream's detections within
        half an hour of now (so it sees a replay that runs near the wall clock only)."""
        streams = self.streams()
        now = datetime.now(UTC)
        start, end = now - FALLBACK_LOOKBACK, now + FALLBACK_LOOKBACK

        def newest(key: tuple[str, str]) -> dict[str, Any]:
            try:
                found = self.series(DETECTIONS, key[0], key[1], start, end)
            except ApiError as error:
                if isinstance(error, ApiUnavailable):
                    raise
                found = frames.empty_series()  # one stream's problem is not the fleet's
            last = found.iloc[-1] if len(found) else None
            return {
                "satellite_id": key[0],
                "subsystem": key[1],
                "last_time": None if last is None else last["time"],
                "detected": None if last is None else float(last["value"]),
            }

        keys = list(zip(streams["satellite_id"], streams["subsystem"], strict=True))
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="latest") as pool:
            rows = list(pool.map(newest, keys))
        return frames.latest_frame(rows)

    def events(
        self,
        *,
        satellite_id: str | None = None,
        subsystem: str | None = None,
        states: Sequence[str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 200,
    ) -> pd.DataFrame:
        params: list[tuple[str, Any]] = [("limit", limit)]
        if satellite_id is not None:
            params.append(("satellite_id", satellite_id))
        if subsystem is not None:
            params.append(("subsystem", subsystem))
        if start is not None:
            params.append(("since", _iso(start)))
        if end is not None:
            params.append(("until", _iso(end)))
        # The API filters on one state at a time: one request per state asked for.
        items: list[dict[str, Any]] = []
        for state in states or (None,):
            query = params + ([("state", state)] if state is not None else [])
            items += self._get("/api/events", "events", query)["data"]
        return frames.events_frame(items)

    def event(self, event_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._get(f"/api/events/{int(event_id)}", f"event {event_id}")
        return result

    def replay_status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get("/api/replay", "replay state")
        return result

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get("/api/health/pipeline", "pipeline health")
        return result

    # -- actions ----------------------------------------------------------------------
    def act(
        self,
        event_id: int,
        action: str,
        *,
        operator: str,
        comment: str | None = None,
        shelved_until: datetime | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"action": action, "operator": operator}
        if comment:
            body["comment"] = comment
        if shelved_until is not None:
            body["shelved_until"] = _iso(shelved_until)
        result: dict[str, Any] = self._request(
            "POST",
            f"/api/events/{int(event_id)}/transitions",
            f"{action} event {event_id}",
            json=body,
            mutating=True,
        )
        return result

    def comment(self, event_id: int, text: str, *, operator: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST",
            f"/api/events/{int(event_id)}/comments",
            f"comment on event {event_id}",
            json={"comment": text, "operator": operator},
            mutating=True,
        )
        return result

    def replay(self, command: str, **params: Any) -> dict[str, Any]:
        if command not in REPLAY_COMMANDS:
            raise ValueError(f"unknown replay command {command!r}; known: {REPLAY_COMMANDS}")
        result: dict[str, Any] = self._request(
            "POST",
            f"/api/replay/{command}",
            f"replay {command}",
            json=params or None,
            mutating=True,
        )
        return result


def view_frames(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The frames of a ``StreamViewPublic`` answer (see :meth:`DashboardApi.stream_view`)."""
    got: dict[str, Any] = {
        name: frames.series_frame({"series": payload.get(key) or []})
        for key, name in VIEW_SERIES.items()
    }
    if payload.get("heatmap_held"):  # the caller's heatmap is the one shown: not sent again
        got["heat_input"] = got["heat_output"] = None
    got["stream_events"] = frames.events_frame(payload.get("events") or [])
    start, end = payload.get("heatmap_start"), payload.get("heatmap_end")
    got["heatmap"] = (
        (frames.to_utc(start).to_pydatetime(), frames.to_utc(end).to_pydatetime())
        if start and end
        else None
    )
    got["server_ms"] = payload.get("server_ms")
    return got


def _detail(response: httpx.Response) -> str:
    """The API's ``detail`` (a string, or FastAPI's list of validation errors), else the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return str(body["message"])  # the API's one-line summary of a 422
    detail = body.get("detail") if isinstance(body, Mapping) else None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}"
            for item in detail
            if isinstance(item, Mapping)
        )
    return str(body)[:300]
