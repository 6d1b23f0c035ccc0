from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from smap_bench.dashboard import frames
from smap_bench.dashboard.client import ApiError
from smap_bench.dashboard.store import DashboardStore, same_frame
from tests.unit.dashboard.fakes import T0, FakeApi, event_payload, series, unavailable


def at(seconds: float) -> pd.Timestamp:
    return pd.Timestamp(T0) + pd.Timedelta(seconds=seconds)


def feed(api: FakeApi, records: int = 120) -> None:
    """``records`` one-second records of sat1/ACS from T0: feature 0 and 1, scores, a
    threshold, detections every 10 records (windows ending at 59 and 69 flagged), and the
    workers' verdicts (those two, and the window ending at 89, which was not confirmed)."""
    times = [at(i) for i in range(records)]
    ends = [at(i) for i in range(9, records, 10)]
    api.series_frames = {
        "telemetry": pd.concat(
            [series(times, [float(i) for i in range(records)], f) for f in range(2)]
        ),
        "reconstructions": pd.concat(
            [series(times, [float(i) - (f + 1) for i in range(records)], f) for f in range(2)]
        ),
        "scores": series(times, [0.01] * records),
        "thresholds": series(ends, [0.1] * len(ends)),
        "detections": series(ends, [1.0 if t in (at(59), at(69)) else 0.0 for t in ends]),
        "verdicts": series(ends, [1.0 if t in (at(59), at(69), at(89)) else 0.0 for t in ends]),
        "record_index": series(times, list(range(records))),
    }
    api.latest_frame = frames.latest_frame(
        [{"satellite_id": "sat1", "subsystem": "ACS", "last_time": times[-1], "detected": 0}]
    )


def test_first_fleet_refresh_lists_satellites_and_selects_the_first(store, api) -> None:
    assert store.satellite_id is None
    assert store.refresh_fleet()
    assert store.param.satellite_id.objects == ["sat1", "sat2"]
    assert store.satellite_id == "sat1"
    assert store.channel() == "A-1"
    assert store.api_ok and store.message == ""
    assert store.fleet_version == 1


def test_live_range_ends_at_the_streams_newest_sample(store, api) -> None:
    feed(api)
    store.refresh_fleet()
    start, end = store.time_range()
    assert pd.Timestamp(end) == at(119) + pd.Timedelta(seconds=1)
    assert pd.Timestamp(end) - pd.Timestamp(start) == pd.Timedelta(seconds=store.window_s)


def test_live_range_falls_back_to_the_wall_clock(store, api) -> None:
    store.refresh_fleet()  # no latest sample known
    _, end = store.time_range()
    assert pd.Timestamp(end) == pd.Timestamp(T0 + timedelta(minutes=10, seconds=1))


def test_a_fixed_end_stops_following(store, api) -> None:
    feed(api)
    store.refresh_fleet()
    store.param.update(end=at(60).to_pydatetime(), window_s=30)
    start, end = store.time_range()
    assert (pd.Timestamp(start), pd.Timestamp(end)) == (at(30), at(60))


def test_stream_refresh_fetches_the_shown_range_and_derives_spans(store, api) -> None:
    feed(api)
    store.refresh_fleet()
    store.features = [0, 1]
    elapsed = store.refresh_stream()
    assert elapsed is not None and store.stream_refresh_ms > 0
    telemetry_calls = [a for a, _ in api.called("series") if a[0] == "telemetry"]
    assert telemetry_calls[0][1:3] == ("sat1", "ACS")
    assert telemetry_calls[0][5] == (0, 1)
    assert len(store.scores) == 120
    assert store.threshold() == 0.1
    spans = store.spans()
    detected = spans[spans["kind"] == "detected"]
    assert len(detected) == 1  # windows ending at 59 and 69 merge
    assert detected["start"].iloc[0] == at(49.5)
    assert detected["end"].iloc[0] == at(69.5)
    unconfirmed = spans[spans["kind"] == "unconfirmed"]
    assert list(zip(unconfirmed["start"], unconfirmed["end"], strict=True)) == [
        (at(79.5), at(89.5))
    ]
    assert store.unconfirmed().tolist() == [at(89)]


