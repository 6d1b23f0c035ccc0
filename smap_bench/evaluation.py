"""Detection-quality metrics, as pure functions over record flags and labeled ranges.

The protocol is ../shared/docs/EVALUATION.md; the offline ``evaluate`` and the live
``replay`` both score through :func:`evaluate_channel` and :func:`pool`, so they agree by
construction. Record flags come from :mod:`smap_bench.windows` (a flagged window marks the
records it is responsible for: its newest ``stride`` records, see that module).

Conventions:

- Record indices are 0-based offsets into the test split; labeled ranges have inclusive
  ends, as in telemanom's ``labeled_anomalies.csv``. A range is anything with ``.start``
  and ``.end`` attributes or a ``(start, end)`` pair.
- **Event-wise** (the headline, no point adjust), as telemanom and Orion match them: a
  labeled range overlapping at least one predicted segment is one true positive, a range
  overlapping none is one false negative, a predicted segment overlapping no range is one
  false positive. Predicted segments are maximal runs of flagged records, after
  :func:`bridge_gaps` joined runs that only ``event_gap`` or fewer normal records part:
  the *event rule*, which the live events stage applies to PostgreSQL events as well
  (:mod:`smap_bench.anomaly_events`), so an evaluated segment is an operator's event.
- **Pooling**: counts are summed over channels, then precision, recall and F1 are computed
  once from the sums (not averaged per channel).
- **0/0**: when nothing was labeled and nothing flagged (tp = fp = fn = 0), precision,
  recall and F1 are 1.0; otherwise a ratio with a zero denominator is 0.0.
- **Point-adjusted** (secondary column, record level): within each labeled range, if any
  record is flagged, every record of the range counts as detected; always reported next to
  what random flags reach on the same labels.
- **Detection latency** of a detected (true-positive) range: first alarm record at or after
  ``start - early_tolerance`` minus ``start``, floored at 0. The default tolerance is 0
  records: an alarm before the range starts does not count as early detection.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = [
    "METRICS",
    "ChannelEvaluation",
    "EventCounts",
    "as_ranges",
    "bridge_gaps",
    "detection_latencies",
    "evaluate_channel",
    "event_counts",
    "f1_score",
    "false_alarms_per_10k",
    "get_metric",
    "mean_std_over_seeds",
    "point_adjust",
    "point_adjusted_counts",
    "point_adjusted_f1",
    "pool",
    "precision",
    "random_flag_baseline",
    "random_flag_counts",
    "random_flags",
    "recall",
    "segments",
]

#: Random flags on this fraction of records are the point-adjusted baseline.
DEFAULT_BASELINE_RATE = 0.005
#: Seeds of the random-flag baseline (its F1 is the mean over these).
DEFAULT_BASELINE_SEEDS: tuple[int, ...] = (0, 1, 2)


class _HasStartEnd(Protocol):
    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...


RangeLike = _HasStartEnd | tuple[int, int] | Sequence[int]


# --------------------------------------------------------------------------------------
# Ranges and segments
# --------------------------------------------------------------------------------------


def as_ranges(
    labeled_ranges: Iterable[RangeLike], n_records: int | None = None
) -> list[tuple[int, int]]:
    """Labeled ranges as sorted ``(start, end)`` int pairs (inclusive), validated.

    With ``n_records``, a range that does not lie inside ``[0, n_records)`` is an error
    (it would mean the labels belong to another split).
    """
    out: list[tuple[int, int]] = []
    for item in labeled_ranges:
        if hasattr(item, "start") and hasattr(item, "end"):
            start, end = item.start, item.end
        else:
            start, end = item
        start, end = int(start), int(end)
        if start < 0 or end < start:
            raise ValueError(f"labeled range ({start}, {end}) is not a valid inclusive range")
        if n_records is not None and end >= n_records:
            raise ValueError(
                f"labeled range ({start}, {end}) ends past the split's {n_records} records"
            )
        out.append((start, end))
    return sorted(out)


def segments(flags: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True in ``flags`` as ``(start, end)`` pairs with inclusive ends."""
    flags = np.asarray(flags, dtype=bool)
    if flags.ndim != 1:
        raise ValueError(f"flags must be one-dimensional, got shape {flags.shape}")
    padded = np.concatenate(([False], flags, [False])).astype(np.int8)
    edges = np.diff(padded)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def bridge_gaps(flags: np.ndarray, max_gap: int) -> np.ndarray:
    """Record flags with every run of at most ``max_gap`` unflagged records that lies
    *between* two flagged runs flagged too (``max_gap`` 0: unchanged).

    Leading and trailing unflagged records are never flagged: bridging only joins
    detections, it never starts an event earlier or ends it later than a detection.
    """
    flags = np.asarray(flags, dtype=bool)
    if flags.ndim != 1:
        raise ValueError(f"flags must be one-dimensional, got shape {flags.shape}")
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    out = flags.copy()
    runs = segments(flags)
    for (_, previous_end), (next_start, _) in itertools.pairwise(runs):
        if next_start - previous_end - 1 <= max_gap:
            out[previous_end + 1 : next_start] = True
    return out


