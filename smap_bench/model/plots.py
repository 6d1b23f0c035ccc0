"""HoloViews view of a channel's anomaly score against its threshold, with labeled ranges."""

from __future__ import annotations

import holoviews as hv
import numpy as np

from smap_bench.data.plots import KIND_COLORS
from smap_bench.model.runner import ChannelScores


def score_plot(scores: ChannelScores, width: int = 900, height: int = 300) -> hv.Overlay:
    """The window statistic per record (log scale), the threshold, flagged records and the
    labeled ranges of the test split."""
    records = np.arange(len(scores.statistic))
    floor = max(scores.threshold * 1e-3, 1e-9)
    values = np.clip(np.nan_to_num(scores.statistic, nan=floor), floor, None)
    curve = hv.Curve(
        (records, values),
        kdims=[hv.Dimension("record", label="record index")],
        vdims=[hv.Dimension("score", label="window mean score")],
    ).opts(logy=True, color="#1f77b4", line_width=1, tools=["hover"])
    line = hv.HLine(scores.threshold).opts(color="black", line_dash="dashed")
    flagged = hv.Scatter((records[scores.flags], values[scores.flags])).opts(
        color="#d62728", size=2
    )
    spans = [
        hv.VSpan(r.start, r.end).opts(color=KIND_COLORS.get(r.kind, "grey"), alpha=0.2)
        for r in scores.data.anomalies
    ]
    title = (
        f"{scores.data.channel}: score vs threshold {scores.threshold:.3g}, "
        f"{int(scores.flags.sum())} flagged records, {len(spans)} labeled range(s)"
    )
    return hv.Overlay([*spans, curve, line, flagged]).opts(
        title=title, width=width, height=height, show_legend=False
    )
