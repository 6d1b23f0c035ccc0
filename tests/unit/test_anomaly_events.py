"""Anomaly events from windows: merging, redelivery, order, loops, top features."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import numpy as np
import pytest

from smap_bench.anomaly_events import (
    InMemoryEvents,
    WindowSpan,
    detectors_list,
    event_of,
    feature_errors_from_json,
    feature_errors_json,
    plan,
    span_of,
    top_features,
)
from smap_bench.catalog import Subsystem
from smap_bench.evaluation import bridge_gaps, segments
from smap_bench.schema import NUM_FEATURES
from smap_bench.windows import record_flags_from_windows, window_starts
from tests.unit.result_samples import record_time, result, score_of

STRIDE = 10


def spans_for(flags: list[bool], loop: int = 0, **kwargs: object) -> list[WindowSpan]:
    """Spans of the anomalous windows among consecutive windows 0, 10, 20, ..."""
    out = []
    for k, flag in enumerate(flags):
        span = span_of(result(k * STRIDE, anomalous=flag, loop=loop, **kwargs), STRIDE)  # type: ignore[arg-type]
        assert (span is None) == (not flag)
        if span is not None:
            out.append(span)
    return out


def ranges(book: InMemoryEvents) -> list[tuple[int, int, int]]:
    return [
        (e.loop, e.start_record_index, e.end_record_index)
        for e in book.stream_events("sat1", Subsystem.EPS.value)
    ]


def test_span_of_a_first_and_a_later_window() -> None:
    first = span_of(result(0, anomalous=True), STRIDE)
    assert first is not None
    assert (first.start_record_index, first.end_record_index) == (0, 29)
    assert (first.start_time, first.end_time) == (record_time(0), record_time(29))
    later = span_of(result(50, anomalous=True, threshold=0.7), STRIDE)
    assert later is not None
    assert (later.start_record_index, later.end_record_index) == (70, 79)
    assert (later.start_time, later.end_time) == (record_time(70), record_time(79))
    assert later.peak_score == pytest.approx(score_of(79) + 10)  # responsible records only
    assert later.threshold == 0.7 and later.model_name == "SMAP_E-1"
    assert span_of(result(50), STRIDE) is None


def test_span_of_refuses_what_cannot_be_placed_or_stored() -> None:
    with pytest.raises(ValueError, match="no loop/record_index_start"):
        span_of(result(10, anomalous=True, with_position=False), STRIDE)
    with pytest.raises(ValueError, match="no threshold"):
        span_of(result(10, anomalous=True, threshold=None), STRIDE)
    with pytest.raises(ValueError, match="list of 25 numbers, got 3"):
        span_of(result(10, anomalous=True, feature_errors=[1.0, 2.0, 3.0]), STRIDE)
    bad = [0.0] * NUM_FEATURES
    bad[4] = -1.0
    with pytest.raises(ValueError, match=r"feature_errors\[4\] is -1.0"):
        span_of(result(10, anomalous=True, feature_errors=bad), STRIDE)


def test_consecutive_anomalous_windows_form_the_evaluations_segments() -> None:
    flags = [False, True, True, False, True, False, False, True, True, True]
    book = InMemoryEvents()
    for span in spans_for(flags):
        book.apply(span)
    n_records = 30 + STRIDE * (len(flags) - 1)
    starts = window_starts(n_records, 30, STRIDE)
    record_flags = record_flags_from_windows(np.array(flags), starts, n_records, 30, STRIDE)
    expected = [(0, first, last) for first, last in segments(record_flags)]  # inclusive
    assert ranges(book) == expected == [(0, 30, 49), (0, 60, 69), (0, 90, 119)]
    assert book.opened == [1, 2, 3]


@pytest.mark.parametrize("gap", [10, 20, 35, 100])
@pytest.mark.parametrize("seed", range(4))
def test_events_under_a_gap_are_the_evaluations_bridged_segments(gap: int, seed: int) -> None:
    rng = random.Random(seed)
    flags = [rng.random() < 0.3 for _ in range(60)]
    spans = spans_for(flags)
    rng.shuffle(spans)  # workers finish windows out of order
    book = InMemoryEvents(gap=gap)
    for span in spans:
        book.apply(span)
    n_records = 30 + STRIDE * (len(flags) - 1)
    starts = window_starts(n_records, 30, STRIDE)
    record_flags = record_flags_from_windows(np.array(flags), starts, n_records, 30, STRIDE)
    expected = [(0, first, last) for first, last in segments(bridge_gaps(record_flags, gap))]
    assert ranges(book) == expected


def test_a_gap_joins_nearby_windows_into_one_event_and_keeps_far_ones_apart() -> None:
    # anomalous windows 3, 5 (records 50..59 and 70..79, 10 normal records apart) and 9
    flags = [False, False, False, True, False, True, False, False, False, True]
    book = InMemoryEvents(gap=10)
    for span in spans_for(flags):
        book.apply(span)
    assert ranges(book) == [(0, 50, 79), (0, 110, 119)]
    assert book.opened == [1, 2]


def test_an_event_keeps_its_first_start_and_grows_its_end_and_peak() -> None:
    book = InMemoryEvents()
    scores_low = [2.0] * 30
    scores_high = [2.0] * 25 + [9.0] * 5
    for k, scores in ((3, scores_low), (4, scores_high), (5, scores_low)):
        span = span_of(result(k * STRIDE, anomalous=True, scores=scores), STRIDE)
        assert span is not None
        book.apply(span)
    (event,) = book.events.values()
    assert (event.start_record_index, event.end_record_index) == (50, 79)
    assert (event.start_time, event.end_time) == (record_time(50), record_time(79))
    assert event.peak_score == 9.0
    assert event.event_id == 1 and book.opened == [1]


def test_redelivered_windows_change_nothing() -> None:
    flags = [True, True, False, True, True, True]
    spans = spans_for(flags)
    book = InMemoryEvents()
    for span in spans:
        book.apply(span)
    before = dict(book.events)
    for span in spans + spans[::-1]:
        assert book.apply(span) is None
    assert book.events == before and book.opened == [1, 2]


@pytest.mark.parametrize("seed", range(5))
def test_arrival_order_does_not_change_the_events(seed: int) -> None:
    flags = [True, True, False, True, True, True, True, False, False, True]
    errors = [[float((k * 7 + j) % 11) for j in range(NUM_FEATURES)] for k in range(len(flags))]
    spans = [
        span
        for k, flag in enumerate(flags)
        if (span := span_of(result(k * STRIDE, anomalous=flag, feature_errors=errors[k]), STRIDE))
    ]
    in_order = InMemoryEvents()
    for span in spans:
        in_order.apply(span)
    shuffled = InMemoryEvents()
    order = spans[:]
    random.Random(seed).shuffle(order)
    for span in order:
        shuffled.apply(span)
    assert ranges(shuffled) == ranges(in_order) == [(0, 0, 39), (0, 50, 89), (0, 110, 119)]
    for a, b in zip(
        in_order.stream_events("sat1", "EPS"), shuffled.stream_events("sat1", "EPS"), strict=True
    ):
        assert a.peak_score == b.peak_score
        assert a.start_time == b.start_time and a.end_time == b.end_time
        assert a.feature_errors == pytest.approx(b.feature_errors)


def test_a_late_window_bridging_two_events_merges_them_into_the_earlier() -> None:
    book = InMemoryEvents()
    a, b, c = spans_for([False, True, True, True])  # windows at 10, 20, 30
    book.apply(a)
    book.apply(c)
    assert ranges(book) == [(0, 30, 39), (0, 50, 59)]
    change = book.apply(b)
    assert change is not None and change.absorbed == (2,) and change.event.event_id == 1
    assert ranges(book) == [(0, 30, 59)]
    assert list(book.events) == [1]


def test_a_late_window_before_an_event_moves_its_start_back() -> None:
    book = InMemoryEvents()
    first, second = spans_for([True, True])
    book.apply(second)
    change = book.apply(first)
    assert change is not None and change.event.event_id == 1 and change.absorbed == ()
    (event,) = book.events.values()
    assert (event.start_record_index, event.end_record_index) == (0, 39)
    assert event.start_time == record_time(0)


def test_a_new_loop_starts_a_new_event() -> None:
    book = InMemoryEvents()
    for span in spans_for([False, False, True, True], loop=4):  # records 40..59 of loop 4
        book.apply(span)
    for span in spans_for([True], loop=5):  # records 0..29 of loop 5
        book.apply(span)
    assert ranges(book) == [(4, 40, 59), (5, 0, 29)]


def test_streams_are_kept_apart() -> None:
    book = InMemoryEvents()
    book.apply(event_span := span_of(result(10, anomalous=True), STRIDE))  # type: ignore[arg-type]
    other = span_of(result(20, anomalous=True, subsystem=Subsystem.ACS), STRIDE)
    assert other is not None and event_span is not None
    book.apply(other)
    assert len(book.events) == 2
    assert plan(other, list(book.events.values())) is None


def test_feature_errors_are_weighted_by_records_and_ranked() -> None:
    first_errors = [0.0] * NUM_FEATURES
    first_errors[3] = 3.0
    later_errors = [0.0] * NUM_FEATURES
    later_errors[7] = 6.0
    book = InMemoryEvents()
    for start, errors in ((0, first_errors), (10, later_errors)):
        span = span_of(result(start, anomalous=True, feature_errors=errors), STRIDE)
        assert span is not None
        book.apply(span)
    (event,) = book.events.values()
    assert event.feature_errors is not None
    # The first window judges 30 records, the second 10.
    assert event.feature_errors[3] == pytest.approx(3.0 * 30 / 40)
    assert event.feature_errors[7] == pytest.approx(6.0 * 10 / 40)
    top = top_features(event.feature_errors, k=2)
    assert [item["feature_index"] for item in top] == [3, 7]
    assert top[0]["share"] == pytest.approx(2.25 / 3.75)
    assert top_features(None) == []


def test_windows_without_feature_errors_leave_them_to_the_ones_that_have_them() -> None:
    errors = [float(j) for j in range(NUM_FEATURES)]
    book = InMemoryEvents()
    for start, fe in ((10, None), (20, errors)):
        span = span_of(result(start, anomalous=True, feature_errors=fe), STRIDE)
        assert span is not None
        book.apply(span)
    (event,) = book.events.values()
    assert event.feature_errors == pytest.approx(errors)


def test_stored_feature_errors_round_trip_and_list_the_largest_first() -> None:
    errors = tuple(float((j * 13) % 25) / 10 for j in range(NUM_FEATURES))
    stored = feature_errors_json(errors)
    assert len(stored) == NUM_FEATURES
    assert [item["mse"] for item in stored] == sorted(errors, reverse=True)
    assert feature_errors_from_json(stored) == errors
    assert feature_errors_from_json([]) is None
    assert feature_errors_json(None) == []


def test_plan_ignores_events_of_other_loops_and_far_away() -> None:
    (span,) = spans_for([False, False, False, True])  # records 50..59
    far = replace(event_of(span), start_record_index=100, end_record_index=109, event_id=9)
    other_loop = replace(event_of(span), loop=1, event_id=8)
    change = plan(span, [far, other_loop])
    assert change is not None and change.creates and change.absorbed == ()
    adjacent_after = replace(far, start_record_index=60, end_record_index=69)
    change = plan(span, [adjacent_after])
    assert change is not None and change.event.event_id == 9
    assert (change.event.start_record_index, change.event.end_record_index) == (50, 69)


def test_every_order_of_three_touching_windows_ends_in_one_event() -> None:
    spans = spans_for([True, True, True])
    for order in itertools.permutations(spans):
        book = InMemoryEvents()
        for span in order:
            book.apply(span)
        assert ranges(book) == [(0, 0, 49)]


def test_an_event_records_the_union_of_its_windows_detectors() -> None:
    book = InMemoryEvents(gap=40)  # records 30..59 lie between the first two windows
    by_model = span_of(result(0, anomalous=True, detected_by=["model"]), STRIDE)
    by_hold = span_of(result(40, anomalous=True, detected_by=["hold"]), STRIDE)
    silent = span_of(result(50, anomalous=True), STRIDE)  # a producer that does not say
    assert by_model is not None and by_hold is not None and silent is not None
    assert by_hold.detected_by == {"hold"} and silent.detected_by == frozenset()
    for span in (by_model, by_hold, silent):
        book.apply(span)
    (event,) = book.stream_events("sat1", Subsystem.EPS.value)
    assert event.detected_by == {"model", "hold"}
    assert detectors_list(event.detected_by) == ["model", "hold"]
    assert detectors_list({"hold", "zeta", "context"}) == ["context", "hold", "zeta"]


def test_a_redelivered_window_changes_an_event_only_by_a_new_detector() -> None:
    span = span_of(result(10, anomalous=True, detected_by=["model"]), STRIDE)
    assert span is not None
    stored = replace(event_of(span), event_id=7)
    assert plan(span, [stored]) is None
    # the same records, judged anomalous by the context too (another worker's settings)
    wider = replace(span, detected_by=frozenset({"model", "context"}))
    change = plan(wider, [stored])
    assert change is not None and not change.creates
    assert change.event.event_id == 7 and change.event.detected_by == {"model", "context"}
    assert (change.event.start_record_index, change.event.end_record_index) == (
        stored.start_record_index,
        stored.end_record_index,
    )
