"""Evaluation metrics on hand-made cases (EVALUATION.md's protocol)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from smap_bench.evaluation import (
    METRICS,
    ChannelEvaluation,
    EventCounts,
    as_ranges,
    bridge_gaps,
    detection_latencies,
    evaluate_channel,
    event_counts,
    false_alarms_per_10k,
    get_metric,
    mean_std_over_seeds,
    point_adjust,
    point_adjusted_counts,
    point_adjusted_f1,
    pool,
    random_flag_baseline,
    segments,
)
from smap_bench.windows import record_flags_from_windows, window_starts


@dataclass(frozen=True)
class Labeled:
    """Stand-in for the data module's LabeledRange (duck type: .start, .end)."""

    start: int
    end: int
    kind: str = "point"


def flags_of(n: int, *runs: tuple[int, int]) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    for start, end in runs:
        out[start : end + 1] = True
    return out


# --------------------------------------------------------------------------------------
# segments and ranges
# --------------------------------------------------------------------------------------


def test_segments_maximal_runs_inclusive() -> None:
    flags = np.array([1, 1, 0, 0, 1, 0, 1, 1, 1], dtype=bool)
    assert segments(flags) == [(0, 1), (4, 4), (6, 8)]


def test_bridge_gaps_joins_runs_parted_by_at_most_the_gap() -> None:
    flags = flags_of(40, (2, 4), (8, 9), (20, 21), (33, 33))
    # gaps between runs: 3 (5..7), 10 (10..19), 11 (22..32)
    assert segments(bridge_gaps(flags, 0)) == [(2, 4), (8, 9), (20, 21), (33, 33)]
    assert segments(bridge_gaps(flags, 3)) == [(2, 9), (20, 21), (33, 33)]
    assert segments(bridge_gaps(flags, 10)) == [(2, 21), (33, 33)]
    assert segments(bridge_gaps(flags, 11)) == [(2, 33)]
    assert segments(bridge_gaps(flags, 1000)) == [(2, 33)]  # never before or after a detection


def test_bridge_gaps_leaves_edges_and_empty_flags_alone() -> None:
    assert not bridge_gaps(np.zeros(7, dtype=bool), 5).any()
    edge = flags_of(10, (0, 0), (9, 9))
    assert bridge_gaps(edge, 8).all() and segments(bridge_gaps(edge, 7)) == [(0, 0), (9, 9)]
    original = flags_of(10, (1, 1), (3, 3))
    bridge_gaps(original, 5)
    assert segments(original) == [(1, 1), (3, 3)]  # the input is not changed
    with pytest.raises(ValueError, match="max_gap"):
        bridge_gaps(original, -1)


def test_evaluate_channel_applies_the_event_rule() -> None:
    n = 300
    labeled = [Labeled(100, 150)]
    # two fragments of one detection around the range and one far false alarm
    flags = flags_of(n, (60, 69), (130, 139), (250, 259))
    plain = evaluate_channel("X-1", flags, labeled, n)
    assert plain.events == EventCounts(tp=1, fp=2, fn=0)
    joined = evaluate_channel("X-1", flags, labeled, n, event_gap=60)
    # 60..139 is one event (60 normal records between the fragments); 250.. is 110 away
    assert joined.events == EventCounts(tp=1, fp=1, fn=0)
    assert joined.latencies == plain.latencies == (30,)  # the first alarm inside the range
    assert joined.event_gap == 60 and plain.event_gap == 0
    with pytest.raises(ValueError, match="event gap"):
        pool([plain, evaluate_channel("X-2", flags, labeled, n, event_gap=60)])
    assert pool([joined])["event_gap"] == 60


def test_segments_empty_and_full() -> None:
    assert segments(np.zeros(5, dtype=bool)) == []
    assert segments(np.zeros(0, dtype=bool)) == []
    assert segments(np.ones(5, dtype=bool)) == [(0, 4)]


def test_adjacent_flags_form_one_segment() -> None:
    # records 2..3 and 4..5 flagged by two adjacent windows: one segment, one FP
    flags = flags_of(10, (2, 3), (4, 5))
    assert segments(flags) == [(2, 5)]
    assert event_counts(segments(flags), []) == EventCounts(tp=0, fp=1, fn=0)


