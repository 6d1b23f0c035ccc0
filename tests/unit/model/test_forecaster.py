"""The linear forecaster's pure pieces: rows, fit, errors, smoothing, window statistics,
and a channel's decision."""

from __future__ import annotations

import numpy as np
import pytest

from smap_bench.model.context import value_normalisation
from smap_bench.model.forecaster import (
    N_COMMANDS,
    LinearForecasterConfig,
    channel_forecaster,
    design_rows,
    fit_forecaster,
    fit_part_end,
    linear_channel_forecaster,
    smoothed,
    window_statistics,
)
from smap_bench.model.stream_rule import confirmed_flags


def records(values: np.ndarray, seed: int = 0) -> np.ndarray:
    """Raw ``(n, 25)`` records: the value, then one-hot commands."""
    rng = np.random.default_rng(seed)
    commands = np.zeros((len(values), N_COMMANDS))
    commands[np.arange(len(values)), rng.integers(0, N_COMMANDS, len(values))] = 1.0
    return np.column_stack([values, commands]).astype(np.float32)


def test_design_rows_hold_the_previous_values_the_commands_and_a_constant() -> None:
    values = np.arange(6.0)
    commands = np.arange(12.0).reshape(6, 2)
    rows = design_rows(values, commands, 3)
    np.testing.assert_array_equal(
        rows,
        [[0, 1, 2, 6, 7, 1], [1, 2, 3, 8, 9, 1], [2, 3, 4, 10, 11, 1]],
    )


def test_the_fit_recovers_an_autoregression_and_forecasts_from_the_past_only() -> None:
    rng = np.random.default_rng(1)
    values = np.zeros(3000)
    for t in range(2, len(values)):
        values[t] = 0.6 * values[t - 1] - 0.3 * values[t - 2] + 0.05 * rng.standard_normal()
    stream = records(values)
    forecaster = fit_forecaster(stream, 0.0, 1.0, lags=5, ridge=1e-6, min_rows=2.0)
    assert forecaster.coef is not None
    np.testing.assert_allclose(forecaster.coef[3:5], [-0.3, 0.6], atol=0.05)  # v[t-2], v[t-1]
    errors = forecaster.errors(stream)
    assert np.isnan(errors[:5]).all() and np.isfinite(errors[5:]).all()
    assert np.median(errors[5:]) < 0.05
    # causal: a change at record 2000 leaves every earlier error as it was
    changed = stream.copy()
    changed[2000:, 0] += 5.0
    np.testing.assert_array_equal(forecaster.errors(changed)[:2000], errors[:2000])


def test_a_fit_part_too_short_gives_a_forecaster_without_errors() -> None:
    stream = records(np.sin(np.arange(100) / 5.0))
    forecaster = fit_forecaster(stream, 0.0, 1.0, lags=20, ridge=1.0, min_rows=2.0)
    assert forecaster.coef is None  # 80 rows for 45 parameters, 90 needed
    assert np.isnan(forecaster.errors(stream)).all()


def test_smoothing_is_a_causal_ewma_from_the_first_error() -> None:
    errors = np.array([np.nan, np.nan, 1.0, 0.0, 0.0, 3.0])
    alpha = 2.0 / (3 + 1)
    expected = [np.nan, np.nan, 1.0, 1 - alpha, (1 - alpha) ** 2]
    expected.append(alpha * 3.0 + (1 - alpha) * expected[-1])
    np.testing.assert_allclose(smoothed(errors, 3), expected)
    assert smoothed(errors, 0) is errors


def test_window_statistics_average_each_window_s_newest_records() -> None:
    errors = np.array([np.nan] * 5 + [float(i) for i in range(5, 30)])
    statistics = window_statistics(errors, window=10, stride=10, block=5)
    np.testing.assert_allclose(statistics, [7.0, 17.0, 27.0])
    first = window_statistics(errors, window=10, stride=10, block=10)[0]
    assert np.isnan(first)  # records 0..4 have no error
    assert window_statistics(errors[:5], window=10, stride=10, block=5).size == 0


