"""Views of the dashboard: each holds the store as a parameter and only renders it.

A view reads the store's data and derived values and calls the store's actions from its
widgets; it fetches nothing itself. The timeline and heatmap plots are Bokeh figures
built once, whose column sources and ranges a refresh replaces in place (the cheapest
update Bokeh has); the fleet grid is a HoloViews ``DynamicMap`` bound to a refresh
counter. Every view has a small derived state (what it would show, which buttons are
enabled) that tests check by setting store parameters.
"""

from __future__ import annotations

import html as html_lib
import re
from datetime import timedelta
from typing import Any

import holoviews as hv
import holoviews.plotting.bokeh  # registers the backend whose options the views set
import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models.widgets.tables import NumberFormatter

from smap_bench.catalog import SUBSYSTEMS
from smap_bench.dashboard import frames
from smap_bench.dashboard.store import SPEEDS, DashboardStore
from smap_bench.schema import NUM_FEATURES

# The views draw with Bokeh only; without this, options resolve against whichever
# backend was loaded last (matplotlib by default outside a notebook or server).
hv.Store.set_current_backend("bokeh")

#: Span styles on the timeline, by what the span marks: colour, opacity, hatching (Bokeh's
#: hatch pattern; blank: none) and the legend's words. Windows the workers flagged that
#: the confirmation did not keep are a faint grey, hatched: seen, but no alarm.
SPAN_STYLE: dict[str, dict[str, Any]] = {
    "labeled": {"color": "#1f77b4", "alpha": 0.15, "hatch": " ", "legend": "labeled"},
    "detected": {"color": "#ff9f1c", "alpha": 0.25, "hatch": " ", "legend": "detected (alarm)"},
    "unconfirmed": {
        "color": "#7f7f7f",
        "alpha": 0.1,
        "hatch": "/",
        "legend": "flagged, not confirmed",
    },
    "event": {"color": "#d62728", "alpha": 0.18, "hatch": " ", "legend": "event"},
}
#: Colours of the telemetry features' lines, in the order of the chosen features.
LINE_COLORS: tuple[str, ...] = (
    "#1f77b4",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
#: Colour of each alarm state in the alarm list.
ALARM_COLORS = {
    "open": "#d62728",
    "acknowledged": "#ff9f1c",
    "shelved": "#7f7f7f",
    "cleared": "#4daf4a",
}
WINDOWS = {"5 min": 300, "10 min": 600, "30 min": 1800, "1 hour": 3600}
SHELF_HOURS = {"1 hour": 1.0, "4 hours": 4.0, "12 hours": 12.0, "1 day": 24.0, "7 days": 168.0}
#: The heatmap selector's first option (value 0: no event chosen).
LATEST_WINDOW = "latest flagged window (or latest window)"
#: Row label of the fleet grid while no satellite is known.
NO_FLEET = "–"


def naive_utc(values: pd.Series) -> pd.Series:
    """UTC times without the zone (Bokeh draws naive datetimes as they are)."""
    times = pd.to_datetime(values, utc=True)
    return times.dt.tz_localize(None)


def padded_range(
    values: pd.Series | np.ndarray, floor: float | None = None, pad: float = 0.08
) -> tuple[float, float]:
    """A y range that shows every finite value with a margin (``floor``: fixed bottom)."""
    numbers = np.asarray(values, dtype="float64")
    finite = numbers[np.isfinite(numbers)]
    if not finite.size:
        return (floor if floor is not None else 0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    if floor is not None:
        lo = min(floor, lo)
    span = hi - lo if hi > lo else max(abs(hi), 1e-3)
    bottom = lo if floor is not None and lo == floor else lo - pad * span
    return bottom, hi + pad * span


def inline_html(text: str) -> str:
    """Markdown's ``**bold**`` and ```code``` as HTML, the rest escaped (the texts that
    views rewrite on every refresh use nothing else)."""
    escaped = html_lib.escape(text, quote=False)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def _card(title: str, *objects: Any, **params: Any) -> pn.Card:
    return pn.Card(
        *objects,
        title=title,
        collapsible=False,
        sizing_mode="stretch_width",
        margin=(6, 6),
        **params,
    )


class StoreView(pn.viewable.Viewer):
    """Base of every view: the store it renders."""

    store: DashboardStore = param.ClassSelector(  # type: ignore[assignment]
        class_=DashboardStore, doc="The session's data store"
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.store is None:
            raise ValueError(f"{type(self).__name__} needs a store (store=DashboardStore(...))")

    def _text_pane(
        self, render: Any, depends: list[str], html: bool = False, **params: Any
    ) -> pn.pane.PaneBase:
        """A pane built once whose text ``render()`` rewrites when ``depends`` change (in
        place: cheaper than a new pane, and never blank while the page updates)."""
        kind = pn.pane.HTML if html else pn.pane.Markdown
        pane = kind(render(), sizing_mode="stretch_width", **params)

        def update(*_: Any) -> None:
            pane.object = render()

        self.store.param.watch(update, depends)
        return pane

    def _live_text(self, render: Any, depends: list[str], html: bool = False, **params: Any) -> Any:
        """As :meth:`_text_pane`, for a text rewritten on every stream refresh: a Bokeh
        ``Div`` whose ``text`` alone changes (a Panel text pane rebuilds its stylesheet
        models on every change, some 3 ms a pane); ``render()`` gives Markdown of bold
        and code only (see :func:`inline_html`), or HTML with ``html``."""
        from bokeh.models.widgets.markups import Div

        def text() -> str:
            return render() if html else inline_html(render())

        div = Div(text=text(), sizing_mode="stretch_width")

        def update(*_: Any) -> None:
            new = text()
            if new != div.text:
                # Held, as the figures' changes: a served session's refresh runs outside the
                # document's lock, and a bare model change there fails.
                with pn.io.hold():
                    div.text = new

        self.store.param.watch(update, depends)
        return pn.pane.Bokeh(div, sizing_mode="stretch_width", **params)


# ====================================================================== replay control


class ReplayControl(StoreView):
    """Start, pause, resume, seek, change speed and stop the replay; its position and speed."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.split = pn.widgets.RadioButtonGroup(
            label="Split", options=["test", "train"], value="test", color="light"
        )
        self.satellites = pn.widgets.IntInput(label="Satellites", value=5, start=1, end=1000)
        self.speed = pn.widgets.Select(label="Speed", options=list(SPEEDS), value="1", width=90)
        self.seek_to = pn.widgets.IntInput(label="Seek to record", value=0, start=0, width=130)
        self.start_button = pn.widgets.Button(label="Start replay", color="primary")
        self.pause_button = pn.widgets.Button(label="Pause", color="warning")
        self.resume_button = pn.widgets.Button(label="Resume", color="success")
        self.stop_button = pn.widgets.Button(label="Stop", color="danger")
        self.seek_button = pn.widgets.Button(label="Seek", color="default", width=70)
        self.speed_button = pn.widgets.Button(label="Set speed", color="default", width=90)
        self.start_button.on_click(self._clicked)
        self.pause_button.on_click(self._clicked)
        self.resume_button.on_click(self._clicked)
        self.stop_button.on_click(self._clicked)
        self.seek_button.on_click(self._clicked)
        self.speed_button.on_click(self._clicked)
        self.store.param.watch(self._sync_buttons, "replay_state")
        self._sync_buttons()
        self.summary = self._text_pane(
            self.summary_html, ["replay_state", "replay_detail"], html=True, margin=(0, 6)
        )
        self.notice = self._text_pane(self.notice_text, ["notice"], margin=0)

    def _clicked(self, event: param.parameterized.Event) -> None:
        button = event.obj
        if button is self.start_button:
            self.start()
        elif button is self.pause_button:
            self.store.replay("pause")
        elif button is self.resume_button:
            self.store.replay("resume")
        elif button is self.stop_button:
            self.store.replay("stop")
        elif button is self.seek_button:
            self.store.seek(int(self.seek_to.value or 0))
        elif button is self.speed_button:
            self.store.set_speed(str(self.speed.value))

    def start(self) -> bool:
        """Start a replay of the chosen split for the chosen number of satellites."""
        speed: float | str = "max" if self.speed.value == "max" else float(self.speed.value)
        return self.store.replay(
            "start",
            split=self.split.value,
            satellites=int(self.satellites.value or 1),
            speed=speed,
        )

    def enabled(self) -> dict[str, bool]:
        """Which commands make sense in the replay's current state."""
        state = self.store.replay_state.get("state")
        live = state in ("running", "paused")
        return {
            "start": not live,
            "pause": state == "running",
            "resume": state == "paused",
            "stop": live,
            "seek": live,
            "speed": live,
        }

    def _sync_buttons(self, *_: Any) -> None:
        allowed = self.enabled()
        for name, button in (
            ("start", self.start_button),
            ("pause", self.pause_button),
            ("resume", self.resume_button),
            ("stop", self.stop_button),
            ("seek", self.seek_button),
            ("speed", self.speed_button),
        ):
            button.disabled = not allowed[name]

    def summary_html(self) -> str:
        """The replay's state badge, speed, split and position."""
        info = self.store.replay_summary()
        if not self.store.replay_state:
            reason = self.store.replay_detail or "no simulator has published its state"
            return f"<b>No live replay</b> — {reason}"
        colour = {"running": "#2ca02c", "paused": "#ff9f1c"}.get(info["state"], "#7f7f7f")
        html = (
            f"<div style='font-size:15px;line-height:1.6'>"
            f"<span style='background:{colour};color:white;padding:2px 8px;border-radius:4px'>"
            f"{info['state']}</span>&nbsp; <b>speed</b> {info['speed']} &nbsp; "
            f"<b>split</b> {info['split']}<br>"
            f"<b>record</b> {info['position']} &nbsp; <b>loop</b> {info['loop']} &nbsp; "
            f"<b>satellites</b> {info['satellites']} &nbsp; <b>sent</b> {info['produced'] or 0:,}"
            "</div>"
        )
        return html

    def notice_text(self) -> str:
        return f"*{self.store.notice}*" if self.store.notice else ""

    def __panel__(self) -> pn.viewable.Viewable:
        return _card(
            "Replay",
            self.summary,
            pn.Row(self.pause_button, self.resume_button, self.stop_button),
            pn.Row(self.speed, self.speed_button, align="end"),
            pn.Row(self.seek_to, self.seek_button, align="end"),
            pn.layout.Divider(),
            pn.Row(self.split, self.satellites),
            self.start_button,
            self.notice,
        )


# ====================================================================== fleet overview


class FleetOverview(StoreView):
    """Satellites x subsystems, each cell coloured by its stream's state; click to select."""

    grid_version = param.Integer(default=0, doc="Counts changes of the cells (the plot redraws)")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._drawn = self.cells()
        self.pane = pn.pane.HoloViews(
            self._new_plot(), sizing_mode="stretch_width", linked_axes=False
        )
        # A new plot when the fleet's satellites change (its height follows them);
        # in between, the plot's data is updated in place when a cell's state changes.
        self.store.param.watch(self._replot, "fleet_satellites")
        self.store.param.watch(self._cells_changed, "fleet_version")
        self.legend = self._text_pane(self.legend_html, ["fleet_version"], html=True, margin=(0, 6))

    def _cells_changed(self, *_: Any) -> None:
        # A fleet refresh comes every fraction of a second and most change no cell (a
        # newer sample of a normal stream): only a change of state redraws the grid.
        cells = self.cells()
        if not cells.equals(self._drawn):
            self._drawn = cells
            self.grid_version += 1

    def _new_plot(self) -> hv.DynamicMap:
        # Bound to a counter, not to the frames: HoloViews hashes what a DynamicMap
        # depends on, and hashing frames on every refresh is slow.
        plot = hv.DynamicMap(pn.bind(self._heatmap, self.param.grid_version))
        self.tap = hv.streams.Tap(source=plot, x=None, y=None)
        self.tap.add_subscriber(self._on_tap)
        return plot

    def _replot(self, *_: Any) -> None:
        self._drawn = self.cells()
        self.pane.object = self._new_plot()

    def cells(self) -> pd.DataFrame:
        """One row per cell: satellite, subsystem, state, and the state's colour code.

        With no fleet yet, one placeholder row of "no data" cells keeps the axes categorical.
        """
        grid = self.store.fleet_grid()
        if grid.empty:
            grid = frames.fleet_grid(self.store.stream_states(), [NO_FLEET])
        long = grid.reset_index().melt(
            id_vars="satellite_id", var_name="subsystem", value_name="state"
        )
        long["code"] = long["state"].map({s: i for i, s in enumerate(frames.STREAM_STATES)})
        return long

    def _heatmap(self, *_: Any) -> hv.HeatMap:
        cells = self._drawn
        satellites = self.store.satellites() or [NO_FLEET]
        height = max(150, 60 + 34 * len(satellites))
        heatmap = hv.HeatMap(
            cells, kdims=["subsystem", "satellite_id"], vdims=["code", "state"]
        ).opts(
            cmap=[frames.STATE_COLORS[s] for s in frames.STREAM_STATES],
            clim=(-0.5, len(frames.STREAM_STATES) - 0.5),
            colorbar=False,
            tools=["hover", "tap"],
            hover_tooltips=[
                ("satellite", "@satellite_id"),
                ("subsystem", "@subsystem"),
                ("state", "@state"),
            ],
            line_color="white",
            line_width=3,
            xaxis="top",
            invert_yaxis=True,
            toolbar=None,
            height=height,
            responsive=True,
            min_width=320,
            xlabel="",
            ylabel="",
            fontsize={"xticks": "11pt", "yticks": "11pt"},
        )
        subsystems = [s.value for s in SUBSYSTEMS]
        return heatmap.redim.values(subsystem=subsystems, satellite_id=satellites)

    def _on_tap(self, x: Any = None, y: Any = None) -> None:
        if x is not None and y is not None and y != NO_FLEET:
            self.store.select_stream(str(y), str(x))

    def legend_html(self) -> str:
        """Colour key of the states with how many streams are in each."""
        counts = frames.state_counts(self.store.stream_states())
        items = "".join(
            f"<span style='margin-right:14px'><span style='display:inline-block;width:12px;"
            f"height:12px;background:{frames.STATE_COLORS[s]};border-radius:2px'></span> "
            f"{s} <b>{counts[s]}</b></span>"
            for s in frames.STREAM_STATES
        )
        return f"<div style='font-size:13px'>{items}</div>"

    def __panel__(self) -> pn.viewable.Viewable:
        return _card(
            "Fleet",
            self.legend,
            self.pane,
            pn.pane.Markdown("*Click a cell to show its stream.*", margin=(0, 6)),
        )


# ====================================================================== anomaly timeline


def epoch_ms(values: pd.Series | pd.Index) -> np.ndarray:
    """UTC times as milliseconds since the epoch (what a Bokeh datetime axis plots); naive
    times are taken as UTC."""
    array = values.array if isinstance(values, pd.Series | pd.Index) else None
    if isinstance(array, pd.arrays.DatetimeArray):
        # Already times (the store's frames): their nanoseconds, without pd.to_datetime's
        # per-element look at the values (about 1 ms for 600 times).
        return array.as_unit("ns").asi8 / 1e6  # type: ignore[attr-defined]  # not in the stubs
    times = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    return times.asi8 / 1e6


def _figure(**params: Any) -> Any:
    from bokeh.plotting import figure

    return figure(sizing_mode="stretch_width", **params)


class AnomalyTimeline(StoreView):
    """Telemetry, anomaly score against threshold, the linear forecaster's statistic
    against its threshold, detected windows (the alarms), windows the workers flagged that
    the confirmation did not keep, events and labeled ranges of the chosen stream, on one
    linked time axis.

    The plots are Bokeh figures built once; a refresh replaces the data of their
    column sources and moves the shared time range (a few small model changes), instead
    of rebuilding plot objects (HoloViews re-ran its whole plotting pipeline per refresh,
    ~0.2 s of a core)."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        from bokeh.models import ColumnDataSource, HoverTool, Range1d, TapTool

        store = self.store
        self.satellite = pn.widgets.Select.from_param(
            store.param.satellite_id, label="Satellite", width=120
        )
        self.subsystem = pn.widgets.Select.from_param(
            store.param.subsystem, label="Subsystem", width=110
        )
        self.features = pn.widgets.MultiChoice.from_param(
            store.param.features, label="Telemetry features", width=260
        )
        self.window = pn.widgets.Select(
            label="Range",
            options=WINDOWS,
            value=store.window_s if store.window_s in WINDOWS.values() else 600,
            width=100,
        )
        self.live = pn.widgets.Toggle(
            label="Live", value=store.end is None, width=80, color="success", align="end"
        )
        self.window.link(store, value="window_s")
        self.live.param.watch(self._toggle_live, "value")

        self.sources = {
            "telemetry": ColumnDataSource({"xs": [], "ys": [], "label": [], "color": []}),
            "score": ColumnDataSource({"time": [], "value": []}),
            "threshold": ColumnDataSource({"time": [], "value": []}),
            "forecast": ColumnDataSource({"time": [], "value": []}),
            "forecast_threshold": ColumnDataSource({"time": [], "value": []}),
            "spans": ColumnDataSource(
                {
                    "start": [],
                    "end": [],
                    "kind": [],
                    "label": [],
                    "color": [],
                    "alpha": [],
                    "hatch": [],
                }
            ),
        }
        self.x_range = Range1d(start=0, end=1)
        self.telemetry_y = Range1d(start=0, end=1)
        self.score_y = Range1d(start=0, end=1)
        self.forecast_y = Range1d(start=0, end=1)
        tools = "xpan,xwheel_zoom,box_zoom,reset,save"
        common = {
            "x_axis_type": "datetime",
            "x_range": self.x_range,
            "height": 240,
            "min_width": 400,
            "tools": tools,
            "toolbar_location": "above",
            "x_axis_label": "time (UTC)",
        }
        self.telemetry_figure = _figure(title=self._title(), y_range=self.telemetry_y, **common)
        self.score_figure = _figure(
            title="Anomaly score vs threshold (click a point to inspect its window)",
            y_range=self.score_y,
            **common,
        )
        self.forecast_figure = _figure(
            title="Forecaster: smoothed error of the telemetry value vs its threshold",
            y_range=self.forecast_y,
            **{**common, "height": 160},
        )
        figures = (self.telemetry_figure, self.score_figure, self.forecast_figure)
        for fig in figures:
            fig.vstrip(
                x0="start",
                x1="end",
                source=self.sources["spans"],
                fill_color="color",
                fill_alpha="alpha",
                hatch_pattern="hatch",
                hatch_color="color",
                hatch_alpha=0.6,
                hatch_scale=8,
                line_width=0,
            )
        lines = self.telemetry_figure.multi_line(
            xs="xs",
            ys="ys",
            line_color="color",
            line_width=1.5,
            legend_field="label",
            source=self.sources["telemetry"],
        )
        self.telemetry_figure.yaxis.axis_label = "telemetry"
        score = self._against_threshold(
            self.score_figure, "score", "threshold", "#333333", "score", "anomaly score"
        )
        forecast = self._against_threshold(
            self.forecast_figure,
            "forecast",
            "forecast_threshold",
            "#1f77b4",
            "forecast error",
            "forecast error",
        )
        tooltips = [("time", "$x{%F %T}"), ("value", "$y{0.0000}")]
        self.telemetry_figure.add_tools(
            HoverTool(
                renderers=[lines],
                tooltips=[("feature", "@label"), *tooltips],
                formatters={"$x": "datetime"},
            )
        )
        self.score_figure.add_tools(
            HoverTool(renderers=[score], tooltips=tooltips, formatters={"$x": "datetime"}),
            TapTool(renderers=[score]),
        )
        self.forecast_figure.add_tools(
            HoverTool(renderers=[forecast], tooltips=tooltips, formatters={"$x": "datetime"})
        )
        for fig in figures:
            fig.add_layout(fig.legend[0], "right")
            fig.legend.click_policy = "hide"
        self.score_figure.on_event("tap", self._on_bokeh_tap)
        self._drawn: dict[str, tuple[Any, ...]] = {}
        self._redraw()
        store.param.watch(self._redraw, ["stream_version", "features"])
        self.facts = self._live_text(self.facts_text, ["stream_version"], margin=(0, 8))

    def _toggle_live(self, event: param.parameterized.Event) -> None:
        if event.new:
            self.store.end = None
        else:
            self.store.end = self.store.time_range()[1]

    def _on_bokeh_tap(self, event: Any) -> None:
        if event.x is not None:
            self._on_tap(x=pd.Timestamp(float(event.x), unit="ms"))

    def _on_tap(self, x: Any = None, y: Any = None) -> None:
        if x is not None:
            self.store.param.update(event_id=None, focus_time=pd.Timestamp(x).to_pydatetime())

    # -- what is drawn ------------------------------------------------------------------
    def span_data(self) -> pd.DataFrame:
        """Every span (labeled, detected, flagged but not confirmed, event) with its
        colour, as drawn (naive UTC)."""
        spans = self.store.spans()
        kinds = spans["kind"].astype(str)
        return pd.DataFrame(
            {
                "start": naive_utc(spans["start"]),
                "end": naive_utc(spans["end"]),
                "kind": kinds,
                "label": spans["label"].astype(str),
                "color": kinds.map(lambda k: SPAN_STYLE.get(k, {}).get("color", "#999999")),
                "alpha": kinds.map(lambda k: SPAN_STYLE.get(k, {}).get("alpha", 0.2)),
                "hatch": kinds.map(lambda k: SPAN_STYLE.get(k, {}).get("hatch", " ")),
            }
        )

    def line_data(self) -> dict[str, Any]:
        """The telemetry lines' source data: one line per chosen feature, its times (ms
        since the epoch), values, label and colour."""
        data = self.store.telemetry
        chosen = sorted(self.store.features) or [0]
        features = data["feature"].to_numpy()
        times = epoch_ms(data["time"])
        values = data["value"].to_numpy(dtype="float64")
        xs, ys = [], []
        for feature in chosen:
            mine = features == feature
            xs.append(times[mine])
            ys.append(values[mine])
        return {
            "xs": xs,
            "ys": ys,
            "label": [f"feature {f}" for f in chosen],
            "color": [LINE_COLORS[i % len(LINE_COLORS)] for i in range(len(chosen))],
        }

    def _range(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        start, end = self.store.time_range()
        return (
            frames.to_utc(start).tz_localize(None),
            frames.to_utc(end).tz_localize(None),
        )

    def _changed(self, name: str, *objects: Any) -> bool:
        """Whether ``name`` was last drawn from other objects than ``objects`` (the very
        frames: a refresh keeps the ones that did not change, see the store), noting them."""
        held = self._drawn.get(name)
        if held is not None and all(a is b for a, b in zip(held, objects, strict=True)):
            return False
        self._drawn[name] = objects
        return True

    def _redraw(self, *_: Any) -> None:
        """The figures follow the store: new data for the sources whose frames changed,
        ranges and title, sent at once."""
        store = self.store
        chosen = tuple(sorted(store.features) or [0])
        scores, thresholds, spans = store.scores, store.thresholds, store.spans()
        start, end = self._range()
        with pn.io.hold():
            if self._changed("telemetry", store.telemetry, chosen):
                lines = self.line_data()
                self.sources["telemetry"].data = lines
                shown = np.concatenate(lines["ys"]) if lines["ys"] else np.empty(0)
                low, high = padded_range(shown)
                self.telemetry_y.update(start=low, end=high)
            self._redraw_against_threshold("score", "threshold", scores, thresholds, self.score_y)
            # the forecaster's (empty when it is not served)
            self._redraw_against_threshold(
                "forecast",
                "forecast_threshold",
                store.forecasts,
                store.forecast_thresholds,
                self.forecast_y,
            )
            if self._changed("spans", spans):
                kinds = [str(k) for k in spans["kind"]]
                styles = [SPAN_STYLE.get(k, {}) for k in kinds]
                self.sources["spans"].data = {
                    "start": epoch_ms(spans["start"]),
                    "end": epoch_ms(spans["end"]),
                    "kind": kinds,
                    "label": spans["label"].astype(str).tolist(),
                    "color": [style.get("color", "#999999") for style in styles],
                    "alpha": np.array([style.get("alpha", 0.2) for style in styles], dtype=float),
                    "hatch": [style.get("hatch", " ") for style in styles],
                }
            self.x_range.update(start=start.value / 1e6, end=end.value / 1e6)
            title = self._title()
            if self.telemetry_figure.title.text != title:
                self.telemetry_figure.title.text = title

    def _against_threshold(
        self, fig: Any, value: str, threshold: str, color: str, label: str, axis: str
    ) -> Any:
        """A value's line and its threshold's dashed step in ``fig`` (from the sources
        named ``value`` and ``threshold``); returns the line's renderer."""
        line = fig.line(
            "time",
            "value",
            source=self.sources[value],
            color=color,
            line_width=1.5,
            legend_label=label,
        )
        fig.step(
            "time",
            "value",
            source=self.sources[threshold],
            mode="after",
            color="#d62728",
            line_dash="dashed",
            line_width=2,
            legend_label="threshold",
        )
        fig.yaxis.axis_label = axis
        return line

    def _redraw_against_threshold(
        self,
        value: str,
        threshold: str,
        values: pd.DataFrame,
        thresholds: pd.DataFrame,
        y_range: Any,
    ) -> None:
        """New data for the ``value`` and ``threshold`` sources whose frames changed, and
        a y range showing both (from 0)."""
        changed = False
        for name, frame in ((value, values), (threshold, thresholds)):
            if self._changed(name, frame):
                changed = True
                self.sources[name].data = {
                    "time": epoch_ms(frame["time"]),
                    "value": frame["value"].to_numpy(dtype="float64"),
                }
        if changed:
            both = np.concatenate(
                [
                    values["value"].to_numpy(dtype="float64"),
                    thresholds["value"].to_numpy(dtype="float64"),
                ]
            )
            low, high = padded_range(both, floor=0.0)
            y_range.update(start=low, end=high)

    def _title(self) -> str:
        store = self.store
        channel = store.channel()
        where = f"{store.satellite_id} / {store.subsystem}" if store.satellite_id else "no stream"
        return f"Telemetry of {where}" + (f" (channel {channel})" if channel else "")

    def facts_text(self) -> str:
        """One line about the shown data: newest record, threshold, windows and events."""
        store = self.store
        if store.scores.empty and store.telemetry.empty:
            return "**No data** for this stream in the shown range (is a replay running?)."
        newest = frames.latest_time(store.scores, store.telemetry)
        threshold = store.threshold()
        alarms = int((store.detections["value"] > 0.5).sum())
        unconfirmed = len(store.unconfirmed())
        parts = [
            f"newest record **{newest:%H:%M:%S}** UTC" if newest is not None else "",
            f"{len(store.scores)} scores",
            f"threshold **{threshold:.4g}**" if threshold is not None else "no threshold yet",
            f"**{alarms}** alarm window(s), **{unconfirmed}** flagged but not confirmed,"
            f" of {len(store.detections)} decided",
            f"**{len(store.stream_events)}** event(s)",
        ]
        labeled = int((store.spans()["kind"] == "labeled").sum())
        if labeled:
            parts.append(f"**{labeled}** labeled range(s) of channel {store.channel()}")
        return " · ".join(p for p in parts if p)

    def legend_html(self) -> str:
        """The spans' legend: a swatch and the words of each kind of span."""
        legend = " ".join(
            f"<span style='display:inline-block;width:12px;height:12px;{_swatch(s)}'></span> "
            f"{s['legend']}&nbsp;&nbsp;"
            for s in SPAN_STYLE.values()
        )
        return f"<div style='font-size:12px'>spans: {legend}</div>"

    def __panel__(self) -> pn.viewable.Viewable:
        return _card(
            "Anomaly timeline",
            pn.Row(self.satellite, self.subsystem, self.features, self.window, self.live),
            self.facts,
            pn.pane.HTML(self.legend_html(), margin=(0, 8)),
            pn.pane.Bokeh(self.telemetry_figure, sizing_mode="stretch_width"),
            pn.pane.Bokeh(self.score_figure, sizing_mode="stretch_width"),
            pn.pane.Bokeh(self.forecast_figure, sizing_mode="stretch_width"),
        )


def _swatch(style: dict[str, Any]) -> str:
    """CSS of a span's legend swatch: its colour, stronger than drawn; hatched spans
    striped."""
    colour, opacity = style["color"], min(1.0, style["alpha"] * 3)
    if style.get("hatch", " ").strip():
        stripes = f"repeating-linear-gradient(45deg,{colour} 0 2px,transparent 2px 5px)"
        return f"background:{stripes};border:1px solid {colour};opacity:{opacity + 0.4:.2f}"
    return f"background:{colour};opacity:{opacity:.2f}"


# ====================================================================== heatmap

#: The heatmap's three images: colour palette of each.
HEATMAP_IMAGES: dict[str, str] = {
    "input": "Viridis256",
    "reconstruction": "Viridis256",
    "squared error": "Inferno256",
}


class ReconstructionHeatmap(StoreView):
    """Per-record x per-feature input, reconstruction and squared error of a window or
    event, and the features that contribute most.

    Three Bokeh images built once; a refresh replaces their arrays and colour ranges (see
    :class:`AnomalyTimeline`)."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        from bokeh.models import ColumnDataSource, HoverTool, LinearColorMapper, Range1d
        from bokeh.models.annotations import ColorBar

        self._following = False
        self.choice = pn.widgets.Select(label="Show", options=self.choices(), value=0, width=340)
        self.choice.param.watch(self._choose, "value")
        self.store.param.watch(self._update_choices, ["stream_events", "event_id"])
        self.sources: dict[str, Any] = {}
        self.mappers: dict[str, Any] = {}
        self.figures: dict[str, Any] = {}
        self.x_ranges: dict[str, Any] = {}
        for name, palette in HEATMAP_IMAGES.items():
            source = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
            mapper = LinearColorMapper(palette=palette, low=0, high=1, nan_color="#eeeeee")
            x_range = Range1d(start=0, end=1)
            fig = _figure(
                title=name,
                x_range=x_range,
                y_range=Range1d(start=-0.5, end=NUM_FEATURES - 0.5),
                height=280,
                min_width=220,
                tools="",
                toolbar_location=None,
                x_axis_label="record in window",
                y_axis_label="feature",
            )
            image = fig.image(
                image="image", x="x", y="y", dw="dw", dh="dh", source=source, color_mapper=mapper
            )
            fig.add_tools(
                HoverTool(
                    renderers=[image],
                    tooltips=[("record", "$x{0}"), ("feature", "$y{0}"), (name, "@image")],
                )
            )
            fig.add_layout(ColorBar(color_mapper=mapper, width=10), "right")
            self.sources[name], self.mappers[name] = source, mapper
            self.figures[name], self.x_ranges[name] = fig, x_range
        self._drawn: tuple[pd.DataFrame, pd.DataFrame] | None = None
        self._redraw()
        self.store.param.watch(self._redraw, ["stream_version"])
        self.caption = self._live_text(
            self.caption_text, ["stream_version", "event_id"], margin=(0, 8)
        )
        self.top = self._live_text(self.top_html, ["stream_version"], html=True, margin=(0, 8))

    def choices(self) -> dict[str, int]:
        """Options of the selector: the latest (flagged) window (0), then the stream's events."""
        options: dict[str, int] = {LATEST_WINDOW: 0}
        events = self.store.stream_events
        for event_id, start, state in zip(
            events["event_id"], events["start_time"], events["state"], strict=True
        ):
            options[f"event {event_id}: {start:%H:%M:%S} ({state})"] = int(event_id)
        return options

    def _update_choices(self, *_: Any) -> None:
        options = self.choices()
        chosen = self.store.event_id if self.store.event_id in options.values() else 0
        changes: dict[str, Any] = {}
        if options != self.choice.options:  # unchanged options are not re-sent (no re-render)
            changes["options"] = options
        if chosen != self.choice.value:
            changes["value"] = chosen
        if not changes:
            return
        # Following the store is not an operator's choice: an event chosen elsewhere (the
        # alarm list) that this stream's options do not hold yet must stay chosen.
        self._following = True
        try:
            self.choice.param.update(**changes)
        finally:
            self._following = False

    def _choose(self, event: param.parameterized.Event) -> None:
        if self._following:
            return
        if (event.new or None) != self.store.event_id:
            self.store.param.update(event_id=event.new or None, focus_time=None)

    def matrices(self) -> dict[str, pd.DataFrame]:
        """Input, reconstruction and squared error, each records (rows) x features."""
        inputs, outputs, errors = self.store.heat_matrices()
        times = errors.index
        return {
            "input": inputs.reindex(index=times, columns=errors.columns),
            "reconstruction": outputs.reindex(index=times, columns=errors.columns),
            "squared error": errors,
        }

    @staticmethod
    def _colour_range(*values: np.ndarray) -> tuple[float, float]:
        finite = [v[np.isfinite(v)] for v in values]
        finite = [v for v in finite if v.size]
        if not finite:
            return 0.0, 1.0
        lo = float(min(v.min() for v in finite))
        hi = float(max(v.max() for v in finite))
        return lo, hi if hi > lo else lo + 1e-9

    def images(self) -> dict[str, np.ndarray]:
        """Each image as features (rows, feature 0 at the bottom) x records (columns)."""
        inputs, outputs, errors = self.store.heat_matrices()
        times, columns = errors.index, list(errors.columns)
        at = {int(c): i for i, c in enumerate(columns) if 0 <= int(c) < NUM_FEATURES}
        rows, picked = list(at), np.array(list(at.values()), dtype=int)
        images = {}
        for name, matrix in (
            ("input", inputs),
            ("reconstruction", outputs),
            ("squared error", errors),
        ):
            if not (matrix.index.equals(times) and list(matrix.columns) == columns):
                matrix = matrix.reindex(index=times, columns=columns)  # the error's cells
            # Every feature has a row, also the ones the window lacks (drawn blank).
            image = np.full((NUM_FEATURES, len(times)), np.nan)
            values = matrix.to_numpy(dtype="float64")
            image[rows] = values[:, picked].T
            images[name] = image
        return images

    def _redraw(self, *_: Any) -> None:
        # Most refreshes bring the same window (it moves once a stride of records) and the
        # store keeps unchanged frames: then there is nothing to redraw.
        drawn = (self.store.heat_input, self.store.heat_output)
        if self._drawn is not None and all(a is b for a, b in zip(self._drawn, drawn, strict=True)):
            return
        self._drawn = drawn
        images = self.images()
        shared = self._colour_range(images["input"], images["reconstruction"])
        ranges = {
            "input": shared,
            "reconstruction": shared,
            "squared error": self._colour_range(images["squared error"]),
        }
        with pn.io.hold():
            for name, image in images.items():
                width = max(image.shape[1], 1)
                if image.shape[1] == 0:
                    image = np.full((NUM_FEATURES, 1), np.nan)
                self.sources[name].data = {
                    "image": [image],
                    "x": [0],
                    "y": [-0.5],
                    "dw": [width],
                    "dh": [NUM_FEATURES],
                }
                self.mappers[name].update(low=ranges[name][0], high=ranges[name][1])
                if self.x_ranges[name].end != width:
                    self.x_ranges[name].update(start=0, end=width)

    def top_html(self) -> str:
        """The top contributing features as a small bar table."""
        top = self.store.top_features()
        if top.empty:
            return ""
        rows = "".join(
            f"<tr><td style='padding-right:8px'><b>feature {f}</b></td>"
            f"<td style='width:160px'><div style='background:#d62728;height:12px;"
            f"width:{max(share, 0.01) * 100:.0f}%'></div></td>"
            f"<td style='padding-left:8px'>{share:.0%}</td>"
            f"<td style='padding-left:8px;color:#666'>mean sq. error {err:.3g}</td></tr>"
            for f, share, err in zip(top["feature"], top["share"], top["mean_error"], strict=True)
        )
        return (
            f"<div style='font-size:13px'><b>Top contributing features</b>"
            f"<table>{rows}</table></div>"
        )

    def caption_text(self) -> str:
        """What the heatmap shows, in a sentence."""
        store = self.store
        window = store.heatmap_range()
        if store.errors().empty or window is None:
            return "**No reconstruction** for this stream in the shown range yet."
        start, end = window
        what = f"event {store.event_id}" if store.event_id is not None else "window"
        top = store.top_features(3)
        names = ", ".join(
            f"f{f} ({s:.0%})" for f, s in zip(top["feature"], top["share"], strict=True)
        )
        return (
            f"{what} {start:%H:%M:%S}–{end:%H:%M:%S} UTC, {len(store.errors())} records; "
            f"most error in {names}"
        )

    def __panel__(self) -> pn.viewable.Viewable:
        return _card(
            "Reconstruction",
            pn.Row(self.choice),
            self.caption,
            pn.Row(
                *(pn.pane.Bokeh(f, sizing_mode="stretch_width") for f in self.figures.values()),
                sizing_mode="stretch_width",
            ),
            self.top,
        )


# ====================================================================== alarms


class AlarmList(StoreView):
    """The alarms, urgent first, with acknowledge / shelve / clear and comments."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._replacing = False
        self.table = pn.widgets.Tabulator(
            self._keyed(self.store.alarm_table()),
            selectable=1,
            disabled=True,
            show_index=False,
            height=260,
            sizing_mode="stretch_width",
            layout="fit_data_stretch",
            formatters={
                "duration_s": {"type": "money", "precision": 0, "symbol": ""},
                # TranAD's ratio, empty for events it did not raise (frames.alarm_table)
                "peak/threshold": NumberFormatter(format="0.00", nan_format="", text_align="right"),
            },
            # Urgent first, newest first; the rows underneath stay in id order.
            sorters=[{"field": "rank", "dir": "asc"}, {"field": "event_id", "dir": "desc"}],
            hidden_columns=["rank"],
        )
        self.table.style.apply(self._colour_state, subset=["state"])  # type: ignore[union-attr]
        self.comment = pn.widgets.TextInput(
            label="Comment", placeholder="what you saw / did", sizing_mode="stretch_width"
        )
        self.shelf = pn.widgets.Select(
            label="Shelve for", options=SHELF_HOURS, value=4.0, width=110
        )
        self.buttons = {
            "acknowledge": pn.widgets.Button(label="Acknowledge", color="primary"),
            "shelve": pn.widgets.Button(label="Shelve", color="warning"),
            "unshelve": pn.widgets.Button(label="Unshelve", color="light"),
            "clear": pn.widgets.Button(label="Clear", color="success"),
            "reopen": pn.widgets.Button(label="Reopen", color="light"),
            "comment": pn.widgets.Button(label="Comment", color="default"),
        }
        for button in self.buttons.values():
            button.on_click(self._clicked)
        self.table.param.watch(self._on_select, "selection")
        self.store.param.watch(self._refresh_table, ["alarms", "event_id"])
        self.store.param.watch(self._sync_buttons, ["alarms", "event_id"])
        self._sync_buttons()
        self.history = self._text_pane(self.history_text, ["event_detail"], margin=(0, 8))
        self.notice = self._text_pane(self.notice_text, ["notice"], margin=(0, 8))
        self.empty = self._text_pane(self.empty_text, ["alarms"], margin=(0, 8))

    @staticmethod
    def _colour_state(column: pd.Series) -> list[str]:
        return [f"color: {ALARM_COLORS.get(v, 'black')}; font-weight: bold" for v in column]

    def _keyed(self, table: pd.DataFrame) -> pd.DataFrame:
        """The table indexed by event id, so that Tabulator carries a selection over to a
        new value by event (its index), not by position: when an old alarm leaves the
        list, the rows after it move up, and a position would then name another alarm.

        The chosen alarm sorts first (rank -1) whatever its state: acting on it must not
        send it out of sight below the urgent ones (the list shows about eight rows).
        """
        keyed = table.copy()
        keyed.index = pd.Index(table["event_id"].to_numpy(), name=None)
        if self.store.event_id is not None and len(keyed):
            keyed.loc[keyed["event_id"] == self.store.event_id, "rank"] = -1
        return keyed

    def _refresh_table(self, *_: Any) -> None:
        table = self._keyed(self.store.alarm_table())
        current = self.table.value
        # Rewriting an unchanged table would re-render it in the browser on every refresh,
        # and a click landing during the re-render selects nothing (or another row).
        if current is None or not table.equals(current) or not table.index.equals(current.index):
            self._replacing = True
            try:
                self.table.value = table
            finally:
                self._replacing = False
        self._select_chosen()

    def _select_chosen(self) -> None:
        """Show the store's chosen event as the table's selection (positions)."""
        table = self.table.value
        wanted = (
            np.flatnonzero(table["event_id"].to_numpy() == self.store.event_id).tolist()[:1]
            if self.store.event_id is not None and len(table)
            else []
        )
        if wanted and self.table.selection != wanted:
            self._replacing = True
            try:
                self.table.selection = wanted
            finally:
                self._replacing = False

    def _on_select(self, event: param.parameterized.Event) -> None:
        if self._replacing or not event.new:
            return  # the table following the store, or a row deselected: nothing chosen
        table = self.table.value
        row = event.new[0]
        if 0 <= row < len(table):
            self.store.select_event(int(table["event_id"].iloc[row]))
            self.store.refresh_event_detail()

    def _clicked(self, event: param.parameterized.Event) -> None:
        for action, button in self.buttons.items():
            if button is event.obj:
                self.act(action)

    def allowed(self) -> set[str]:
        """Actions the chosen alarm allows (comment always, once one is chosen)."""
        event = self.store.selected_event()
        if event is None:
            return set()
        actions = event.get("allowed_actions")
        return {*(actions if isinstance(actions, list) else []), "comment"}

    def _sync_buttons(self, *_: Any) -> None:
        allowed = self.allowed()
        for action, button in self.buttons.items():
            button.disabled = action not in allowed

    def act(self, action: str) -> bool:
        """Apply ``action`` to the chosen alarm with the typed comment."""
        event_id = self.store.event_id
        if event_id is None:
            self.store.notice = "choose an alarm in the list first"
            return False
        comment = self.comment.value or None
        if action == "comment":
            done = self.store.add_comment(event_id, self.comment.value or "")
        elif action == "shelve":
            done = self.store.alarm_action(
                event_id, "shelve", comment, timedelta(hours=float(self.shelf.value))
            )
        else:
            done = self.store.alarm_action(event_id, action, comment)
        if done:
            self.comment.value = ""
        return done

    def history_text(self) -> str:
        """The chosen alarm's last transitions and comments."""
        history = self.store.event_detail.get("history") or []
        if not history:
            return ""
        lines = [
            f"- {pd.Timestamp(h['at']):%m-%d %H:%M:%S} **{h['actor']}**: "
            f"{h.get('from_state') or '·'} → {h['to_state']}"
            + (f" — “{h['comment']}”" if h.get("comment") else "")
            for h in history[-6:]
        ]
        event_id = self.store.event_detail.get("event_id")
        return f"History of event {event_id}:\n" + "\n".join(lines)

    def notice_text(self) -> str:
        return f"*{self.store.notice}*" if self.store.notice else ""

    def empty_text(self) -> str:
        return "*No alarms in the chosen states.*" if self.store.alarms.empty else ""

    def __panel__(self) -> pn.viewable.Viewable:
        return _card(
            "Alarms",
            self.empty,
            self.table,
            pn.Row(self.comment, self.shelf),
            pn.Row(*self.buttons.values()),
            self.notice,
            self.history,
        )


# ====================================================================== health


class PipelineHealth(StoreView):
    """Services up or down, throughput, stage latencies, consumer lag and queue depth."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        number = {"font_size": "22pt", "title_size": "10pt", "margin": (0, 14)}
        self.indicators = {
            "services": pn.indicators.String(label="services up", value="–", **number),
            "rate": pn.indicators.String(label="records/s in", value="–", **number),
            "lag": pn.indicators.String(label="Kafka lag", value="–", **number),
            "queued": pn.indicators.String(label="queued tasks", value="–", **number),
            "models": pn.indicators.String(label="models ready", value="–", **number),
        }
        table = {
            "show_index": False,
            "disabled": True,
            "sizing_mode": "stretch_width",
            "layout": "fit_data_stretch",
        }
        tables = self.tables()
        self.services_table = pn.widgets.Tabulator(tables["services"], height=220, **table)
        self.stages_table = pn.widgets.Tabulator(tables["stages"], height=220, **table)
        self.lag_table = pn.widgets.Tabulator(tables["lag"], height=160, **table)
        self.queues_table = pn.widgets.Tabulator(tables["queues"], height=160, **table)
        self.problems = pn.pane.Markdown("", margin=(0, 8))
        self.store.param.watch(self._update, "health")
        self._update()

    def tables(self) -> dict[str, pd.DataFrame]:
        """The health payload as small tables (empty when the API has not answered)."""
        health = self.store.health
        services = pd.DataFrame(health.get("services") or [], columns=["name", "healthy", "detail"])
        services["healthy"] = np.where(services["healthy"].fillna(False).astype(bool), "up", "DOWN")
        stages = pd.DataFrame(
            health.get("stages") or [],
            columns=[
                "stage",
                "received_per_s",
                "produced_per_s",
                "rejected_per_s",
                "lost_per_s",
                "latency_p50_s",
                "latency_p99_s",
            ],
        )
        for column in ("latency_p50_s", "latency_p99_s"):
            stages[column.replace("_s", "_ms")] = stages.pop(column).astype(float) * 1000
        lag = pd.DataFrame(
            health.get("kafka_lag") or [], columns=["group", "lag", "partitions", "detail"]
        )
        queues = pd.DataFrame(
            health.get("queues") or [], columns=["queue", "messages", "consumers", "detail"]
        )
        return {"services": services, "stages": stages.round(2), "lag": lag, "queues": queues}

    def summary(self) -> dict[str, Any]:
        """Headline numbers: services up of all, ingestion rate, total lag and queue depth
        (None where the report does not say)."""
        health = self.store.health
        tables = self.tables()
        services = tables["services"]
        lag = pd.to_numeric(tables["lag"]["lag"], errors="coerce").dropna()
        queued = pd.to_numeric(tables["queues"]["messages"], errors="coerce").dropna()
        models = (health.get("triton") or {}).get("models") or []
        return {
            "services_up": int((services["healthy"] == "up").sum()),
            "services": len(services),
            "ingestion_rate": health.get("ingestion_rate"),
            "lag": int(lag.sum()) if len(lag) else None,
            "queued": int(queued.sum()) if len(queued) else None,
            "models_ready": sum(1 for m in models if (m.get("state") or "").upper() == "READY"),
            "models": len(models),
        }

    def _update(self, *_: Any) -> None:
        if not self.store.health:
            return
        info, tables = self.summary(), self.tables()
        rate = info["ingestion_rate"]
        values = {
            "services": f"{info['services_up']}/{info['services']}",
            "rate": f"{rate:,.1f}" if rate is not None else "–",
            "lag": f"{info['lag']:,}" if info["lag"] is not None else "–",
            "queued": f"{info['queued']:,}" if info["queued"] is not None else "–",
            "models": f"{info['models_ready']}/{info['models']}" if info["models"] else "–",
        }
        down = info["services_up"] < info["services"]
        for key, indicator in self.indicators.items():
            indicator.value = values[key]
        self.indicators["services"].default_color = "#d62728" if down else "#2ca02c"
        self.services_table.value = tables["services"]
        self.stages_table.value = tables["stages"]
        self.lag_table.value = tables["lag"]
        self.queues_table.value = tables["queues"]
        problems = self.store.health.get("detail") or []
        self.problems.object = "\n".join(f"- {p}" for p in problems)

    def __panel__(self) -> pn.viewable.Viewable:
        return _card(
            "Pipeline health",
            pn.Row(*self.indicators.values()),
            pn.Row(self.services_table, self.stages_table),
            pn.Row(self.lag_table, self.queues_table),
            self.problems,
        )


# ====================================================================== status


class StatusLine(StoreView):
    """Whether the API answers, when data last came, and the last problem."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.alert = pn.pane.Alert("", margin=(4, 6), sizing_mode="stretch_width")
        self.store.param.watch(
            self._update, ["api_ok", "message", "refreshed_at", "stream_refresh_ms"]
        )
        self._update()

    def kind(self) -> str:
        """The alert colour: success (data flowing), danger (a problem), secondary (waiting)."""
        if self.store.refreshed_at is None and not self.store.message:
            return "secondary"
        return "success" if self.store.api_ok and not self.store.message else "danger"

    def _update(self, *_: Any) -> None:
        self.alert.param.update(object=self.store.status_text(), alert_type=self.kind())

    def __panel__(self) -> pn.viewable.Viewable:
        return self.alert
