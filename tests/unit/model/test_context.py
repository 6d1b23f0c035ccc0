"""The context detector's pure functions (smap_bench.model.context) on hand-made series."""

from __future__ import annotations

import numpy as np
import pytest

from smap_bench.model.context import (
    ContextConfig,
    context_distances,
    context_moments,
    contexts_ending_at,
    fit_context_detector,
    held_out_context_flags,
    hold_counts,
    level_bounds,
    longest_holds,
)


def test_contexts_ending_at_takes_the_records_up_to_each_end() -> None:
    values = np.arange(10.0)
    rows = contexts_ending_at(values, np.array([2, 9]), 3)
    np.testing.assert_array_equal(rows, [[0, 1, 2], [7, 8, 9]])


@pytest.mark.parametrize("end", [1, 10])
def test_contexts_ending_at_refuses_an_end_without_enough_history(end: int) -> None:
    with pytest.raises(ValueError, match="ends must lie"):
        contexts_ending_at(np.arange(10.0), np.array([end]), 3)


def test_nan_in_the_series_is_refused() -> None:
    values = np.arange(10.0)
    values[4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        contexts_ending_at(values, np.array([5]), 3)


def test_distance_is_the_rms_difference_to_the_nearest_reference() -> None:
    references = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    queries = np.array([[0.9, 1.1, 0.9, 1.1], [0.0, 0.0, 0.0, 2.0]])
    distances = context_distances(queries, references)
    np.testing.assert_allclose(distances, [0.1, 1.0])


def test_exclusion_zone_keeps_a_context_from_matching_itself() -> None:
    references = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    ends = np.array([1, 2, 20])
    # without the zone, the first row matches itself at distance 0
    assert context_distances(references[:1], references)[0] == 0.0
    # with a zone of 2 records, ends 1 and 2 exclude each other: its nearest is [3, 4]
    excluded = context_distances(references, references, ends, ends, exclusion=2)
    np.testing.assert_allclose(excluded[:2], [np.sqrt(12.5), np.sqrt(12.5)])


def test_a_query_with_every_reference_excluded_gets_nan() -> None:
    rows = np.zeros((2, 3))
    ends = np.array([2, 3])
    distances = context_distances(rows, rows, ends, ends, exclusion=5)
    assert np.isnan(distances).all()


def test_exclusion_needs_the_ends() -> None:
    with pytest.raises(ValueError, match="needs query_ends"):
        context_distances(np.zeros((1, 3)), np.zeros((1, 3)), exclusion=2)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="must be"):
        context_distances(np.zeros((1, 3)), np.zeros((1, 4)))


def _periodic(n: int, period: int = 20) -> np.ndarray:
    return 0.5 + 0.4 * np.sin(2 * np.pi * np.arange(n) / period)


def test_a_stretch_like_training_is_not_flagged_and_a_new_one_is() -> None:
    config = ContextConfig(length=40, factor=2.0, min_distance=0.05)
    detector = fit_context_detector(_periodic(400), offset=0.0, scale=1.0, config=config)
    # a periodic train split repeats itself: its most unusual stretch is near 0
    assert detector.train_distance_max < 1e-9
    assert detector.threshold == pytest.approx(0.05)
    test = _periodic(300)
    test[200:] = 0.5  # the oscillation stops: each 30 records look plausible, the stretch not
    starts = np.arange(0, len(test) - 30 + 1, 10)
    flags = detector.window_flags(test, starts, 30)
    ends = starts + 29
    assert not flags[ends < 200].any()
    assert flags[ends >= 230].all()


def test_windows_without_a_full_context_are_not_judged() -> None:
    config = ContextConfig(length=50, factor=2.0, min_distance=0.05)
    detector = fit_context_detector(_periodic(400), offset=0.0, scale=1.0, config=config)
    test = np.full(100, 5.0)  # unlike anything in training from the first record
    starts = np.arange(0, 71, 10)
    flags = detector.window_flags(test, starts, 30)
    ends = starts + 29
    np.testing.assert_array_equal(flags, ends >= 49)