def test_the_unconfirmed_windows_follow_the_verdicts_and_the_decisions(store, api) -> None:
    feed(api)
    store.refresh_fleet()
    store.refresh_stream()
    spans = store.spans()
    ends = [at(i) for i in range(9, 120, 10)]
    # the events stage confirms the window ending at 89 after all: no longer unconfirmed
    api.series_frames["detections"] = series(
        ends, [1.0 if t in (at(59), at(69), at(89)) else 0.0 for t in ends]
    )
    store.refresh_stream()
    assert store.spans() is not spans
    assert (store.spans()["kind"] == "unconfirmed").sum() == 0
    assert store.unconfirmed().empty
    # no verdicts (an API older than them sends none): the alarms alone, no error
    del api.series_frames["verdicts"]
    store.refresh_stream()
    assert store.verdicts.empty and store.unconfirmed().empty
    assert set(store.spans()["kind"]) == {"detected"}


def test_heatmap_defaults_to_the_latest_flagged_window(store, api) -> None:
    feed(api)
    store.refresh_fleet()
    store.refresh_stream()
    start, end = store.heatmap_range()
    assert (pd.Timestamp(start), pd.Timestamp(end)) == (at(39.5), at(69.5))
    # every feature was fetched for the heatmap, and the error is (x - r)^2 = (f + 1)^2
    assert list(store.errors().columns) == [0, 1]
    assert len(store.errors()) == 30
    assert store.errors()[1].unique().tolist() == [4.0]
    assert store.top_features()["feature"].tolist() == [1, 0]


def test_heatmap_follows_a_chosen_window_then_a_chosen_event(store, api) -> None:
    feed(api)
    api.event_items = [event_payload(7, start=at(80).to_pydatetime(), seconds=5)]
    store.refresh_fleet()
    store.refresh_stream()
    store.focus_time = at(20).to_pydatetime()
    start, end = store.heatmap_range()
    assert (pd.Timestamp(start), pd.Timestamp(end)) == (at(-9.5), at(20.5))
    store.select_event(7)
    start, end = store.heatmap_range()
    assert (pd.Timestamp(start), pd.Timestamp(end)) == (at(79.5), at(85.5))


def test_no_data_no_heatmap(store, api) -> None:
    store.refresh_fleet()
    store.refresh_stream()
    assert store.heatmap_range() is None
    assert store.errors().empty and store.top_features().empty


def test_labeled_ranges_show_only_while_replaying_the_labeled_split(store, api) -> None:
    feed(api)
    store.labels = {"A-1": [(10, 19)]}
    api.replay_payload = {"state": {"state": "running", "split": "test"}}
    store.refresh_fleet()
    store.refresh_replay()
    store.refresh_stream()
    labeled = store.spans()[lambda f: f["kind"] == "labeled"]
    assert (labeled["start"].iloc[0], labeled["end"].iloc[0]) == (at(9.5), at(19.5))
    store.replay_state = {"state": "running", "split": "train"}
    assert store.labeled_ranges() == []
    assert (store.spans()["kind"] == "labeled").sum() == 0


def test_choosing_another_stream_forgets_the_chosen_event(store, api) -> None:
    store.refresh_fleet()
    store.event_id = 3
    store.select_stream("sat2", "EPS")
    assert store.event_id is None
    assert (store.satellite_id, store.subsystem) == ("sat2", "EPS")


def test_selecting_an_alarm_of_another_stream_shows_that_stream(store, api) -> None:
    api.event_items = [event_payload(5, "sat2", "EPS"), event_payload(6, "sat77", "PS")]
    store.refresh_fleet()
    store.select_event(5)
    assert (store.satellite_id, store.subsystem, store.event_id) == ("sat2", "EPS", 5)
    assert store.selected_event()["event_id"] == 5
    # a satellite outside the fleet stays chosen across fleet refreshes
    store.select_event(6)
    store.refresh_fleet()
    assert (store.satellite_id, store.event_id) == ("sat77", 6)


def test_fleet_states_come_from_latest_samples_and_alarms(store, api) -> None:
    api.latest_frame = frames.latest_frame(
        [
            {
                "satellite_id": "sat2",
                "subsystem": "ACS",
                "last_time": T0 + timedelta(minutes=10),
                "detected": 1,
            }
        ]
    )
    api.event_items = [event_payload(1, "sat1", "EPS")]
    store.refresh_fleet()
    grid = store.fleet_grid()
    assert grid.loc["sat2", "ACS"] == frames.ANOMALOUS
    assert grid.loc["sat1", "EPS"] == frames.OPEN_ALARM
    assert grid.loc["sat1", "ACS"] == frames.NO_DATA


