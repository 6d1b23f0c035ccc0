"""The channel plot: one curve and one shaded span per labeled range."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pytest

from smap_bench.data.plots import KIND_COLORS, channel_plot
from smap_bench.data.synthetic import generate_channel


def test_test_split_with_shaded_ranges() -> None:
    data = generate_channel("A-3", train_rows=100, test_rows=400)
    plot = channel_plot(data)
    curves = plot.select(hv.Curve).traverse(lambda e: e, [hv.Curve])
    spans = plot.traverse(lambda e: e, [hv.VSpan])
    assert len(curves) == 1
    np.testing.assert_array_equal(curves[0].dimension_values("value"), data.test[:, 0])
    assert [(s.data[0], s.data[1]) for s in spans] == [(r.start, r.end) for r in data.anomalies]
    colors = [hv.Store.lookup_options("bokeh", s, "style").kwargs["color"] for s in spans]
    assert colors == [KIND_COLORS[r.kind] for r in data.anomalies]


def test_train_split_has_no_spans_and_bad_split_is_refused() -> None:
    data = generate_channel("A-3", train_rows=100, test_rows=400)
    assert channel_plot(data, split="train").traverse(lambda e: e, [hv.VSpan]) == []
    with pytest.raises(ValueError, match="split must be"):
        channel_plot(data, split="validation")