def test_the_threshold_scales_with_the_train_splits_most_unusual_stretch() -> None:
    train = _periodic(600)
    train[300:340] += 0.3  # one unusual stretch in training
    config = ContextConfig(length=40, factor=2.0, min_distance=0.0)
    detector = fit_context_detector(train, offset=0.0, scale=1.0, config=config)
    assert detector.train_distance_max > 0.05
    assert detector.threshold == pytest.approx(2.0 * detector.train_distance_max)
    # the normalisation is the model's: a scale of 2 halves every distance
    halved = fit_context_detector(train, offset=0.0, scale=2.0, config=config)
    assert halved.train_distance_max == pytest.approx(detector.train_distance_max / 2)


@pytest.mark.parametrize("n_train", [30, 60, 98])
def test_a_train_split_without_two_contexts_apart_never_flags(n_train: int) -> None:
    # 30: shorter than one context; 60 and 98: contexts, but none 50 records apart
    config = ContextConfig(length=50)
    detector = fit_context_detector(np.zeros(n_train), offset=0.0, scale=1.0, config=config)
    assert detector.threshold == np.inf and np.isnan(detector.train_distance_max)
    flags = detector.window_flags(np.full(200, 9.0), np.arange(0, 171, 10), 30)
    assert not flags.any()


def test_the_served_distance_equals_the_matrix_form() -> None:
    # the worker and the offline evaluation use ContextDetector.nearest (one sliding dot
    # product per context); the threshold's self-join uses context_distances
    rng = np.random.default_rng(4)
    train = np.cumsum(rng.normal(0, 0.05, 700))
    detector = fit_context_detector(train, offset=-1.0, scale=2.0, config=ContextConfig(60))
    rows = (np.cumsum(rng.normal(0, 0.05, (9, 60)), axis=1) - detector.offset) / detector.scale
    references = contexts_ending_at(detector.series, np.arange(59, 700), 60)
    np.testing.assert_allclose(
        detector.nearest(rows), context_distances(rows, references), rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"length": 1}, "at least 2"),
        ({"factor": 0.0}, "factor"),
        ({"min_distance": -1}, "factor"),
        ({"hold_factor": -1.0}, "hold_factor"),
        ({"min_hold": 0}, "min_hold"),
    ],
)
def test_bad_configs_are_refused(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ContextConfig(**kwargs)  # type: ignore[arg-type]


def test_hold_counts_count_the_records_that_kept_the_value() -> None:
    values = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 1.0])
    np.testing.assert_array_equal(hold_counts(values), [1, 2, 3, 1, 2, 1, 1])
    assert hold_counts(np.zeros(0)).size == 0


def test_a_window_s_hold_is_counted_inside_the_context_over_the_window_s_records() -> None:
    rows = np.array(
        [
            [5.0, 5.0, 5.0, 5.0, 1.0, 2.0],  # the hold of 4 ended before the last 2 records
            [5.0, 5.0, 5.0, 5.0, 5.0, 5.0],  # held over the whole context: at most its length
            [1.0, 2.0, 3.0, 4.0, 7.0, 7.0],
        ]
    )
    np.testing.assert_array_equal(longest_holds(rows, window=2), [1, 6, 2])
    np.testing.assert_array_equal(longest_holds(rows, window=3), [4, 6, 2])


def test_values_that_differ_below_float32_precision_count_as_held() -> None:
    # the live scheduler buffers float32: the offline count compares the same numbers
    values = np.array([0.1, 0.1 + 1e-12, 0.2])
    np.testing.assert_array_equal(hold_counts(values), [1, 2, 1])


def _with_holds(n: int, holds: dict[int, int]) -> np.ndarray:
    """A periodic series whose value stops at each start for the given number of records."""
    values = _periodic(n, period=17)
    for start, length in holds.items():
        values[start : start + length] = values[start]
    return values