def _overlap_any(items: list[tuple[int, int]], others: list[tuple[int, int]]) -> np.ndarray:
    """For each item, whether it overlaps at least one of ``others`` (inclusive ends)."""
    if not items:
        return np.zeros(0, dtype=bool)
    if not others:
        return np.zeros(len(items), dtype=bool)
    a = np.asarray(items, dtype=np.int64)
    b = np.asarray(others, dtype=np.int64)
    # intervals overlap iff a.start <= b.end and b.start <= a.end
    hit = (a[:, None, 0] <= b[None, :, 1]) & (b[None, :, 0] <= a[:, None, 1])
    return np.asarray(hit.any(axis=1))


# --------------------------------------------------------------------------------------
# Counts and ratios
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventCounts:
    """True positives, false positives and false negatives; they add up over channels."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: EventCounts) -> EventCounts:
        return EventCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return precision(self)

    @property
    def recall(self) -> float:
        return recall(self)

    @property
    def f1(self) -> float:
        return f1_score(self)


def _ratio(numerator: int, denominator: int, counts: EventCounts) -> float:
    if denominator:
        return numerator / denominator
    return 1.0 if counts.tp == counts.fp == counts.fn == 0 else 0.0


def precision(counts: EventCounts) -> float:
    """tp / (tp + fp); 1.0 when nothing was labeled or flagged, 0.0 for other 0/0."""
    return _ratio(counts.tp, counts.tp + counts.fp, counts)


def recall(counts: EventCounts) -> float:
    """tp / (tp + fn); 1.0 when nothing was labeled or flagged, 0.0 for other 0/0."""
    return _ratio(counts.tp, counts.tp + counts.fn, counts)


def f1_score(counts: EventCounts) -> float:
    """2tp / (2tp + fp + fn), the harmonic mean of precision and recall."""
    return _ratio(2 * counts.tp, 2 * counts.tp + counts.fp + counts.fn, counts)


def event_counts(
    predicted_segments: Iterable[RangeLike], labeled_ranges: Iterable[RangeLike]
) -> EventCounts:
    """Event-wise TP/FP/FN by overlap, as telemanom and Orion count them.

    A labeled range that overlaps any predicted segment is one TP however many segments
    overlap it; a range with none is one FN; a segment overlapping no range is one FP (so a
    segment spanning two ranges makes two TPs and no FP).
    """
    predicted = as_ranges(predicted_segments)
    labeled = as_ranges(labeled_ranges)
    detected = _overlap_any(labeled, predicted)
    explained = _overlap_any(predicted, labeled)
    tp = int(detected.sum())
    return EventCounts(tp=tp, fp=int((~explained).sum()), fn=len(labeled) - tp)


def false_alarms_per_10k(false_positives: int, n_records: int) -> float:
    """False-positive segments per 10,000 records."""
    if n_records <= 0:
        raise ValueError(f"n_records must be positive, got {n_records}")
    return 1e4 * false_positives / n_records


# --------------------------------------------------------------------------------------
# Point adjust and the random-flag baseline
# --------------------------------------------------------------------------------------


def _labels(ranges: list[tuple[int, int]], n_records: int) -> np.ndarray:
    labels = np.zeros(n_records, dtype=bool)
    for start, end in ranges:
        labels[start : end + 1] = True
    return labels


def point_adjust(flags: np.ndarray, labeled_ranges: Iterable[RangeLike]) -> np.ndarray:
    """Flags with every labeled range filled in wherever one of its records is flagged."""
    flags = np.asarray(flags, dtype=bool)
    adjusted = flags.copy()
    for start, end in as_ranges(labeled_ranges, flags.size):
        if flags[start : end + 1].any():
            adjusted[start : end + 1] = True
    return adjusted


def point_adjusted_counts(flags: np.ndarray, labeled_ranges: Iterable[RangeLike]) -> EventCounts:
    """Record-level TP/FP/FN after point adjust (poolable over channels by addition)."""
    flags = np.asarray(flags, dtype=bool)
    labels = _labels(as_ranges(labeled_ranges, flags.size), flags.size)
    adjusted = point_adjust(flags, labeled_ranges)
    return EventCounts(
        tp=int((adjusted & labels).sum()),
        fp=int((adjusted & ~labels).sum()),
        fn=int((~adjusted & labels).sum()),
    )


def point_adjusted_f1(flags: np.ndarray, labeled_ranges: Iterable[RangeLike]) -> float:
    """Record-level F1 after point adjust. Secondary: random flags score about 0.96 on SMAP."""
    return point_adjusted_counts(flags, labeled_ranges).f1


def random_flags(n_records: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Each record flagged independently with probability ``rate``."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"random flag rate must lie in [0, 1], got {rate}")
    return rng.random(n_records) < rate


def _channel_rng(seed: int, channel: str) -> np.random.Generator:
    # Independent, reproducible streams per (seed, channel).
    return np.random.default_rng([seed, zlib.crc32(channel.encode())])


def random_flag_counts(
    labeled_ranges: Iterable[RangeLike],
    n_records: int,
    rate: float = DEFAULT_BASELINE_RATE,
    seed: int = 0,
    channel: str = "",
) -> EventCounts:
    """Point-adjusted record counts that random flags reach on these labels."""
    flags = random_flags(n_records, rate, _channel_rng(seed, channel))
    return point_adjusted_counts(flags, labeled_ranges)


def random_flag_baseline(
    labeled_ranges: Iterable[RangeLike],
    n_records: int,
    rate: float = DEFAULT_BASELINE_RATE,
    seeds: Sequence[int] = DEFAULT_BASELINE_SEEDS,
) -> float:
    """Point-adjusted F1 of random flags on ``rate`` of the records, mean over ``seeds``."""
    ranges = as_ranges(labeled_ranges, n_records)
    if not seeds:
        raise ValueError("random_flag_baseline needs at least one seed")
    return float(np.mean([random_flag_counts(ranges, n_records, rate, s).f1 for s in seeds]))


# --------------------------------------------------------------------------------------
# Detection latency
# --------------------------------------------------------------------------------------


def detection_latencies(
    flags: np.ndarray, labeled_ranges: Iterable[RangeLike], early_tolerance: int = 0
) -> list[int]:
    """Latency in records of each detected labeled range, in range order.

    A range is detected when a flagged record lies inside it (event-wise TP). Its latency
    is the first flagged record at or after ``start - early_tolerance`` minus ``start``,
    floored at 0: an alarm up to ``early_tolerance`` records early counts as latency 0.
    """
    if early_tolerance < 0:
        raise ValueError(f"early_tolerance must not be negative, got {early_tolerance}")
    flags = np.asarray(flags, dtype=bool)
    out: list[int] = []
    for start, end in as_ranges(labeled_ranges, flags.size):
        if not flags[start : end + 1].any():
            continue
        lo = max(0, start - early_tolerance)
        first = lo + int(np.argmax(flags[lo : end + 1]))
        out.append(max(0, first - start))
    return out


def _latency_summary(latencies: Sequence[int]) -> tuple[float | None, float | None]:
    if not latencies:
        return None, None
    values = np.asarray(latencies, dtype=np.float64)
    return float(np.median(values)), float(np.percentile(values, 90))


# --------------------------------------------------------------------------------------
# Per channel and pooled
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelEvaluation:
    """Everything the pooled report needs from one channel, kept as additive counts."""

    channel: str
    n_records: int
    events: EventCounts
    point_adjusted: EventCounts
    random_baseline: tuple[EventCounts, ...]  #: one per baseline seed
    latencies: tuple[int, ...]
    early_tolerance: int = 0
    baseline_rate: float = DEFAULT_BASELINE_RATE
    event_gap: int = 0  #: the event rule the flags were scored under (:func:`bridge_gaps`)
    extra: Mapping[str, Any] = field(default_factory=dict)  #: e.g. threshold, seconds

    @property
    def false_alarms_per_10k(self) -> float:
        return false_alarms_per_10k(self.events.fp, self.n_records)

    def to_dict(self) -> dict[str, Any]:
        """The channel's row of the per-channel table (JSON-ready)."""
        median, p90 = _latency_summary(self.latencies)
        return {
            **dict(self.extra),
            "channel": self.channel,
            "n_records": self.n_records,
            "tp": self.events.tp,
            "fp": self.events.fp,
            "fn": self.events.fn,
            "precision": self.events.precision,
            "recall": self.events.recall,
            "f1": self.events.f1,
            "point_adjusted_f1": self.point_adjusted.f1,
            "false_alarms_per_10k": self.false_alarms_per_10k,
            "latency_median": median,
            "latency_p90": p90,
            "latencies": list(self.latencies),
        }