def test_as_ranges_accepts_objects_and_tuples_and_validates() -> None:
    assert as_ranges([Labeled(5, 7), (1, 2), [3, 3]]) == [(1, 2), (3, 3), (5, 7)]
    with pytest.raises(ValueError, match="not a valid"):
        as_ranges([(5, 4)])
    with pytest.raises(ValueError, match="ends past"):
        as_ranges([(5, 10)], n_records=10)


# --------------------------------------------------------------------------------------
# event-wise counts
# --------------------------------------------------------------------------------------


def test_two_predictions_in_one_range_are_one_tp() -> None:
    counts = event_counts([(10, 12), (15, 16)], [Labeled(8, 20)])
    assert counts == EventCounts(tp=1, fp=0, fn=0)
    assert counts.f1 == 1.0


def test_one_prediction_spanning_two_ranges_is_two_tp() -> None:
    assert event_counts([(5, 25)], [(0, 10), (20, 30)]) == EventCounts(tp=2, fp=0, fn=0)


def test_mixed_tp_fp_fn() -> None:
    predicted = [(0, 2), (10, 11), (40, 45), (90, 90)]
    labeled = [(11, 20), (50, 60), (88, 95)]
    counts = event_counts(predicted, labeled)
    assert counts == EventCounts(tp=2, fp=2, fn=1)
    assert counts.precision == pytest.approx(2 / 4)
    assert counts.recall == pytest.approx(2 / 3)
    assert counts.f1 == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))


def test_overlap_is_inclusive_at_both_ends() -> None:
    assert event_counts([(0, 5)], [(5, 9)]).tp == 1
    assert event_counts([(9, 12)], [(5, 9)]).tp == 1
    assert event_counts([(0, 4)], [(5, 9)]) == EventCounts(tp=0, fp=1, fn=1)


def test_empty_predictions_and_empty_labels() -> None:
    nothing_flagged = event_counts([], [(3, 4), (8, 9)])
    assert nothing_flagged == EventCounts(tp=0, fp=0, fn=2)
    assert (nothing_flagged.precision, nothing_flagged.recall, nothing_flagged.f1) == (0, 0, 0)
    nothing_labeled = event_counts([(1, 1)], [])
    assert nothing_labeled == EventCounts(tp=0, fp=1, fn=0)
    assert nothing_labeled.f1 == 0.0
    nothing_at_all = event_counts([], [])
    assert nothing_at_all == EventCounts()
    assert (nothing_at_all.precision, nothing_at_all.recall, nothing_at_all.f1) == (1, 1, 1)


def test_range_at_the_very_end_of_the_split() -> None:
    n = 55
    labeled = [Labeled(50, 54)]
    flags = flags_of(n, (54, 54))
    ev = evaluate_channel("X-1", flags, labeled, n)
    assert ev.events == EventCounts(tp=1, fp=0, fn=0)
    assert ev.latencies == (4,)
    assert point_adjust(flags, labeled)[50:].all()
    # windows of 30 every 10 over 55 records end at record 49; a range in the 5-record
    # tail no window judges is a miss, not an error
    starts = window_starts(n, 30, 10)
    window_flags = np.ones(starts.size, dtype=bool)
    record = record_flags_from_windows(window_flags, starts, n, 30, 10)
    assert evaluate_channel("X-1", record, labeled, n).events == EventCounts(tp=0, fp=1, fn=1)


def test_counts_add_up() -> None:
    assert EventCounts(1, 2, 3) + EventCounts(4, 5, 6) == EventCounts(5, 7, 9)


# --------------------------------------------------------------------------------------
# point adjust and the random baseline
# --------------------------------------------------------------------------------------


def test_point_adjusted_counts_hand_made() -> None:
    # 20 records, labels 5..9 and 15..17; flags at 7 (inside), 12 (outside)
    flags = flags_of(20, (7, 7), (12, 12))
    counts = point_adjusted_counts(flags, [(5, 9), (15, 17)])
    assert counts == EventCounts(tp=5, fp=1, fn=3)
    assert point_adjusted_f1(flags, [(5, 9), (15, 17)]) == pytest.approx(10 / (10 + 1 + 3))


