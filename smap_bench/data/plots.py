"""Interactive (HoloViews/Bokeh) views of one channel, shared by notebooks and the dashboard."""

from __future__ import annotations

import holoviews as hv
import holoviews.plotting.bokeh  # registers the backend whose options are set below
import numpy as np

from smap_bench.data.loader import ChannelData

#: Shading of labeled ranges by kind.
KIND_COLORS = {"point": "#d62728", "contextual": "#ff7f0e"}


def channel_plot(
    data: ChannelData, column: int = 0, split: str = "test", width: int = 900, height: int = 300
) -> hv.Overlay:
    """One column of a channel's split as a curve, with the labeled ranges shaded.

    Labels refer to the test split, so ranges are only drawn over it; point ranges are
    red, contextual ones orange.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    values = data.test if split == "test" else data.train
    curve = hv.Curve(
        (np.arange(len(values)), values[:, column]),
        kdims=[hv.Dimension("record", label="record index")],
        vdims=[hv.Dimension("value", label=f"column {column}")],
        label=f"{data.channel} {split}",
    ).opts(width=width, height=height, tools=["hover"], color="#1f77b4", line_width=1)
    spans = [
        hv.VSpan(r.start, r.end).opts(color=KIND_COLORS.get(r.kind, "grey"), alpha=0.25)
        for r in (data.anomalies if split == "test" else ())
    ]
    title = f"{data.channel} {split} split, column {column}: {len(spans)} labeled range(s)"
    return hv.Overlay([curve, *spans]).opts(title=title, show_legend=False)
