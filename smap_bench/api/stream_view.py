"""One stream's view in one answer: what a dashboard refresh of the timeline and the
heatmap needs, read with two VictoriaMetrics requests and one PostgreSQL query.

The timeline (telemetry of the chosen features, anomaly score, threshold, detections,
the workers' verdicts, the forecaster's statistic and threshold and the satellite's
record index, for the labeled ranges) is one
``/api/v1/export`` with a ``match[]`` per metric; the heatmap (every feature's telemetry
and reconstruction over one window or event) is a second. Without an explicit heatmap
range the window is chosen from the timeline just read: the newest flagged window,
else the newest window (:func:`heatmap_window`, the dashboard's own rule).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from smap_bench.api.queries import METRIC_OF, SeriesKind
from smap_bench.metrics import Series

#: Timeline kinds of a view, in answer order.
TIMELINE_KINDS: tuple[SeriesKind, ...] = (
    SeriesKind.TELEMETRY,
    SeriesKind.SCORES,
    SeriesKind.THRESHOLDS,
    SeriesKind.DETECTIONS,
    SeriesKind.VERDICTS,
    SeriesKind.RECORD_INDEX,
    SeriesKind.FORECASTS,
    SeriesKind.FORECAST_THRESHOLDS,
)
#: Heatmap kinds (all features of each).
HEATMAP_KINDS: tuple[SeriesKind, ...] = (SeriesKind.TELEMETRY, SeriesKind.RECONSTRUCTIONS)
_KIND_OF_METRIC = {metric: kind for kind, metric in METRIC_OF.items()}


def split_by_kind(found: Sequence[Series]) -> dict[SeriesKind, list[Series]]:
    """Series of one multi-metric export, by the kind their ``__name__`` names."""
    parts: dict[SeriesKind, list[Series]] = {}
    for series in found:
        kind = _KIND_OF_METRIC.get(series.labels.get("__name__", ""))
        if kind is not None:
            parts.setdefault(kind, []).append(series)
    return parts


def record_period_s(series: Sequence[Series], default: float = 1.0) -> float:
    """Typical seconds between two records (median positive spacing), or ``default``."""
    times = sorted({t for s in series for t, _ in s.samples})
    gaps = [b - a for a, b in itertools.pairwise(times) if b > a]
    return float(statistics.median(gaps)) if gaps else default


def window_around(end_s: float, window_size: int, period_s: float) -> tuple[datetime, datetime]:
    """The range of the ``window_size`` records ending at ``end_s``, half a period wider
    on each side (as :func:`smap_bench.dashboard.frames.window_around`)."""
    end = datetime.fromtimestamp(end_s, UTC)
    start = end - timedelta(seconds=period_s * (window_size - 1))
    half = timedelta(seconds=period_s / 2)
    return start - half, end + half


def heatmap_window(
    detections: Sequence[Series], scores: Sequence[Series], window_size: int
) -> tuple[datetime, datetime] | None:
    """The newest flagged window, else the newest window ending at the newest score;
    None when the stream has no score in range."""
    period = record_period_s(scores)
    flagged = [t for s in detections for t, v in s.samples if v > 0.5]
    if flagged:
        return window_around(max(flagged), window_size, period)
    newest = [t for s in scores for t, _ in s.samples]
    return window_around(max(newest), window_size, period) if newest else None
