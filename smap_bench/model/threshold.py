"""Anomaly thresholds from training data only: peaks over threshold (POT) with a GPD tail.

A window is anomalous when its *window statistic* (the mean of its per-record scores)
exceeds the channel's threshold. The threshold is fitted on the scores of training
windows: the windows the network was fitted on and the held-out validation tail of the
train split (normal, but unseen by the network). No test data enters here.

POT (Siffer et al., KDD 2017, as TranAD uses it): take the ``level`` quantile ``t`` of the
scores as the initial threshold, fit a generalised Pareto distribution (GPD) to the
excesses over ``t``, and return the score whose exceedance probability is ``q``. A floor
of ``floor_factor`` times the largest validation statistic keeps the threshold above
every unseen-but-normal window, with a margin: test splits hold normal regimes training
never showed. The defaults (``q`` 1e-4, floor factor 2) were chosen on training data only
by :mod:`smap_bench.model.selection` (held-out halves of the validation tails with
injected anomalies); ``smap-bench rule rethreshold`` re-fits committed models with them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ThresholdConfig:
    """One set of threshold hyperparameters for every channel."""

    method: str = "pot"
    level: float = 0.98
    q: float = 1e-4
    floor_factor: float = 2.0


@dataclass(frozen=True)
class Threshold:
    """A fitted threshold and how it was reached (goes into metadata.json)."""

    value: float
    parameters: dict[str, Any]


def window_statistic(scores: np.ndarray) -> np.ndarray:
    """One number per window from its per-record scores ``[n, window]``: their mean.

    Averaging over the 30 records smooths single-record noise (as telemanom's EWMA does)
    while a sustained deviation still lifts the whole window.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"window_statistic: scores have shape {scores.shape}, need (n, window)")
    return scores.mean(axis=1)


def window_is_anomalous(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Decision per window ``[n]`` from per-record scores ``[n, window]`` (the worker's rule)."""
    return window_statistic(scores) > threshold


def gpd_fit_moments(excesses: np.ndarray) -> tuple[float, float]:
    """Shape ``gamma`` and scale ``sigma`` of a GPD by the method of moments.

    ``mean = sigma / (1 - gamma)`` and ``var = sigma² / ((1 - gamma)² (1 - 2 gamma))``; the
    estimate is valid for ``gamma < 1/2``, which covers the light and moderately heavy tails
    of reconstruction errors.
    """
    excesses = np.asarray(excesses, dtype=np.float64)
    if excesses.size < 2 or np.any(excesses < 0):
        raise ValueError("gpd_fit_moments: need at least two non-negative excesses")
    mean = float(excesses.mean())
    var = float(excesses.var(ddof=1))
    if mean <= 0:
        return 0.0, 0.0
    if var <= 0:
        return 0.0, mean
    ratio = mean * mean / var
    gamma = 0.5 * (1.0 - ratio)
    sigma = 0.5 * mean * (ratio + 1.0)
    return gamma, sigma


def pot_threshold(scores: np.ndarray, level: float, q: float) -> tuple[float, dict[str, float]]:
    """Score with exceedance probability ``q`` under a GPD tail above the ``level`` quantile."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        raise ValueError("pot_threshold: scores are empty or not finite")
    if not 0 < level < 1 or not 0 < q < 1 - level:
        raise ValueError(f"pot_threshold: need 0 < q < 1 - level < 1, got level={level}, q={q}")
    initial = float(np.quantile(scores, level))
    excesses = scores[scores > initial] - initial
    details = {"initial": initial, "n_peaks": float(excesses.size), "gamma": 0.0, "sigma": 0.0}
    if excesses.size < 2:
        return float(scores.max()), details
    gamma, sigma = gpd_fit_moments(excesses)
    details.update(gamma=gamma, sigma=sigma)
    ratio = q * scores.size / excesses.size
    if abs(gamma) < 1e-9:
        value = initial - sigma * math.log(ratio)
    else:
        value = initial + sigma / gamma * (ratio ** (-gamma) - 1.0)
    return float(value), details


def fit_threshold(
    fit_scores: np.ndarray, validation_scores: np.ndarray, config: ThresholdConfig
) -> Threshold:
    """The channel's threshold from its training window statistics (fit part and validation)."""
    if config.method != "pot":
        raise ValueError(f"fit_threshold: unknown method {config.method!r} (known: 'pot')")
    validation_scores = np.asarray(validation_scores, dtype=np.float64).ravel()
    if validation_scores.size == 0:
        raise ValueError("fit_threshold: no validation scores")
    pooled = np.concatenate([np.asarray(fit_scores, dtype=np.float64).ravel(), validation_scores])
    pot, details = pot_threshold(pooled, config.level, config.q)
    floor = config.floor_factor * float(validation_scores.max())
    value = max(pot, floor)
    return Threshold(
        value=value,
        parameters={
            **asdict(config),
            "pot": pot,
            "floor": floor,
            "binding": "pot" if pot >= floor else "floor",
            **{f"pot_{k}": v for k, v in details.items()},
        },
    )
