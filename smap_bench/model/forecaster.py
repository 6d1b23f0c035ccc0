"""A telemanom-style linear forecaster of a channel's telemetry value.

The forecaster predicts the normalised telemetry value ``v[t]`` (column 0) from its
previous ``lags`` values, the 24 command columns at ``t`` and a constant: a ridge
regression in closed form, the constant not penalised. Its per-record error
``|v[t] - v_hat[t]|`` can be smoothed by a causal EWMA (:func:`smoothed`), and a window's
statistic is the mean error over its newest records (:func:`window_statistics`, after
:func:`smap_bench.model.selection.stat_last_block`).

A channel's decision (:class:`ChannelForecaster`, built by :func:`channel_forecaster`
from its train split only) is the served TranAD's: the threshold fitted as training fits
TranAD's (the fit part's windows every ``train_stride`` records and the validation tail's
every record, with the models' ``ThresholdConfig``), and the confirmed rule over the
stream's statistics, its floor POT's initial threshold.

**Live** (``SMAP_FORECASTER=true``), a window's statistic is computed from the window
alone (:func:`context_statistic`): the scheduler sends the value and the commands of its
last :meth:`LinearForecasterConfig.context_records` records (the commands as one bit mask
per record, :func:`smap_bench.windows.command_masks`), and the worker forecasts the newest
``burn_in + stride`` of them and smooths the errors itself. The EWMA of span 10 forgets
its start to about 4e-18 in 200 records, so the statistic equals the offline one (the
whole split smoothed as one stream) to rounding, with no state per stream; the events
stage confirms it under the stream rule as it confirms TranAD's, on its own statistics
(a run's first windows, which have no forecast, are no part of its history, as offline).

Pure functions, no I/O: ``scripts/select_forecaster.py`` judges the forecaster on the
training-only selection harness, ``scripts/explore_forecaster.py`` scores a declared
configuration on the test splits.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import pandas as pd

from smap_bench import windows
from smap_bench.model.context import value_normalisation
from smap_bench.model.selection import stat_last_block
from smap_bench.model.stream_rule import (
    StreamRule,
    StreamRuleConfig,
    confirmed_flags,
    stream_rule_from_metadata,
)
from smap_bench.model.threshold import ThresholdConfig, fit_threshold
from smap_bench.windows import commands_from_masks

__all__ = [
    "EWMA_SPAN",
    "N_COMMANDS",
    "ChannelForecaster",
    "Forecaster",
    "LinearForecaster",
    "LinearForecasterConfig",
    "channel_forecaster",
    "context_statistic",
    "design_rows",
    "fit_forecaster",
    "fit_part_end",
    "linear_channel_forecaster",
    "smoothed",
    "window_statistics",
]

#: Command one-hot columns beside the telemetry value.
N_COMMANDS = 24

#: The declared EWMA span of the per-record errors (the harness's choice, before any test
#: split was scored).
EWMA_SPAN = 10


class Forecaster(Protocol):
    """What a channel's decision needs of a forecaster (linear or LSTM)."""

    @property
    def lags(self) -> int: ...

    @property
    def fitted(self) -> bool: ...

    def errors(self, stream: np.ndarray) -> np.ndarray: ...


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


