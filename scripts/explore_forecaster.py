"""One offline test evaluation of a declared forecaster (linear or LSTM) beside the served detector.

An exploration on the training-only selection harness (held-out halves of the train
splits with injected anomalies) ranked a telemanom-style linear forecaster of the
telemetry value best at **L = 250 lags, ridge 10, EWMA span 10**; that configuration was
declared before any test split was scored, and this script scores it on the test splits
once, as EVALUATION.md asks (event-wise P/R/F1 pooled over the 54 channels, the served
event gap, false alarms per 10,000 records, the per-channel table).

Per channel, from the **train split only**, mirroring how training thresholds TranAD
(:func:`smap_bench.model.train.train_channel`):

- the normalisation is the model's (:func:`~smap_bench.model.train.fit_normalisation` of
  the whole train split); the train split is cut into the fit part (the head,
  ``1 - validation_fraction``) and the validation tail;
- the forecaster is a ridge regression (closed form) of the normalised value ``v[t]`` on
  ``v[t-L..t-1]``, the 24 command columns at ``t`` and an intercept (not penalised), fitted
  on the fit part's targets ``t`` in ``[L, n_fit)``; a channel whose fit part holds fewer
  than 2 rows per parameter (``n_fit - L < 2 (L + 25)``) gets no forecaster and never flags;
- the per-record error ``|v[t] - v_hat[t]|`` over the train split as one causal stream,
  smoothed by a causal EWMA (span 10) from the first forecast on; a window's statistic is
  the mean smoothed error of its newest ``stride`` records
  (:func:`smap_bench.model.selection.stat_last_block`), defined once those all have one;
- the threshold is :func:`~smap_bench.model.threshold.fit_threshold` of the fit part's
  windows (every ``train_stride`` records) and the validation tail's windows (every
  record, formed inside the tail), with the models' served ``ThresholdConfig``: POT over
  both, floored at ``floor_factor`` times the largest validation statistic;
- the stream rule is built as :func:`~smap_bench.model.stream_rule.stream_rule_from_metadata`
  builds TranAD's: the static threshold, and as floor POT's initial threshold (the
  ``level`` quantile of the pooled training statistics).

On the **test split**, as live: the forecaster sees the split as its own stream from
record 0 (no forecast for the first L records), the windows are the pipeline's (window
30, stride 10 from record 0), and the forecaster's window flag is the confirmed rule
(:func:`~smap_bench.model.stream_rule.confirmed_flags`) over its own statistics; its
stream of statistics begins at the first window that has one (windows before it never
flag). The served detector's window flags are the offline evaluation's under the served
settings (TranAD's statistic under the confirmed rule, or'ed with the context detector).
Served OR forecaster window flags become record flags by the responsibility rule
(:func:`smap_bench.windows.record_flags_from_windows`) and are scored by
:func:`smap_bench.evaluation.evaluate_channel` and :func:`~smap_bench.evaluation.pool`.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/explore_forecaster.py \
        --repository 0=triton-repository --repository 1=.run/model-seeds/seed-1 \
        --repository 2=.run/model-seeds/seed-2 \
        --json docs/benchmarks/forecaster_offline_54ch.json

``--model lstm`` puts telemanom's LSTM forecaster (:mod:`smap_bench.model.lstm_forecaster`,
its published configuration, declared before any test split was scored with it) in the
ridge regression's place, everything after the per-record error unchanged; it is fitted
once per ``--forecaster-seed`` in ``--jobs`` processes (about 40 s a channel on one
core) and kept in ``--cache`` so a second run does not fit it again.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smap_bench import evaluation, windows
from smap_bench.config import get_settings
from smap_bench.data.loader import ChannelData, load_channel
from smap_bench.model.context import ContextConfig, detector_from_metadata, value_normalisation
from smap_bench.model.forecaster import (
    EWMA_SPAN,
    ChannelForecaster,
    LinearForecaster,
    LinearForecasterConfig,
    channel_forecaster,
    fit_part_end,
    linear_channel_forecaster,
)
from smap_bench.model.lstm_forecaster import (
    LSTMForecaster,
    LSTMForecasterConfig,
    fit_lstm_forecaster,
)
from smap_bench.model.offline import onnx_session, score_split
from smap_bench.model.repository import onnx_path, read_metadata
from smap_bench.model.runner import data_source, select_channels
from smap_bench.model.stream_rule import (
    StreamRuleConfig,
    confirmed_flags,
    stream_rule_from_metadata,
)
from smap_bench.model.threshold import window_statistic

log = logging.getLogger("explore_forecaster")

#: Declared before any test split was scored (the selection harness's best).
LAGS = LinearForecasterConfig().lags
RIDGE = LinearForecasterConfig().ridge
MIN_ROWS_PER_PARAMETER = LinearForecasterConfig().min_rows
MODES = ("served", "forecaster", "served_or_forecaster")
MODELS = ("linear", "lstm")


def declared(stride: int, model: str = "linear") -> dict[str, Any]:
    """The declared configuration, as the result JSON records it."""
    if model == "lstm":
        forecaster: dict[str, Any] = {
            "model": "lstm (telemanom's published configuration)",
            **LSTMForecasterConfig().to_dict(),
            "inputs": "records t-250..t-1, all 25 columns (normalised value, commands)",
            "forecast_used": "the first of the 10 values forecast (v_hat[t])",
        }
    else:
        forecaster = {
            "model": "linear",
            "lags": LAGS,
            "ridge": RIDGE,
            "ridge_on_intercept": False,
            "inputs": "v[t-L..t-1] (normalised telemetry), the 24 command columns at t, intercept",
        }
    return {
        **forecaster,
        "ewma_span": EWMA_SPAN,
        "ewma": "causal, alpha = 2 / (span + 1), started at the first forecast",
        "window_statistic": (
            f"mean smoothed |v - v_hat| over the window's newest {stride} records"
        ),
        "min_fit_rows_per_parameter": MIN_ROWS_PER_PARAMETER,
        "decision": "statistic above the training threshold and kept by the stream rule"
        " (confirmed), floor = POT's initial threshold",
        "combination": "window flags: served OR forecaster",
    }


# --------------------------------------------------------------------------------------
# The forecaster
# --------------------------------------------------------------------------------------


def fit_channel_forecaster(
    channel: str,
    train: np.ndarray,
    meta: dict[str, Any],
    block: int,
    model: str = "linear",
    forecaster_seed: int = 0,
    fitted_forecaster: LinearForecaster | LSTMForecaster | None = None,
    memo: dict[str, np.ndarray] | None = None,
) -> ChannelForecaster:
    """The forecaster, threshold and stream rule of one channel from its train split
    (the forecaster itself given when already fitted, with the errors it gave)."""
    assert fitted_forecaster is None or model == "lstm", "only the LSTM's fit is kept"
    if model == "linear":
        return linear_channel_forecaster(channel, train, meta, LinearForecasterConfig(), block)
    train = np.asarray(train, dtype=np.float32)
    forecaster = fitted_forecaster
    if forecaster is None:
        offset, span = value_normalisation(meta)
        fit_part = train[: fit_part_end(len(train), meta)]
        lstm_config = LSTMForecasterConfig()
        forecaster = fit_lstm_forecaster(fit_part, offset, span, lstm_config, forecaster_seed)
    return channel_forecaster(channel, forecaster, train, meta, block, EWMA_SPAN, memo)


# --------------------------------------------------------------------------------------
# The served detector, window by window
# --------------------------------------------------------------------------------------


def served_window_flags(
    repository: Path,
    data: ChannelData,
    meta: dict[str, Any],
    context: ContextConfig | None,
    window: int,
    stride: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Window starts and the served window flags of the test split: TranAD's statistic
    under the confirmed rule (as ``runner._rule_flags`` / ``offline.split_flags``), or'ed
    with the context detector's (as ``runner._context_record_flags``)."""
    session = onnx_session(onnx_path(repository, data.channel))
    starts, scores = score_split(session, data.test, window, stride)
    rule = stream_rule_from_metadata(data.channel, meta, StreamRuleConfig())
    flags = confirmed_flags(window_statistic(scores), rule)
    if context is not None:
        detector = detector_from_metadata(data.train, meta, context)
        flags = flags | detector.window_flags(data.test[:, 0], starts, window)
    return starts, flags


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------