def test_a_window_holding_longer_than_training_ever_did_is_flagged() -> None:
    # training holds 20 records once: threshold 2 x 20 = 40 (above the minimum of 30);
    # the distance's threshold is set so high that only the hold can flag
    config = ContextConfig(length=80, factor=1e6, min_distance=10.0, hold_factor=2.0, min_hold=30)
    detector = fit_context_detector(_with_holds(800, {300: 20}), 0.0, 1.0, config)
    assert detector.train_hold_max == 20 and detector.hold_threshold == 40.0
    test = _with_holds(600, {150: 35, 400: 60})
    starts = np.arange(0, len(test) - 30 + 1, 10)
    flags = detector.window_flags(test, starts, 30)
    ends = starts + 29
    # the 35-record hold stays under 40; the 60-record one passes 40 at record 440 and is
    # seen by every window holding a record from there to its end (record 459)
    np.testing.assert_array_equal(flags, (ends >= 440) & (starts <= 459))


def test_the_hold_threshold_has_a_minimum_and_can_be_switched_off() -> None:
    train = _with_holds(800, {300: 5})
    assert fit_context_detector(train, 0.0, 1.0, ContextConfig(80)).hold_threshold == 30.0
    off = fit_context_detector(
        train, 0.0, 1.0, ContextConfig(80, factor=1e6, min_distance=10.0, hold_factor=0.0)
    )
    assert off.hold_threshold == np.inf
    test = _with_holds(400, {100: 90})
    assert not off.window_flags(test, np.arange(0, 371, 10), 30).any()


def test_a_channel_that_holds_longer_than_a_context_in_training_is_never_flagged_by_it() -> None:
    # a value held 60 records in training: 2 x 60 = 120 is beyond what a context of 80 holds
    config = ContextConfig(length=80, factor=1e6, min_distance=10.0)
    detector = fit_context_detector(_with_holds(800, {300: 60}), 0.0, 1.0, config)
    test = np.full(500, 0.3)
    assert not detector.window_flags(test, np.arange(0, 471, 10), 30).any()


def test_held_out_holds_are_judged_against_the_train_records_outside_the_stretch() -> None:
    # the only long hold of the train split lies inside the held-out stretch: fitted on the
    # records around it, the threshold is the minimum and the stretch's own hold is flagged
    config = ContextConfig(length=80, factor=1e6, min_distance=10.0, hold_factor=2.0, min_hold=30)
    train = _with_holds(900, {650: 50})
    stretch = slice(600, 800)
    starts = np.arange(0, 200 - 30 + 1, 10)
    clean, copy = held_out_context_flags(
        train, 0.0, 1.0, stretch, [train[stretch], _periodic(200, 17)], starts, 30, config
    )
    assert clean.any()
    assert not copy.any()
    # fitted on the whole split, the same hold is what training knows: never flagged
    whole = fit_context_detector(train, 0.0, 1.0, config)
    assert whole.hold_threshold == 100.0
    # a long hold after the stretch counts for the threshold: 2 x 50 = 100, so the same
    # stretch with the hold of 50 is no longer flagged
    after = _with_holds(900, {650: 50, 820: 50})
    (flags,) = held_out_context_flags(
        after, 0.0, 1.0, stretch, [after[stretch]], starts, 30, config
    )
    assert not flags.any()


# --- the level check (a harness option, not served) ----------------------------------


def test_context_moments_are_each_rows_mean_and_population_spread() -> None:
    level, spread = context_moments(np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 0.0, 2.0]]))
    np.testing.assert_allclose(level, [1.0, 1.0])
    np.testing.assert_allclose(spread, [0.0, 1.0])
    with pytest.raises(ValueError, match="need"):
        context_moments(np.zeros(4))