def test_point_adjust_does_not_change_the_input() -> None:
    flags = flags_of(10, (3, 3))
    adjusted = point_adjust(flags, [(2, 6)])
    assert flags.sum() == 1 and adjusted[2:7].all() and adjusted.sum() == 5


def test_random_baseline_is_high_on_long_ranges_and_reproducible() -> None:
    # one long range covering 40% of records: a few random flags land inside it, so point
    # adjust credits nearly all labeled records (the reason PA F1 alone says nothing)
    n = 10_000
    labeled = [(5000, 8999)]
    score = random_flag_baseline(labeled, n, rate=0.005, seeds=(0, 1, 2))
    assert score > 0.95
    assert score == random_flag_baseline(labeled, n, rate=0.005, seeds=(0, 1, 2))
    assert random_flag_baseline(labeled, n, rate=0.0, seeds=(0,)) == 0.0


# --------------------------------------------------------------------------------------
# false alarms and latency
# --------------------------------------------------------------------------------------


def test_false_alarms_per_10k() -> None:
    assert false_alarms_per_10k(3, 20_000) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="positive"):
        false_alarms_per_10k(1, 0)


def test_detection_latency_hand_made() -> None:
    n = 100
    labeled = [(10, 20), (40, 50), (70, 80)]
    # range 1: first alarm at 13; range 2: alarm segment runs through its start;
    # range 3: missed
    flags = flags_of(n, (13, 14), (38, 42))
    assert detection_latencies(flags, labeled) == [3, 0]


def test_detection_latency_early_tolerance() -> None:
    labeled = [(10, 20)]
    flags = flags_of(30, (7, 7), (15, 15))  # an alarm 3 records early, then one inside
    assert detection_latencies(flags, labeled, early_tolerance=0) == [5]
    assert detection_latencies(flags, labeled, early_tolerance=2) == [5]
    assert detection_latencies(flags, labeled, early_tolerance=3) == [0]
    # an early alarm alone does not detect the range (event matching decides detection)
    assert detection_latencies(flags_of(30, (7, 7)), labeled, early_tolerance=5) == []
    with pytest.raises(ValueError, match="early_tolerance"):
        detection_latencies(flags, labeled, early_tolerance=-1)


# --------------------------------------------------------------------------------------
# per channel, pooled, over seeds
# --------------------------------------------------------------------------------------


def _two_channels(early_tolerance: int = 0) -> list[ChannelEvaluation]:
    a = evaluate_channel(
        "A-1",
        flags_of(1000, (105, 110), (500, 501)),  # TP (latency 5) + FP
        [Labeled(100, 200), Labeled(700, 720)],  # second range missed
        1000,
        early_tolerance=early_tolerance,
    )
    b = evaluate_channel(
        "B-1",
        flags_of(3000, (50, 60), (2000, 2000), (2500, 2500)),  # TP (latency 0) + 2 FP
        [(50, 80)],
        3000,
        early_tolerance=early_tolerance,
    )
    return [a, b]


def test_evaluate_channel_and_row() -> None:
    a, b = _two_channels()
    assert a.events == EventCounts(tp=1, fp=1, fn=1)
    assert b.events == EventCounts(tp=1, fp=2, fn=0)
    assert a.latencies == (5,) and b.latencies == (0,)
    row = a.to_dict()
    assert row["channel"] == "A-1"
    assert (row["tp"], row["fp"], row["fn"]) == (1, 1, 1)
    assert row["f1"] == pytest.approx(0.5)
    assert row["false_alarms_per_10k"] == pytest.approx(10.0)
    assert row["latency_median"] == 5.0


def test_evaluate_channel_checks_lengths() -> None:
    with pytest.raises(ValueError, match="A-1: 10 record flags for a split of 12"):
        evaluate_channel("A-1", np.zeros(10, dtype=bool), [], 12)
    with pytest.raises(ValueError, match="ends past"):
        evaluate_channel("A-1", np.zeros(10, dtype=bool), [(5, 10)], 10)