def labeled_outcome(
    record_flags: np.ndarray, data: ChannelData, event_gap: int
) -> tuple[list[bool], list[tuple[int, int]]]:
    """Which labeled ranges a channel's flags detect, and its false-alarm segments."""
    flags = evaluation.bridge_gaps(record_flags, event_gap)
    segments = evaluation.segments(flags)
    ranges = evaluation.as_ranges(data.anomalies, len(flags))

    def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
        return a[0] <= b[1] and b[0] <= a[1]

    detected = [any(overlaps(r, s) for s in segments) for r in ranges]
    false_alarms = [s for s in segments if not any(overlaps(s, r) for r in ranges)]
    return detected, false_alarms


def evaluate_seed(
    seed: int,
    repository: Path,
    channels: list[str],
    forecasters: dict[str, ChannelForecaster],
    settings_window: int,
    stride: int,
    event_gap: int,
    context: ContextConfig | None,
) -> dict[str, Any]:
    """Pooled reports of the three modes for one model repository, and what the
    forecaster adds to the served detector."""
    source = data_source(get_settings().data_dir)
    results: dict[str, list[evaluation.ChannelEvaluation]] = {mode: [] for mode in MODES}
    added_ranges: list[dict[str, Any]] = []
    added_false_alarms: list[dict[str, Any]] = []
    lost_false_alarms: list[dict[str, Any]] = []
    for channel in channels:
        data = load_channel(channel, source.path)
        meta = read_metadata(repository, channel)
        window = int(meta.get("window", settings_window))
        assert window == settings_window, (channel, window)
        starts, served = served_window_flags(repository, data, meta, context, window, stride)
        forecaster = forecasters[channel].window_flags(data.test, window, stride)
        assert forecaster.shape == served.shape
        by_mode = {
            "served": served,
            "forecaster": forecaster,
            "served_or_forecaster": served | forecaster,
        }
        record = {}
        for mode, window_flags in by_mode.items():
            record[mode] = windows.record_flags_from_windows(
                window_flags, starts, len(data.test), window, stride
            )
            results[mode].append(
                evaluation.evaluate_channel(
                    channel,
                    record[mode],
                    data.anomalies,
                    len(data.test),
                    event_gap=event_gap,
                    extra={
                        "seed": seed,
                        "flagged_windows": int(window_flags.sum()),
                        "windows": int(window_flags.size),
                    },
                )
            )
        served_detected, served_fa = labeled_outcome(record["served"], data, event_gap)
        both_detected, both_fa = labeled_outcome(record["served_or_forecaster"], data, event_gap)
        ranges = evaluation.as_ranges(data.anomalies, len(data.test))
        for labeled, before, after in zip(ranges, served_detected, both_detected, strict=True):
            if after and not before:
                added_ranges.append({"channel": channel, "range": list(labeled)})
        served_flags = evaluation.bridge_gaps(record["served"], event_gap)
        warm_up_end = forecasters[channel].warm_up_end(data.test, window, stride)
        for start, end in both_fa:
            if not served_flags[start : end + 1].any():
                added_false_alarms.append(
                    {
                        "channel": channel,
                        "segment": [start, end],
                        "starts_in_static_warm_up": start < warm_up_end,
                    }
                )
        if len(both_fa) < len(served_fa):  # served false alarms merged by bridging
            lost_false_alarms.append(
                {"channel": channel, "served": len(served_fa), "combined": len(both_fa)}
            )
        log.info("seed %d %s done", seed, channel)
    pooled = {mode: evaluation.pool(items) for mode, items in results.items()}
    for mode in MODES:
        pooled[mode]["seed"] = seed
        pooled[mode]["repository"] = str(repository)
    return {
        "seed": seed,
        "repository": str(repository),
        "pooled": pooled,
        "forecaster_adds": {
            "labeled_ranges": added_ranges,
            "false_alarm_segments": added_false_alarms,
            "false_alarms_merged_away": lost_false_alarms,
        },
    }


