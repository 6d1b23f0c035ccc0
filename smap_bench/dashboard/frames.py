"""Pure DataFrame transforms behind the dashboard: API payloads in, plot-ready frames out.

Nothing here does I/O or knows about Panel, so every rule the dashboard shows (what a
detected window covers, how the reconstruction error is formed, which state colours a
fleet cell) is unit-tested on hand-made frames.

Frames and their columns:

- series (long): ``time`` (UTC), ``feature`` (int, -1 for series without one), ``value``;
- spans: ``start``, ``end`` (UTC), ``kind`` (what the span marks), ``label``;
- events: the API's event fields, times as UTC timestamps;
- fleet state: ``satellite_id``, ``subsystem``, ``state`` (one of :data:`STREAM_STATES`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from smap_bench.catalog import SUBSYSTEMS

SERIES_COLUMNS = ["time", "feature", "value"]
SPAN_COLUMNS = ["start", "end", "kind", "label"]
EVENT_COLUMNS = [
    "event_id",
    "satellite_id",
    "subsystem",
    "model_name",
    "loop",
    "start_record_index",
    "end_record_index",
    "start_time",
    "end_time",
    "peak_score",
    "threshold",
    "top_features",
    "detected_by",
    "state",
    "shelved_until",
    "updated_at",
    "allowed_actions",
]
FLEET_COLUMNS = ["satellite_id", "subsystem", "state", "last_time", "open_alarms", "channel"]
LATEST_COLUMNS = ["satellite_id", "subsystem", "last_time", "detected", "detected_time"]

#: Stream states of the fleet grid, from calm to urgent.
NO_DATA, NORMAL, ANOMALOUS, OPEN_ALARM = "no data", "normal", "anomalous", "open alarm"
STREAM_STATES: tuple[str, ...] = (NO_DATA, NORMAL, ANOMALOUS, OPEN_ALARM)
#: Colour of each stream state (colour-blind safe: grey, green, orange, red).
STATE_COLORS: dict[str, str] = {
    NO_DATA: "#c7c7c7",
    NORMAL: "#4daf4a",
    ANOMALOUS: "#ff9f1c",
    OPEN_ALARM: "#d62728",
}
#: Alarm states that still want an operator's attention.
ACTIVE_ALARM_STATES: tuple[str, ...] = ("open", "acknowledged", "shelved")


def to_utc(value: Any) -> pd.Timestamp:
    """A UTC timestamp from a datetime, an ISO string or Unix seconds."""
    if isinstance(value, int | float | np.integer | np.floating):
        return pd.Timestamp(float(value), unit="s", tz="UTC")
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


# --------------------------------------------------------------------------- series


def empty_streams() -> pd.DataFrame:
    """The fleet's streams before the first fetch (no rows)."""
    return pd.DataFrame(
        {
            c: pd.Series([], dtype="object")
            for c in ("satellite_id", "subsystem", "channel", "model_name")
        }
    )


def empty_series() -> pd.DataFrame:
    """A series frame with no rows (the typed columns views rely on)."""
    return pd.DataFrame(
        {
            "time": pd.Series([], dtype="datetime64[ns, UTC]"),
            "feature": pd.Series([], dtype="int64"),
            "value": pd.Series([], dtype="float64"),
        }
    )


