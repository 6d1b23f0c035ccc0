"""Choosing the decision rule from training data only: held-out halves with injected anomalies.

The networks stay as trained; what is chosen here is the *window statistic* (which number
a window's 30 per-record scores are reduced to) and the threshold's hyperparameters (POT
``q`` and the floor factor over the largest validation statistic), and whether and how the
context detector (:mod:`smap_bench.model.context`) joins the decision. One setting is
chosen for all channels, and nothing here reads a test split.

The procedure (two-fold cross-fitting on the validation tail of each train split, which
the network never trained on):

1. The validation tail is cut into halves A and B. For fold A the threshold is fitted on
   the fit-part windows plus half B's windows, and judged on half A (and vice versa), so
   the judged records are unseen both by the network and by the threshold.
2. False alarms: the clean judged half is windowed as the live pipeline windows a split
   (window 30, stride 10, from its first record); every predicted segment is a false
   positive.
3. Recall: one copy of the judged half per anomaly kind (:data:`KINDS`, and where asked
   the contextual ones, :data:`CONTEXTUAL_KINDS`), each with one injected anomaly of that
   kind in the telemetry value (column 0); a copy counts one true positive when a
   predicted segment overlaps the injected range.
4. The criterion is the event-wise F1 expected when anomalies occur once every
   ``records_per_anomaly`` records: with pooled recall ``r`` and pooled false-positive
   segments per record ``f``, precision is ``r / (r + f R)``. The held-out halves carry one
   injected anomaly per few hundred records, far denser than telemetry anomalies are, so
   an F1 counted on them directly would reward false alarms; ``R`` states the assumed
   rarity instead (default: one anomaly per 2,880 records, the length of the longest
   train split), and the report shows the choice at other ``R`` too.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from smap_bench import evaluation, windows
from smap_bench.data.loader import LabeledRange
from smap_bench.model.context import ContextConfig, held_out_context_flags
from smap_bench.model.threshold import ThresholdConfig, fit_threshold

#: Anomaly kinds injected into held-out normal data (as the dataset's labels describe
#: them: point anomalies and contextual ones).
KINDS: tuple[str, ...] = ("spike", "level_shift", "frozen", "frequency")

#: Contextual kinds: the value stays inside the train split's range and only its pattern
#: is wrong (what most of the test splits' missed ranges look like). Injected after
#: :data:`KINDS`, from the same generator, so the first four kinds' copies are unchanged.
CONTEXTUAL_KINDS: tuple[str, ...] = ("reverse", "damped", "noise", "bump")

#: Every kind the harness can inject, in injection order.
ALL_KINDS: tuple[str, ...] = KINDS + CONTEXTUAL_KINDS

#: Smallest span of the telemetry value used to size injections (as the normalisation).
MIN_SPAN = 0.1

#: Default assumed rarity of anomalies for the criterion (see the module docstring).
RECORDS_PER_ANOMALY = 2880


# --------------------------------------------------------------------------------------
# Window statistics (candidates)
# --------------------------------------------------------------------------------------


def _check(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"window statistic: scores have shape {scores.shape}, need (n, window)")
    return scores


def stat_mean(scores: np.ndarray) -> np.ndarray:
    """Mean of all the window's per-record scores."""
    return _check(scores).mean(axis=1)


def stat_median(scores: np.ndarray) -> np.ndarray:
    """Median of the window's per-record scores (a few bad records do not lift it)."""
    return np.asarray(np.median(_check(scores), axis=1))


def stat_max(scores: np.ndarray) -> np.ndarray:
    """Largest per-record score of the window."""
    return _check(scores).max(axis=1)


