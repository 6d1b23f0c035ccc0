"""Why labeled ranges are missed: is it the score or the threshold?

For each labeled range of the test splits, the highest window statistic inside the range
against the highest outside every range (both as multiples of the channel's threshold).
A missed range whose inside maximum is below the outside maximum cannot be found by any
threshold on this score without a false alarm at least as strong: the score, not the
threshold, misses it. Labels are used here only to explain results, never to choose a
threshold or a rule.

    python scripts/explain_misses.py --repository triton-repository --json PATH
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from smap_bench.inference.repository import find_onnx_models
from smap_bench.model.runner import channel_scores, data_source


def explain(repository: Path, event_gap: int = 100) -> dict:
    source = data_source(None)
    channels = sorted(name.removeprefix("SMAP_") for name in find_onnx_models(repository))
    ranges = []
    for channel in channels:
        scores = channel_scores(source, channel, repository, event_gap=event_gap)
        statistic = scores.statistic
        inside = np.zeros(len(statistic), dtype=bool)
        for labeled in scores.data.anomalies:
            inside[labeled.start : labeled.end + 1] = True
        outside = np.where(inside, np.nan, statistic)
        outside_max = float(np.nanmax(outside)) if np.isfinite(outside).any() else 0.0
        for labeled in scores.data.anomalies:
            segment = statistic[labeled.start : labeled.end + 1]
            inside_max = float(np.nanmax(segment)) if np.isfinite(segment).any() else 0.0
            ranges.append(
                {
                    "channel": channel,
                    "start": labeled.start,
                    "end": labeled.end,
                    "kind": labeled.kind,
                    "detected": bool(scores.flags[labeled.start : labeled.end + 1].any()),
                    "inside_max_over_threshold": round(inside_max / scores.threshold, 3),
                    "outside_max_over_threshold": round(outside_max / scores.threshold, 3),
                    "separable": inside_max > outside_max,
                }
            )
    missed = [r for r in ranges if not r["detected"]]
    return {
        "repository": str(repository),
        "event_gap": event_gap,
        "ranges": len(ranges),
        "missed": len(missed),
        "missed_separable": sum(r["separable"] for r in missed),
        "missed_not_separable": sum(not r["separable"] for r in missed),
        "detected_separable": sum(r["separable"] for r in ranges if r["detected"]),
        "per_range": ranges,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("triton-repository"))
    parser.add_argument("--event-gap", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = explain(args.repository, args.event_gap)
    summary = {k: v for k, v in report.items() if k != "per_range"}
    print(json.dumps(summary, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