def series_frame(payload: Mapping[str, Any]) -> pd.DataFrame:
    """The long frame of a ``SeriesPublic`` payload (``series``: labels, feature_index,
    timestamps in Unix seconds, values with None for missing), sorted by feature and time."""
    times: list[np.ndarray] = []
    values: list[np.ndarray] = []
    features: list[np.ndarray] = []
    for item in payload.get("series", []):
        stamps = item.get("timestamps", [])
        numbers = item.get("values", [])
        if len(stamps) != len(numbers):
            raise ValueError(
                f"series payload: {len(stamps)} timestamps but {len(numbers)} values "
                f"(labels {item.get('labels')})"
            )
        feature = item.get("feature_index")
        times.append(np.asarray(stamps, dtype="float64"))
        # None (a non-finite sample) becomes NaN.
        values.append(np.asarray(numbers, dtype="float64"))
        features.append(np.full(len(stamps), -1 if feature is None else int(feature)))
    if not times:
        return empty_series()
    seconds = np.concatenate(times)
    feature_column = np.concatenate(features).astype("int64")
    order = np.lexsort((seconds, feature_column))
    stamps_ns = np.round(seconds[order] * 1e9).astype("int64")
    return pd.DataFrame(
        {
            "time": pd.DatetimeIndex(stamps_ns.view("datetime64[ns]"), tz="UTC"),
            "feature": feature_column[order],
            "value": np.concatenate(values)[order],
        },
        copy=False,  # fresh arrays, owned by nothing else (a copy is half the cost)
    )


def wide(frame: pd.DataFrame) -> pd.DataFrame:
    """A series frame as one column per feature, indexed by time (duplicates: the last)."""
    if frame.empty:
        return pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC", name="time"))
    stamps = pd.DatetimeIndex(frame["time"]).as_unit("ns").asi8
    times, row = np.unique(stamps, return_inverse=True)
    features, column = np.unique(frame["feature"].to_numpy(dtype="int64"), return_inverse=True)
    cell = row * len(features) + column
    # The last sample of a (time, feature) cell wins: the first of the reversed order.
    _, first_reversed = np.unique(cell[::-1], return_index=True)
    last = len(cell) - 1 - first_reversed
    table = np.full(len(times) * len(features), np.nan)
    table[cell[last]] = frame["value"].to_numpy(dtype="float64")[last]
    return pd.DataFrame(
        table.reshape(len(times), len(features)),
        index=pd.DatetimeIndex(times.view("datetime64[ns]"), tz="UTC", name="time"),
        columns=[int(f) for f in features],
    )


def record_period_s(frame: pd.DataFrame, default: float = 1.0) -> float:
    """Typical seconds between two records of a series (median spacing), or ``default``."""
    if len(frame) < 2:
        return default
    times = np.unique(pd.DatetimeIndex(frame["time"]).as_unit("ns").asi8)  # sorted, distinct
    if len(times) < 2:
        return default
    return float(np.median(np.diff(times))) / 1e9


def latest_time(*frames: pd.DataFrame) -> pd.Timestamp | None:
    """The newest ``time`` over the given series frames, None when all are empty."""
    stamps = [f["time"].max() for f in frames if not f.empty]
    return max(stamps) if stamps else None


# --------------------------------------------------------------------------- spans


def _empty_spans() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "start": pd.Series([], dtype="datetime64[ns, UTC]"),
            "end": pd.Series([], dtype="datetime64[ns, UTC]"),
            "kind": pd.Series([], dtype="object"),
            "label": pd.Series([], dtype="object"),
        }
    )


_NO_SPANS = _empty_spans()


def empty_spans() -> pd.DataFrame:
    """The frame of no spans (a copy of one built once: building it costs about 1 ms)."""
    return _NO_SPANS.copy()


