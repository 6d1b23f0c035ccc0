"""Views are checked through what they derive from the store (enabled buttons, cells,
captions, matrices), never by unpacking a layout by position."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from smap_bench.dashboard import frames
from smap_bench.dashboard.views import (
    NO_FLEET,
    AlarmList,
    AnomalyTimeline,
    FleetOverview,
    PipelineHealth,
    ReconstructionHeatmap,
    ReplayControl,
    StatusLine,
    inline_html,
    padded_range,
)
from smap_bench.schema import NUM_FEATURES
from tests.unit.dashboard.fakes import T0, event_payload
from tests.unit.dashboard.test_store import at, feed


def test_a_view_needs_a_store() -> None:
    with pytest.raises(ValueError, match="needs a store"):
        ReplayControl()


@pytest.mark.parametrize(
    ("state", "enabled"),
    [
        (None, {"start"}),
        ("running", {"pause", "stop", "seek", "speed"}),
        ("paused", {"resume", "stop", "seek", "speed"}),
        ("stopped", {"start"}),
    ],
)
def test_replay_buttons_follow_the_replay_state(store, state, enabled) -> None:
    view = ReplayControl(store=store)
    store.replay_state = {"state": state} if state else {}
    assert {name for name, ok in view.enabled().items() if ok} == enabled
    assert view.pause_button.disabled == ("pause" not in enabled)
    assert view.resume_button.disabled == ("resume" not in enabled)
    assert view.start_button.disabled == ("start" not in enabled)


def test_replay_start_sends_the_chosen_split_fleet_and_speed(store, api) -> None:
    view = ReplayControl(store=store)
    view.split.value, view.satellites.value, view.speed.value = "train", 3, "max"
    assert view.start()
    assert api.called("replay")[-1] == (
        ("start",),
        {"split": "train", "satellites": 3, "speed": "max"},
    )


def test_pause_button_pauses(store, api) -> None:
    api.replay_payload = {"state": {"state": "running"}}
    store.refresh_replay()
    view = ReplayControl(store=store)
    view.pause_button.clicks += 1
    assert api.called("replay")[-1][0] == ("pause",)
    assert store.replay_state["state"] == "paused"
    assert not view.resume_button.disabled and view.pause_button.disabled


def test_fleet_cells_carry_state_codes_and_a_click_selects_the_stream(store, api) -> None:
    view = FleetOverview(store=store)
    assert view.cells()["satellite_id"].unique().tolist() == [NO_FLEET]
    api.event_items = [event_payload(1, "sat2", "EPS")]
    store.refresh_fleet()
    cells = view.cells().set_index(["satellite_id", "subsystem"])
    assert len(cells) == 2 * 7
    assert cells.loc[("sat2", "EPS"), "state"] == frames.OPEN_ALARM
    assert cells.loc[("sat2", "EPS"), "code"] == frames.STREAM_STATES.index(frames.OPEN_ALARM)
    view._on_tap(x="EPS", y="sat2")
    assert (store.satellite_id, store.subsystem) == ("sat2", "EPS")
    view._on_tap(x="ACS", y=NO_FLEET)  # the placeholder row selects nothing
    assert store.satellite_id == "sat2"


def test_fleet_grid_redraws_only_when_a_cell_changes(store, api) -> None:
    feed(api)
    store.refresh_fleet()
    view = FleetOverview(store=store)
    drawn = view.grid_version
    store.fleet_version += 1  # a refresh that changed no state
    assert view.grid_version == drawn
    api.event_items = [event_payload(1, "sat1", "ACS")]
    store.refresh_fleet()
    assert view.grid_version == drawn + 1
    assert view._drawn.set_index(["satellite_id", "subsystem"]).loc[("sat1", "ACS"), "state"] == (
        frames.OPEN_ALARM
    )


def test_timeline_facts_and_spans(store, api) -> None:
    view = AnomalyTimeline(store=store)
    assert view.facts_text().startswith("**No data**")
    feed(api)
    api.event_items = [event_payload(2, start=at(100).to_pydatetime())]
    store.refresh_fleet()
    store.refresh_stream()
    text = view.facts_text()
    assert "**2** alarm window(s), **1** flagged but not confirmed, of 12 decided" in text
    assert "**1** event(s)" in text
    spans = view.span_data()
    assert sorted(spans["kind"]) == ["detected", "event", "unconfirmed"]
    # the windows flagged but not confirmed are drawn apart from the alarms: hatched grey
    hatch = spans.set_index("kind")["hatch"]
    assert hatch["unconfirmed"].strip() and not hatch["detected"].strip()
    assert "flagged, not confirmed" in view.legend_html()
    assert "repeating-linear-gradient" in view.legend_html()  # its swatch hatched too
    assert spans["start"].dt.tz is None  # Bokeh gets naive UTC


def test_timeline_figures_follow_each_refresh_in_place(store, api) -> None:
    view = AnomalyTimeline(store=store)
    figure, sources = view.score_figure, view.sources
    assert len(sources["score"].data["time"]) == 0  # no data yet: empty, still drawn
    feed(api)
    store.refresh_fleet()
    store.features = [0, 1]
    store.refresh_stream()
    assert view.score_figure is figure and view.sources["score"] is sources["score"]
    assert sources["telemetry"].data["label"] == ["feature 0", "feature 1"]
    assert [len(x) for x in sources["telemetry"].data["xs"]] == [120, 120]
    assert sources["telemetry"].data["ys"][1][-1] == 119.0
    assert sources["score"].data["time"][0] == at(0).value / 1e6  # ms since the epoch
    assert len(sources["threshold"].data["value"]) == 12
    # windows 59, 69 (merged), and 89, flagged by the workers but not confirmed
    assert list(sources["spans"].data["kind"]) == ["detected", "unconfirmed"]
    assert list(sources["spans"].data["hatch"]) == [" ", "/"]
    start, end = store.time_range()
    assert view.x_range.start == pd.Timestamp(start).value / 1e6
    assert view.x_range.end == pd.Timestamp(end).value / 1e6
    assert view.score_y.start == 0.0 and view.score_y.end > 0.1
    assert "sat1 / ACS" in view.telemetry_figure.title.text
    store.features = [1]
    assert sources["telemetry"].data["label"] == ["feature 1"]


def test_the_forecasters_statistic_and_threshold_have_a_figure_of_their_own(store, api) -> None:
    view = AnomalyTimeline(store=store)
    feed(api)
    ends = [at(i) for i in range(9, 120, 10)]
    statistic = [0.05 * (k % 4) for k in range(len(ends))]
    api.series_frames |= {
        "forecasts": pd.DataFrame({"time": ends, "feature": 0, "value": statistic}),
        "forecast_thresholds": pd.DataFrame(
            {"time": ends, "feature": 0, "value": [0.12] * len(ends)}
        ),
    }
    store.refresh_fleet()
    store.refresh_stream()
    sources = view.sources
    assert sources["forecast"].data["value"].tolist() == statistic
    assert sources["forecast"].data["time"][0] == at(9).value / 1e6
    assert set(sources["forecast_threshold"].data["value"].tolist()) == {0.12}
    assert view.forecast_y.start == 0.0 and view.forecast_y.end > 0.15
    assert view.forecast_figure.x_range is view.x_range  # one time axis with the others
    # a stream without forecasts (the forecaster not served): an empty figure, still drawn
    api.series_frames.pop("forecasts")
    api.series_frames.pop("forecast_thresholds")
    store.refresh_stream()
    assert len(sources["forecast"].data["time"]) == 0


def test_a_click_on_the_score_figure_chooses_the_window(store) -> None:
    from bokeh.events import Tap

    view = AnomalyTimeline(store=store)
    view._on_bokeh_tap(Tap(view.score_figure, x=at(30).value / 1e6, y=0.0))
    assert pd.Timestamp(store.focus_time).tz_localize("UTC") == at(30)


def test_timeline_live_toggle_freezes_and_follows(store, api) -> None:
    feed(api)
    store.refresh_fleet()
    view = AnomalyTimeline(store=store)
    view.live.value = False
    assert pd.Timestamp(store.end) == at(120)
    view.live.value = True
    assert store.end is None


def test_clicking_the_score_plot_chooses_the_heatmap_window(store) -> None:
    view = AnomalyTimeline(store=store)
    store.event_id = 3
    view._on_tap(x=at(30).tz_localize(None))
    assert store.event_id is None
    assert pd.Timestamp(store.focus_time).tz_localize("UTC") == at(30)


def test_heatmap_matrices_and_caption(store, api) -> None:
    view = ReconstructionHeatmap(store=store)
    assert view.caption_text().startswith("**No reconstruction**")
    feed(api)
    store.refresh_fleet()
    store.refresh_stream()
    mats = view.matrices()
    assert mats["input"].shape == mats["reconstruction"].shape == (30, 2)
    assert (mats["input"] - mats["reconstruction"]).iloc[0].tolist() == [1.0, 2.0]
    assert "most error in f1 (80%), f0 (20%)" in view.caption_text()


def test_heatmap_images_hold_every_feature_and_share_the_input_colours(store, api) -> None:
    view = ReconstructionHeatmap(store=store)
    assert view.sources["input"].data["image"][0].shape == (NUM_FEATURES, 1)  # blank
    feed(api)
    store.refresh_fleet()
    store.refresh_stream()
    image = view.sources["input"].data["image"][0]
    assert image.shape == (NUM_FEATURES, 30)  # features (rows) x records of the window
    assert np.isnan(image[2:]).all() and not np.isnan(image[:2]).any()
    assert view.sources["input"].data["dw"] == [30]
    assert view.x_ranges["squared error"].end == 30
    low, high = view.mappers["input"].low, view.mappers["input"].high
    assert (low, high) == (view.mappers["reconstruction"].low, view.mappers["reconstruction"].high)
    assert low == float(np.nanmin(view.sources["reconstruction"].data["image"][0]))
    errors = view.sources["squared error"].data["image"][0]
    assert errors[0, 0] == 1.0 and errors[1, 0] == 4.0


def test_heatmap_selector_lists_events_and_chooses_one(store, api) -> None:
    feed(api)
    api.event_items = [event_payload(9, start=at(90).to_pydatetime())]
    store.refresh_fleet()
    view = ReconstructionHeatmap(store=store)
    store.refresh_stream()
    assert list(view.choices().values()) == [0, 9]
    view.choice.value = 9
    assert store.event_id == 9
    view.choice.value = 0
    assert store.event_id is None


def test_alarm_buttons_follow_the_chosen_alarm(store, api) -> None:
    api.event_items = [event_payload(4), event_payload(5, state="acknowledged")]
    store.refresh_fleet()
    view = AlarmList(store=store)
    assert view.allowed() == set()
    assert all(button.disabled for button in view.buttons.values())
    store.select_event(4)
    assert view.allowed() == {"acknowledge", "shelve", "comment"}
    assert not view.buttons["acknowledge"].disabled and view.buttons["clear"].disabled
    store.select_event(5)
    assert "clear" in view.allowed() and "acknowledge" not in view.allowed()


def test_acknowledging_from_the_list_changes_the_state(store, api) -> None:
    api.event_items = [event_payload(4)]
    store.refresh_fleet()
    view = AlarmList(store=store)
    view.table.selection = [0]
    assert store.event_id == 4
    view.comment.value = "looking"
    view.buttons["acknowledge"].clicks += 1
    assert api.called("act")[-1][0] == (4, "acknowledge")
    assert view.table.value["state"].tolist() == ["acknowledged"]
    assert view.comment.value == ""
    assert store.event_detail["history"][-1]["comment"] == "looking"
    assert view.buttons["acknowledge"].disabled


def test_shelving_from_the_list_uses_the_chosen_duration(store, api) -> None:
    api.event_items = [event_payload(4)]
    store.refresh_fleet()
    view = AlarmList(store=store)
    store.select_event(4)
    view.shelf.value = 24.0
    assert view.act("shelve")
    assert api.called("act")[-1][1]["shelved_until"] == T0 + timedelta(minutes=10, hours=24)


def test_acting_without_a_chosen_alarm_says_so(store, api) -> None:
    view = AlarmList(store=store)
    assert not view.act("acknowledge")
    assert store.notice == "choose an alarm in the list first"
    assert api.called("act") == []


def test_health_summary(store, api) -> None:
    view = PipelineHealth(store=store)
    api.health_payload = {
        "services": [
            {"name": "kafka", "healthy": True, "detail": ""},
            {"name": "triton", "healthy": False, "detail": "down"},
        ],
        "kafka_lag": [
            {"group": "router", "lag": 5, "partitions": 4},
            {"group": "writer", "lag": None, "partitions": 0},
        ],
        "queues": [{"queue": "inference", "messages": 7, "consumers": 2}],
        "triton": {"ready": True, "models": [{"name": "SMAP_A-1", "state": "READY"}]},
        "stages": [
            {
                "stage": "router",
                "received_per_s": 5.0,
                "produced_per_s": 35.0,
                "rejected_per_s": 0.0,
                "latency_p50_s": 0.002,
                "latency_p99_s": 0.01,
            }
        ],
        "ingestion_rate": 5.0,
    }
    store.refresh_health()
    assert view.summary() == {
        "services_up": 1,
        "services": 2,
        "ingestion_rate": 5.0,
        "lag": 5,
        "queued": 7,
        "models_ready": 1,
        "models": 1,
    }
    assert view.indicators["services"].value == "1/2"
    assert view.stages_table.value["latency_p99_ms"].tolist() == [10.0]


def test_status_line_kinds(store, api) -> None:
    view = StatusLine(store=store)
    assert view.kind() == "secondary"
    store.refresh_fleet()
    assert view.kind() == "success"
    api.fail = api.fail = __import__("tests.unit.dashboard.fakes", fromlist=["x"]).unavailable()
    store.refresh_fleet()
    assert view.kind() == "danger"
    assert "not reachable" in view.alert.object


def test_padded_range() -> None:
    assert padded_range(pd.Series([], dtype=float)) == (0.0, 1.0)
    assert padded_range(pd.Series([0.0, 10.0])) == (-0.8, 10.8)
    assert padded_range(pd.Series([0.2, 0.4]), floor=0.0) == (0.0, pytest.approx(0.432))


def test_a_chosen_alarm_stays_chosen_when_older_alarms_leave_the_list(store, api) -> None:
    # Rows are in id order; when an old alarm leaves the list (cleared, or past the
    # list's limit) the rows after it move up: the choice must follow the alarm, not the
    # position (it used to jump to the next alarm, or to nothing when it was the last row).
    api.event_items = [event_payload(i, satellite_id=f"sat{i}") for i in range(1, 6)]
    store.refresh_fleet()
    view = AlarmList(store=store)
    view.table.selection = [4]
    assert store.event_id == 5
    api.event_items = [event_payload(i, satellite_id=f"sat{i}") for i in range(2, 7)]
    store.refresh_fleet()
    assert store.event_id == 5
    assert view.table.value["event_id"].iloc[view.table.selection[0]] == 5
    assert not view.buttons["acknowledge"].disabled


def test_an_unchanged_alarm_list_is_not_rewritten(store, api) -> None:
    api.event_items = [event_payload(4), event_payload(5)]
    store.refresh_fleet()
    view = AlarmList(store=store)
    shown = view.table.value
    store.refresh_fleet()  # the same alarms again: the browser's table is left alone
    assert view.table.value is shown
    api.event_items[0]["state"] = "acknowledged"
    store.refresh_fleet()
    assert view.table.value is not shown
    assert view.table.value["state"].tolist() == ["acknowledged", "open"]


def test_the_chosen_alarm_sorts_first_whatever_its_state(store, api) -> None:
    api.event_items = [event_payload(4), event_payload(5), event_payload(6, state="acknowledged")]
    store.refresh_fleet()
    view = AlarmList(store=store)
    ranks = dict(zip(view.table.value["event_id"], view.table.value["rank"], strict=True))
    assert ranks[6] > ranks[4] == ranks[5] >= 0
    store.select_event(6)
    ranks = dict(zip(view.table.value["event_id"], view.table.value["rank"], strict=True))
    assert ranks[6] == -1 and min(ranks[4], ranks[5]) >= 0
    assert view.table.value["event_id"].iloc[view.table.selection[0]] == 6


def test_inline_html_bolds_codes_and_escapes() -> None:
    assert inline_html("**2** of <3 `make up`") == "<b>2</b> of &lt;3 <code>make up</code>"


def test_a_refresh_redraws_only_what_changed(store, api) -> None:
    timeline, heatmap = AnomalyTimeline(store=store), ReconstructionHeatmap(store=store)
    feed(api)
    store.refresh_fleet()
    store.refresh_stream()
    score_data, image = timeline.sources["score"].data, heatmap.sources["input"].data
    assert "newest record <b>" in timeline.facts.object.text  # the facts, as HTML
    store.refresh_stream()  # nothing new: the sources keep their data
    assert timeline.sources["score"].data is score_data
    assert heatmap.sources["input"].data is image
    feed(api, records=130)  # new records; the heatmap's window (flagged, 40-69) stays
    api.latest_frame = frames.latest_frame(
        [{"satellite_id": "sat1", "subsystem": "ACS", "last_time": at(129), "detected": 0}]
    )
    store.refresh_fleet()
    store.refresh_stream()
    assert len(timeline.sources["score"].data["time"]) == 130
    assert heatmap.sources["input"].data is image
    store.focus_time = at(119).to_pydatetime()  # another window
    store.refresh_stream()
    assert heatmap.sources["input"].data is not image
    assert heatmap.sources["input"].data["image"][0][0, -1] == 119.0
