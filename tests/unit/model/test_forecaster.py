"""The linear forecaster's pure pieces: rows, fit, errors, smoothing, window statistics."""

from __future__ import annotations

import numpy as np

from smap_bench.model.forecaster import (
    N_COMMANDS,
    design_rows,
    fit_forecaster,
    smoothed,
    window_statistics,
)


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