def evaluate_channel(
    channel: str,
    record_flags: np.ndarray,
    labeled_ranges: Iterable[RangeLike],
    n_records: int | None = None,
    *,
    early_tolerance: int = 0,
    baseline_rate: float = DEFAULT_BASELINE_RATE,
    baseline_seeds: Sequence[int] = DEFAULT_BASELINE_SEEDS,
    event_gap: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> ChannelEvaluation:
    """Score one channel's per-record flags against its labeled ranges.

    ``record_flags`` are the window rule's record decisions (the alarms); the event rule
    (:func:`bridge_gaps` with ``event_gap``) is applied here, before segments and the
    point-adjusted counts are taken, so offline and live callers cannot apply it
    differently. Detection latency is measured on the alarms themselves: a bridged
    record was not an alarm when it arrived. ``n_records`` (the split's length) must equal
    ``len(record_flags)`` when given; it is there so that a live replay that read back
    too few records fails loudly.
    """
    flags = np.asarray(record_flags, dtype=bool)
    if flags.ndim != 1:
        raise ValueError(f"{channel}: record flags must be one-dimensional, got {flags.shape}")
    alarms, flags = flags, bridge_gaps(flags, event_gap)
    if n_records is not None and flags.size != n_records:
        raise ValueError(f"{channel}: {flags.size} record flags for a split of {n_records} records")
    ranges = as_ranges(labeled_ranges, flags.size)
    if not baseline_seeds:
        raise ValueError(f"{channel}: the random-flag baseline needs at least one seed")
    return ChannelEvaluation(
        channel=channel,
        n_records=int(flags.size),
        events=event_counts(segments(flags), ranges),
        point_adjusted=point_adjusted_counts(flags, ranges),
        random_baseline=tuple(
            random_flag_counts(ranges, flags.size, baseline_rate, seed, channel)
            for seed in baseline_seeds
        ),
        latencies=tuple(detection_latencies(alarms, ranges, early_tolerance)),
        early_tolerance=early_tolerance,
        baseline_rate=baseline_rate,
        event_gap=event_gap,
        extra=dict(extra or {}),
    )


def pool(channel_evaluations: Sequence[ChannelEvaluation]) -> dict[str, Any]:
    """Pooled report over channels: the ``evaluate`` JSON fields of ARCHITECTURE.md.

    Counts are summed over channels before any ratio; latency percentiles are taken over
    all detected ranges of all channels; the random baseline pools each seed's counts and
    averages the seeds' F1.
    """
    evaluations = list(channel_evaluations)
    if not evaluations:
        raise ValueError("pool needs at least one channel evaluation")
    tolerances = {e.early_tolerance for e in evaluations}
    n_seeds = {len(e.random_baseline) for e in evaluations}
    rates = {e.baseline_rate for e in evaluations}
    gaps = {e.event_gap for e in evaluations}
    if len(tolerances) > 1 or len(n_seeds) > 1 or len(rates) > 1 or len(gaps) > 1:
        raise ValueError(
            "channel evaluations disagree on early_tolerance, baseline seeds, baseline "
            "rate or event gap; evaluate every channel with the same settings"
        )
    channels = [e.channel for e in evaluations]
    if len(set(channels)) != len(channels):
        raise ValueError("a channel appears more than once in the pooled evaluations")

    events = sum((e.events for e in evaluations), EventCounts())
    adjusted = sum((e.point_adjusted for e in evaluations), EventCounts())
    per_seed = [
        sum((e.random_baseline[i] for e in evaluations), EventCounts())
        for i in range(n_seeds.pop())
    ]
    n_records = sum(e.n_records for e in evaluations)
    latencies = [lat for e in evaluations for lat in e.latencies]
    median, p90 = _latency_summary(latencies)
    return {
        "event": {
            "precision": events.precision,
            "recall": events.recall,
            "f1": events.f1,
            "tp": events.tp,
            "fp": events.fp,
            "fn": events.fn,
        },
        "point_adjusted": {
            "f1": adjusted.f1,
            "precision": adjusted.precision,
            "recall": adjusted.recall,
        },
        "random_baseline": {
            "point_adjusted_f1": float(np.mean([c.f1 for c in per_seed])),
            "rate": rates.pop(),
            "seeds": len(per_seed),
        },
        "false_alarms_per_10k": false_alarms_per_10k(events.fp, n_records),
        "detection_latency": {
            "median": median,
            "p90": p90,
            "detected": len(latencies),
            "early_tolerance": tolerances.pop(),
            "unit": "records",
        },
        "event_gap": gaps.pop(),
        "channels": len(evaluations),
        "records": n_records,
        "per_channel": [e.to_dict() for e in evaluations],
    }


#: The headline numbers summarised over training seeds, as (section, key) paths.
HEADLINE_FIELDS: tuple[tuple[str, ...], ...] = (
    ("event", "precision"),
    ("event", "recall"),
    ("event", "f1"),
    ("point_adjusted", "f1"),
    ("random_baseline", "point_adjusted_f1"),
    ("false_alarms_per_10k",),
    ("detection_latency", "median"),
    ("detection_latency", "p90"),
)


def mean_std_over_seeds(pooled: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation of the headline numbers over seeds' pooled dicts.

    The result mirrors the pooled layout with ``{"mean", "std", "n"}`` at each headline
    field. Missing values (None: no range detected) are left out; std is None below two
    values.
    """
    if not pooled:
        raise ValueError("mean_std_over_seeds needs at least one pooled result")
    out: dict[str, Any] = {"seeds": len(pooled)}
    for path in HEADLINE_FIELDS:
        values: list[float] = []
        for result in pooled:
            value: Any = result
            for key in path:
                value = value.get(key) if isinstance(value, Mapping) else None
            if value is not None:
                values.append(float(value))
        summary = {
            "mean": float(np.mean(values)) if values else None,
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "n": len(values),
        }
        target = out
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = summary
    return out


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------

Metric = Callable[[np.ndarray, Iterable[RangeLike]], float]


def _event_metric(name: str) -> Metric:
    def metric(flags: np.ndarray, labeled_ranges: Iterable[RangeLike]) -> float:
        counts = event_counts(segments(flags), labeled_ranges)
        return float(getattr(counts, name))

    metric.__name__ = f"event_{name}"
    metric.__doc__ = f"Event-wise {name} of record flags against labeled ranges."
    return metric


def _false_alarms(flags: np.ndarray, labeled_ranges: Iterable[RangeLike]) -> float:
    flags = np.asarray(flags, dtype=bool)
    return false_alarms_per_10k(event_counts(segments(flags), labeled_ranges).fp, flags.size)


def _latency_median(flags: np.ndarray, labeled_ranges: Iterable[RangeLike]) -> float:
    median, _ = _latency_summary(detection_latencies(flags, labeled_ranges))
    return float("nan") if median is None else median


#: Metrics by name, each ``metric(record_flags, labeled_ranges) -> float`` for one channel.
METRICS: dict[str, Metric] = {
    "event_precision": _event_metric("precision"),
    "event_recall": _event_metric("recall"),
    "event_f1": _event_metric("f1"),
    "point_adjusted_f1": point_adjusted_f1,
    "false_alarms_per_10k": _false_alarms,
    "detection_latency_median": _latency_median,
}


def get_metric(name: str) -> Metric:
    """The metric registered under ``name``."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}") from None
