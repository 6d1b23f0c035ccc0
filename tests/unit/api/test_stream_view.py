"""The pure parts of a stream's view and of the fleet's latest state: splitting one
multi-metric export by kind, the heatmap's default window, the newest sample per stream."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from smap_bench.api.queries import SeriesKind
from smap_bench.api.routes.fleet import stream_latest
from smap_bench.api.stream_view import (
    TIMELINE_KINDS,
    heatmap_window,
    record_period_s,
    split_by_kind,
    window_around,
)
from smap_bench.api.victoria import parse_export
from smap_bench.catalog import Subsystem
from smap_bench.metrics import Series

T0 = 1_800_000_000.0


def series(name: str, samples: list[tuple[float, float]], **labels: str) -> Series:
    return Series(labels={"__name__": name, **labels}, samples=samples)


def test_one_export_is_split_by_the_metric_each_series_names() -> None:
    found = [
        series("smap_feature", [(T0, 1.0)], feature_index="0"),
        series("inference_anomaly_score", [(T0, 0.1)]),
        series("record_index", [(T0, 7.0)]),
        series("something_else", [(T0, 0.0)]),
    ]
    parts = split_by_kind(found)
    assert set(parts) == {SeriesKind.TELEMETRY, SeriesKind.SCORES, SeriesKind.RECORD_INDEX}
    assert parts[SeriesKind.RECORD_INDEX][0].samples == [(T0, 7.0)]


def test_the_timeline_carries_the_served_decision_and_the_workers_verdicts_apart() -> None:
    assert {SeriesKind.DETECTIONS, SeriesKind.VERDICTS} <= set(TIMELINE_KINDS)
    found = [
        series("anomaly_alarm", [(T0 + 9, 0.0)]),
        series("inference_anomaly_detected", [(T0 + 9, 1.0)]),
    ]
    parts = split_by_kind(found)
    assert parts[SeriesKind.DETECTIONS][0].samples == [(T0 + 9, 0.0)]
    assert parts[SeriesKind.VERDICTS][0].samples == [(T0 + 9, 1.0)]


def test_the_timeline_carries_the_forecasters_statistic_and_threshold() -> None:
    assert {SeriesKind.FORECASTS, SeriesKind.FORECAST_THRESHOLDS} <= set(TIMELINE_KINDS)
    found = [
        series("inference_forecast_statistic", [(T0 + 9, 0.3)]),
        series("inference_forecast_threshold", [(T0 + 9, 0.2)]),
    ]
    parts = split_by_kind(found)
    assert parts[SeriesKind.FORECASTS][0].samples == [(T0 + 9, 0.3)]
    assert parts[SeriesKind.FORECAST_THRESHOLDS][0].samples == [(T0 + 9, 0.2)]


def test_the_heatmap_default_follows_the_served_decision_not_the_verdicts() -> None:
    scores = [series("inference_anomaly_score", [(T0 + i, 0.0) for i in range(60)])]
    decided = [series("anomaly_alarm", [(T0 + 19, 1.0), (T0 + 59, 0.0)])]
    assert heatmap_window(decided, scores, 30) == window_around(T0 + 19, 30, 1.0)


def test_the_export_format_is_read_in_seconds() -> None:
    text = (
        '{"metric":{"__name__":"record_index","satellite_id":"sat1"},'
        '"values":[3,4],"timestamps":[1800000000000,1800000001000]}\n'
    )
    (only,) = parse_export(text)
    assert only.labels["satellite_id"] == "sat1"
    assert only.samples == [(T0, 3.0), (T0 + 1, 4.0)]


def test_the_record_period_is_the_median_spacing() -> None:
    assert record_period_s([series("s", [(T0, 0), (T0 + 2, 0), (T0 + 4, 0), (T0 + 5, 0)])]) == 2
    assert record_period_s([]) == 1.0


def test_the_heatmap_shows_the_newest_flagged_window_else_the_newest_window() -> None:
    scores = [series("inference_anomaly_score", [(T0 + i, 0.0) for i in range(100)])]
    flagged = [series("anomaly_alarm", [(T0 + 39, 1.0), (T0 + 49, 1.0), (T0 + 59, 0)])]
    assert heatmap_window(flagged, scores, 30) == window_around(T0 + 49, 30, 1.0)
    start, end = heatmap_window([], scores, 30) or (None, None)
    assert end == datetime.fromtimestamp(T0 + 99.5, UTC)
    assert start == datetime.fromtimestamp(T0 + 99 - 29 - 0.5, UTC)
    assert heatmap_window([], [], 30) is None


def test_window_around_spans_window_size_records() -> None:
    start, end = window_around(T0, 30, 2.0)
    assert end - start == timedelta(seconds=2.0 * 30)


def test_latest_per_stream_from_the_instant_queries() -> None:
    def row(sat: str, sub: str, value: float) -> Series:
        return Series(labels={"satellite_id": sat, "subsystem": sub}, samples=[(T0 + 99, value)])

    def satellite(sat: str, value: float) -> Series:
        return Series(labels={"satellite_id": sat}, samples=[(T0 + 99, value)])

    newest = [satellite("sat10", T0 + 3), satellite("sat2", T0 + 1)]
    flagged = [row("sat2", "EPS", 1.0), row("sat3", "NOPE", 1.0)]
    flagged_at = [row("sat2", "EPS", T0)]
    rows = stream_latest(newest, flagged, flagged_at)
    assert [(r.satellite_id, r.subsystem) for r in rows] == [
        *(("sat2", s) for s in sorted(Subsystem, key=lambda s: s.value)),
        *(("sat10", s) for s in sorted(Subsystem, key=lambda s: s.value)),
    ]
    sat2 = next(r for r in rows if (r.satellite_id, r.subsystem) == ("sat2", Subsystem.EPS))
    sat10 = next(r for r in rows if (r.satellite_id, r.subsystem) == ("sat10", Subsystem.ACS))
    assert all(r.last_time == sat2.last_time for r in rows if r.satellite_id == "sat2")
    assert sat2.last_time == datetime.fromtimestamp(T0 + 1, UTC)
    assert (sat2.detected, sat2.detected_time) == (1.0, datetime.fromtimestamp(T0, UTC))
    assert sat10.last_time == datetime.fromtimestamp(T0 + 3, UTC)
    assert sat10.detected is None and sat10.detected_time is None


def test_the_latest_route_looks_at_the_catalogs_satellites_only() -> None:
    import re

    from smap_bench.api.routes.fleet import FLEET_SATELLITES

    assert re.fullmatch(FLEET_SATELLITES, "sat12")
    assert not re.fullmatch(FLEET_SATELLITES, "b8cfb9-1")
