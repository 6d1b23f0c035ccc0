"""The dashboard's data store: what is selected, what was fetched, what follows from it.

One :class:`DashboardStore` per browser session (or notebook). It holds the selection
(stream, time range, features, chosen event or window), the data fetched through a
:class:`~smap_bench.dashboard.client.DashboardApi` as DataFrames, and derived values as
``param.depends`` methods that views bind to. It builds no widgets: views render it and
call its actions. Refreshing is explicit (:meth:`refresh`); the serve entry point
schedules it with ``pn.state.add_periodic_callback``.

Errors of the API never escape a refresh or an action: they land in :attr:`message`
(and :attr:`api_ok` turns False), and the last good data stays shown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param

from smap_bench.alarms import AlarmState
from smap_bench.catalog import SUBSYSTEMS
from smap_bench.config import Settings
from smap_bench.dashboard import frames
from smap_bench.dashboard.client import ApiError, ApiUnavailable
from smap_bench.schema import NUM_FEATURES

#: The longest heatmap, in records (a long event shows its last records).
MAX_HEATMAP_RECORDS = 300
#: Columns of a series frame (:func:`smap_bench.dashboard.frames.series_frame`).
SERIES_COLUMNS = ["time", "feature", "value"]
#: The stream's series frames a refresh fetches.
STREAM_SERIES: tuple[str, ...] = (
    "telemetry",
    "scores",
    "thresholds",
    "detections",
    "verdicts",
    "record_index",
    "forecasts",
    "forecast_thresholds",
    "heat_input",
    "heat_output",
)
#: Replay speeds offered to operators ("max": as fast as the pipeline takes it).
SPEEDS: tuple[str, ...] = ("0.5", "1", "2", "5", "10", "50", "max")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def same_frame(held: pd.DataFrame, new: pd.DataFrame) -> bool:
    """Whether ``new`` holds the same rows as ``held`` (same columns, dtypes and values)."""
    if held is new:
        return True
    if held.shape != new.shape or list(held.columns) != list(new.columns):
        return False
    if (
        list(held.columns) != SERIES_COLUMNS
        or not (held.dtypes == new.dtypes).all()
        or not isinstance(held["time"].dtype, pd.DatetimeTZDtype)
    ):
        return held.equals(new)
    # A series frame (time, feature, value), column by column on their arrays: a quarter
    # of DataFrame.equals' cost, which a refresh pays for each of its frames.
    return (
        np.array_equal(held["time"].array.asi8, new["time"].array.asi8)
        and np.array_equal(held["feature"].to_numpy(), new["feature"].to_numpy())
        and np.array_equal(
            held["value"].to_numpy(dtype="float64"),
            new["value"].to_numpy(dtype="float64"),
            equal_nan=True,
        )
    )


def labeled_ranges(settings: Settings) -> dict[str, list[tuple[int, int]]]:
    """Labeled anomaly ranges of every channel (record indices of the test split), or none
    when the dataset is not on this machine (the timeline then shows no labeled spans)."""
    from smap_bench.data.loader import DataError, load_labels, resolve_data_dir

    try:
        source = resolve_data_dir(settings.data_dir)
        labels = load_labels(source.path) if source.path is not None else {}
    except (DataError, OSError):
        return {}
    return {c: [(r.start, r.end) for r in ranges] for c, ranges in labels.items()}


class DashboardStore(pn.viewable.Viewer):
    """Selection, fetched data and derived values of one dashboard session."""

    client = param.Parameter(default=None, doc="A DashboardApi (ApiClient or a fake)")
    clock = param.Callable(default=_utc_now, doc="Wall clock (aware UTC datetimes)")

    # -- selection ----------------------------------------------------------------------
    satellite_id: str | None = param.Selector(  # type: ignore[assignment]
        default=None, objects=[], allow_None=True
    )
    subsystem: str = param.Selector(  # type: ignore[assignment]
        default="ACS", objects=[s.value for s in SUBSYSTEMS]
    )
    features = param.ListSelector(default=[0], objects=list(range(NUM_FEATURES)))
    window_s = param.Integer(default=600, bounds=(30, 3600), doc="Length of the time range")
    end = param.Date(default=None, allow_None=True, doc="End of the range; None: follow live")
    refresh_period_ms = param.Integer(
        default=1000,
        bounds=(250, 60_000),
        doc=(
            "Period of the live refresh (fleet, alarms, replay state, the shown stream's"
            " timeline and heatmap): each redraws the plots, some 50 ms of a core"
        ),
    )
    latest_period_ms = param.Integer(
        default=250,
        bounds=(100, 60_000),
        doc=(
            "Period of the fleet grid's refresh (each stream's newest detection: a new one"
            " shows within about one period); one cheap call, and only a change redraws"
        ),
    )
    event_id = param.Integer(default=None, allow_None=True, doc="Event of the heatmap")
    focus_time = param.Date(default=None, allow_None=True, doc="Window end of the heatmap")
    alarm_states = param.ListSelector(
        default=list(frames.ACTIVE_ALARM_STATES), objects=[s.value for s in AlarmState]
    )
    operator = param.String(default="operator", doc="Who acts on alarms")
    window_size = param.Integer(default=30, bounds=(2, None))
    stride = param.Integer(default=10, bounds=(1, None))
    stale_after_s = param.Number(default=30.0, bounds=(1, None), doc="No sample since: no data")
    labels = param.Dict(default={}, doc="channel -> labeled ranges [(first, last) record]")

    # -- fetched data (views read, never write) -----------------------------------------
    # Defaults are copied per instance (ClassSelector parameters instantiate).
    streams = param.DataFrame(default=frames.empty_streams())
    latest = param.DataFrame(default=frames.latest_frame([]))
    alarms = param.DataFrame(default=frames.empty_events())
    telemetry = param.DataFrame(default=frames.empty_series())
    scores = param.DataFrame(default=frames.empty_series())
    thresholds = param.DataFrame(default=frames.empty_series())
    detections = param.DataFrame(
        default=frames.empty_series(), doc="The served decision per window (anomaly_alarm)"
    )
    verdicts = param.DataFrame(
        default=frames.empty_series(),
        doc="The workers' verdict per window, before the events stage's confirmation",
    )
    record_index = param.DataFrame(default=frames.empty_series())
    forecasts = param.DataFrame(
        default=frames.empty_series(), doc="The linear forecaster's statistic per window"
    )
    forecast_thresholds = param.DataFrame(
        default=frames.empty_series(), doc="The forecaster's static threshold per window"
    )
    stream_events = param.DataFrame(default=frames.empty_events())
    heat_input = param.DataFrame(default=frames.empty_series())
    heat_output = param.DataFrame(default=frames.empty_series())
    replay_state = param.Dict(default={}, doc="The simulator's latest state; empty: none live")
    replay_detail = param.String(default="", doc="Why there is no replay state, if so")
    health = param.Dict(default={})
    event_detail = param.Dict(default={})

    # -- status ------------------------------------------------------------------------
    api_ok = param.Boolean(default=False)
    message = param.String(default="", doc="The last problem, or empty")
    notice = param.String(default="", doc="The result of the last operator action")
    refreshed_at = param.Date(default=None, allow_None=True)
    fleet_satellites = param.List(default=[], item_type=str, doc="Satellites of the fleet")
    fleet_version = param.Integer(default=0, doc="Counts fleet refreshes (plots redraw on it)")
    stream_version = param.Integer(default=0, doc="Counts stream refreshes (plots redraw on it)")
    stream_refresh_ms = param.Number(default=None, allow_None=True)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._memos: dict[str, tuple[tuple[Any, ...], tuple[Any, ...], Any]] = {}
        self._running: set[str] = set()
        # Per stream: its newest record time and when it was seen to change (_seen_at).
        self._progress: dict[tuple[str, str], tuple[pd.Timestamp, pd.Timestamp]] = {}
        # The last heatmap read: ((satellite, subsystem), its range), and whether two reads
        # of it were alike (then the API need not send it again).
        self._heat_seen: tuple[tuple[str, str], tuple[datetime, datetime] | None] | None = None
        self._heat_confirmed = False
        self._pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="dashboard-fetch")

    def _memo(
        self,
        name: str,
        objects: tuple[Any, ...],
        values: tuple[Any, ...],
        compute: Callable[[], Any],
    ) -> Any:
        """``compute()`` once per ``objects`` (the very objects: the frames fetched, which a
        refresh replaces) and ``values`` (compared equal): several views ask for the same
        derived value on every refresh. The objects are held, so their ids are not reused."""
        held = self._memos.get(name)
        if (
            held is not None
            and len(held[0]) == len(objects)
            and all(a is b for a, b in zip(held[0], objects, strict=True))
            and held[1] == values
        ):
            return held[2]
        result = compute()
        self._memos[name] = (objects, values, result)
        return result

    @classmethod
    def from_settings(cls, settings: Settings, **params: Any) -> DashboardStore:
        """A store on the API named by ``settings``, with the dataset's labeled ranges
        (when the dataset is here) and the pipeline's window geometry."""
        from smap_bench.dashboard.client import ApiClient

        return cls(
            client=ApiClient.from_settings(settings),
            labels=labeled_ranges(settings),
            window_size=settings.window_size,
            stride=settings.stride,
            **params,
        )

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.pane.Markdown(self.status_text, sizing_mode="stretch_width")

    # ================================================================ derived values
    @param.depends("streams")
    def satellites(self) -> list[str]:
        """Satellites of the fleet, in natural order (sat2 before sat10)."""
        ids = self.streams["satellite_id"].drop_duplicates().tolist() if len(self.streams) else []
        return sorted(ids, key=lambda s: (len(s), s))

    @param.depends("streams", "satellite_id", "subsystem")
    def channel(self) -> str | None:
        """The SMAP channel the selected stream replays."""

        def find() -> str | None:
            hit = self._stream_rows(self.streams)
            return str(hit["channel"].iloc[0]) if len(hit) else None

        return self._memo("channel", (self.streams,), (self.satellite_id, self.subsystem), find)

    @param.depends("latest", "satellite_id", "subsystem", "end", "window_s")
    def time_range(self) -> tuple[datetime, datetime]:
        """The shown range: ``end`` minus ``window_s``; live, ``end`` is the stream's newest
        sample (the simulated clock may run ahead of or behind the wall clock)."""
        if self.end is not None:
            stop = frames.to_utc(self.end)
        else:
            stop = self._stream_latest() or frames.to_utc(self.clock())
            stop = stop + pd.Timedelta(seconds=1)
        start = stop - pd.Timedelta(seconds=self.window_s)
        return start.to_pydatetime(), stop.to_pydatetime()

    @param.depends("telemetry", "scores")
    def period_s(self) -> float:
        """Seconds between two records of the stream (1 at the dataset's nominal rate)."""
        source = self.scores if len(self.scores) > 1 else self.telemetry
        period: float = self._memo("period", (source,), (), lambda: frames.record_period_s(source))
        return period

    @param.depends(
        "detections", "verdicts", "stream_events", "record_index", "labels", "replay_state"
    )
    def spans(self) -> pd.DataFrame:
        """Detected windows, windows flagged but not confirmed, anomaly events and
        (labeled replays) labeled ranges."""
        spans: pd.DataFrame = self._memo(
            "spans",
            (self.detections, self.verdicts, self.stream_events, self.record_index, self.labels),
            (self.channel(), self.replay_state.get("split"), self.stride, self.period_s()),
            self._spans,
        )
        return spans

    def _spans(self) -> pd.DataFrame:
        parts = [
            frames.detected_spans(self.detections, self.stride, self.period_s()),
            frames.unconfirmed_spans(self.unconfirmed(), self.stride, self.period_s()),
            frames.event_spans(self.stream_events),
            frames.labeled_spans(self.labeled_ranges(), self.record_index, self.period_s()),
        ]
        parts = [p for p in parts if not p.empty]
        spans = pd.concat(parts, ignore_index=True) if parts else frames.empty_spans()
        # The record index changes on every refresh, the spans seldom: the same spans stay
        # the very frame held, so that the timeline does not redraw them.
        held = self._memos.get("spans")
        return held[2] if held is not None and same_frame(held[2], spans) else spans

    @param.depends("verdicts", "detections")
    def unconfirmed(self) -> pd.Series:
        """End times of the windows the workers flagged that the confirmation did not keep
        (decided normal; a window not decided yet is not among them)."""
        times: pd.Series = self._memo(
            "unconfirmed",
            (self.verdicts, self.detections),
            (),
            lambda: frames.unconfirmed_windows(self.verdicts, self.detections),
        )
        return times

    def labeled_ranges(self) -> list[tuple[int, int]]:
        """Labeled ranges of the stream's channel, when the replay is of the labeled split."""
        channel = self.channel()
        if channel is None or self.replay_state.get("split", "test") != "test":
            return []
        return [(int(a), int(b)) for a, b in self.labels.get(channel, [])]

    @param.depends("thresholds")
    def threshold(self) -> float | None:
        """The stream model's latest threshold."""

        def newest() -> float | None:
            values = self.thresholds["value"].to_numpy(dtype="float64")
            values = values[~np.isnan(values)]
            return float(values[-1]) if len(values) else None

        threshold: float | None = self._memo("threshold", (self.thresholds,), (), newest)
        return threshold

    @param.depends("stream_events", "event_id", "detections", "scores", "focus_time")
    def heatmap_range(self) -> tuple[datetime, datetime] | None:
        """What the heatmap shows: the chosen event, else the chosen window, else the
        latest flagged window, else the latest window; None when there is no data."""
        got: tuple[datetime, datetime] | None = self._memo(
            "heatmap_range",
            (self.stream_events, self.detections, self.scores, self.alarms),
            (self.event_id, self.focus_time, self.window_size),
            lambda: self._heatmap_range(self.stream_events, self.detections, self.scores),
        )
        return got

    def _heatmap_range(
        self, events: pd.DataFrame, detections: pd.DataFrame, scores: pd.DataFrame
    ) -> tuple[datetime, datetime] | None:
        period = frames.record_period_s(scores)
        if self.event_id is not None:
            known = [f for f in (events, self.alarms) if len(f)]
            hits = [f[f["event_id"] == self.event_id] for f in known]
            hit = next((h for h in hits if len(h)), None)
            if hit is not None:
                start, end = hit["start_time"].iloc[0], hit["end_time"].iloc[0]
                earliest = end - pd.Timedelta(seconds=period * (MAX_HEATMAP_RECORDS - 1))
                start = max(start, earliest)
                half = pd.Timedelta(seconds=period / 2)
                return (start - half).to_pydatetime(), (end + half).to_pydatetime()
        if self.focus_time is not None:
            centre = frames.to_utc(self.focus_time)
        else:
            flagged = detections.loc[detections["value"] > 0.5, "time"]
            newest = flagged.max() if len(flagged) else frames.latest_time(scores)
            if newest is None or pd.isna(newest):
                return None
            centre = pd.Timestamp(newest)
        if centre is None or pd.isna(centre):
            return None
        start, end = frames.window_around(centre, self.window_size, period)
        return start.to_pydatetime(), end.to_pydatetime()

    @param.depends("heat_input", "heat_output")
    def errors(self) -> pd.DataFrame:
        """Squared reconstruction error per record and feature over the heatmap range
        (computed once per fetched pair: several views ask for it on every refresh)."""
        return self.heat_matrices()[2]

    @param.depends("heat_input", "heat_output")
    def heat_matrices(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """Telemetry, reconstruction (records x features, wide) and their squared error
        over the heatmap range, computed once per fetched pair."""

        def compute() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
            inputs, outputs = frames.wide(self.heat_input), frames.wide(self.heat_output)
            return inputs, outputs, frames.wide_error_matrix(inputs, outputs)

        matrices: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] = self._memo(
            "heat", (self.heat_input, self.heat_output), (), compute
        )
        return matrices

    @param.depends("heat_input", "heat_output")
    def top_features(self, n: int = 5) -> pd.DataFrame:
        """The features contributing most to the heatmap's error (once per fetched pair)."""
        top: pd.DataFrame = self._memo(
            f"top_features_{n}",
            (self.heat_input, self.heat_output),
            (),
            lambda: frames.top_features(self.errors(), n),
        )
        return top

    @param.depends("streams", "latest", "alarms")
    def stream_states(self) -> pd.DataFrame:
        """The state of every stream (normal, anomalous, open alarm, no data); computed
        once per fetched frames and second of the clock (staleness is in seconds), a
        stream stale when its newest record has not changed for ``stale_after_s`` of the
        wall clock (:meth:`_seen_at`)."""
        now = self.clock()
        seen_at = self._seen_at(now)
        states: pd.DataFrame = self._memo(
            "states",
            (self.streams, self.latest, self.alarms),
            (frames.to_utc(now).floor("s"), self.stale_after_s),
            lambda: frames.stream_states(
                self.streams,
                self.latest,
                self.alarms,
                now,
                timedelta(seconds=self.stale_after_s),
                seen_at,
            ),
        )
        return states

    def _seen_at(self, now: datetime) -> dict[tuple[str, str], pd.Timestamp]:
        """Per stream, when its newest record was seen to change: the wall clock at the
        change; at first sight, its record time or now, whichever is earlier (a stream
        whose simulated clock lags, seen once and never again, turns stale at once)."""
        seen = self._progress
        latest = self.latest
        if not latest.empty:
            wall = frames.to_utc(now)
            times = pd.to_datetime(latest["last_time"], utc=True)
            keys = zip(latest["satellite_id"], latest["subsystem"], strict=True)
            for key, last in zip(keys, times, strict=True):
                if pd.isna(last):
                    continue
                held = seen.get(key)
                if held is None:
                    seen[key] = (last, min(last, wall))
                elif held[0] != last:
                    seen[key] = (last, wall)
        return {key: at for key, (_, at) in seen.items()}

    @param.depends("streams", "latest", "alarms")
    def fleet_grid(self) -> pd.DataFrame:
        """Satellites x subsystems of stream states."""
        return frames.fleet_grid(self.stream_states(), self.satellites())

    @param.depends("alarms")
    def alarm_table(self) -> pd.DataFrame:
        """The alarm list, urgent states first."""
        return frames.alarm_table(self.alarms)

    @param.depends("alarms", "stream_events", "event_id")
    def selected_event(self) -> dict[str, Any] | None:
        """The chosen event's row (from the alarm list or the stream's events)."""
        if self.event_id is None:
            return None
        for source in (self.alarms, self.stream_events):
            hit = source[source["event_id"] == self.event_id] if len(source) else source
            if len(hit):
                return {str(k): v for k, v in hit.iloc[0].to_dict().items()}
        return None

    @param.depends("replay_state")
    def replay_summary(self) -> dict[str, Any]:
        """The replay's state, speed, split and position range, ready to print."""
        state = self.replay_state
        if not state:
            return {"state": "unknown", "speed": "-", "split": "-", "position": "-", "loop": "-"}
        lo, hi = state.get("record_index_min"), state.get("record_index_max")
        position = f"{lo}" if lo == hi else f"{lo}–{hi}"
        loops = state.get("loop_min"), state.get("loop_max")
        loop = f"{loops[0]}" if loops[0] == loops[1] else f"{loops[0]}–{loops[1]}"
        speed = state.get("speed")
        return {
            "state": state.get("state", "unknown"),
            "speed": "max" if speed == "max" else f"{float(speed or 0):g}×",
            "split": state.get("split", "-"),
            "position": position,
            "loop": loop,
            "satellites": state.get("satellites"),
            "produced": state.get("produced"),
        }

    @param.depends("api_ok", "message", "refreshed_at", "stream_refresh_ms")
    def status_text(self) -> str:
        """One line: whether the API answers, when data last came, and the last problem."""
        if self.refreshed_at is None and not self.message:
            return "Waiting for the first refresh…"
        parts = ["API ok" if self.api_ok else "API unreachable"]
        if self.refreshed_at is not None:
            parts.append(f"updated {frames.to_utc(self.refreshed_at):%H:%M:%S} UTC")
        if self.stream_refresh_ms is not None:
            parts.append(f"stream refresh {self.stream_refresh_ms:.0f} ms")
        if self.message:
            parts.append(self.message)
        return " · ".join(parts)

    # ================================================================ selection
    @param.depends("satellite_id", "subsystem", watch=True)
    def _stream_changed(self) -> None:
        self.param.update(event_id=None, focus_time=None)

    def select_stream(self, satellite_id: str, subsystem: str) -> None:
        """Show another stream (the fleet grid's click)."""
        if satellite_id not in self.param.satellite_id.objects:
            self.param.satellite_id.objects = [*self.param.satellite_id.objects, satellite_id]
        self.param.update(satellite_id=satellite_id, subsystem=subsystem)

    def select_event(self, event_id: int | None) -> None:
        """Show an event: its stream, and its records in the heatmap."""
        if event_id is None:
            self.event_id = None
            return
        row = None
        for source in (self.alarms, self.stream_events):
            hit = source[source["event_id"] == event_id] if len(source) else source
            if len(hit):
                row = hit.iloc[0]
                break
        if row is not None and (row["satellite_id"], row["subsystem"]) != (
            self.satellite_id,
            self.subsystem,
        ):
            self.select_stream(str(row["satellite_id"]), str(row["subsystem"]))
        self.event_id = int(event_id)

    # ================================================================ refresh
    def _stream_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``rows`` about the selected stream."""
        if rows.empty or self.satellite_id is None:
            return rows.iloc[0:0]
        mine = (rows["satellite_id"] == self.satellite_id) & (rows["subsystem"] == self.subsystem)
        return rows[mine]

    def _stream_latest(self) -> pd.Timestamp | None:
        def find() -> pd.Timestamp | None:
            hit = self._stream_rows(self.latest)
            if hit.empty or pd.isna(hit["last_time"].iloc[0]):
                return None
            return frames.to_utc(hit["last_time"].iloc[0])

        latest: pd.Timestamp | None = self._memo(
            "stream_latest", (self.latest,), (self.satellite_id, self.subsystem), find
        )
        return latest

    def _fail(self, error: Exception) -> None:
        unavailable = isinstance(error, ApiUnavailable)
        hint = " — is the stack up? (`make up`)" if unavailable else ""
        self.param.update(api_ok=not unavailable, message=f"{error}{hint}")

    def _fetch(self, calls: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
        """Run independent API calls side by side; the first error is raised."""
        futures = {name: self._pool.submit(call) for name, call in calls.items()}
        return {name: future.result() for name, future in futures.items()}

    def refresh(self) -> None:
        """Everything: fleet, alarms, replay, the selected stream, then health."""
        self.refresh_live()
        self.refresh_health()

    # Each refresh is a fetch (API calls only, no parameter written, safe off the event
    # loop) and an apply (parameters written at once, on the loop).
    def _attempt(self, fetch: Callable[[], Any]) -> Any:
        try:
            return fetch()
        except ApiError as error:
            return error

    def _settle(self, outcome: Any, apply: Callable[[Any], Any]) -> bool:
        if isinstance(outcome, ApiError):
            self._fail(outcome)
            return False
        if outcome is None:
            return False
        apply(outcome)
        return True

    def _run(self, fetch: Callable[[], Any], apply: Callable[[Any], Any]) -> bool:
        if self.client is None:
            self.message = "no API client configured"
            return False
        return self._settle(self._attempt(fetch), apply)

    def _fetch_fleet(self) -> dict[str, Any]:
        client, states = self.client, tuple(self.alarm_states)
        return self._fetch(
            {
                "streams": client.streams,
                "latest": client.latest,
                "alarms": lambda: client.events(states=states, limit=500),
            }
        )

    def _apply_fleet(self, got: dict[str, Any]) -> None:
        satellites = sorted(
            got["streams"]["satellite_id"].drop_duplicates().tolist(), key=lambda s: (len(s), s)
        )
        chosen = self.satellite_id
        same = all(
            got[name].equals(getattr(self, name)) for name in ("streams", "latest", "alarms")
        )
        if same and satellites == self.fleet_satellites and chosen is not None:
            # Most fast fleet refreshes bring nothing new: nothing to redraw.
            self.param.update(api_ok=True, message="", refreshed_at=self.clock())
            return
        with param.parameterized.batch_call_watchers(self):
            # A satellite chosen through an alarm may lie outside the fleet: it stays.
            extra = [chosen] if chosen is not None and chosen not in satellites else []
            self.param.satellite_id.objects = satellites + extra
            if chosen is None:
                self.satellite_id = satellites[0] if satellites else None
            self.param.update(
                fleet_satellites=satellites,
                streams=got["streams"],
                latest=got["latest"],
                alarms=got["alarms"],
                fleet_version=self.fleet_version + 1,
                api_ok=True,
                message="",
                refreshed_at=self.clock(),
            )

    def refresh_fleet(self) -> bool:
        """The fleet's streams, their newest samples and the alarm list."""
        return self._run(self._fetch_fleet, self._apply_fleet)

    def _fetch_replay(self) -> dict[str, Any]:
        return self.client.replay_status() or {}

    def _apply_replay(self, replay: dict[str, Any]) -> None:
        self.param.update(
            replay_state=replay.get("state") or {}, replay_detail=replay.get("detail") or ""
        )

    def refresh_replay(self) -> bool:
        """The replay's state (the simulator's latest published state)."""
        return self._run(self._fetch_replay, self._apply_replay)

    def _fetch_health(self) -> dict[str, Any]:
        return self.client.health() or {}

    def _apply_health(self, health: dict[str, Any]) -> None:
        self.health = health

    def refresh_health(self) -> bool:
        """The pipeline's health (slower: the API asks every service)."""
        return self._run(self._fetch_health, self._apply_health)

    def refresh_operations(self) -> None:
        """Replay state and pipeline health."""
        self.refresh_replay()
        self.refresh_health()

    def refresh_live(self) -> None:
        """What changes every second or two: fleet, alarms, replay and the shown stream."""
        if self.refresh_fleet():
            self.refresh_replay()
            self.refresh_stream()

    async def refresh_live_async(self) -> None:
        """:meth:`refresh_live` with the API calls off the event loop, so that a served
        page keeps answering clicks while data is on its way; skipped while the previous
        one still runs (a slow API never piles refreshes up)."""
        await self._refresh_async(
            "live",
            [
                (self._fetch_fleet, self._apply_fleet),
                (self._fetch_replay, self._apply_replay),
                (self._fetch_stream, self._apply_stream),
            ],
        )

    async def refresh_latest_async(self) -> None:
        """Only the fleet's newest samples and detections (one cheap API call, the fleet
        grid's colours), off the event loop: polled more often than the rest, applied
        only when changed."""
        await self._refresh_async("latest", [(self.client_latest, self._apply_latest)])

    def client_latest(self) -> pd.DataFrame:
        return self.client.latest()

    def _apply_latest(self, latest: pd.DataFrame) -> None:
        if self.latest.equals(latest):
            return
        self.param.update(latest=latest, fleet_version=self.fleet_version + 1)

    async def refresh_health_async(self) -> None:
        """:meth:`refresh_health` off the event loop (see :meth:`refresh_live_async`)."""
        await self._refresh_async("health", [(self._fetch_health, self._apply_health)])

    async def _refresh_async(
        self, name: str, steps: Sequence[tuple[Callable[[], Any], Callable[[Any], Any]]]
    ) -> None:
        if self.client is None or name in self._running:
            return
        self._running.add(name)
        try:
            loop = asyncio.get_running_loop()
            for fetch, apply in steps:
                outcome = await loop.run_in_executor(self._pool, self._attempt, fetch)
                if not self._settle(outcome, apply):
                    break
        finally:
            self._running.discard(name)

    def _fetch_stream(self) -> dict[str, Any] | None:
        if self.client is None or self.satellite_id is None:
            return None
        began = time.perf_counter()
        client, sat, sub = self.client, self.satellite_id, self.subsystem
        start, end = self.time_range()
        features = tuple(sorted(self.features)) or (0,)
        # A chosen event or window fixes the heatmap's range; otherwise the API shows the
        # newest flagged window of what it reads (the same rule as heatmap_range).
        chosen = self.event_id is not None or self.focus_time is not None
        heatmap = (
            self._heatmap_range(self.stream_events, self.detections, self.scores)
            if chosen
            else None
        )
        # The heatmap held, once read twice alike (a window read as its records land may
        # lack some): the API leaves its series out while it shows that range.
        seen = self._heat_seen
        held = (
            seen[1] if self._heat_confirmed and seen is not None and seen[0] == (sat, sub) else None
        )
        extra = {"held_heatmap": held} if held is not None else {}
        got = client.stream_view(sat, sub, start, end, features, heatmap=heatmap, **extra)
        got = {k: v for k, v in got.items() if k != "server_ms"}
        got["heat_key"] = ((sat, sub), got.pop("heatmap"))
        got["heat_held"] = got["heat_input"] is None or got["heat_output"] is None
        if got["heat_held"]:
            got["heat_input"], got["heat_output"] = self.heat_input, self.heat_output
        got["elapsed_s"] = time.perf_counter() - began
        return got

    def _apply_stream(self, got: dict[str, Any]) -> None:
        elapsed = got.pop("elapsed_s")
        key, held = got.pop("heat_key"), got.pop("heat_held")
        self._heat_confirmed = held or (
            key == self._heat_seen
            and same_frame(self.heat_input, got["heat_input"])
            and same_frame(self.heat_output, got["heat_output"])
        )
        self._heat_seen = key
        # A frame equal to the one held is not replaced: what is derived from it (memoized
        # on the very frame) and what the views drew from it stay as they are.
        fresh = {
            name: frame for name, frame in got.items() if not same_frame(getattr(self, name), frame)
        }
        self.param.update(
            **fresh,
            stream_version=self.stream_version + 1,
            api_ok=True,
            stream_refresh_ms=elapsed * 1000,
            refreshed_at=self.clock(),
        )

    def clear_stream(self) -> None:
        """Forget the shown stream's data and the heatmap held: the next refresh reads and
        draws all of it again (as a first load)."""
        self._heat_seen, self._heat_confirmed = None, False
        self.param.update(
            **{name: frames.empty_series() for name in STREAM_SERIES},
            stream_events=frames.empty_events(),
            stream_version=self.stream_version + 1,
        )

    def refresh_stream(self) -> float | None:
        """Timeline and heatmap of the selected stream over the shown range; returns the
        seconds the fetching took (None when nothing could be fetched)."""
        if self.client is None or self.satellite_id is None:
            return None
        outcome = self._attempt(self._fetch_stream)
        elapsed = outcome.get("elapsed_s") if isinstance(outcome, dict) else None
        return elapsed if self._settle(outcome, self._apply_stream) else None

    def refresh_event_detail(self) -> None:
        """The chosen event's alarm history."""
        if self.client is None or self.event_id is None:
            self.event_detail = {}
            return
        try:
            self.event_detail = self.client.event(self.event_id)
        except ApiError as error:
            self._fail(error)

    # ================================================================ actions
    def _act(self, what: str, call: Callable[[], Any], after: Sequence[Callable[[], Any]]) -> bool:
        if self.client is None:
            self.notice = f"{what}: no API client configured"
            return False
        try:
            call()
        except ApiError as error:
            self.notice = f"{what} failed: {error}"
            if isinstance(error, ApiUnavailable):
                self._fail(error)
            return False
        self.notice = f"{what}: done"
        for refresh in after:
            refresh()
        return True

    def alarm_action(
        self,
        event_id: int,
        action: str,
        comment: str | None = None,
        shelve_for: timedelta | None = None,
    ) -> bool:
        """Acknowledge, shelve (for ``shelve_for``), unshelve, clear or reopen an alarm."""
        until = self.clock() + shelve_for if shelve_for is not None else None
        return self._act(
            f"{action} event {event_id}",
            lambda: self.client.act(
                event_id,
                action,
                operator=self.operator,
                comment=comment or None,
                shelved_until=until,
            ),
            (self.refresh_fleet, self.refresh_event_detail),
        )

    def acknowledge(self, event_id: int, comment: str | None = None) -> bool:
        return self.alarm_action(event_id, "acknowledge", comment)

    def shelve(self, event_id: int, hours: float, comment: str | None = None) -> bool:
        return self.alarm_action(event_id, "shelve", comment, timedelta(hours=hours))

    def add_comment(self, event_id: int, text: str) -> bool:
        """A comment on an alarm (no state change)."""
        if not text.strip():
            self.notice = "comment: write something first"
            return False
        return self._act(
            f"comment on event {event_id}",
            lambda: self.client.comment(event_id, text.strip(), operator=self.operator),
            (self.refresh_event_detail,),
        )

    def replay(self, command: str, **params: Any) -> bool:
        """A replay command (start, pause, resume, seek, speed, stop)."""
        return self._act(
            f"replay {command}",
            lambda: self.client.replay(command, **params),
            (self.refresh_replay,),
        )

    def set_speed(self, speed: str) -> bool:
        """Replay speed: a factor such as ``"2"``, or ``"max"``."""
        factor: float | str = "max" if speed == "max" else float(speed)
        return self.replay("speed", factor=factor)

    def seek(self, record_index: int) -> bool:
        return self.replay("seek", record_index=int(record_index))
