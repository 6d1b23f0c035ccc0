"""The context detector's pure functions (smap_bench.model.context) on hand-made series."""

from __future__ import annotations

import numpy as np
import pytest

from smap_bench.model.context import (
    ContextConfig,
    context_distances,
    contexts_ending_at,
    fit_context_detector,
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
    [({"length": 1}, "at least 2"), ({"factor": 0.0}, "factor"), ({"min_distance": -1}, "factor")],
)
def test_bad_configs_are_refused(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ContextConfig(**kwargs)  # type: ignore[arg-type]