def test_a_stream_is_stale_when_its_newest_record_stops_changing() -> None:
    # the simulated clock an hour behind the wall clock (the fleet was paused), sat2's
    # a loop ahead of sat1's (a seek): neither decides; a record that changes is fresh
    wall = [T0 + timedelta(hours=1)]
    api = FakeApi()
    store = DashboardStore(client=api, clock=lambda: wall[0])

    def latest(sat1: float, sat2: float) -> pd.DataFrame:
        rows = [("sat1", sat1), ("sat2", sat2)]
        return frames.latest_frame(
            [
                {"satellite_id": s, "subsystem": "ACS", "last_time": at(t), "detected": 0}
                for s, t in rows
            ]
        )

    api.latest_frame = latest(100, 7400)
    store.refresh_fleet()
    grid = store.fleet_grid()
    # first seen: its record time or now, whichever is earlier: sat1 an hour old, sat2
    # ahead of the wall clock
    assert (grid.loc["sat1", "ACS"], grid.loc["sat2", "ACS"]) == (frames.NO_DATA, frames.NORMAL)
    wall[0] += timedelta(seconds=2)
    api.latest_frame = latest(102, 7402)  # both advance
    store.refresh_fleet()
    grid = store.fleet_grid()
    assert (grid.loc["sat1", "ACS"], grid.loc["sat2", "ACS"]) == (frames.NORMAL, frames.NORMAL)
    wall[0] += timedelta(seconds=40)
    api.latest_frame = latest(142, 7402)  # sat2 stopped 40 s ago, sat1 goes on
    store.refresh_fleet()
    grid = store.fleet_grid()
    assert (grid.loc["sat1", "ACS"], grid.loc["sat2", "ACS"]) == (frames.NORMAL, frames.NO_DATA)


def test_alarm_list_asks_for_the_chosen_states(store, api) -> None:
    store.alarm_states = ["open"]
    store.refresh_fleet()
    assert api.called("events")[0][1]["states"] == ("open",)


def test_acknowledge_goes_through_the_api_and_refreshes_the_list(store, api) -> None:
    api.event_items = [event_payload(4)]
    store.refresh_fleet()
    store.operator = "alice"
    assert store.acknowledge(4, "seen it")
    args, kwargs = api.called("act")[0]
    assert args == (4, "acknowledge") and kwargs["operator"] == "alice"
    assert kwargs["comment"] == "seen it"
    assert store.alarms.loc[store.alarms["event_id"] == 4, "state"].item() == "acknowledged"
    assert "done" in store.notice


def test_shelve_sends_an_end_time_from_the_clock(store, api) -> None:
    api.event_items = [event_payload(4)]
    store.refresh_fleet()
    assert store.shelve(4, hours=2)
    until = api.called("act")[0][1]["shelved_until"]
    assert until == T0 + timedelta(minutes=10, hours=2)


def test_a_refused_action_is_reported_not_raised(store, api) -> None:
    api.event_items = [event_payload(4)]
    store.refresh_fleet()
    api.fail = ApiError("clear event 4", 409, "cannot clear an alarm that is open")
    assert not store.alarm_action(4, "clear")
    assert "409" in store.notice and "cannot clear" in store.notice
    assert store.api_ok  # the API answered


def test_empty_comment_is_refused_before_the_api(store, api) -> None:
    assert not store.add_comment(4, "   ")
    assert api.called("comment") == []


def test_replay_commands_and_state(store, api) -> None:
    api.replay_payload = {
        "state": {
            "state": "running",
            "speed": 1.0,
            "split": "test",
            "record_index_min": 5,
            "record_index_max": 9,
            "loop_min": 2,
            "loop_max": 2,
            "satellites": 5,
            "produced": 100,
        }
    }
    store.refresh_replay()
    assert store.replay_summary()["position"] == "5–9"
    assert store.replay_summary()["speed"] == "1×"
    assert store.replay("pause")
    assert store.replay_state["state"] == "paused"
    assert store.set_speed("max")
    assert api.called("replay")[-1] == (("speed",), {"factor": "max"})
    assert store.seek(42)
    assert api.called("replay")[-1] == (("seek",), {"record_index": 42})


def test_no_replay_state_reads_unknown(store, api) -> None:
    store.refresh_replay()
    assert store.replay_summary()["state"] == "unknown"
    assert store.replay_detail == "no state"


def test_unreachable_api_keeps_old_data_and_says_how_to_start_it(store, api) -> None:
    feed(api)
    store.refresh_fleet()
    store.refresh_stream()
    api.fail = unavailable()
    assert not store.refresh_fleet()
    assert store.refresh_stream() is None
    assert not store.api_ok
    assert "not reachable" in store.message and "make up" in store.message
    assert len(store.scores) == 120  # the last good data stays
    assert "API unreachable" in store.status_text()