def test_pool_sums_counts_before_ratios() -> None:
    result = pool(_two_channels())
    # pooled TP 2, FP 3, FN 1 (not the mean of per-channel F1s)
    assert (result["event"]["tp"], result["event"]["fp"], result["event"]["fn"]) == (2, 3, 1)
    assert result["event"]["precision"] == pytest.approx(2 / 5)
    assert result["event"]["recall"] == pytest.approx(2 / 3)
    assert result["event"]["f1"] == pytest.approx(4 / (4 + 3 + 1))
    assert result["false_alarms_per_10k"] == pytest.approx(3 / 4000 * 1e4)
    assert result["detection_latency"]["median"] == pytest.approx(2.5)
    assert result["detection_latency"]["p90"] == pytest.approx(4.5)
    assert result["detection_latency"]["early_tolerance"] == 0
    assert result["channels"] == 2 and result["records"] == 4000
    assert [row["channel"] for row in result["per_channel"]] == ["A-1", "B-1"]
    assert 0.0 <= result["random_baseline"]["point_adjusted_f1"] <= 1.0
    assert 0.0 <= result["point_adjusted"]["f1"] <= 1.0
    json.dumps(result)  # JSON-ready as it is


def test_pool_refuses_mixed_settings_and_duplicates() -> None:
    a, _ = _two_channels(early_tolerance=0)
    _, b = _two_channels(early_tolerance=3)
    with pytest.raises(ValueError, match="same settings"):
        pool([a, b])
    with pytest.raises(ValueError, match="more than once"):
        pool([a, a])
    with pytest.raises(ValueError, match="at least one"):
        pool([])


def test_pool_with_nothing_detected_has_no_latency() -> None:
    ev = evaluate_channel("A-1", np.zeros(100, dtype=bool), [(10, 20)], 100)
    result = pool([ev])
    assert result["detection_latency"]["median"] is None
    assert result["event"]["f1"] == 0.0


def test_mean_std_over_seeds() -> None:
    runs = [
        {"event": {"precision": 0.8, "recall": 0.6, "f1": 0.7}, "false_alarms_per_10k": 1.0,
         "detection_latency": {"median": 4.0, "p90": None}},
        {"event": {"precision": 0.9, "recall": 0.8, "f1": 0.9}, "false_alarms_per_10k": 3.0,
         "detection_latency": {"median": 6.0, "p90": None}},
    ]  # fmt: skip
    summary = mean_std_over_seeds(runs)
    assert summary["seeds"] == 2
    assert summary["event"]["f1"]["mean"] == pytest.approx(0.8)
    assert summary["event"]["f1"]["std"] == pytest.approx(math.sqrt(0.02))
    assert summary["false_alarms_per_10k"]["mean"] == pytest.approx(2.0)
    assert summary["detection_latency"]["median"]["std"] == pytest.approx(math.sqrt(2.0))
    assert summary["detection_latency"]["p90"] == {"mean": None, "std": None, "n": 0}
    single = mean_std_over_seeds(runs[:1])
    assert single["event"]["f1"] == {"mean": 0.7, "std": None, "n": 1}


def test_mean_std_over_pooled_results() -> None:
    pooled = pool(_two_channels())
    summary = mean_std_over_seeds([pooled, pooled, pooled])
    assert summary["event"]["f1"]["mean"] == pytest.approx(pooled["event"]["f1"])
    assert summary["event"]["f1"]["std"] == pytest.approx(0.0)


# --------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------


def test_registry_metrics_agree_with_the_functions() -> None:
    flags = flags_of(100, (13, 14), (60, 61))
    labeled = [(10, 20), (40, 50)]
    counts = event_counts(segments(flags), labeled)
    assert get_metric("event_f1")(flags, labeled) == pytest.approx(counts.f1)
    assert get_metric("event_precision")(flags, labeled) == pytest.approx(0.5)
    assert get_metric("event_recall")(flags, labeled) == pytest.approx(0.5)
    assert get_metric("false_alarms_per_10k")(flags, labeled) == pytest.approx(100.0)
    assert get_metric("detection_latency_median")(flags, labeled) == 3.0
    assert get_metric("point_adjusted_f1")(flags, labeled) == point_adjusted_f1(flags, labeled)
    assert set(METRICS) >= {"event_f1", "point_adjusted_f1"}
    with pytest.raises(KeyError, match="known: "):
        get_metric("accuracy")
