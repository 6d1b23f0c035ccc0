"""Train many channels into a repository, and evaluate a repository on the test splits.

Thin I/O around :mod:`train`, :mod:`export`, :mod:`repository` and :mod:`offline`; the
CLI and the notebook call these.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from smap_bench import evaluation, windows
from smap_bench.data.loader import (
    ChannelData,
    DataSource,
    list_channels,
    load_channel,
    resolve_data_dir,
)
from smap_bench.model.context import ContextConfig, ContextDetector, detector_from_metadata
from smap_bench.model.export import export_onnx_bytes
from smap_bench.model.forecaster import (
    ChannelForecaster,
    LinearForecasterConfig,
    linear_channel_forecaster,
)
from smap_bench.model.offline import onnx_session, split_flags
from smap_bench.model.repository import onnx_path, read_metadata, write_model
from smap_bench.model.stream_rule import RULES, StreamRuleConfig, stream_rule_from_metadata
from smap_bench.model.train import TrainConfig, array_sha256, train_channel

log = logging.getLogger(__name__)

#: Called after each epoch: (channel, epoch, loss).
EpochHook = Callable[[str, int, float], None]


@dataclass(frozen=True)
class ChannelOutcome:
    """What training did for one channel (``skipped``: up to date already)."""

    channel: str
    epochs: int
    seconds: float
    threshold: float
    skipped: bool


def data_source(data_dir: Path | None) -> DataSource:
    """The dataset to train and evaluate on (the setting, else the usual places)."""
    return resolve_data_dir(data_dir)


def select_channels(source: DataSource, wanted: str) -> tuple[list[str], list[str]]:
    """Channels to work on from ``all`` or a comma list, and the named ones not present."""
    if source.path is None:
        from smap_bench.data.synthetic import SYNTHETIC_CHANNELS

        present = list(SYNTHETIC_CHANNELS)
    else:
        present = list_channels(source.path)
    if wanted.strip().lower() == "all":
        return present, []
    named = [c.strip() for c in wanted.split(",") if c.strip()]
    return [c for c in named if c in present], [c for c in named if c not in present]


def is_up_to_date(repository: Path, channel: str, settings_hash: str) -> bool:
    """Whether the repository already holds this channel trained with these settings."""
    try:
        meta = read_metadata(repository, channel)
    except FileNotFoundError:
        return False
    return meta.get("settings_hash") == settings_hash and onnx_path(repository, channel).is_file()


def train_one(
    source: DataSource,
    channel: str,
    repository: Path,
    config: TrainConfig,
    force: bool = False,
    on_epoch: EpochHook | None = None,
) -> ChannelOutcome:
    """Train, threshold, export and write one channel, unless it is up to date."""
    data = load_channel(channel, source.path)
    settings_hash = config.settings_hash(array_sha256(data.train.astype("float32")))
    if not force and is_up_to_date(repository, channel, settings_hash):
        meta = read_metadata(repository, channel)
        return ChannelOutcome(
            channel,
            int(meta["epochs"]),
            float(meta["training_seconds"]),
            float(meta["threshold"]),
            skipped=True,
        )
    hook = None if on_epoch is None else (lambda e, loss: on_epoch(channel, e, loss))
    trained = train_channel(channel, data.train, config, hook)
    started = time.perf_counter()
    onnx_bytes = export_onnx_bytes(trained.scoring_model)
    trained.metadata["export_seconds"] = round(time.perf_counter() - started, 3)
    trained.metadata["data_source"] = source.describe()
    write_model(repository, channel, onnx_bytes, trained.metadata)
    return ChannelOutcome(
        channel,
        config.epochs,
        float(trained.metadata["training_seconds"]),
        trained.threshold,
        skipped=False,
    )


def evaluate_repository(
    source: DataSource,
    channels: Sequence[str],
    repository: Path,
    window: int = 30,
    stride: int = 10,
    event_gap: int = 0,
    rule: str = "static",
    context: ContextConfig | None = None,
    forecaster: LinearForecasterConfig | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Score each channel's test split through its ONNX model; pooled report and the
    channels skipped for lack of data or model. ``event_gap`` is the event rule
    (:func:`smap_bench.evaluation.bridge_gaps`); ``rule`` the window decision rule
    (``static``, ``stream`` or ``confirmed``, :mod:`smap_bench.model.stream_rule`). With
    ``context``, a window is also anomalous when the context detector flags it
    (:mod:`smap_bench.model.context`; the live pipeline serves
    ``Settings.context_detector``); with ``forecaster``, when the linear forecaster does
    under the same ``rule`` (:mod:`smap_bench.model.forecaster`; the live pipeline serves
    ``Settings.linear_forecaster``)."""
    if rule not in RULES:
        raise ValueError(f"unknown decision rule {rule!r} (known: {', '.join(RULES)})")
    results = []
    missing = []
    for channel in channels:
        try:
            data = load_channel(channel, source.path)
            meta = read_metadata(repository, channel)
        except (FileNotFoundError, ValueError) as exc:
            log.warning("channel %s skipped: %s", channel, exc)
            missing.append(channel)
            continue
        session = onnx_session(onnx_path(repository, channel))
        model_window = int(meta.get("window", window))
        if model_window != window:
            # a model of another window (the paper's 10) is scored on its own windows
            log.info("%s: model window %d, scored with stride %d", channel, model_window, stride)
        flags, _ = _rule_flags(
            session, data, meta, channel, model_window, min(stride, model_window), rule
        )
        extra: dict[str, Any] = {"threshold": float(meta["threshold"]), "seed": meta.get("seed")}
        if context is not None:
            context_flags, detector = _context_record_flags(
                data, meta, context, model_window, min(stride, model_window)
            )
            flags = flags | context_flags
            # None: a train split too short to fit, or the hold off (never flags)
            extra["context_threshold"] = (
                detector.threshold if math.isfinite(detector.threshold) else None
            )
            extra["context_hold_threshold"] = (
                detector.hold_threshold if math.isfinite(detector.hold_threshold) else None
            )
            extra["train_hold_max"] = detector.train_hold_max
        if forecaster is not None:
            forecaster_flags, decided = _forecaster_record_flags(
                data, meta, forecaster, model_window, min(stride, model_window), rule
            )
            flags = flags | forecaster_flags
            # None: a fit part too short for a forecaster (never flags)
            extra["forecaster_threshold"] = decided.threshold_parameters.get("threshold")
        results.append(
            evaluation.evaluate_channel(
                channel,
                flags,
                data.anomalies,
                len(data.test),
                event_gap=event_gap,
                extra=extra,
            )
        )
    if not results:
        raise ValueError(f"no channel could be evaluated from {repository}")
    return evaluation.pool(results), missing