def test_level_bounds_widen_the_train_range_by_the_margin_with_a_minimum_width() -> None:
    references = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 2.0]])  # levels 0, 1, 1; spreads 0, 0, 1
    bounds = level_bounds(references, ContextConfig(length=2, level_margin=0.5))
    assert bounds is not None
    assert bounds.level == pytest.approx((-0.5, 1.5))
    assert bounds.spread == pytest.approx((-0.5, 1.5))
    # a constant train split: both ranges have width 0, widened by min_distance
    flat = level_bounds(np.zeros((3, 2)), ContextConfig(length=2, level_margin=1.0))
    assert flat is not None and flat.level == pytest.approx((-0.05, 0.05))
    queries = np.array([[0.04, 0.04], [0.06, 0.06], [-0.1, 0.1]])
    np.testing.assert_array_equal(flat.flags(queries), [False, True, True])  # spread 0.1 > 0.05
    assert level_bounds(references, ContextConfig(length=2)) is None  # off by default
    with pytest.raises(ValueError, match="level_margin"):
        ContextConfig(level_margin=-0.1)


def test_the_level_check_flags_a_damped_stretch_the_distance_misses() -> None:
    # the oscillation goes on at a tenth of its amplitude, around the same level: inside
    # the distance's threshold (a noisy train split, a large factor), but its spread is
    # below any train context's
    train = _periodic(600) + np.random.default_rng(1).normal(0, 0.02, 600)
    config = ContextConfig(length=50, factor=1e6, min_distance=0.05, hold_factor=0.0)
    test = _periodic(300)
    test[150:] = 0.5 + 0.1 * (test[150:] - 0.5)
    starts = np.arange(0, len(test) - 30 + 1, 10)
    ends = starts + 29
    plain = fit_context_detector(train, 0.0, 1.0, config)
    assert not plain.window_flags(test, starts, 30).any()
    levelled = fit_context_detector(
        train, 0.0, 1.0, ContextConfig(50, 1e6, 0.05, hold_factor=0.0, level_margin=0.25)
    )
    flags = levelled.window_flags(test, starts, 30)
    assert not flags[ends < 150].any()
    assert flags[ends >= 199].all()
    # held out, the same decisions against the train contexts clear of the stretch
    stretch = slice(300, 600)
    (held_out,) = held_out_context_flags(
        np.concatenate([train[:300], test]),
        0.0,
        1.0,
        stretch,
        [test],
        starts,
        30,
        levelled.config,
    )
    assert not held_out[ends < 150].any() and held_out[ends >= 199].all()


def test_the_level_check_judges_normalised_values_and_both_level_bounds() -> None:
    # the same series in other units (value = 2 x normalised - 1) with the model's
    # normalisation: the same flags, offline and held out
    train = _periodic(600) + np.random.default_rng(1).normal(0, 0.02, 600)
    test = _periodic(300)
    test[150:] -= 0.6  # the oscillation goes on at a level below every train stretch
    starts = np.arange(0, len(test) - 30 + 1, 10)
    ends = starts + 29
    config = ContextConfig(50, 1e6, 0.05, hold_factor=0.0, level_margin=0.25)
    plain = fit_context_detector(train, 0.0, 1.0, config)
    flags = plain.window_flags(test, starts, 30)
    assert not flags[ends < 150].any() and flags[ends >= 199].all()
    scaled = fit_context_detector(2 * train - 1, -1.0, 2.0, config)
    np.testing.assert_array_equal(scaled.window_flags(2 * test - 1, starts, 30), flags)
    (held_out,) = held_out_context_flags(
        np.concatenate([2 * train[:300] - 1, 2 * test - 1]),
        -1.0,
        2.0,
        slice(300, 600),
        [2 * test - 1],
        starts,
        30,
        config,
    )
    np.testing.assert_array_equal(held_out, flags)
    # a row below the level bound with its spread inside: flagged by the lower bound alone
    bounds = plain.level
    assert bounds is not None
    low = 0.5 + 0.4 * np.sin(2 * np.pi * np.arange(50) / 20) - 0.6
    level, spread = context_moments(low[None, :])
    assert level[0] < bounds.level[0] and bounds.spread[0] <= spread[0] <= bounds.spread[1]
    assert bounds.flags(low[None, :])[0]


def test_a_config_without_the_level_check_reads_as_before_it() -> None:
    assert "level_margin" not in ContextConfig().to_dict()
    assert ContextConfig(level_margin=1.0).to_dict()["level_margin"] == 1.0
