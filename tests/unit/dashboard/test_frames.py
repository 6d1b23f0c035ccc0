from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from smap_bench.dashboard import frames
from tests.unit.dashboard.fakes import T0, event_payload, series


def ts(seconds: float) -> pd.Timestamp:
    return pd.Timestamp(T0) + pd.Timedelta(seconds=seconds)


def test_series_frame_orders_by_feature_then_time_and_keeps_missing_as_nan() -> None:
    base = T0.timestamp()
    payload = {
        "series": [
            {"feature_index": 3, "timestamps": [base + 1, base], "values": [2.0, 1.0]},
            {"labels": {}, "feature_index": 0, "timestamps": [base], "values": [None]},
        ]
    }
    frame = frames.series_frame(payload)
    assert frame["feature"].tolist() == [0, 3, 3]
    assert frame["value"].iloc[1:].tolist() == [1.0, 2.0]
    assert np.isnan(frame["value"].iloc[0])
    assert frame["time"].iloc[1] == pd.Timestamp(T0)
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"


def test_series_frame_of_a_series_without_feature_uses_minus_one() -> None:
    payload = {"series": [{"feature_index": None, "timestamps": [0.0], "values": [1.0]}]}
    assert frames.series_frame(payload)["feature"].tolist() == [-1]


def test_series_frame_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 timestamps but 1 values"):
        frames.series_frame({"series": [{"timestamps": [0.0, 1.0], "values": [1.0]}]})


def test_empty_payload_gives_typed_empty_frame() -> None:
    frame = frames.series_frame({"series": []})
    assert frame.empty and list(frame.columns) == frames.SERIES_COLUMNS


def test_detected_spans_cover_the_responsible_records_and_merge() -> None:
    # Windows end at 9, 19 (flagged), 29 (flagged), 39 (not): stride 10, 1 s records.
    detections = series([ts(9), ts(19), ts(29), ts(39)], [0, 1, 1, 0])
    spans = frames.detected_spans(detections, stride=10, period_s=1.0)
    assert len(spans) == 1
    assert spans["start"].iloc[0] == ts(9.5)  # first responsible record 10, minus half
    assert spans["end"].iloc[0] == ts(29.5)


def test_detected_spans_keep_separate_windows_apart() -> None:
    detections = series([ts(9), ts(39)], [1, 1])
    spans = frames.detected_spans(detections, stride=10, period_s=1.0)
    assert len(spans) == 2


def test_no_flagged_window_no_span() -> None:
    assert frames.detected_spans(series([ts(9)], [0]), 10, 1.0).empty


def test_unconfirmed_windows_are_flagged_by_the_workers_and_decided_normal() -> None:
    # Windows end at 9..59. The workers flagged 19, 29, 39 and 59; the served decision
    # confirmed 29, kept 19 and 39 as normal, and has not decided 59 yet.
    ends = [ts(9), ts(19), ts(29), ts(39), ts(49), ts(59)]
    verdicts = series(ends, [0, 1, 1, 1, 0, 1])
    detections = series(ends[:5], [0, 0, 1, 0, 0])
    assert frames.unconfirmed_windows(verdicts, detections).tolist() == [ts(19), ts(39)]
    spans = frames.unconfirmed_spans(
        frames.unconfirmed_windows(verdicts, detections), stride=10, period_s=1.0
    )
    assert spans["kind"].tolist() == ["unconfirmed", "unconfirmed"]
    assert spans["label"].iloc[0] == "flagged, not confirmed"
    assert spans["start"].tolist() == [ts(9.5), ts(29.5)]  # as wide as a detected window's
    assert spans["end"].tolist() == [ts(19.5), ts(39.5)]
    # what detected_spans draws for the same decision: the confirmed window only
    assert frames.detected_spans(detections, 10, 1.0)["end"].tolist() == [ts(29.5)]