def test_without_a_client_nothing_is_fetched() -> None:
    store = DashboardStore()
    assert not store.refresh_fleet()
    assert store.refresh_stream() is None
    assert store.message == "no API client configured"
    assert store.alarm_table().empty and store.fleet_grid().empty


@pytest.mark.parametrize("window_s", [29, 3601])
def test_window_outside_bounds_is_refused(window_s: int) -> None:
    with pytest.raises(ValueError):
        DashboardStore(window_s=window_s)


def test_async_live_refresh_fetches_off_the_loop_and_applies(store, api) -> None:
    import asyncio

    feed(api)
    api.replay_payload = {"state": {"state": "running"}}
    asyncio.run(store.refresh_live_async())
    assert store.satellite_id == "sat1" and len(store.scores) == 120
    assert store.replay_state["state"] == "running"
    api.fail = unavailable()
    asyncio.run(store.refresh_live_async())
    assert not store.api_ok and len(store.scores) == 120


def test_the_fast_latest_refresh_applies_only_a_change(store, api) -> None:
    import asyncio

    feed(api)
    store.refresh_fleet()
    version = store.fleet_version
    asyncio.run(store.refresh_latest_async())
    assert store.fleet_version == version  # the same newest samples: nothing redraws
    api.latest_frame = frames.latest_frame(
        [{"satellite_id": "sat1", "subsystem": "ACS", "last_time": at(121), "detected": 1}]
    )
    asyncio.run(store.refresh_latest_async())
    assert store.fleet_version == version + 1
    assert store.latest["detected"].tolist() == [1.0]


def test_an_unchanged_fleet_refresh_bumps_no_version(store, api) -> None:
    feed(api)
    store.refresh_fleet()
    version = store.fleet_version
    store.refresh_fleet()
    assert store.fleet_version == version and store.api_ok


def test_same_frame_compares_rows_not_identity() -> None:
    a = series([at(0), at(1)], [1.0, 2.0])
    assert same_frame(a, a.copy())
    assert not same_frame(a, series([at(0), at(1)], [1.0, 3.0]))
    assert not same_frame(a, series([at(0)], [1.0]))
    assert not same_frame(a, series([at(0), at(2)], [1.0, 2.0]))  # another time
    gap = series([at(0), at(1)], [1.0, float("nan")])
    assert same_frame(gap, gap.copy())  # a missing value equals a missing value
    events = frames.empty_events()
    assert same_frame(events, events.copy()) and not same_frame(events, a)


def test_a_stream_refresh_keeps_the_frames_that_did_not_change(store, api) -> None:
    feed(api)
    store.refresh_fleet()
    store.refresh_stream()
    held = {name: getattr(store, name) for name in ("telemetry", "scores", "heat_input")}
    spans, version = store.spans(), store.stream_version
    store.refresh_stream()  # the same records again
    assert all(getattr(store, name) is frame for name, frame in held.items())
    assert store.spans() is spans  # memoized on the very frames kept
    assert store.stream_version == version + 1  # a refresh all the same
    feed(api, records=121)  # one record more (the range follows it)
    api.latest_frame = frames.latest_frame(
        [{"satellite_id": "sat1", "subsystem": "ACS", "last_time": at(120), "detected": 0}]
    )
    store.refresh_fleet()
    store.refresh_stream()
    assert store.scores is not held["scores"] and len(store.scores) == 121


def test_a_heatmap_read_twice_alike_is_not_sent_again(store, api) -> None:
    feed(api)
    store.refresh_fleet()
    store.refresh_stream()  # the first read of the window (its records may still land)
    store.refresh_stream()  # read again: alike
    assert api.held_heatmaps == [None, None]
    heat = store.heat_input
    store.refresh_stream()
    assert api.held_heatmaps[-1] == store.heatmap_range()  # held: the API leaves it out
    assert store.heat_input is heat and len(heat) == 30 * 2
    store.focus_time = at(119).to_pydatetime()  # another window: read (twice) again
    store.refresh_stream()
    assert store.heat_input is not heat and store.heat_input["time"].max() == at(119)
    store.refresh_stream()
    store.select_stream("sat1", "EPS")  # another stream: nothing held of it
    store.refresh_stream()
    assert api.held_heatmaps[-1] is None


def test_a_cleared_stream_is_read_whole_again(store, api) -> None:
    feed(api)
    store.refresh_fleet()
    for _ in range(3):
        store.refresh_stream()
    assert api.held_heatmaps[-1] is not None
    store.clear_stream()
    assert store.scores.empty and store.heat_input.empty
    store.refresh_stream()
    assert api.held_heatmaps[-1] is None and len(store.heat_input) == 30 * 2
