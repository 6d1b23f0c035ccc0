"""A telemanom-style linear forecaster of a channel's telemetry value (explored, not served).

The forecaster predicts the normalised telemetry value ``v[t]`` (column 0) from its
previous ``lags`` values, the 24 command columns at ``t`` and a constant: a ridge
regression in closed form, the constant not penalised. Its per-record error
``|v[t] - v_hat[t]|`` can be smoothed by a causal EWMA (:func:`smoothed`), and a window's
statistic is the mean error over its newest records (:func:`window_statistics`, after
:func:`smap_bench.model.selection.stat_last_block`).

Pure functions, no I/O: ``scripts/select_forecaster.py`` judges the forecaster on the
training-only selection harness, ``scripts/explore_forecaster.py`` scores a declared
configuration on the test splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from smap_bench import windows
from smap_bench.model.selection import stat_last_block

__all__ = [
    "N_COMMANDS",
    "LinearForecaster",
    "design_rows",
    "fit_forecaster",
    "smoothed",
    "window_statistics",
]

#: Command one-hot columns beside the telemetry value.
N_COMMANDS = 24


def design_rows(values: np.ndarray, commands: np.ndarray, lags: int) -> np.ndarray:
    """Regression rows for the targets ``t = lags .. n-1``: the previous ``lags`` values,
    the commands at ``t`` and a constant."""
    lagged = np.lib.stride_tricks.sliding_window_view(values, lags)[:-1]
    return np.hstack([lagged, commands[lags:], np.ones((len(lagged), 1))])


@dataclass(frozen=True)
class LinearForecaster:
    """A channel's forecaster of its normalised value (``coef`` None: not fitted, its
    errors are all NaN)."""

    lags: int
    coef: np.ndarray | None
    offset: float  #: the value's normalisation: ``(value - offset) / span``
    span: float

    @property
    def fitted(self) -> bool:
        return self.coef is not None

    def errors(self, stream: np.ndarray) -> np.ndarray:
        """``|v[t] - v_hat[t]|`` for every record of a raw ``(n, 25)`` stream, each from
        the records before it only; NaN for ``t < lags``."""
        out = np.full(len(stream), np.nan)
        if self.coef is None or len(stream) <= self.lags:
            return out
        values = (stream[:, 0].astype(np.float64) - self.offset) / self.span
        rows = design_rows(values, stream[:, 1:].astype(np.float64), self.lags)
        out[self.lags :] = np.abs(values[self.lags :] - rows @ self.coef)
        return out


def fit_forecaster(
    fit_part: np.ndarray, offset: float, span: float, lags: int, ridge: float, min_rows: float
) -> LinearForecaster:
    """The ridge fit on ``fit_part`` (raw ``(n, 25)`` records), or an unfitted forecaster
    when it holds fewer than ``min_rows`` rows per parameter (lags, commands, constant)."""
    if len(fit_part) - lags < min_rows * (lags + N_COMMANDS + 1):
        return LinearForecaster(lags, None, offset, span)
    values = (fit_part[:, 0].astype(np.float64) - offset) / span
    rows = design_rows(values, fit_part[:, 1:].astype(np.float64), lags)
    penalty = ridge * np.eye(rows.shape[1])
    penalty[-1, -1] = 0.0  # the constant is not penalised
    coef = np.linalg.solve(rows.T @ rows + penalty, rows.T @ values[lags:])
    return LinearForecaster(lags, coef, offset, span)


def smoothed(errors: np.ndarray, span: int) -> np.ndarray:
    """Causal EWMA (``alpha = 2 / (span + 1)``, no bias adjustment) of an error series,
    started at its first finite value, NaN before it; a span of 0 or 1 leaves the errors
    as they are."""
    if span <= 1:
        return errors
    ewm = pd.Series(errors).ewm(span=span, adjust=False, ignore_na=True).mean()
    return ewm.to_numpy(dtype=np.float64)


def window_statistics(errors: np.ndarray, window: int, stride: int, block: int) -> np.ndarray:
    """The mean of the newest ``block`` errors of each window of ``window`` records every
    ``stride`` records (NaN where one of them has no error)."""
    rows = windows.make_windows(errors[:, None].astype(np.float64), window, stride, copy=False)
    if not len(rows):
        return np.zeros(0)
    return stat_last_block(np.asarray(rows[:, :, 0], dtype=np.float64), block)
