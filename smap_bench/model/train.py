"""Train one channel's TranAD on its train split only, and everything derived from it.

The train split is cut in two: the head (``1 - validation_fraction``) fits the network,
the tail is never trained on and gives unseen-but-normal scores for the threshold. The
normalisation comes from the whole train split; nothing here sees a test split.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from smap_bench.catalog import model_name
from smap_bench.model.threshold import ThresholdConfig, fit_threshold, window_statistic
from smap_bench.model.tranad import ScoringModel, TranAD, TranADConfig, record_error

#: Bump when a change to this code changes the trained models, so resumable training
#: does not keep models made by older code.
ALGORITHM_VERSION = "tranad-1"

#: Smallest span of the telemetry value used for min-max scaling, in raw units (the
#: SMAP values lie in [-1, 1]); several channels are constant over their train split.
MIN_SPAN = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """Every setting that changes a trained model (its hash decides resumption)."""

    window: int = 30
    epochs: int = 5
    seed: int = 0
    batch_size: int = 32
    learning_rate: float = 3e-3
    adversarial_epsilon: float = 1.05
    weight_decay: float = 1e-5
    train_stride: int = 4
    threads: int = 1
    validation_fraction: float = 0.2
    telemetry_weight_only: bool = True
    network: TranADConfig = field(default_factory=TranADConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "network": self.network.as_dict()}

    def settings_hash(self, data_sha256: str) -> str:
        """Hash of the settings, the code version and the training data."""
        blob = json.dumps(
            {"config": self.as_dict(), "data": data_sha256, "algorithm": ALGORITHM_VERSION},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Normalisation:
    """Per-feature ``(x - offset) / scale`` fitted on the train split."""

    offset: tuple[float, ...]
    scale: tuple[float, ...]


@dataclass
class TrainedChannel:
    """A trained, exportable model with its threshold and the facts for metadata.json."""

    channel: str
    scoring_model: ScoringModel
    threshold: float
    metadata: dict[str, Any]


def array_sha256(values: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes (identifies the training data)."""
    digest = hashlib.sha256(f"{values.dtype}{values.shape}".encode())
    digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def fit_normalisation(train: np.ndarray, min_span: float = MIN_SPAN) -> Normalisation:
    """Min-max scaling of the telemetry value (column 0) to about [0, 1]; one-hots unchanged.

    The span is floored at ``min_span`` so a channel that is constant in training does not
    blow unseen values up without bound.
    """
    if train.ndim != 2 or train.shape[0] == 0:
        raise ValueError(f"fit_normalisation: train split has shape {train.shape}, need (n>0, m)")
    n_features = train.shape[1]
    offset = np.zeros(n_features)
    scale = np.ones(n_features)
    low, high = float(train[:, 0].min()), float(train[:, 0].max())
    span = max(high - low, min_span)
    offset[0] = low - (span - (high - low)) / 2
    scale[0] = span
    return Normalisation(tuple(offset.tolist()), tuple(scale.tolist()))


def sliding_windows(values: np.ndarray, window: int, stride: int = 1) -> np.ndarray:
    """All windows ``[n_windows, window, m]`` of a split, every ``stride`` records (training)."""
    if len(values) < window:
        raise ValueError(f"sliding_windows: {len(values)} records, fewer than window {window}")
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)
    return np.ascontiguousarray(view[::stride].transpose(0, 2, 1))


def seed_everything(seed: int) -> None:
    """Fix the Python, NumPy and torch generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def adversarial_weight(epoch: int, epsilon: float) -> float:
    """TranAD's weight ``epsilon^-n`` of the plain reconstruction terms at epoch ``n`` (from 1).

    It starts near 1 (plain reconstruction) and shifts weight to the adversarial phase-2
    terms as training goes on; ``epsilon`` slightly above 1 makes the shift gradual.
    """
    if epsilon < 1:
        raise ValueError(f"adversarial_weight: epsilon {epsilon} must be at least 1")
    return float(epsilon**-epoch)


def fit_network(
    model: TranAD,
    windows: Tensor,
    config: TrainConfig,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Adversarial two-phase training; returns the mean phase-1 loss of each epoch.

    Encoder and decoder 1 minimise ``w|O1-W|² + (1-w)|Ô2-W|²``; decoder 2 minimises
    ``w|O2-W|² - (1-w)|Ô2-W|²``: it learns to tell phase-1 reconstructions from real
    windows, which sharpens the focus on records that reconstruct badly.
    """
    group1 = [
        *model.encoder.parameters(),
        *model.decoder1.parameters(),
        *model.head1.parameters(),
    ]
    group2 = [*model.decoder2.parameters(), *model.head2.parameters()]
    opt1 = torch.optim.AdamW(group1, lr=config.learning_rate, weight_decay=config.weight_decay)
    opt2 = torch.optim.AdamW(group2, lr=config.learning_rate, weight_decay=config.weight_decay)
    mse = nn.MSELoss()
    generator = torch.Generator().manual_seed(config.seed)
    losses = []
    model.train()
    for epoch in range(1, config.epochs + 1):
        weight = adversarial_weight(epoch, config.adversarial_epsilon)
        order = torch.randperm(len(windows), generator=generator)
        total, batches = 0.0, 0
        for start in range(0, len(windows), config.batch_size):
            batch = windows[order[start : start + config.batch_size]]
            out1, out2, out_hat2 = model(batch)
            loss_hat2 = mse(out_hat2, batch)
            loss1 = weight * mse(out1, batch) + (1 - weight) * loss_hat2
            loss2 = weight * mse(out2, batch) - (1 - weight) * loss_hat2
            grads1 = torch.autograd.grad(loss1, group1, retain_graph=True, allow_unused=True)
            grads2 = torch.autograd.grad(loss2, group2, allow_unused=True)
            for params, grads in ((group1, grads1), (group2, grads2)):
                for param, grad in zip(params, grads, strict=True):
                    param.grad = grad
            opt1.step()
            opt2.step()
            total += float(mse(out1, batch).detach())
            batches += 1
        losses.append(total / max(batches, 1))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    model.eval()
    return losses