def merge_spans(spans: Iterable[tuple[pd.Timestamp, pd.Timestamp]]) -> list[tuple[Any, Any]]:
    """Overlapping or touching (start, end) intervals joined into maximal ones, in order."""
    merged: list[list[Any]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def detected_spans(detections: pd.DataFrame, stride: int, period_s: float) -> pd.DataFrame:
    """Time spans of the windows flagged anomalous, merged.

    A detection sample sits at its window's end; a flagged window marks the records it is
    responsible for (its newest ``stride`` records, :mod:`smap_bench.windows`), so its span
    is ``[end - stride * period, end]``, half a period wider on each side so that a
    single record shows as a visible band.
    """
    flagged = detections.loc[detections["value"] > 0.5, "time"]
    return _window_spans(flagged, stride, period_s, "detected", "detected window")


def unconfirmed_windows(verdicts: pd.DataFrame, detections: pd.DataFrame) -> pd.Series:
    """End times of the windows the workers flagged (``verdicts``, the workers' 0/1 per
    window) that the served decision (``detections``) kept as normal, in order.

    A window is matched by its end time, where both series have their sample. A flagged
    window with no decision yet (the events stage still waits on its history) is not
    among them: it may yet be confirmed.
    """
    flagged = verdicts.loc[verdicts["value"] > 0.5, "time"]
    if flagged.empty or detections.empty:
        return pd.Series([], dtype="datetime64[ns, UTC]", name="time")
    decided = detections.groupby("time")["value"].max()
    normal = decided.index[decided.to_numpy(dtype="float64") <= 0.5]
    kept = flagged[flagged.isin(normal)].drop_duplicates().sort_values()
    return kept.reset_index(drop=True).astype("datetime64[ns, UTC]")


def unconfirmed_spans(window_ends: pd.Series, stride: int, period_s: float) -> pd.DataFrame:
    """Time spans of the windows the workers flagged that the confirmation did not keep,
    given their end times (:func:`unconfirmed_windows`), merged, each as wide as a
    detected window's span."""
    return _window_spans(window_ends, stride, period_s, "unconfirmed", "flagged, not confirmed")


def _window_spans(
    window_ends: pd.Series, stride: int, period_s: float, kind: str, label: str
) -> pd.DataFrame:
    """The merged spans of the windows ending at ``window_ends`` (see detected_spans)."""
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    if window_ends.empty:
        return empty_spans()
    half = pd.Timedelta(seconds=period_s / 2)
    reach = pd.Timedelta(seconds=period_s * (stride - 1))
    merged = merge_spans((t - reach - half, t + half) for t in window_ends)
    return pd.DataFrame(
        {
            "start": pd.Series([s for s, _ in merged], dtype="datetime64[ns, UTC]"),
            "end": pd.Series([e for _, e in merged], dtype="datetime64[ns, UTC]"),
            "kind": kind,
            "label": label,
        }
    )


def event_spans(events: pd.DataFrame) -> pd.DataFrame:
    """One span per anomaly event, labelled with its id and alarm state."""
    if events.empty:
        return empty_spans()
    return pd.DataFrame(
        {
            "start": events["start_time"].astype("datetime64[ns, UTC]").to_numpy(),
            "end": events["end_time"].astype("datetime64[ns, UTC]").to_numpy(),
            "kind": "event",
            "label": [
                f"event {i} ({s})" for i, s in zip(events["event_id"], events["state"], strict=True)
            ],
        }
    ).astype({"start": "datetime64[ns, UTC]", "end": "datetime64[ns, UTC]"})


def labeled_spans(
    ranges: Sequence[tuple[int, int]], record_times: pd.DataFrame, period_s: float
) -> pd.DataFrame:
    """Labeled anomaly ranges (record indices, inclusive) placed on the time axis.

    ``record_times`` maps record indices to times (columns ``time``, ``value`` = the
    ``record_index`` series); a range is drawn over the times of its records that the
    frame holds, and left out when it holds none (outside the shown time range).
    """
    if not ranges or record_times.empty:
        return empty_spans()
    index = record_times["value"].to_numpy()
    times = record_times["time"]
    half = pd.Timedelta(seconds=period_s / 2)
    rows = []
    for first, last in ranges:
        inside = (index >= first) & (index <= last)
        if inside.any():
            hit = times[inside]
            rows.append((hit.min() - half, hit.max() + half, f"labeled {first}-{last}"))
    if not rows:
        return empty_spans()
    return pd.DataFrame(
        {
            "start": pd.Series([r[0] for r in rows], dtype="datetime64[ns, UTC]"),
            "end": pd.Series([r[1] for r in rows], dtype="datetime64[ns, UTC]"),
            "kind": "labeled",
            "label": [r[2] for r in rows],
        }
    )


# --------------------------------------------------------------------------- events


def empty_events() -> pd.DataFrame:
    times = ("start_time", "end_time", "shelved_until", "updated_at")
    return pd.DataFrame(
        {
            c: pd.Series([], dtype="datetime64[ns, UTC]" if c in times else "object")
            for c in EVENT_COLUMNS
        }
    )


#: The frame of no events, copied rather than built (building it costs a few ms).
_NO_EVENTS = empty_events()


def events_frame(items: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Anomaly events (``EventPublic`` payloads) as a frame, newest first."""
    if not items:
        return _NO_EVENTS.copy()
    frame = pd.DataFrame([{c: item.get(c) for c in EVENT_COLUMNS} for item in items])
    for column in ("start_time", "end_time", "shelved_until", "updated_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    frame["event_id"] = frame["event_id"].astype("int64")
    return frame.sort_values(["start_time", "event_id"], ascending=False, ignore_index=True)


def top_feature_names(value: Any, n: int = 3) -> str:
    """A short text of an event's ``top_features`` (a list of indices or of objects)."""
    if not isinstance(value, list) or not value:
        return ""
    names = []
    for item in value[:n]:
        if isinstance(item, Mapping):
            feature = item.get("feature", item.get("feature_index", item.get("index")))
            names.append(f"f{feature}")
        else:
            names.append(f"f{item}")
    return ", ".join(names)


def detectors_text(value: Any) -> str:
    """What flagged an event, as the alarm list shows it (``model, hold``; empty when the
    event does not say)."""
    if not isinstance(value, list | tuple):
        return ""
    return ", ".join(str(item) for item in value)


def _raised_by_model(value: Any) -> bool:
    """Whether TranAD's score flagged an event (True when the event does not say: no
    list, or an empty one, as events stored before the detectors were recorded have)."""
    return not isinstance(value, list | tuple) or not value or "model" in value


#: Urgency of each alarm state in the alarm list (smaller: shown first).
ALARM_RANK = {"open": 0, "acknowledged": 1, "shelved": 2, "cleared": 3}


def alarm_table(events: pd.DataFrame) -> pd.DataFrame:
    """The alarm list: one row per event in ``event_id`` order, with ``rank`` (urgency of
    its state) for the display to sort on.

    Rows stay in id order so that a row keeps its position when newer alarms arrive (a
    selection made in the browser refers to positions); the table sorts for display.
    ``peak/threshold`` is TranAD's peak score over its threshold, shown only for events
    TranAD's score raised (or that do not say what raised them): for an event the context
    detector or the forecaster raised alone, that ratio sits below 1 and says nothing.
    """
    columns = [
        "event_id",
        "rank",
        "state",
        "stream",
        "start",
        "duration_s",
        "peak/threshold",
        "by",
        "top",
    ]
    if events.empty:
        return pd.DataFrame({c: pd.Series([], dtype="object") for c in columns})
    table = pd.DataFrame(
        {
            "event_id": events["event_id"].astype("int64"),
            "rank": events["state"].map(ALARM_RANK).fillna(len(ALARM_RANK)).astype("int64"),
            "state": events["state"],
            "stream": events["satellite_id"] + " / " + events["subsystem"],
            "start": events["start_time"].dt.strftime("%Y-%m-%d %H:%M:%S"),
            "duration_s": (events["end_time"] - events["start_time"]).dt.total_seconds(),
            # NaN where not shown (the view's formatter leaves the cell empty)
            "peak/threshold": (events["peak_score"] / events["threshold"])
            .round(2)
            .where(np.array([_raised_by_model(v) for v in events["detected_by"]], dtype=bool)),
            "by": [detectors_text(v) for v in events["detected_by"]],
            "top": [top_feature_names(v) for v in events["top_features"]],
        }
    )
    return table.sort_values("event_id").reset_index(drop=True)


# --------------------------------------------------------------------------- heatmap


def error_matrix(telemetry: pd.DataFrame, reconstruction: pd.DataFrame) -> pd.DataFrame:
    """Squared reconstruction error per record (rows, by time) and feature (columns).

    Both inputs are long series frames; only (time, feature) cells present in both count.
    """
    return wide_error_matrix(wide(telemetry), wide(reconstruction))


def wide_error_matrix(inputs: pd.DataFrame, outputs: pd.DataFrame) -> pd.DataFrame:
    """:func:`error_matrix` of frames already made wide (:func:`wide`)."""
    columns = sorted(set(inputs.columns) & set(outputs.columns))
    times = inputs.index.intersection(outputs.index)
    if not columns or times.empty:
        return pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC", name="time"))
    if (
        inputs.index.equals(outputs.index)
        and list(inputs.columns) == columns == list(outputs.columns)
        and inputs.index.is_monotonic_increasing
    ):
        # The usual case (both of one window, from :func:`wide`): no cell to line up.
        diff = inputs.to_numpy(dtype="float64") - outputs.to_numpy(dtype="float64")
        return pd.DataFrame(diff**2, index=inputs.index, columns=columns)
    diff = inputs.loc[times, columns] - outputs.loc[times, columns]
    return (diff**2).sort_index()


def top_features(errors: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` features with the largest mean squared error, and their share of the total."""
    if errors.empty:
        return pd.DataFrame(
            {
                "feature": pd.Series([], dtype="int64"),
                "mean_error": pd.Series([], dtype="float64"),
                "share": pd.Series([], dtype="float64"),
            }
        )
    values = errors.to_numpy(dtype="float64")
    present = ~np.isnan(values)
    counts = present.sum(axis=0)
    sums = np.where(present, values, 0.0).sum(axis=0)
    # A feature without a value has mean 0 (pandas' mean over nothing is NaN).
    means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    total = float(means.sum())
    ranked = np.argsort(-means, kind="stable")[:n]  # ties keep the columns' order
    top = means[ranked]
    return pd.DataFrame(
        {
            "feature": [int(errors.columns[i]) for i in ranked],
            "mean_error": top,
            "share": top / total if total > 0 else 0.0,
        }
    )


def heatmap_frame(matrix: pd.DataFrame, t0: pd.Timestamp | None = None) -> pd.DataFrame:
    """A wide matrix as (step, feature, value) rows for a heatmap; ``step`` counts records
    from the first row (or seconds from ``t0`` when given)."""
    if matrix.empty:
        return pd.DataFrame(
            {"step": pd.Series([], dtype="int64"), "feature": [], "value": []}
        ).astype({"feature": "int64", "value": "float64"})
    stacked = matrix.reset_index(drop=True).rename_axis("step").stack(future_stack=True)
    frame = pd.Series(stacked, name="value").reset_index()
    frame.columns = ["step", "feature", "value"]
    return frame.astype({"step": "int64", "feature": "int64", "value": "float64"})


def window_around(
    center: datetime, window_size: int, period_s: float
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The time range of the window of ``window_size`` records that ends at ``center``."""
    end = to_utc(center)
    start = end - pd.Timedelta(seconds=period_s * (window_size - 1))
    return start - pd.Timedelta(seconds=period_s / 2), end + pd.Timedelta(seconds=period_s / 2)


# --------------------------------------------------------------------------- fleet


def latest_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Each stream's newest sample time, latest detection and that window's end time
    (:data:`LATEST_COLUMNS`; ``detected_time`` is NaT where the API does not say)."""
    frame = pd.DataFrame(
        [{c: row.get(c) for c in LATEST_COLUMNS} for row in rows], columns=LATEST_COLUMNS
    )
    for column in ("last_time", "detected_time"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    frame["detected"] = pd.to_numeric(frame["detected"], errors="coerce")
    return frame


def stream_states(
    streams: pd.DataFrame,
    latest: pd.DataFrame,
    alarms: pd.DataFrame,
    now: datetime,
    stale_after: timedelta,
    seen_at: Mapping[tuple[str, str], datetime] | None = None,
) -> pd.DataFrame:
    """The state of every (satellite, subsystem) stream for the fleet grid.

    - ``open alarm``: the stream has an event in state ``open``;
    - ``anomalous``: its latest window was flagged (and it is not stale);
    - ``normal``: its newest record advanced within ``stale_after`` before ``now``;
    - ``no data``: nothing recent.

    Staleness is judged by progress on the wall clock: ``seen_at`` gives, per stream, when
    its newest record was seen to change (:class:`~smap_bench.dashboard.store.DashboardStore`
    keeps it); a stream missing from it, or every stream without it, counts as seen at its
    newest record's time. Record times are the simulated clock, which runs ahead of the
    wall clock above 1x, falls behind it for good after a pause (the labeled replay pauses
    the fleet) and differs between satellites after a seek (their loops differ in
    length): compared with the wall clock, or with the fleet's newest record, they would
    grey streams that are flowing.

    ``streams`` has ``satellite_id``, ``subsystem`` (and optionally ``channel``);
    ``latest`` has :data:`LATEST_COLUMNS`; ``alarms`` is an events frame.
    """
    if streams.empty:
        return pd.DataFrame({c: pd.Series([], dtype="object") for c in FLEET_COLUMNS})
    keys = ["satellite_id", "subsystem"]
    grid = streams[[c for c in ("satellite_id", "subsystem", "channel") if c in streams]].copy()
    if "channel" not in grid:
        grid["channel"] = ""
    latest = latest if not latest.empty else pd.DataFrame(columns=LATEST_COLUMNS)
    grid = grid.merge(latest[LATEST_COLUMNS], on=keys, how="left")
    if alarms.empty:
        grid["open_alarms"] = 0
    else:
        open_counts = alarms[alarms["state"] == "open"].groupby(keys).size().rename("open_alarms")
        grid = grid.merge(open_counts.reset_index(), on=keys, how="left")
        grid["open_alarms"] = grid["open_alarms"].fillna(0).astype("int64")
    last = pd.to_datetime(grid["last_time"], utc=True)
    seen = last
    if seen_at:
        pairs = zip(grid["satellite_id"], grid["subsystem"], strict=True)
        known = [seen_at.get((str(satellite), str(subsystem))) for satellite, subsystem in pairs]
        seen = pd.to_datetime(pd.Series(known, index=last.index), utc=True).fillna(last)
    cutoff = to_utc(now) - pd.Timedelta(stale_after)
    fresh = last.notna() & (seen >= cutoff)
    detected = grid["detected"].fillna(0).astype(float) > 0.5
    state = np.where(
        grid["open_alarms"] > 0,
        OPEN_ALARM,
        np.where(fresh & detected, ANOMALOUS, np.where(fresh, NORMAL, NO_DATA)),
    )
    grid["state"] = state
    grid["last_time"] = last
    return grid[FLEET_COLUMNS].reset_index(drop=True)


def fleet_grid(states: pd.DataFrame, satellites: Sequence[str]) -> pd.DataFrame:
    """Satellites (rows) x subsystems (columns) of state names, every cell filled."""
    columns = [s.value for s in SUBSYSTEMS]
    grid = pd.DataFrame(
        NO_DATA, index=pd.Index(list(satellites), name="satellite_id"), columns=columns
    )
    for satellite, subsystem, state in zip(
        states["satellite_id"], states["subsystem"], states["state"], strict=True
    ):
        if satellite in grid.index and subsystem in grid.columns:
            grid.loc[satellite, subsystem] = state
    return grid


def state_counts(states: pd.DataFrame) -> dict[str, int]:
    """How many streams are in each state (every state listed, zeros included)."""
    counts = states["state"].value_counts() if not states.empty else pd.Series(dtype="int64")
    return {state: int(counts.get(state, 0)) for state in STREAM_STATES}