def headline(pooled: dict[str, Any]) -> dict[str, Any]:
    event = pooled["event"]
    return {
        "precision": round(event["precision"], 4),
        "recall": round(event["recall"], 4),
        "f1": round(event["f1"], 4),
        "tp": event["tp"],
        "fp": event["fp"],
        "fn": event["fn"],
        "false_alarms_per_10k": round(pooled["false_alarms_per_10k"], 4),
    }


def summary_over_seeds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"seeds": len(rows)}
    for key in ("precision", "recall", "f1", "tp", "fp", "fn", "false_alarms_per_10k"):
        values = [float(r[key]) for r in rows]
        out[key] = {
            "mean": round(float(np.mean(values)), 4),
            "std": round(float(np.std(values, ddof=1)), 4) if len(values) > 1 else None,
        }
    return out


def _fit_facts(fitted: ChannelForecaster) -> dict[str, Any]:
    forecaster = fitted.forecaster
    if not isinstance(forecaster, LSTMForecaster):
        return {}
    return {
        "epochs_run": forecaster.epochs_run,
        "best_validation_loss": round(forecaster.best_validation_loss, 6),
    }


def parse_repository(text: str) -> tuple[int, Path]:
    seed, _, path = text.partition("=")
    if not path:
        raise argparse.ArgumentTypeError(f"need SEED=PATH, got {text!r}")
    return int(seed), Path(path)


