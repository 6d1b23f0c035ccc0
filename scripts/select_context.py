"""Does the context detector help, judged on training data only?

The served decision rule (the window statistic and threshold configuration recorded in
the models' metadata) is judged on the held-out halves of every train split with injected
anomalies (:mod:`smap_bench.model.selection`), alone and or'ed with the context detector
(:mod:`smap_bench.model.context`) under each configuration of a small grid. The criterion
is the selection's: the event-wise F1 expected at one anomaly per 2,880 records. Nothing
here reads a test split.

Two grids: ``context`` (lengths 100 and 250 by factors 1.5, 2 and 3, the hold off: the
grid that chose the served length and factor) and ``hold`` (the hold factor 0, 1.5, 2 or 3
beside the served length and factor, and beside 250 x 1.5, the runner-up).

    python scripts/select_context.py --repository triton-repository --grid hold --json PATH
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from pathlib import Path

from smap_bench.config import get_settings
from smap_bench.data.loader import load_channel
from smap_bench.inference.repository import find_onnx_models
from smap_bench.model import selection
from smap_bench.model.context import ContextConfig
from smap_bench.model.repository import read_metadata
from smap_bench.model.rethreshold import _session, onnx_scorer
from smap_bench.model.runner import data_source
from smap_bench.model.threshold import ThresholdConfig

log = logging.getLogger("select_context")

LENGTHS = (100, 250)
FACTORS = (1.5, 2.0, 3.0)
HOLD_FACTORS = (0.0, 1.5, 2.0, 3.0)
HOLD_BESIDE = ((100, 3.0), (250, 1.5))
GRIDS = {
    "context": [
        ContextConfig(length, factor, hold_factor=0.0)
        for length, factor in itertools.product(LENGTHS, FACTORS)
    ],
    "hold": [
        ContextConfig(length, factor, hold_factor=hold)
        for (length, factor), hold in itertools.product(HOLD_BESIDE, HOLD_FACTORS)
    ],
}
RATES = (576.0, float(selection.RECORDS_PER_ANOMALY), 8640.0)


def compare(repository: Path, event_gap: int, grid: list[ContextConfig]) -> dict:
    source = data_source(get_settings().data_dir)
    channels = sorted(name.removeprefix("SMAP_") for name in find_onnx_models(repository))
    material, skipped, served = [], [], None
    for channel in channels:
        data = load_channel(channel, source.path)
        meta = read_metadata(repository, channel)
        settings = meta["settings"]
        served = served or ThresholdConfig(**settings["threshold"])
        try:
            material.append(
                selection.channel_material(
                    channel,
                    data.train,
                    onnx_scorer(_session(repository, channel)),
                    window=int(meta["window"]),
                    train_stride=int(settings["train_stride"]),
                    validation_fraction=float(settings["validation_fraction"]),
                    contexts=grid,
                )
            )
        except ValueError as exc:
            log.warning("%s left out: %s", channel, exc)
            skipped.append(channel)
    assert served is not None
    candidate = selection.Candidate("mean", served)
    alone = selection.judge(candidate, material, event_gap=event_gap)
    rows = [{"context": None, **alone.as_dict(RATES)}]
    for config in grid:
        outcome = selection.judge(candidate, material, event_gap=event_gap, context=config)
        rows.append({"context": config.to_dict(), **outcome.as_dict(RATES)})
    key = f"f1_at_{selection.RECORDS_PER_ANOMALY}"
    best = max(rows, key=lambda r: (r[key], -r["false_positives"]))
    return {
        "repository": str(repository),
        "served_rule": candidate.label,
        "event_gap": event_gap,
        "channels": len(material),
        "skipped": skipped,
        "criterion": key,
        "best": best,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=get_settings().model_repository)
    parser.add_argument("--grid", choices=sorted(GRIDS), default="context")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = compare(args.repository, get_settings().event_gap, GRIDS[args.grid])
    report["grid"] = args.grid
    for row in report["rows"]:
        context = row["context"]
        label = (
            "no context"
            if context is None
            else f"L={context['length']} x{context['factor']} hold x{context['hold_factor']}"
        )
        print(
            f"{label:26} recall {row['recall']:.3f} fp {row['false_positives']:3d} "
            f"f1@2880 {row['f1_at_2880']:.4f} by kind {row['detected_by_kind']}"
        )
    print("best:", report["best"]["context"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