def _rule_flags(
    session: Any,
    data: ChannelData,
    meta: dict[str, Any],
    channel: str,
    window: int,
    stride: int,
    rule: str,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`split_flags` of the test split under decision ``rule`` (see RULES)."""
    if rule not in RULES:
        raise ValueError(f"unknown decision rule {rule!r} (known: {', '.join(RULES)})")
    stream_rule = (
        stream_rule_from_metadata(channel, meta, StreamRuleConfig()) if rule != "static" else None
    )
    return split_flags(
        session,
        data.test,
        float(meta["threshold"]),
        window,
        stride,
        stream_rule,
        confirm=rule == "confirmed",
    )


def _context_record_flags(
    data: ChannelData, meta: dict[str, Any], config: ContextConfig, window: int, stride: int
) -> tuple[np.ndarray, ContextDetector]:
    """Per-record flags of the context detector over the test split (the same windows and
    responsibility rule as the model's), fitted on the train split with the model's
    normalisation of the telemetry value; and the detector."""
    detector = detector_from_metadata(data.train, meta, config)
    starts = windows.window_starts(len(data.test), window, stride)
    window_flags = detector.window_flags(data.test[:, 0], starts, window)
    record_flags = windows.record_flags_from_windows(
        window_flags, starts, len(data.test), window, stride
    )
    return record_flags, detector


def _forecaster_record_flags(
    data: ChannelData,
    meta: dict[str, Any],
    config: LinearForecasterConfig,
    window: int,
    stride: int,
    rule: str = "confirmed",
) -> tuple[np.ndarray, ChannelForecaster]:
    """Per-record flags of the linear forecaster over the test split (under decision
    ``rule`` on the same windows, the test split a stream of its own from record 0, as
    live), fitted on the train split with the model's normalisation of the value; and its
    decision."""
    decided = linear_channel_forecaster(data.channel, data.train, meta, config, stride)
    starts = windows.window_starts(len(data.test), window, stride)
    window_flags = decided.window_flags(data.test, window, stride, rule)
    record_flags = windows.record_flags_from_windows(
        window_flags, starts, len(data.test), window, stride
    )
    return record_flags, decided


def seed_config(config: TrainConfig, seed: int) -> TrainConfig:
    """The same settings with another seed."""
    return replace(config, seed=seed)


@dataclass(frozen=True)
class ChannelScores:
    """One channel's test split as the pipeline judges it (for plots)."""

    data: ChannelData
    statistic: np.ndarray  #: per record: its judging window's mean score (NaN: none)
    flags: np.ndarray  #: per record: anomalous or not
    threshold: float


def channel_scores(
    source: DataSource,
    channel: str,
    repository: Path,
    window: int = 30,
    stride: int = 10,
    event_gap: int = 0,
    context: ContextConfig | None = None,
    rule: str = "static",
    forecaster: LinearForecasterConfig | None = None,
) -> ChannelScores:
    """Score one channel's test split through its ONNX model (flags under decision
    ``rule`` and the event rule :func:`smap_bench.evaluation.bridge_gaps` with
    ``event_gap``, or'ed with the context detector's under ``context`` and the linear
    forecaster's under ``forecaster``)."""
    data = load_channel(channel, source.path)
    meta = read_metadata(repository, channel)
    session = onnx_session(onnx_path(repository, channel))
    threshold = float(meta["threshold"])
    flags, statistic = _rule_flags(session, data, meta, channel, window, stride, rule)
    if context is not None:
        flags = flags | _context_record_flags(data, meta, context, window, stride)[0]
    if forecaster is not None:
        flags = flags | _forecaster_record_flags(data, meta, forecaster, window, stride, rule)[0]
    flags = evaluation.bridge_gaps(flags, event_gap)
    return ChannelScores(data, statistic, flags, threshold)