def test_unconfirmed_windows_need_a_decision_and_a_flag() -> None:
    verdicts = series([ts(9), ts(19)], [1, 1])
    assert frames.unconfirmed_windows(verdicts, frames.empty_series()).empty  # none decided
    assert frames.unconfirmed_spans(
        frames.unconfirmed_windows(verdicts, frames.empty_series()), 10, 1.0
    ).empty
    decided = series([ts(9), ts(19)], [0, 0])
    assert frames.unconfirmed_windows(series([ts(9), ts(19)], [0, 0]), decided).empty
    assert frames.unconfirmed_windows(frames.empty_series(), decided).empty
    # a decision missing its value (NaN) is no decision
    assert frames.unconfirmed_windows(verdicts, series([ts(9), ts(19)], [np.nan, 0])).tolist() == [
        ts(19)
    ]
    # adjacent unconfirmed windows merge into one span
    assert (
        len(frames.unconfirmed_spans(frames.unconfirmed_windows(verdicts, decided), 10, 1.0)) == 1
    )
    with pytest.raises(ValueError, match="stride"):
        frames.unconfirmed_spans(frames.unconfirmed_windows(verdicts, decided), 0, 1.0)


def test_record_period_is_the_median_spacing() -> None:
    assert frames.record_period_s(series([ts(0), ts(2), ts(4), ts(10)], [0] * 4)) == 2.0
    assert frames.record_period_s(series([ts(0)], [0]), default=1.5) == 1.5


def test_labeled_spans_map_record_indices_to_times() -> None:
    record_times = series([ts(s) for s in range(10)], list(range(100, 110)))
    spans = frames.labeled_spans([(103, 105), (200, 210)], record_times, period_s=1.0)
    assert len(spans) == 1  # the second range is outside the shown records
    assert spans["start"].iloc[0] == ts(2.5)
    assert spans["end"].iloc[0] == ts(5.5)


def test_error_matrix_is_the_squared_difference_on_common_cells() -> None:
    times = [ts(0), ts(1)]
    telemetry = pd.concat([series(times, [1.0, 2.0], 0), series(times, [0.0, 0.0], 1)])
    reconstruction = pd.concat(
        [series(times, [0.5, 2.0], 0), series(times, [1.0, -2.0], 1), series([ts(2)], [9.0], 0)]
    )
    errors = frames.error_matrix(telemetry, reconstruction)
    assert errors.shape == (2, 2)
    assert errors[0].tolist() == [0.25, 0.0]
    assert errors[1].tolist() == [1.0, 4.0]


def test_top_features_ranks_by_mean_error_with_shares() -> None:
    errors = pd.DataFrame({0: [1.0, 1.0], 1: [3.0, 5.0], 2: [0.0, 0.0]})
    top = frames.top_features(errors, n=2)
    assert top["feature"].tolist() == [1, 0]
    assert top["share"].tolist() == pytest.approx([4 / 5, 1 / 5])


def test_error_matrix_of_one_window_lines_up_like_the_general_case() -> None:
    # The same cells in both (the usual heatmap): the shortcut without .loc must give
    # what lining up the cells gives.
    times = [ts(0), ts(1), ts(2)]
    telemetry = pd.concat([series(times, [1.0, np.nan, 3.0], f) for f in (0, 4)])
    reconstruction = pd.concat([series(times, [0.0, 1.0, 1.0], f) for f in (0, 4)])
    inputs, outputs = frames.wide(telemetry), frames.wide(reconstruction)
    errors = frames.wide_error_matrix(inputs, outputs)
    expected = ((inputs - outputs) ** 2).sort_index()
    pd.testing.assert_frame_equal(errors, expected)
    assert errors[4].tolist()[0] == 1.0 and np.isnan(errors[4].tolist()[1])


def test_top_features_skips_missing_cells_and_keeps_ties_in_column_order() -> None:
    errors = pd.DataFrame({3: [2.0, np.nan], 1: [1.0, 3.0], 7: [np.nan, np.nan], 0: [2.0, 2.0]})
    top = frames.top_features(errors, n=4)
    assert top["feature"].tolist() == [3, 1, 0, 7]  # 2, 2, 2 (tied: columns' order), 0
    assert top["mean_error"].tolist() == [2.0, 2.0, 2.0, 0.0]
    assert top["share"].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0])


def test_empty_spans_are_a_fresh_frame_each_time() -> None:
    first = frames.empty_spans()
    first.loc[0, "kind"] = "detected"
    assert frames.empty_spans().empty