def _fit_job(job: tuple[str, Path, Path, int, str, int]) -> ChannelForecaster:
    """One channel's forecaster in a worker process, its test split's errors computed
    there too (the LSTM's forward passes are most of an evaluation's time)."""
    channel, data_path, repository, block, model, forecaster_seed = job
    torch.set_num_threads(1)
    data = load_channel(channel, data_path)
    meta = read_metadata(repository, channel)
    fitted = fit_channel_forecaster(channel, data.train, meta, block, model, forecaster_seed)
    fitted.smoothed_errors(data.test)
    log.info("%s forecaster %s fitted (seed %d)", model, channel, forecaster_seed)
    return fitted


def fit_forecasters(
    channels: list[str],
    data_path: Path,
    repository: Path,
    block: int,
    model: str,
    forecaster_seed: int,
    jobs: int,
    cache: Path | None,
) -> dict[str, ChannelForecaster]:
    """Every channel's forecaster. The fitted forecasters (and the smoothed errors they
    gave) are kept in ``cache`` for this model and seed, as
    ``{channel: (forecaster, errors by split)}`` (the LSTM's fit takes about a minute a
    channel; ``scripts/select_forecaster.py --lstm`` reads the same file); the threshold
    and stream rule are fitted again from them, which is quick."""
    path = None if cache is None else cache_path(cache, model, forecaster_seed)
    if path is not None and path.exists():
        with path.open("rb") as handle:
            cached = pickle.load(handle)
        if set(channels) <= cached.keys():
            log.info("forecasters read from %s", path)
            forecasters = {}
            for channel in channels:
                data = load_channel(channel, data_path)
                meta = read_metadata(repository, channel)
                forecaster, memo = cached[channel]
                forecasters[channel] = fit_channel_forecaster(
                    channel, data.train, meta, block, model, forecaster_seed, forecaster, memo
                )
            return forecasters
    work = [(c, data_path, repository, block, model, forecaster_seed) for c in channels]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            fitted = list(pool.map(_fit_job, work))
    else:
        fitted = [_fit_job(job) for job in work]
    forecasters = {f.channel: f for f in fitted}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            pickle.dump({c: (f.forecaster, f.memo) for c, f in forecasters.items()}, handle)
    return forecasters


