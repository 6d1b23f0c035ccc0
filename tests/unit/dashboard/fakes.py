"""An in-memory stand-in for the operations API: the methods of ``DashboardApi``, data
from plain Python, every call recorded."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from smap_bench.alarms import AlarmAction, AlarmState, allowed_actions, apply_action
from smap_bench.dashboard import frames
from smap_bench.dashboard.client import ApiError, ApiUnavailable

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def series(times: Sequence[datetime], values: Sequence[float], feature: int = -1) -> pd.DataFrame:
    """A long series frame of one feature."""
    return pd.DataFrame(
        {
            "time": pd.to_datetime(list(times), utc=True).astype("datetime64[ns, UTC]"),
            "feature": np.full(len(times), feature, dtype="int64"),
            "value": np.asarray(values, dtype="float64"),
        }
    )


def event_payload(
    event_id: int,
    satellite_id: str = "sat1",
    subsystem: str = "ACS",
    start: datetime = T0,
    seconds: int = 20,
    state: str = "open",
    detected_by: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "detected_by": detected_by,
        "event_id": event_id,
        "satellite_id": satellite_id,
        "subsystem": subsystem,
        "model_name": "SMAP_A-1",
        "loop": 1,
        "start_record_index": 100,
        "end_record_index": 100 + seconds,
        "start_time": start.isoformat(),
        "end_time": (start + timedelta(seconds=seconds)).isoformat(),
        "peak_score": 0.5,
        "threshold": 0.1,
        "top_features": [0, 3],
        "state": state,
        "shelved_until": None,
        "updated_at": start.isoformat(),
        "allowed_actions": [a.value for a in allowed_actions(AlarmState(state))],
    }


class FakeApi:
    """Two satellites x (ACS, EPS); series and events set by the test; alarm actions
    follow smap_bench.alarms; replay commands change a stored state."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.streams_frame = pd.DataFrame(
            {
                "satellite_id": ["sat1", "sat1", "sat2", "sat2"],
                "subsystem": ["ACS", "EPS", "ACS", "EPS"],
                "channel": ["A-1", "E-1", "A-2", "E-2"],
                "model_name": ["SMAP_A-1", "SMAP_E-1", "SMAP_A-2", "SMAP_E-2"],
            }
        )
        self.latest_frame = frames.latest_frame([])
        self.series_frames: dict[str, pd.DataFrame] = {}
        self.held_heatmaps: list[Any] = []  # what each stream_view was told is held
        self.event_items: list[dict[str, Any]] = []
        self.history: dict[int, list[dict[str, Any]]] = {}
        self.replay_payload: dict[str, Any] = {"state": None, "detail": "no state"}
        self.health_payload: dict[str, Any] = {}
        self.fail: ApiError | None = None

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))
        if self.fail is not None:
            raise self.fail

    def called(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(a, k) for n, a, k in self.calls if n == name]

    # -- DashboardApi --------------------------------------------------------------------
    def streams(self) -> pd.DataFrame:
        self._record("streams")
        return self.streams_frame.copy()

    def latest(self) -> pd.DataFrame:
        self._record("latest")
        return self.latest_frame.copy()

    def series(self, kind, satellite_id, subsystem, start, end, features=(0,)) -> pd.DataFrame:
        self._record("series", kind, satellite_id, subsystem, start, end, tuple(features))
        frame = self.series_frames.get(kind, frames.empty_series())
        if frame.empty:
            return frame
        inside = (frame["time"] >= pd.Timestamp(start)) & (frame["time"] <= pd.Timestamp(end))
        if kind in ("telemetry", "reconstructions"):
            inside &= frame["feature"].isin(list(features))
        return frame[inside].reset_index(drop=True)

    def stream_view(
        self, satellite_id, subsystem, start, end, features=(0,), heatmap=None, held_heatmap=None
    ) -> dict[str, Any]:
        """The view from this fake's series and events, the heatmap chosen by the API's
        rule (newest flagged window, else the newest window); a ``held_heatmap`` that is
        the range shown: no heat frames (None), as the API."""
        self._record("stream_view", satellite_id, subsystem, start, end, tuple(features))
        self.held_heatmaps.append(held_heatmap)
        got: dict[str, Any] = {
            "telemetry": self.series("telemetry", satellite_id, subsystem, start, end, features),
            "scores": self.series("scores", satellite_id, subsystem, start, end),
            "thresholds": self.series("thresholds", satellite_id, subsystem, start, end),
            "detections": self.series("detections", satellite_id, subsystem, start, end),
            "verdicts": self.series("verdicts", satellite_id, subsystem, start, end),
            "record_index": self.series("record_index", satellite_id, subsystem, start, end),
            "forecasts": self.series("forecasts", satellite_id, subsystem, start, end),
            "forecast_thresholds": self.series(
                "forecast_thresholds", satellite_id, subsystem, start, end
            ),
            "stream_events": self.events(satellite_id=satellite_id, subsystem=subsystem),
        }
        if heatmap is None:
            flagged = got["detections"].loc[got["detections"]["value"] > 0.5, "time"]
            newest = flagged.max() if len(flagged) else frames.latest_time(got["scores"])
            if newest is not None and not pd.isna(newest):
                period = frames.record_period_s(got["scores"])
                heatmap = frames.window_around(newest, 30, period)
        every = range(25)
        got["heat_input"] = got["heat_output"] = frames.empty_series()
        if heatmap is not None:
            got["heat_input"] = self.series("telemetry", satellite_id, subsystem, *heatmap, every)
            got["heat_output"] = self.series(
                "reconstructions", satellite_id, subsystem, *heatmap, every
            )
        if heatmap is not None and heatmap == held_heatmap:
            got["heat_input"] = got["heat_output"] = None
        got["heatmap"] = heatmap
        got["server_ms"] = 0.0
        return got

    def events(
        self, *, satellite_id=None, subsystem=None, states=(), start=None, end=None, limit=200
    ) -> pd.DataFrame:
        self._record("events", satellite_id=satellite_id, subsystem=subsystem, states=tuple(states))
        items = [
            e
            for e in self.event_items
            if (satellite_id is None or e["satellite_id"] == satellite_id)
            and (subsystem is None or e["subsystem"] == subsystem)
            and (not states or e["state"] in states)
        ]
        return frames.events_frame(items[:limit])

    def event(self, event_id: int) -> dict[str, Any]:
        self._record("event", event_id)
        item = next(e for e in self.event_items if e["event_id"] == event_id)
        return {**item, "history": self.history.get(event_id, [])}

    def act(self, event_id, action, *, operator, comment=None, shelved_until=None):
        self._record(
            "act", event_id, action, operator=operator, comment=comment, shelved_until=shelved_until
        )
        item = next(e for e in self.event_items if e["event_id"] == event_id)
        move = apply_action(AlarmState(item["state"]), AlarmAction(action), T0, shelved_until)
        item["state"] = move.to_state.value
        item["allowed_actions"] = [a.value for a in allowed_actions(move.to_state)]
        self.history.setdefault(event_id, []).append(
            {
                "at": T0.isoformat(),
                "actor": operator,
                "from_state": move.from_state.value,
                "to_state": move.to_state.value,
                "comment": comment,
            }
        )
        return self.event(event_id)

    def comment(self, event_id, text, *, operator):
        self._record("comment", event_id, text, operator=operator)
        return self.event(event_id)

    def replay_status(self) -> dict[str, Any]:
        self._record("replay_status")
        return self.replay_payload

    def replay(self, command: str, **params: Any) -> dict[str, Any]:
        self._record("replay", command, **params)
        state = dict(self.replay_payload.get("state") or {})
        if command == "pause":
            state["state"] = "paused"
        elif command == "resume":
            state["state"] = "running"
        elif command == "speed":
            state["speed"] = params["factor"]
        self.replay_payload = {"state": state, "detail": ""}
        return {"command": command, "state": state}

    def health(self) -> dict[str, Any]:
        self._record("health")
        return self.health_payload


def unavailable() -> ApiUnavailable:
    return ApiUnavailable("fleet", "http://127.0.0.1:1", "ConnectError")
