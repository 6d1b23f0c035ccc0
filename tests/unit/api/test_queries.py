"""Series query building: selectors from validated parameters, checked time windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from smap_bench.api.queries import (
    MAX_POINTS,
    MAX_RANGE,
    MAX_RAW_RANGE,
    METRIC_OF,
    PER_FEATURE,
    PER_SATELLITE,
    QueryError,
    SeriesKind,
    check_features,
    describe_span,
    feature_index_of,
    series_selector,
    step_param,
    time_window,
)
from smap_bench.catalog import Subsystem

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_one_feature_is_an_exact_match() -> None:
    assert (
        series_selector(SeriesKind.TELEMETRY, "sat1", Subsystem.ACS, [3])
        == 'smap_feature{satellite_id="sat1",subsystem="ACS",feature_index="3"}'
    )


def test_several_features_are_one_sorted_distinct_regex() -> None:
    selector = series_selector(SeriesKind.RECONSTRUCTIONS, "sat12", Subsystem.Data, [10, 2, 10, 0])
    assert selector == (
        'inference_reconstruction{satellite_id="sat12",subsystem="Data",feature_index=~"0|2|10"}'
    )


def test_per_feature_kinds_default_to_feature_0() -> None:
    assert series_selector(SeriesKind.TELEMETRY, "sat1", Subsystem.EPS).endswith(
        'feature_index="0"}'
    )


@pytest.mark.parametrize(
    "kind", [k for k in SeriesKind if k not in PER_FEATURE and k not in PER_SATELLITE]
)
def test_per_stream_kinds_ignore_features(kind: SeriesKind) -> None:
    selector = series_selector(kind, "sat2", Subsystem.TCS, [5, 6])
    assert selector == f'{METRIC_OF[kind]}{{satellite_id="sat2",subsystem="TCS"}}'


def test_detections_are_the_served_decision_not_the_workers_verdict() -> None:
    selector = series_selector(SeriesKind.DETECTIONS, "sat2", Subsystem.TCS)
    assert selector == 'anomaly_alarm{satellite_id="sat2",subsystem="TCS"}'


def test_verdicts_are_the_workers_verdict_beside_the_served_decision() -> None:
    selector = series_selector(SeriesKind.VERDICTS, "sat2", Subsystem.TCS, [3])
    assert selector == 'inference_anomaly_detected{satellite_id="sat2",subsystem="TCS"}'
    assert METRIC_OF[SeriesKind.VERDICTS] != METRIC_OF[SeriesKind.DETECTIONS]


def test_the_record_index_is_the_satellites_whatever_the_subsystem() -> None:
    for subsystem in (Subsystem.ACS, Subsystem.TCS):
        assert (
            series_selector(SeriesKind.RECORD_INDEX, "sat3", subsystem, [4])
            == 'record_index{satellite_id="sat3"}'
        )


def test_all_features_is_no_feature_matcher() -> None:
    assert (
        series_selector(SeriesKind.TELEMETRY, "sat1", Subsystem.ACS, "all")
        == 'smap_feature{satellite_id="sat1",subsystem="ACS"}'
    )


def test_metric_names_follow_the_writers_schema() -> None:
    import smap_bench.metrics as metrics

    documented = metrics.__doc__ or ""
    for name in METRIC_OF.values():
        assert f"``{name}``" in documented, f"{name} is not in smap_bench.metrics' schema"


@pytest.mark.parametrize(
    "satellite_id", ['sat1"}', "sat0", "SAT1", "sat1|sat2", "sat1\n", "", "sat" + "1" * 10]
)
def test_satellite_ids_outside_the_pattern_are_refused(satellite_id: str) -> None:
    with pytest.raises(QueryError, match="satellite_id"):
        series_selector(SeriesKind.SCORES, satellite_id, Subsystem.ACS)


@pytest.mark.parametrize(
    ("features", "problem"), [([], "at least one"), ([25], "0..24"), ([-1], "0..24")]
)
def test_bad_feature_lists_are_refused(features: list[int], problem: str) -> None:
    with pytest.raises(QueryError, match=problem):
        check_features(features)


def test_default_window_is_the_last_ten_minutes() -> None:
    window = time_window(None, None, None, now=NOW)
    assert (window.start, window.end, window.step_s) == (NOW - timedelta(minutes=10), NOW, None)
    assert window.points is None


def test_naive_times_are_utc_and_aware_ones_are_converted() -> None:
    naive = datetime(2026, 3, 1, 11, 0)
    paris = datetime(2026, 3, 1, 13, 30, tzinfo=timezone(timedelta(hours=1)))
    window = time_window(naive, paris, 60.0, now=NOW)
    assert window.start == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    assert window.end == datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def test_start_alone_runs_to_now_and_end_alone_looks_back_the_default() -> None:
    assert time_window(NOW - timedelta(minutes=3), None, None, now=NOW).end == NOW
    end = NOW - timedelta(hours=1)
    assert time_window(None, end, None, now=NOW).start == end - timedelta(minutes=10)


@pytest.mark.parametrize(
    ("start", "end", "step", "problem"),
    [
        (NOW, NOW, None, "not before end"),
        (NOW, NOW - timedelta(seconds=1), None, "not before end"),
        (NOW - MAX_RANGE - timedelta(seconds=1), NOW, 60.0, "longer than the maximum 24 h"),
        (NOW - MAX_RAW_RANGE - timedelta(seconds=1), NOW, None, "give a step"),
        (NOW - timedelta(hours=2), NOW, 0.5, "more than 11000"),
        (datetime(1969, 12, 31, tzinfo=UTC), NOW, 60.0, "outside 1970..2200"),
        (NOW, datetime(9999, 12, 31, tzinfo=UTC), 60.0, "outside 1970..2200"),
        (NOW - timedelta(minutes=1), NOW, float("nan"), "positive"),
    ],
)
def test_bad_windows_are_refused_with_the_reason(
    start: datetime, end: datetime, step: float | None, problem: str
) -> None:
    with pytest.raises(QueryError, match=problem):
        time_window(start, end, step, now=NOW)


def test_the_step_needed_is_suggested() -> None:
    with pytest.raises(QueryError, match=r"at least 0\.655 s"):
        time_window(NOW - timedelta(hours=2), NOW, 0.5, now=NOW)


def test_points_per_series_at_the_limit_are_accepted() -> None:
    span = timedelta(seconds=MAX_POINTS - 1)
    window = time_window(NOW - span, NOW, 1.0, now=NOW)
    assert window.points == MAX_POINTS
    with pytest.raises(QueryError):
        time_window(NOW - span - timedelta(seconds=1), NOW, 1.0, now=NOW)


def test_a_denormal_step_is_refused_not_an_overflow() -> None:
    # Found by schemathesis: span / 2.2e-313 is infinite, and floor(inf) raised (a 500).
    with pytest.raises(QueryError, match="too many points"):
        time_window(NOW - timedelta(minutes=10), NOW, 2.2250738585e-313, now=NOW)


def test_a_full_day_on_a_minute_grid_is_accepted() -> None:
    window = time_window(NOW - MAX_RANGE, NOW, 60.0, now=NOW)
    assert window.points == 24 * 60 + 1


def test_step_param_is_whole_milliseconds() -> None:
    assert step_param(1.0) == "1000ms"
    assert step_param(0.0004) == "1ms"
    assert step_param(2.5) == "2500ms"


def test_feature_index_label() -> None:
    assert feature_index_of({"feature_index": "7"}) == 7
    assert feature_index_of({"feature_index": "x"}) is None
    assert feature_index_of({}) is None


def test_describe_span() -> None:
    assert describe_span(timedelta(seconds=90)) == "90 s"
    assert describe_span(timedelta(minutes=25)) == "25 min"
    assert describe_span(timedelta(hours=36, minutes=30)) == "36.5 h"


def test_times_that_overflow_in_utc_are_a_query_error() -> None:
    from smap_bench.api.queries import as_utc

    edge = datetime(1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=5)))
    with pytest.raises(QueryError, match="out of range"):
        as_utc(edge)
    with pytest.raises(QueryError, match="out of range"):
        time_window(edge, None, 60.0, now=NOW)