def _autoregressive(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.zeros(n)
    for t in range(2, n):
        values[t] = 0.6 * values[t - 1] - 0.3 * values[t - 2] + 0.05 * rng.standard_normal()
    return values


METADATA = {
    "window": 30,
    "normalisation": {"offset": [0.0], "scale": [1.0]},
    "settings": {
        "threshold": {"method": "pot", "level": 0.98, "q": 1e-4, "floor_factor": 2.0},
        "validation_fraction": 0.2,
        "train_stride": 4,
    },
}


def test_a_channel_s_decision_flags_a_jump_it_never_saw_and_not_its_own_kind_of_data() -> None:
    train = records(_autoregressive(2500, 2))
    forecaster = fit_forecaster(train[:2000], 0.0, 1.0, lags=25, ridge=1.0, min_rows=2.0)
    decided = channel_forecaster("X-1", forecaster, train, METADATA, block=10)
    assert decided.rule is not None and decided.fit_rows == 2000 - 25
    parameters = decided.threshold_parameters
    assert parameters["threshold"] == decided.rule.static > 0
    assert parameters["validation_windows"] == 500 - 30 + 1
    test_values = _autoregressive(1200, 3)
    clean = records(test_values, 4)
    jumped = clean.copy()
    jumped[900:903, 0] += 1.5  # a spike thirty times the noise
    clean_flags = decided.window_flags(clean, 30, 10)
    jumped_flags = decided.window_flags(jumped, 30, 10)
    assert not clean_flags[:85].any()
    assert jumped_flags[88:92].any()
    # the decision is the confirmed rule over the statistics from the first forecast on
    statistics = decided.window_statistics(jumped, 30, 10)
    first = int(np.flatnonzero(np.isfinite(statistics))[0])
    assert first == 1  # window 0's newest records 20..24 have no 25 lags; window 1's do
    np.testing.assert_array_equal(
        jumped_flags[first:], confirmed_flags(statistics[first:], decided.rule)
    )
    assert not jumped_flags[:first].any()
    assert decided.warm_up_end(jumped, 30, 10) == (first + 30 - 2) * 10 + 30


def test_a_channel_without_a_forecaster_never_flags() -> None:
    train = records(_autoregressive(300, 5))
    forecaster = fit_forecaster(train[:240], 0.0, 1.0, lags=250, ridge=1.0, min_rows=2.0)
    decided = channel_forecaster("X-2", forecaster, train, METADATA, block=10)
    assert decided.rule is None and decided.fit_rows == 0
    stream = records(np.ones(400), 6)
    assert not decided.window_flags(stream, 30, 10).any()
    assert decided.warm_up_end(stream, 30, 10) == 0


def test_the_smoothed_errors_of_a_split_are_computed_once() -> None:
    train = records(_autoregressive(2500, 7))
    forecaster = fit_forecaster(train[:2000], 0.0, 1.0, lags=20, ridge=1.0, min_rows=2.0)
    decided = channel_forecaster("X-3", forecaster, train, METADATA, block=10)
    split = records(_autoregressive(400, 8), 9)
    first = decided.smoothed_errors(split)
    assert decided.smoothed_errors(split.copy()) is first  # by content, not by object
    np.testing.assert_allclose(first, smoothed(forecaster.errors(split), 10))
    with pytest.raises(ValueError, match="validation tail"):
        channel_forecaster("X-4", forecaster, train[:100], METADATA, block=10)


def test_the_linear_channel_forecaster_is_fitted_on_the_fit_part_only() -> None:
    train = records(_autoregressive(2500, 10))
    config = LinearForecasterConfig(lags=25)
    decided = linear_channel_forecaster("X-5", train, METADATA, config, block=10)
    assert decided.fit_rows == 2000 - 25 and decided.span == config.span
    direct = fit_forecaster(train[:2000], 0.0, 1.0, lags=25, ridge=10.0, min_rows=2.0)
    assert isinstance(decided.forecaster, type(direct))
    np.testing.assert_array_equal(decided.forecaster.coef, direct.coef)
    tail_changed = train.copy()
    tail_changed[2000:, 0] += 0.3  # the validation tail moves the threshold, not the fit
    other = linear_channel_forecaster("X-5", tail_changed, METADATA, config, 10)
    np.testing.assert_array_equal(other.forecaster.coef, direct.coef)


def test_the_fit_part_and_the_value_s_scaling_come_from_the_model_s_metadata() -> None:
    assert fit_part_end(2500, METADATA) == 2000
    normalisation = {"normalisation": {"offset": [-1.0, 0.0], "scale": [2.0, 1.0]}}
    assert value_normalisation(normalisation) == (-1.0, 2.0)
    with pytest.raises(ValueError, match="no normalisation"):
        value_normalisation({"window": 30})