@torch.no_grad()
def score_windows(scoring: ScoringModel, raw_windows: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Per-record scores ``[n, window]`` of raw windows through the export module."""
    scoring.eval()
    parts = [
        scoring(torch.from_numpy(raw_windows[i : i + batch]).float())[1].numpy()
        for i in range(0, len(raw_windows), batch)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, raw_windows.shape[1]))


@torch.no_grad()
def feature_errors(model: TranAD, windows: Tensor) -> np.ndarray:
    """Mean record error of each feature over normalised windows (score-weighting evidence)."""
    out1, _, out_hat2 = model(windows)
    return record_error(windows, out1, out_hat2).mean(dim=(0, 1)).numpy()


def train_channel(
    channel: str,
    train: np.ndarray,
    config: TrainConfig | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainedChannel:
    """Train ``channel``'s model on its train split, threshold it, and describe it."""
    config = config or TrainConfig()
    if train.ndim != 2 or train.shape[1] != config.network.n_features:
        raise ValueError(
            f"{channel}: train split has shape {train.shape}, need (n, {config.network.n_features})"
        )
    started = time.perf_counter()
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    train = train.astype(np.float32)
    n_validation = round(len(train) * config.validation_fraction)
    if len(train) - n_validation < config.window or n_validation < config.window:
        raise ValueError(
            f"{channel}: train split of {len(train)} records is too short for window "
            f"{config.window} with a {config.validation_fraction:.0%} validation tail"
        )
    fit_part, validation_part = train[:-n_validation], train[-n_validation:]
    norm = fit_normalisation(train)
    offset = np.asarray(norm.offset, dtype=np.float32)
    scale = np.asarray(norm.scale, dtype=np.float32)

    network_config = replace(config.network, window=config.window)
    model = TranAD(network_config)
    fit_raw = sliding_windows(fit_part, config.window, config.train_stride)
    fit_norm = torch.from_numpy((fit_raw - offset) / scale)
    losses = fit_network(model, fit_norm, config, on_epoch)

    weights = np.zeros(network_config.n_features, dtype=np.float32)
    weights[0] = 1.0
    if not config.telemetry_weight_only:
        weights[:] = 1.0
    scoring = ScoringModel(
        model, torch.from_numpy(offset), torch.from_numpy(scale), torch.from_numpy(weights)
    )
    val_raw = sliding_windows(validation_part, config.window, 1)
    fit_scores = window_statistic(score_windows(scoring, fit_raw))
    val_scores = window_statistic(score_windows(scoring, val_raw))
    threshold = fit_threshold(fit_scores, val_scores, config.threshold)

    errors = feature_errors(model, torch.from_numpy((val_raw - offset) / scale))
    seconds = time.perf_counter() - started
    metadata: dict[str, Any] = {
        "channel": channel,
        "model_name": model_name(channel),
        "algorithm": ALGORITHM_VERSION,
        "window": config.window,
        "n_features": network_config.n_features,
        "network": network_config.as_dict(),
        "seed": config.seed,
        "epochs": config.epochs,
        "training_seconds": round(seconds, 3),
        "training_data_sha256": array_sha256(train),
        "train_records": len(train),
        "fit_records": len(fit_part),
        "validation_records": len(validation_part),
        "normalisation": {
            "applied": "inside the ONNX graph: (input - offset) / scale; send raw telemetry",
            "offset": list(norm.offset),
            "scale": list(norm.scale),
        },
        "score": {
            "definition": "per record: sum_f weight_f * (0.5 (O1-W)^2 + 0.5 (Ô2-W)^2)_f, "
            "in normalised units",
            "feature_weights": weights.tolist(),
            "window_statistic": "mean of the window's per-record scores",
            "evidence": {
                "validation_mean_error_telemetry": float(errors[0]),
                "validation_mean_error_commands": float(errors[1:].mean()),
                "validation_command_share_of_unweighted_error": float(
                    errors[1:].sum() / max(errors.sum(), 1e-12)
                ),
            },
        },
        "threshold": threshold.value,
        "threshold_parameters": threshold.parameters,
        "decision": "window is anomalous when mean(score over its records) > threshold",
        "settings": config.as_dict(),
        "settings_hash": config.settings_hash(array_sha256(train)),
        "metrics": {
            "train_loss_by_epoch": [round(x, 6) for x in losses],
            "fit_window_score_mean": float(fit_scores.mean()),
            "fit_window_score_max": float(fit_scores.max()),
            "validation_window_score_mean": float(val_scores.mean()),
            "validation_window_score_max": float(val_scores.max()),
            "validation_windows_over_threshold": int((val_scores > threshold.value).sum()),
        },
    }
    return TrainedChannel(channel, scoring, threshold.value, metadata)
