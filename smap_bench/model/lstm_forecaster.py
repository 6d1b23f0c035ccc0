"""A telemanom-configured LSTM forecaster of a channel's telemetry value (explored, not served).

Telemanom (Hundman et al., KDD 2018) forecasts each SMAP channel's telemetry value with
an LSTM and judges the forecast errors; its stored run is the best published honest
result on this data (event-wise F1 0.867). This module trains such a forecaster with the
project's own code, under telemanom's published configuration, taken unchanged and
declared before any test split was scored (:class:`LSTMForecasterConfig`):

- input: the previous ``lags`` = 250 records, all 25 columns (the normalised value and
  the 24 command one-hots); output: the next ``horizon`` = 10 normalised values;
- two LSTM layers of 80 units, dropout 0.3 after each, a linear head;
- mean squared error, Adam (learning rate 1e-3), batches of 64, at most 35 epochs, early
  stopping with patience 10 and minimum improvement 3e-4 on a validation share of 0.2
  of the training sequences (the last ones, as Keras's ``validation_split`` takes them),
  the best epoch's weights kept.

What is the project's, not telemanom's: the sequences are formed every ``train_stride``
= 4 records (TranAD's training stride; this 2-core machine would otherwise spend about
an hour a channel), only from the fit part of the train split (its head, what TranAD was
fitted on: the validation tail stays unseen and gives the threshold its unseen-but-normal
windows), and the value is scaled as TranAD's (:func:`~smap_bench.model.train.fit_normalisation`).

The per-record error is ``|v[t] - v_hat[t]|`` with ``v_hat[t]`` the first of the 10
values forecast from records ``t - 250 .. t - 1``: causal, and the same whatever record
the stream starts at, so a window's error depends only on its own 250 + 10 records (the
linear forecaster's :meth:`~smap_bench.model.forecaster.LinearForecaster.errors`
contract). Pure computation on arrays; the exploration script
``scripts/explore_forecaster.py --model lstm`` fits and scores it.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from smap_bench.model.train import sliding_windows

__all__ = ["LSTMForecaster", "LSTMForecasterConfig", "fit_lstm_forecaster"]


@dataclass(frozen=True)
class LSTMForecasterConfig:
    """Telemanom's published configuration (see the module); ``train_stride`` is ours."""

    lags: int = 250
    horizon: int = 10
    units: tuple[int, int] = (80, 80)
    dropout: float = 0.3
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 35
    patience: int = 10
    min_delta: float = 3e-4
    validation_share: float = 0.2
    train_stride: int = 4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Network(nn.Module):
    def __init__(self, n_features: int, config: LSTMForecasterConfig) -> None:
        super().__init__()
        first, second = config.units
        self.first = nn.LSTM(n_features, first, batch_first=True)
        self.second = nn.LSTM(first, second, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(second, config.horizon)

    def forward(self, lagged: Tensor) -> Tensor:
        """``[B, lags, features]`` -> the next ``horizon`` values ``[B, horizon]``."""
        out, _ = self.first(lagged)
        out, _ = self.second(self.dropout(out))
        return self.head(self.dropout(out[:, -1]))


def _inputs(stream: np.ndarray, offset: float, span: float) -> np.ndarray:
    """The network's columns of a raw ``(n, 25)`` stream: the scaled value, the commands."""
    out = np.asarray(stream, dtype=np.float32).copy()
    out[:, 0] = (out[:, 0] - offset) / span
    return out


@dataclass
class LSTMForecaster:
    """A channel's fitted LSTM forecaster (``network`` None: not fitted, errors all NaN)."""

    config: LSTMForecasterConfig
    network: _Network | None
    offset: float
    span: float
    epochs_run: int = 0
    best_validation_loss: float = float("nan")

    @property
    def lags(self) -> int:
        return self.config.lags

    @property
    def fitted(self) -> bool:
        return self.network is not None

    def errors(self, stream: np.ndarray, batch: int = 512) -> np.ndarray:
        """``|v[t] - v_hat[t]|`` for every record of a raw ``(n, 25)`` stream, each from
        the ``lags`` records before it only; NaN for ``t < lags``."""
        lags = self.config.lags
        out = np.full(len(stream), np.nan)
        if self.network is None or len(stream) <= lags:
            return out
        values = _inputs(stream, self.offset, self.span)
        # a view, copied batch by batch (a test split's lags at once would be ~200 MB)
        lagged = np.lib.stride_tricks.sliding_window_view(values, lags, axis=0)[:-1]
        self.network.eval()
        forecasts = []
        with torch.inference_mode():
            for start in range(0, len(lagged), batch):
                part = np.ascontiguousarray(lagged[start : start + batch].transpose(0, 2, 1))
                forecasts.append(self.network(torch.from_numpy(part))[:, 0].numpy())
        out[lags:] = np.abs(values[lags:, 0] - np.concatenate(forecasts))
        return out


def _sequences(values: np.ndarray, config: LSTMForecasterConfig) -> tuple[np.ndarray, np.ndarray]:
    """Training pairs every ``train_stride`` records: ``[N, lags, 25]`` inputs and the
    ``[N, horizon]`` values that follow each."""
    lags, horizon = config.lags, config.horizon
    count = len(values) - lags - horizon + 1
    if count <= 0:
        return np.zeros((0, lags, values.shape[1]), np.float32), np.zeros((0, horizon), np.float32)
    inputs = sliding_windows(values[: count + lags - 1], lags, config.train_stride)
    targets = sliding_windows(values[lags:, :1], horizon, config.train_stride)
    return inputs, np.ascontiguousarray(targets[:, :, 0])


def fit_lstm_forecaster(
    fit_part: np.ndarray,
    offset: float,
    span: float,
    config: LSTMForecasterConfig,
    seed: int,
    min_sequences: int = 64,
) -> LSTMForecaster:
    """Fit on ``fit_part`` (raw ``(n, 25)`` records) under ``config`` with a fixed seed;
    an unfitted forecaster when it yields fewer than ``min_sequences`` training pairs."""
    inputs, targets = _sequences(_inputs(fit_part, offset, span), config)
    n_validation = round(len(inputs) * config.validation_share)
    n_train = len(inputs) - n_validation
    if n_train < min_sequences or n_validation < 1:
        return LSTMForecaster(config, None, offset, span)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    network = _Network(inputs.shape[2], config)
    optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    x, y = torch.from_numpy(inputs), torch.from_numpy(targets)
    x_train, y_train, x_val, y_val = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    best, best_state, waited, epochs = float("inf"), None, 0, 0
    for _ in range(config.epochs):
        epochs += 1
        network.train()
        for batch in torch.randperm(n_train, generator=generator).split(config.batch_size):
            optimiser.zero_grad()
            loss = nn.functional.mse_loss(network(x_train[batch]), y_train[batch])
            loss.backward()
            optimiser.step()
        network.eval()
        with torch.inference_mode():
            validation = float(nn.functional.mse_loss(network(x_val), y_val))
        if validation < best - config.min_delta:
            best, best_state, waited = validation, copy.deepcopy(network.state_dict()), 0
        else:
            waited += 1
            if waited >= config.patience:
                break
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    return LSTMForecaster(config, network, offset, span, epochs, best)
