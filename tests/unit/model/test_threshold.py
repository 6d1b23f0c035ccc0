from __future__ import annotations

import numpy as np
import pytest

from smap_bench.model.threshold import (
    ThresholdConfig,
    fit_threshold,
    gpd_fit_moments,
    pot_threshold,
    window_is_anomalous,
    window_statistic,
)


def test_window_statistic_is_the_mean_of_each_window() -> None:
    scores = np.array([[0.0, 1.0, 2.0], [4.0, 4.0, 4.0]])
    np.testing.assert_allclose(window_statistic(scores), [1.0, 4.0])
    np.testing.assert_array_equal(window_is_anomalous(scores, 1.5), [False, True])


def test_window_statistic_refuses_a_flat_array() -> None:
    with pytest.raises(ValueError, match="window"):
        window_statistic(np.zeros(5))


def test_moments_recover_an_exponential_tail() -> None:
    # an exponential is the GPD with gamma 0 and sigma equal to its mean
    sample = np.random.default_rng(0).exponential(2.0, 200_000)
    gamma, sigma = gpd_fit_moments(sample)
    assert abs(gamma) < 0.02
    assert sigma == pytest.approx(2.0, rel=0.02)


def test_moments_recover_a_heavy_tail() -> None:
    # GPD(gamma=0.2, sigma=1) by inversion: x = sigma/gamma ((1-u)^-gamma - 1)
    u = np.random.default_rng(1).uniform(size=400_000)
    sample = ((1 - u) ** -0.2 - 1) / 0.2
    gamma, sigma = gpd_fit_moments(sample)
    assert gamma == pytest.approx(0.2, abs=0.03)
    assert sigma == pytest.approx(1.0, rel=0.05)


def test_pot_is_above_the_initial_quantile_and_grows_as_q_shrinks() -> None:
    scores = np.random.default_rng(2).exponential(1.0, 5_000)
    loose, details = pot_threshold(scores, 0.98, 1e-2)
    strict, _ = pot_threshold(scores, 0.98, 1e-4)
    assert details["initial"] == pytest.approx(np.quantile(scores, 0.98))
    assert details["initial"] < loose < strict
    # for an exponential the 1e-4 exceedance point is ln(1e4) ≈ 9.2
    assert strict == pytest.approx(np.log(1e4), rel=0.15)


@pytest.mark.parametrize("level, q", [(0.98, 0.05), (1.0, 1e-4), (0.98, 0.0)])
def test_pot_refuses_impossible_levels(level: float, q: float) -> None:
    with pytest.raises(ValueError, match="level"):
        pot_threshold(np.arange(100.0), level, q)


def test_pot_refuses_non_finite_scores() -> None:
    with pytest.raises(ValueError, match="finite"):
        pot_threshold(np.array([1.0, np.nan]), 0.9, 1e-3)


def test_floor_keeps_every_validation_window_below_the_threshold() -> None:
    rng = np.random.default_rng(3)
    fit = rng.exponential(1.0, 2_000)
    validation = np.r_[rng.exponential(1.0, 200), 50.0]  # one unseen-but-normal outlier
    threshold = fit_threshold(fit, validation, ThresholdConfig(floor_factor=1.1))
    assert threshold.value == pytest.approx(55.0)
    assert threshold.parameters["binding"] == "floor"
    assert threshold.parameters["pot"] < threshold.value


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        fit_threshold(np.ones(10), np.ones(10), ThresholdConfig(method="percentile"))
