"""The LSTM forecaster's pieces: training pairs, a seeded fit, causal errors, its state."""

from __future__ import annotations

import pickle

import numpy as np
import torch

from smap_bench.model.forecaster import N_COMMANDS
from smap_bench.model.lstm_forecaster import (
    LSTMForecaster,
    LSTMForecasterConfig,
    _sequences,
    fit_lstm_forecaster,
)

#: Small enough to fit in about a second on one core.
SMALL = LSTMForecasterConfig(
    lags=12, horizon=3, units=(8, 8), epochs=4, patience=2, batch_size=32, train_stride=2
)


def records(values: np.ndarray) -> np.ndarray:
    """Raw ``(n, 25)`` records: the value, then all-zero commands."""
    return np.column_stack([values, np.zeros((len(values), N_COMMANDS))]).astype(np.float32)


def test_the_training_pairs_are_the_lags_and_the_values_after_them_every_stride() -> None:
    values = records(np.arange(40.0))
    inputs, targets = _sequences(values, SMALL)
    count = 40 - SMALL.lags - SMALL.horizon + 1  # 26 pairs, every second one kept
    assert inputs.shape == (13, SMALL.lags, 25) and targets.shape == (13, SMALL.horizon)
    np.testing.assert_array_equal(inputs[1, :, 0], np.arange(2.0, 14.0))
    np.testing.assert_array_equal(targets[1], [14.0, 15.0, 16.0])
    np.testing.assert_array_equal(targets[-1], [count - 2 + 12.0, count - 1 + 12.0, count + 12.0])


def test_too_short_a_fit_part_gives_a_forecaster_without_errors() -> None:
    stream = records(np.sin(np.arange(60) / 3.0))
    forecaster = fit_lstm_forecaster(stream, 0.0, 1.0, SMALL, seed=0)
    assert not forecaster.fitted
    assert np.isnan(forecaster.errors(stream)).all()


def test_a_seeded_fit_is_repeatable_and_its_errors_causal() -> None:
    torch.set_num_threads(1)
    stream = records(np.sin(np.arange(600) / 4.0))
    first = fit_lstm_forecaster(stream, -1.0, 2.0, SMALL, seed=3)
    second = fit_lstm_forecaster(stream, -1.0, 2.0, SMALL, seed=3)
    assert first.fitted and 1 <= first.epochs_run <= SMALL.epochs
    errors = first.errors(stream)
    np.testing.assert_array_equal(errors, second.errors(stream))
    assert np.isnan(errors[: SMALL.lags]).all() and np.isfinite(errors[SMALL.lags :]).all()
    # causal: a change at record 400 leaves every earlier error as it was
    changed = stream.copy()
    changed[400:, 0] += 1.0
    np.testing.assert_allclose(first.errors(changed)[:400], errors[:400], rtol=0, atol=1e-6)
    assert not np.allclose(first.errors(changed)[400:], errors[400:])
    # and its error at a record depends on its own lags only, not on where the stream began
    np.testing.assert_allclose(
        first.errors(stream[300:])[SMALL.lags :], errors[300 + SMALL.lags :], rtol=0, atol=1e-6
    )


def test_a_pickled_forecaster_round_trips() -> None:
    """As the exploration keeps its fitted forecasters."""
    stream = records(np.sin(np.arange(600) / 4.0))
    fitted = fit_lstm_forecaster(stream, -1.0, 2.0, SMALL, seed=0)
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.errors(stream), fitted.errors(stream))
    unfitted = LSTMForecaster(SMALL, None, 0.0, 1.0)
    assert not pickle.loads(pickle.dumps(unfitted)).fitted
