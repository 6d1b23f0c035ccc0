"""What serving the linear forecaster live costs, for the two designs (one core).

- **A**: the worker forecasts each window's newest 10 values from 260 context values; the
  events stage then smooths the errors per stream, in window order (state per stream).
- **B** (served): the worker forecasts 210 values from 460 context values plus each
  record's commands (a 24-bit mask per record: the command columns are 0/1) and smooths
  them itself (:func:`smap_bench.model.forecaster.context_statistic`, what the worker runs).
  The EWMA of span 10 forgets to about 4e-18 in 200 records, so each window's statistic
  needs no stream state; this script checks it against the offline statistic
  (:meth:`smap_bench.model.forecaster.ChannelForecaster.window_statistics`) on every
  window of a few channels' test splits.

It also measures an inference task's JSON size and its validation with each context,
against the context detector's 100 values alone (design A's values as an extra field;
design B's as served, ``forecast_values`` and ``forecast_masks`` beside the 100). Nothing
here reads a label.

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python scripts/forecaster_serving_cost.py \\
        --json docs/benchmarks/forecaster_serving_cost_1core.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from smap_bench.config import get_settings
from smap_bench.data.loader import load_channel
from smap_bench.model.forecaster import (
    ChannelForecaster,
    LinearForecasterConfig,
    context_statistic,
    linear_channel_forecaster,
)
from smap_bench.model.repository import read_metadata
from smap_bench.model.runner import data_source
from smap_bench.schema import InferenceTask
from smap_bench.windows import command_masks

WINDOW, STRIDE = 30, 10


def decision(data_dir: Path, repository: Path, channel: str) -> tuple[ChannelForecaster, Any]:
    data = load_channel(channel, data_dir)
    meta = read_metadata(repository, channel)
    return linear_channel_forecaster(
        channel, data.train, meta, LinearForecasterConfig(), STRIDE
    ), data


def design_b(decided: ChannelForecaster, test: np.ndarray, masks: np.ndarray, end: int) -> float:
    """Window statistic of the window ending at ``end`` from its context alone, as the
    worker computes it (the scheduler's context: the last 460 values and masks)."""
    start = max(0, end - LinearForecasterConfig().context_records(STRIDE))
    statistic = context_statistic(decided, test[start:end, 0], masks[start:end], STRIDE)
    return float("nan") if statistic is None else statistic


def per_call_us(fn: Callable[[], object], repeats: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return round((time.perf_counter() - started) / repeats * 1e6, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", nargs="+", default=["P-1", "E-5", "A-1", "T-3"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    settings = get_settings()
    source = data_source(settings.data_dir)
    if source.path is None:
        raise SystemExit("no SMAP data directory: the measurement needs the real splits")
    data_dir, repository = Path(source.path), settings.model_repository
    decided, data = decision(data_dir, repository, args.channels[0])
    test = data.test.astype(np.float32)
    end = 3000  # a window in the middle of the split
    lags = decided.forecaster.lags
    report: dict[str, Any] = {
        "channel": args.channels[0],
        "window_end": end,
        "design_a_us": per_call_us(
            lambda: decided.forecaster.errors(test[end - lags - STRIDE : end])[-STRIDE:], 2000
        ),
    }
    masks = command_masks(test[:, 1:])
    report["design_b_us"] = per_call_us(lambda: design_b(decided, test, masks, end), 2000)
    for name, n_context, with_masks in (
        ("today_100", 100, False),
        ("design_a_260", lags + STRIDE, False),
        ("design_b_460", LinearForecasterConfig().context_records(STRIDE), True),
    ):
        body: dict[str, Any] = {
            "job_id": "j",
            "satellite_id": "sat-001",
            "subsystem": "EPS",
            "model_name": f"SMAP_{args.channels[0]}",
            "input_data": test[end - WINDOW : end].tolist(),
            "context": test[end - 100 : end, 0].tolist(),
            "window_start": "2026-12-07T00:00:00Z",
            "window_end": "2026-12-07T00:00:30Z",
            "loop": 0,
            "record_index_start": end - WINDOW,
            "run_window_start": 0,
        }
        if with_masks:  # as the scheduler sends it
            body["forecast_values"] = test[end - n_context : end, 0].tolist()
            body["forecast_masks"] = masks[end - n_context : end].tolist()
        elif n_context != 100:
            body["forecast_context"] = test[end - n_context : end, 0].tolist()
        raw = json.dumps(body)
        report[f"task_bytes_{name}"] = len(raw)
        report[f"task_validate_us_{name}"] = per_call_us(
            lambda raw=raw: InferenceTask.model_validate_json(raw), 500
        )
    exactness = {}
    for channel in args.channels:
        decided, data = decision(data_dir, repository, channel)
        if decided.rule is None:
            exactness[channel] = "no forecaster"
            continue
        test = data.test.astype(np.float32)
        offline = decided.window_statistics(test, WINDOW, STRIDE)
        judged = np.flatnonzero(np.isfinite(offline))
        masks = command_masks(test[:, 1:])
        live = np.array([design_b(decided, test, masks, STRIDE * k + WINDOW) for k in judged])
        relative = np.abs(live - offline[judged]) / np.maximum(offline[judged], 1e-300)
        static = decided.rule.static
        exactness[channel] = {
            "windows": int(judged.size),
            "max_relative_difference": float(relative.max()),
            "static_decisions_differing": int(
                ((live > static) != (offline[judged] > static)).sum()
            ),
        }
    report["design_b_against_offline"] = exactness
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