@dataclass
class ChannelForecaster:
    """One channel's forecaster and its decision, fitted on the train split only (``rule``
    None: no forecaster was fitted, or no threshold: it never flags)."""

    channel: str
    forecaster: Forecaster
    rule: StreamRule | None
    threshold_parameters: dict[str, Any]
    fit_rows: int
    span: int = EWMA_SPAN
    #: Smoothed errors already computed, by split (the sha256 of its bytes): an LSTM's
    #: forward passes are costly.
    memo: dict[str, np.ndarray] = field(default_factory=dict)
    #: live: forecasts before a window's newest that its EWMA starts from
    #: (:func:`context_statistic`)
    burn_in: int = 200

    def smoothed_errors(self, split: np.ndarray) -> np.ndarray:
        """Smoothed ``|v[t] - v_hat[t]|`` of a raw ``(n, 25)`` stream (NaN for ``t < L``)."""
        key = hashlib.sha256(np.ascontiguousarray(split).tobytes()).hexdigest()
        if key not in self.memo:
            self.memo[key] = smoothed(self.forecaster.errors(split), self.span)
        return self.memo[key]

    def window_statistics(self, split: np.ndarray, window: int, stride: int) -> np.ndarray:
        """The statistic of each pipeline window ``[k]`` of a split (NaN: not all of its
        newest ``stride`` records have a forecast)."""
        return window_statistics(self.smoothed_errors(split), window, stride, stride)

    def warm_up_end(self, split: np.ndarray, window: int, stride: int) -> int:
        """First record after those judged while the stream rule still lets the static
        threshold decide (its first ``min_history - 1`` statistics); 0 when unfitted."""
        statistics = self.window_statistics(split, window, stride)
        judged = np.flatnonzero(np.isfinite(statistics))
        if self.rule is None or not judged.size:
            return 0
        last = min(int(judged[0]) + self.rule.config.min_history - 2, len(statistics) - 1)
        return int(last) * stride + window

    def window_flags(
        self, split: np.ndarray, window: int, stride: int, rule: str = "confirmed"
    ) -> np.ndarray:
        """The forecaster's decision for each pipeline window of a split, as live: under
        the ``confirmed`` rule (served: the static threshold kept by the stream rule) over
        its statistics from the first window that has one, or the ``stream`` rule alone,
        or the ``static`` threshold alone (what the workers flag before the events stage
        confirms); the windows before the first forecast never flag."""
        statistics = self.window_statistics(split, window, stride)
        flags = np.zeros(len(statistics), dtype=bool)
        if self.rule is None:
            return flags
        judged = np.flatnonzero(np.isfinite(statistics))
        if judged.size:
            first = int(judged[0])
            if not np.isfinite(statistics[first:]).all():
                raise ValueError(
                    f"{self.channel}: a window after the first forecast has no statistic"
                )
            if rule == "confirmed":
                flags[first:] = confirmed_flags(statistics[first:], self.rule)
            elif rule == "stream":
                flags[first:] = self.rule.flags(statistics[first:])
            elif rule == "static":
                flags[first:] = statistics[first:] > self.rule.static
            else:
                raise ValueError(f"unknown decision rule {rule!r}")
        return flags


def fit_part_end(n_records: int, metadata: dict[str, Any]) -> int:
    """Where a train split of ``n_records`` records ends its fit part (the head the
    channel's TranAD was fitted on) and begins its validation tail, by the model's
    ``validation_fraction``."""
    return n_records - round(n_records * float(metadata["settings"]["validation_fraction"]))


def channel_forecaster(
    channel: str,
    forecaster: Forecaster,
    train: np.ndarray,
    metadata: dict[str, Any],
    block: int,
    span: int = EWMA_SPAN,
    memo: dict[str, np.ndarray] | None = None,
) -> ChannelForecaster:
    """A fitted forecaster's decision on one channel from its train split: the threshold
    of its smoothed errors over the train split as one causal stream, fitted as training
    fits TranAD's (``metadata``: the channel model's, for the window, the split of the
    train split and the ``ThresholdConfig``), and the stream rule built on it as
    :func:`~smap_bench.model.stream_rule.stream_rule_from_metadata` builds TranAD's."""
    settings = metadata["settings"]
    config = ThresholdConfig(**settings["threshold"])
    window = int(metadata["window"])
    train = np.asarray(train, dtype=np.float32)
    n_fit = fit_part_end(len(train), metadata)
    fit_rows = max(n_fit - forecaster.lags, 0)
    fitted = ChannelForecaster(channel, forecaster, None, {}, fit_rows, span, dict(memo or {}))
    if not forecaster.fitted:
        return fitted
    errors = fitted.smoothed_errors(train)
    fit_stats = window_statistics(errors[:n_fit], window, int(settings["train_stride"]), block)
    fit_stats = fit_stats[np.isfinite(fit_stats)]
    validation_stats = window_statistics(errors[n_fit:], window, 1, block)
    if not (validation_stats.size and np.isfinite(validation_stats).all()):
        raise ValueError(f"{channel}: the validation tail has no forecast for every window")
    threshold = fit_threshold(fit_stats, validation_stats, config)
    rule_metadata = {"threshold": threshold.value, "threshold_parameters": threshold.parameters}
    fitted.rule = stream_rule_from_metadata(channel, rule_metadata, StreamRuleConfig())
    fitted.threshold_parameters = {
        "threshold": threshold.value,
        **threshold.parameters,
        "fit_windows": int(fit_stats.size),
        "validation_windows": int(validation_stats.size),
    }
    return fitted