def test_stream_states_rules() -> None:
    now = T0
    streams = pd.DataFrame(
        {
            "satellite_id": ["sat1"] * 4,
            "subsystem": ["ACS", "EPS", "PS", "TCS"],
            "channel": ["A-1", "E-1", "P-1", "T-1"],
        }
    )
    latest = frames.latest_frame(
        [
            {"satellite_id": "sat1", "subsystem": "ACS", "last_time": now, "detected": 0},
            {"satellite_id": "sat1", "subsystem": "EPS", "last_time": now, "detected": 1},
            {
                "satellite_id": "sat1",
                "subsystem": "PS",
                "last_time": now - timedelta(hours=1),
                "detected": 1,
            },
            {"satellite_id": "sat1", "subsystem": "TCS", "last_time": now, "detected": 0},
        ]
    )
    alarms = frames.events_frame(
        [event_payload(1, "sat1", "TCS"), event_payload(2, "sat1", "ACS", state="acknowledged")]
    )
    states = frames.stream_states(streams, latest, alarms, now, timedelta(seconds=30))
    by = dict(zip(states["subsystem"], states["state"], strict=True))
    assert by == {
        "ACS": frames.NORMAL,  # an acknowledged alarm is not an open one
        "EPS": frames.ANOMALOUS,
        "PS": frames.NO_DATA,  # flagged, but an hour old
        "TCS": frames.OPEN_ALARM,
    }
    # the simulated clock two hours behind the wall clock (a fleet resumed after a pause):
    # what decides is when each stream's newest record was seen to change
    later = now + timedelta(hours=2)
    seen = {("sat1", s): later - timedelta(seconds=5) for s in ("ACS", "EPS", "TCS")}
    seen[("sat1", "PS")] = later - timedelta(minutes=5)
    behind = frames.stream_states(streams, latest, alarms, later, timedelta(seconds=30), seen)
    assert dict(zip(behind["subsystem"], behind["state"], strict=True)) == by
    # without it, the record times stand for when they were seen: two hours ago, all stale
    stale = frames.stream_states(streams, latest, alarms, later, timedelta(seconds=30))
    assert dict(zip(stale["subsystem"], stale["state"], strict=True)) == {
        "ACS": frames.NO_DATA,
        "EPS": frames.NO_DATA,
        "PS": frames.NO_DATA,
        "TCS": frames.OPEN_ALARM,
    }


def test_fleet_grid_fills_unknown_streams_with_no_data() -> None:
    states = pd.DataFrame(
        {"satellite_id": ["sat2"], "subsystem": ["EPS"], "state": [frames.ANOMALOUS]}
    )
    grid = frames.fleet_grid(states, ["sat1", "sat2"])
    assert grid.shape == (2, 7)
    assert grid.loc["sat2", "EPS"] == frames.ANOMALOUS
    assert (grid.loc["sat1"] == frames.NO_DATA).all()


def test_alarm_table_keeps_id_order_and_ranks_urgency() -> None:
    events = frames.events_frame(
        [
            event_payload(3, start=T0 + timedelta(minutes=2), state="open"),
            event_payload(1, start=T0, state="acknowledged", detected_by=["model", "hold"]),
            event_payload(2, start=T0 + timedelta(minutes=1), state="cleared"),
            event_payload(4, state="open", detected_by=["hold", "forecaster"]),
        ]
    )
    table = frames.alarm_table(events)
    assert table["event_id"].tolist() == [1, 2, 3, 4]
    assert table["rank"].tolist() == [1, 3, 0, 0]
    assert table["stream"].iloc[0] == "sat1 / ACS"
    # TranAD's ratio for the events its score raised (or that do not say), not the others
    assert table["peak/threshold"].iloc[:3].tolist() == [5.0, 5.0, 5.0]
    assert pd.isna(table["peak/threshold"].iloc[3])  # an empty cell (the view's formatter)
    # an event stored before the detectors were recorded ([], as the API sends it): shown
    older = frames.alarm_table(frames.events_frame([event_payload(5, detected_by=[])]))
    assert older["peak/threshold"].tolist() == [5.0]
    assert table["top"].iloc[0] == "f0, f3"
    assert table["by"].tolist() == ["model, hold", "", "", "hold, forecaster"]


def test_state_counts_lists_every_state() -> None:
    counts = frames.state_counts(pd.DataFrame({"state": [frames.NORMAL, frames.NORMAL]}))
    assert counts == {
        frames.NO_DATA: 0,
        frames.NORMAL: 2,
        frames.ANOMALOUS: 0,
        frames.OPEN_ALARM: 0,
    }