def cache_path(cache: Path, model: str, forecaster_seed: int) -> Path:
    """Where the fitted forecasters of a model and seed are kept."""
    return cache / f"{model}-seed-{forecaster_seed}.pkl"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--repository",
        type=parse_repository,
        action="append",
        required=True,
        help="SEED=PATH of a model repository (repeat: one per TranAD seed)",
    )
    parser.add_argument("--channels", default="all")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--model", choices=MODELS, default="linear")
    parser.add_argument(
        "--forecaster-seed",
        type=int,
        default=None,
        help="the forecaster's training seed (default: each TranAD seed's own)",
    )
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--cache", type=Path, default=Path(".run/forecasters"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = get_settings()
    context = settings.context_detector
    assert settings.decision_rule == "confirmed", settings.decision_rule
    window, stride, event_gap = settings.window_size, settings.stride, settings.event_gap
    source = data_source(settings.data_dir)
    channels, absent = select_channels(source, args.channels)
    if absent:
        raise SystemExit(f"channels not found: {absent}")
    started = time.perf_counter()
    first_repository = args.repository[0][1]
    configs = {
        json.dumps(read_metadata(first_repository, c)["settings"]["threshold"], sort_keys=True)
        for c in channels
    }
    assert len(configs) == 1, configs
    # The linear fit has no seed: one set of forecasters serves every TranAD seed.
    forecaster_seeds = {
        seed: 0
        if args.model == "linear"
        else (seed if args.forecaster_seed is None else args.forecaster_seed)
        for seed, _ in args.repository
    }
    by_seed = {
        fseed: fit_forecasters(
            channels,
            source.path,
            first_repository,
            stride,
            args.model,
            fseed,
            args.jobs,
            args.cache if args.model == "lstm" else None,
        )
        for fseed in sorted(set(forecaster_seeds.values()))
    }
    fit_seconds = time.perf_counter() - started
    forecasters = by_seed[forecaster_seeds[args.repository[0][0]]]
    unfitted = sorted(c for c, f in forecasters.items() if not f.forecaster.fitted)
    log.info("forecasters fitted in %.1fs; unfitted: %s", fit_seconds, unfitted)
    runs = []
    for seed, repository in args.repository:
        for channel in channels:  # the forecaster must not depend on the seed's settings
            meta = read_metadata(repository, channel)
            assert json.dumps(meta["settings"]["threshold"], sort_keys=True) in configs
        runs.append(
            evaluate_seed(
                seed,
                repository,
                channels,
                by_seed[forecaster_seeds[seed]],
                window,
                stride,
                event_gap,
                context,
            )
        )
        runs[-1]["forecaster_seed"] = forecaster_seeds[seed]
        for mode in MODES:
            log.info("seed %d %s: %s", seed, mode, headline(runs[-1]["pooled"][mode]))
    report = {
        "what": f"one offline test evaluation of the declared {args.model} forecaster, alone"
        " and or'ed with the served detector (scripts/explore_forecaster.py)",
        "declared_configuration": declared(stride, args.model),
        "fit_seconds": round(fit_seconds, 1),
        "threshold_config": json.loads(configs.pop()),
        "stream_rule": StreamRuleConfig().to_dict(),
        "served": {
            "rule": settings.decision_rule,
            "context": None if context is None else context.to_dict(),
        },
        "window": window,
        "stride": stride,
        "event_gap": event_gap,
        "channels": len(channels),
        "unfitted_channels": unfitted,
        "forecaster_thresholds_seed": forecaster_seeds[args.repository[0][0]],
        "forecaster_thresholds": {
            c: {"fit_rows": f.fit_rows, **f.threshold_parameters, **_fit_facts(f)}
            for c, f in forecasters.items()
        },
        "headline": {
            mode: {
                "per_seed": {str(r["seed"]): headline(r["pooled"][mode]) for r in runs},
                "over_seeds": summary_over_seeds([headline(r["pooled"][mode]) for r in runs]),
            }
            for mode in MODES
        },
        "runs": runs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    for mode in MODES:
        print(mode, json.dumps(report["headline"][mode]["over_seeds"]))
        for seed, row in report["headline"][mode]["per_seed"].items():
            print(f"  seed {seed}: {row}")


if __name__ == "__main__":
    main()