@dataclass(frozen=True)
class LinearForecasterConfig:
    """The linear forecaster's declared configuration: the selection harness's best of its
    grid, declared before any test split was scored (``scripts/select_forecaster.py``)."""

    lags: int = 250
    ridge: float = 10.0
    #: fewer fit rows per parameter (lags, commands, constant) than this: no forecaster
    min_rows: float = 2.0
    span: int = EWMA_SPAN  #: EWMA span of the errors
    #: live: forecasts before a window's newest ``stride`` that its EWMA starts from
    #: (``(1 - 2 / (span + 1)) ** burn_in`` of the start remains: 4e-18 for 200)
    burn_in: int = 200

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def context_records(self, stride: int) -> int:
        """Records of value and commands a live window carries: ``lags`` before each of
        its ``burn_in + stride`` forecasts."""
        return self.lags + self.burn_in + stride


def linear_channel_forecaster(
    channel: str,
    train: np.ndarray,
    metadata: dict[str, Any],
    config: LinearForecasterConfig,
    block: int,
) -> ChannelForecaster:
    """The linear forecaster of one channel, fitted on the fit part of its train split
    with the model's normalisation of the value (both from ``metadata``), and its decision
    (:func:`channel_forecaster`)."""
    train = np.asarray(train, dtype=np.float32)
    offset, scale = value_normalisation(metadata)
    forecaster = fit_forecaster(
        train[: fit_part_end(len(train), metadata)],
        offset,
        scale,
        config.lags,
        config.ridge,
        config.min_rows,
    )
    decided = channel_forecaster(channel, forecaster, train, metadata, block, config.span)
    return replace(decided, burn_in=config.burn_in)


# --------------------------------------------------------------------------------------
# Live: a window's statistic from its context alone
# --------------------------------------------------------------------------------------


def context_statistic(
    decided: ChannelForecaster, values: np.ndarray, masks: np.ndarray, stride: int
) -> float | None:
    """The statistic of the window whose context (the value ``[n]`` and command masks
    ``[n]`` of its last ``n`` records, the window's own last) is given: the mean of the
    newest ``stride`` smoothed errors, the EWMA started ``decided.burn_in`` forecasts
    before them (or at the context's first forecast when it is shorter). None: no
    forecaster, fewer than ``lags + stride`` records, or a record whose commands a mask
    could not carry."""
    forecaster = decided.forecaster
    lags = forecaster.lags
    values = np.asarray(values)
    masks = np.asarray(masks)
    if values.shape != masks.shape or values.ndim != 1:
        raise ValueError(f"context_statistic: values {values.shape} and masks {masks.shape} differ")
    if decided.rule is None or len(values) < lags + stride:
        return None
    start = max(0, len(values) - lags - decided.burn_in - stride)
    values, masks = values[start:], masks[start:]
    if (masks < 0).any():
        return None
    stream = np.column_stack([values.astype(np.float32), commands_from_masks(masks, N_COMMANDS)])
    errors = forecaster.errors(stream)[lags:]
    return float(smoothed(errors, decided.span)[-stride:].mean())