def stat_block_max(scores: np.ndarray, block: int = 10) -> np.ndarray:
    """Largest mean over consecutive blocks of ``block`` records (the window split in thirds)."""
    scores = _check(scores)
    n, width = scores.shape
    if width % block:
        raise ValueError(f"stat_block_max: window {width} is not a multiple of block {block}")
    return scores.reshape(n, width // block, block).mean(axis=2).max(axis=1)


def stat_block_min(scores: np.ndarray, block: int = 10) -> np.ndarray:
    """Smallest block mean: high only when every third of the window is high (persistence)."""
    scores = _check(scores)
    n, width = scores.shape
    if width % block:
        raise ValueError(f"stat_block_min: window {width} is not a multiple of block {block}")
    return scores.reshape(n, width // block, block).mean(axis=2).min(axis=1)


def stat_last_block(scores: np.ndarray, block: int = 10) -> np.ndarray:
    """Mean of the newest ``block`` records (those a stride-10 window is responsible for)."""
    return _check(scores)[:, -block:].mean(axis=1)


STATISTICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": stat_mean,
    "median": stat_median,
    "max": stat_max,
    "block_max": stat_block_max,
    "block_min": stat_block_min,
    "last_block": stat_last_block,
}


@dataclass(frozen=True)
class Candidate:
    """One decision rule: a window statistic and a threshold configuration."""

    statistic: str
    threshold: ThresholdConfig

    @property
    def label(self) -> str:
        t = self.threshold
        return f"{self.statistic} q={t.q:g} floor={t.floor_factor:g}"


def candidate_grid(
    statistics: Iterable[str] = tuple(STATISTICS),
    qs: Iterable[float] = (1e-3, 1e-4, 1e-5),
    floor_factors: Iterable[float] = (1.0, 1.5, 2.0, 3.0, 5.0, 8.0),
    level: float = 0.98,
) -> list[Candidate]:
    """Every combination of statistic, POT ``q`` and floor factor."""
    out = []
    for name, q, floor in itertools.product(statistics, qs, floor_factors):
        if name not in STATISTICS:
            raise ValueError(
                f"candidate_grid: unknown statistic {name!r} (known: {list(STATISTICS)})"
            )
        out.append(Candidate(name, ThresholdConfig("pot", level, q, floor)))
    return out


# --------------------------------------------------------------------------------------
# Injection into held-out normal data
# --------------------------------------------------------------------------------------


def injection_rng(channel: str, seed: int, fold: int) -> np.random.Generator:
    """The same generator for the same channel, seed and fold on every machine."""
    return np.random.default_rng([seed, zlib.crc32(channel.encode()), fold])


def inject(
    segment: np.ndarray, kind: str, rng: np.random.Generator, low: float, high: float
) -> tuple[np.ndarray, LabeledRange]:
    """A copy of ``segment`` (records, features) with one anomaly of ``kind`` in column 0.

    ``low``/``high`` are the train split's range of the value; sizes are relative to that
    span (floored at :data:`MIN_SPAN`) and values stay inside the dataset's [-1, 1]:

    - ``spike``: 3-10 records at the far side of the train range from the current value;
    - ``level_shift``: 20-80 records shifted by 30-50% of the span;
    - ``frozen``: 40-120 records held at the value where the signal stopped;
    - ``frequency``: 40-120 records oscillating with a period of 4-10 records;

    and the contextual kinds (:data:`CONTEXTUAL_KINDS`), which never leave the train range:

    - ``reverse``: 40-120 records played backwards (the same values, in the wrong order);
    - ``damped``: 40-120 records whose deviations from their own mean shrink to 10-40%;
    - ``noise``: 40-120 records with Gaussian noise of 3-8% of the span added;
    - ``bump``: 60-200 records carrying a triangular excursion (up, then back) of 20-40%
      of the span, towards the middle of the range.
    """
    segment = np.array(segment, dtype=np.float32, copy=True)
    n = len(segment)
    lengths = {
        "spike": (3, 10),
        "level_shift": (20, 80),
        "frozen": (40, 120),
        "frequency": (40, 120),
        "reverse": (40, 120),
        "damped": (40, 120),
        "noise": (40, 120),
        "bump": (60, 200),
    }
    if kind not in lengths:
        raise ValueError(f"inject: unknown kind {kind!r} (known: {list(lengths)})")
    if n < 20:
        raise ValueError(f"inject: segment of {n} records is too short")
    lo_len, hi_len = lengths[kind]
    length = int(rng.integers(lo_len, hi_len + 1))
    length = max(1, min(length, n // 2))
    start = int(rng.integers(n // 10, n - length + 1))
    span = max(high - low, MIN_SPAN)
    mid = (high + low) / 2
    value = segment[:, 0].astype(np.float64)
    part = slice(start, start + length)
    if kind == "spike":
        target = low - 0.2 * span if value[start] > mid else high + 0.2 * span
        value[part] = target + rng.normal(0.0, 0.01 * span, length)
    elif kind == "level_shift":
        shift = rng.uniform(0.3, 0.5) * span
        room_up = 1.0 - value[part].max()
        value[part] += shift if room_up >= shift or value[start] <= mid else -shift
    elif kind == "frozen":
        value[part] = value[start]
    elif kind == "frequency":
        period = rng.uniform(4.0, 10.0)
        value[part] = mid + 0.4 * span * np.sin(2 * np.pi * np.arange(length) / period)
    elif kind == "reverse":
        value[part] = value[part][::-1].copy()
    elif kind == "damped":
        stretch = value[part]
        value[part] = stretch.mean() + rng.uniform(0.1, 0.4) * (stretch - stretch.mean())
    elif kind == "noise":
        noisy = value[part] + rng.normal(0.0, rng.uniform(0.03, 0.08) * span, length)
        value[part] = np.clip(noisy, low, high)
    else:  # bump
        height = rng.uniform(0.2, 0.4) * span * (1.0 if value[start] <= mid else -1.0)
        ramp = 1.0 - np.abs(np.linspace(-1.0, 1.0, length))
        value[part] = np.clip(value[part] + height * ramp, low, high)
    segment[:, 0] = np.clip(value, -1.0, 1.0)
    return segment, LabeledRange(start, start + length - 1, kind)


# --------------------------------------------------------------------------------------
# Held-out material of one channel (scores only; built by an I/O shell)
# --------------------------------------------------------------------------------------


@dataclass
class Judged:
    """One live-windowed series (stride-grid windows) and its injected range, if any."""

    scores: np.ndarray  #: (k, window) per-record scores of the windows at ``starts``
    starts: np.ndarray
    n_records: int
    anomaly: LabeledRange | None = None
    #: window decisions of the context detector, by its configuration
    context_flags: dict[ContextConfig, np.ndarray] = field(default_factory=dict)


@dataclass
class Fold:
    """One fold: windows the threshold is fitted on, and the series it is judged on."""

    threshold_scores: np.ndarray  #: (m, window) held-out windows of the *other* half
    clean: Judged
    injected: list[Judged] = field(default_factory=list)


@dataclass
class ChannelMaterial:
    """Everything the selection needs from one channel's train split, as scores."""

    channel: str
    fit_scores: np.ndarray  #: (k, window) fit-part windows (as training thresholded them)
    folds: list[Fold]


ScoreFn = Callable[[np.ndarray], np.ndarray]


def live_judged(series: np.ndarray, score: ScoreFn, window: int, stride: int) -> Judged:
    """Score a series on the live grid (stride-spaced windows from its first record)."""
    starts = windows.window_starts(len(series), window, stride)
    batch = windows.make_windows(series, window, stride)
    return Judged(score(batch), starts, len(series))


def channel_material(
    channel: str,
    train: np.ndarray,
    score: ScoreFn,
    *,
    seed: int = 0,
    window: int = 30,
    stride: int = 10,
    train_stride: int = 4,
    validation_fraction: float = 0.2,
    kinds: Sequence[str] = KINDS,
    contexts: Sequence[ContextConfig] = (),
) -> ChannelMaterial:
    """Score one channel's train split for the selection (``score``: windows -> scores),
    with the decisions of the context detector under each of ``contexts``."""
    train = np.asarray(train, dtype=np.float32)
    n_validation = round(len(train) * validation_fraction)
    fit_part, tail = train[:-n_validation], train[-n_validation:]
    half = len(tail) // 2
    halves = [tail[:half], tail[half:]]
    if min(len(h) for h in halves) < window:
        raise ValueError(f"{channel}: validation halves of {half} records are too short")
    fit_windows = windows.make_windows(fit_part, window, train_stride)
    stride1 = [score(windows.make_windows(h, window, 1)) for h in halves]
    low, high = float(train[:, 0].min()), float(train[:, 0].max())
    if contexts:
        # the channel model's normalisation of the value (train imports torch: here)
        from smap_bench.model.train import fit_normalisation

        normalisation = fit_normalisation(train)
        offset, span = normalisation.offset[0], normalisation.scale[0]
    folds = []
    for index, judged_half in enumerate(halves):
        rng = injection_rng(channel, seed, index)
        injected = []
        copies = []
        for kind in kinds:
            series, anomaly = inject(judged_half, kind, rng, low, high)
            copies.append(series)
            item = live_judged(series, score, window, stride)
            item.anomaly = anomaly
            injected.append(item)
        folds.append(
            Fold(
                threshold_scores=stride1[1 - index],
                clean=live_judged(judged_half, score, window, stride),
                injected=injected,
            )
        )
        if contexts:
            fold = folds[-1]
            lo = len(fit_part) + index * half
            stretch = slice(lo, lo + len(judged_half))
            values = [judged_half[:, 0], *(copy[:, 0] for copy in copies)]
            for config in contexts:
                decided = held_out_context_flags(
                    train[:, 0],
                    offset,
                    span,
                    stretch,
                    values,
                    fold.clean.starts,
                    window,
                    config,
                )
                for item, flags in zip([fold.clean, *injected], decided, strict=True):
                    item.context_flags[config] = flags
    return ChannelMaterial(channel, score(fit_windows), folds)


# --------------------------------------------------------------------------------------
# Judging candidates
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """Pooled held-out counts of one candidate."""

    candidate: Candidate
    detected: int  #: injected anomalies overlapped by a predicted segment
    injected: int
    false_positives: int  #: predicted segments on the clean halves
    clean_records: int
    detected_by_kind: dict[str, int]

    @property
    def recall(self) -> float:
        return self.detected / self.injected if self.injected else 0.0

    @property
    def false_alarms_per_10k(self) -> float:
        return evaluation.false_alarms_per_10k(self.false_positives, self.clean_records)

    def f1_at(self, records_per_anomaly: float) -> float:
        """Expected event-wise F1 when anomalies come once per ``records_per_anomaly``."""
        r = self.recall
        fp_per_anomaly = self.false_positives / self.clean_records * records_per_anomaly
        if r == 0:
            return 0.0
        p = r / (r + fp_per_anomaly)
        return 2 * p * r / (p + r)

    def as_dict(self, rates: Sequence[float] = (RECORDS_PER_ANOMALY,)) -> dict[str, Any]:
        return {
            "statistic": self.candidate.statistic,
            "threshold": asdict(self.candidate.threshold),
            "recall": round(self.recall, 4),
            "detected": self.detected,
            "injected": self.injected,
            "detected_by_kind": self.detected_by_kind,
            "false_positives": self.false_positives,
            "clean_records": self.clean_records,
            "false_alarms_per_10k": round(self.false_alarms_per_10k, 3),
            **{f"f1_at_{int(r)}": round(self.f1_at(r), 4) for r in rates},
        }


def flags_of(
    item: Judged,
    statistic: ScoreFn,
    threshold: float,
    window: int,
    stride: int,
    context: ContextConfig | None = None,
) -> np.ndarray:
    """Record flags of a judged series under a statistic and threshold (the live rule),
    or'ed with the context detector's decisions under ``context``."""
    window_flags = statistic(item.scores) > threshold
    if context is not None:
        window_flags = window_flags | item.context_flags[context]
    return windows.record_flags_from_windows(
        window_flags, item.starts, item.n_records, window, stride
    )


def judge(
    candidate: Candidate,
    material: Sequence[ChannelMaterial],
    window: int = 30,
    stride: int = 10,
    event_gap: int = 0,
    context: ContextConfig | None = None,
) -> Outcome:
    """Pooled held-out recall and false alarms of one candidate over all channels, with
    predicted segments formed by the event rule (:func:`smap_bench.evaluation.bridge_gaps`
    with ``event_gap``), as the evaluation and the events stage form them; with
    ``context``, a window is also anomalous when the context detector flags it (the
    material must have been built with that configuration)."""
    statistic = STATISTICS[candidate.statistic]
    detected = injected = fps = records = 0
    by_kind: dict[str, int] = {}
    for channel in material:
        fit_stat = statistic(channel.fit_scores)
        for fold in channel.folds:
            value = fit_threshold(
                fit_stat, statistic(fold.threshold_scores), candidate.threshold
            ).value
            clean = flags_of(fold.clean, statistic, value, window, stride, context)
            fps += len(evaluation.segments(evaluation.bridge_gaps(clean, event_gap)))
            records += fold.clean.n_records
            for item in fold.injected:
                assert item.anomaly is not None
                flags = evaluation.bridge_gaps(
                    flags_of(item, statistic, value, window, stride, context), event_gap
                )
                hit = evaluation.event_counts(evaluation.segments(flags), [item.anomaly]).tp
                injected += 1
                detected += hit
                by_kind[item.anomaly.kind] = by_kind.get(item.anomaly.kind, 0) + hit
    return Outcome(candidate, detected, injected, fps, records, by_kind)


def select(
    outcomes: Sequence[Outcome], records_per_anomaly: float = RECORDS_PER_ANOMALY
) -> Outcome:
    """The outcome with the highest expected F1 (ties: fewer false alarms, then grid order)."""
    if not outcomes:
        raise ValueError("select: no candidate outcomes")
    return max(
        outcomes,
        key=lambda o: (round(o.f1_at(records_per_anomaly), 9), -o.false_positives),
    )
