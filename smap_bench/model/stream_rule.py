"""The stream rule: a window judged against its stream's recent windows, causally.

The static rule (:mod:`smap_bench.model.threshold`) compares each window statistic with
one threshold fitted on training windows. Test splits hold regimes that training never
showed: a channel whose errors sit higher for thousands of records raises an alarm for
every excursion, while a contextual anomaly in a quiet channel stays under a threshold
set above every training window.

The stream rule keeps the static rule's statistic (the mean of a window's per-record
scores) and judges the newest window against the statistics of the stream's last
``history`` windows, in the manner of telemanom's nonparametric dynamic threshold
(Hundman et al., KDD 2018), but *causal*: a window's decision depends only on windows
that came before it or with it, so the live pipeline can take the same decision the
moment the window is scored.

For the newest window ``k`` with history ``h`` (the last ``history`` statistics, ``k``'s
included), mean ``mu`` and standard deviation ``sd``:

1. **Threshold.** For each ``z`` of ``z_min, z_min + z_step, ..., z_max`` the candidate
   ``eps = mu + z sd`` is scored by how much removing the statistics above it lowers the
   mean and the spread, per point and per sequence removed:
   ``(dmu / mu + dsd / sd) / (n_above + n_sequences²)``; the best-scoring ``eps`` wins
   (``mu + z_max sd`` when no candidate removes anything or removes half the history).
2. **Floor.** The window must also exceed ``floor``: the channel's ``level`` quantile of
   training window statistics (POT's initial threshold, the ``level`` of the channel's
   threshold parameters), so a window no worse than that share of training windows never
   raises an alarm, however quiet the stream has been.
3. **Pruning.** The maxima of the runs of history above ``eps`` are sorted with the
   largest statistic below ``eps`` after them; walking down, the last step where the
   value falls by at least ``prune`` (a fraction) separates the runs kept from those
   taken for normal. The window is anomalous when its own run is kept.

Until the stream holds ``min_history`` windows, its warm-up (``warm_up``) decides: the
static rule (``static``, served: there is not yet a history to judge against), or nothing
(``silent``: no alarm until the stream rule can judge). A rule may carry a *seed*: the
statistics of training windows that precede every stream, newest last; a stream shorter
than ``history`` is judged on the newest of them followed by its own, so the stream rule
judges from the first window (the seed fills the history; the stream's own windows push
it out). A statistic that is NaN or infinite raises
``ValueError`` (the inference backends refuse windows holding NaN or infinity, so a
finite model gives only finite statistics).

The hyperparameters are telemanom's published defaults carried over to windows of
stride 10 (its 30 batches of 70 records: 2,100 records, 210 windows; ``z`` from 2.5 to
12 in steps of 0.5; pruning at 13 %), fixed before any test split was scored with this
rule; one set for every channel.

**Confirmed** (the served rule, ``Settings.decision_rule``): TranAD's alarm must pass both
rules. A window is anomalous by the model when its statistic exceeds the channel's static
threshold *and* the stream rule keeps it: unusual against training and against the
stream's own recent windows. A channel whose test split sits in a regime its training
never showed (the EPS channels' drifting levels) crosses the static threshold for long
stretches, and each excursion was an alarm; against its recent windows, only the
excursions that stand out are. The context detector's flags (:mod:`.context`) are not
confirmed: a stretch unlike training, or a value held still, is anomalous however the
score behaves. The rule reuses the stream rule's published hyperparameters unchanged;
the selection harness (:mod:`.selection`) cannot judge it, since its held-out halves are
shorter than one history. What decides a stream's first windows was judged there for the
linear forecaster, from a cold start (``scripts/select_forecaster.py --warm-up``): the
static warm-up and a seeded history tie, a silent warm-up loses, so ``static`` is served
and no rule is seeded. Live, the events stage confirms (:mod:`smap_bench.confirmation`),
since the stream's windows meet there in order; the worker judges each window alone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: The decision rules a window can be judged by: the static threshold, the stream rule, or
#: the static threshold confirmed by the stream rule (served).
RULES: tuple[str, ...] = ("static", "stream", "confirmed")

#: What decides a stream's windows before it holds ``min_history`` of them.
WARM_UPS: tuple[str, ...] = ("static", "silent")

__all__ = [
    "RULES",
    "WARM_UPS",
    "StreamRule",
    "StreamRuleConfig",
    "StreamState",
    "confirmed_flags",
    "dynamic_epsilon",
    "kept_by_pruning",
    "stream_flags",
    "stream_rule_from_metadata",
]


@dataclass(frozen=True)
class StreamRuleConfig:
    """One set of stream-rule hyperparameters for every channel (see the module)."""

    history: int = 210
    min_history: int = 30
    z_min: float = 2.5
    z_max: float = 12.0
    z_step: float = 0.5
    prune: float = 0.13
    #: what decides while the history is shorter than ``min_history``: the static
    #: threshold (``static``) or nothing (``silent``)
    warm_up: str = "static"

    def __post_init__(self) -> None:
        if self.history < 2 or not 2 <= self.min_history <= self.history:
            raise ValueError(
                f"stream rule: need 2 <= min_history <= history, got {self.min_history}, "
                f"{self.history}"
            )
        if not 0 < self.z_min <= self.z_max or self.z_step <= 0:
            raise ValueError(
                f"stream rule: need 0 < z_min <= z_max and z_step > 0, got "
                f"{self.z_min}, {self.z_max}, {self.z_step}"
            )
        if not 0 <= self.prune < 1:
            raise ValueError(f"stream rule: prune must be in [0, 1), got {self.prune}")
        if self.warm_up not in WARM_UPS:
            raise ValueError(
                f"stream rule: unknown warm-up {self.warm_up!r} (known: {list(WARM_UPS)})"
            )

    def zs(self) -> np.ndarray:
        count = round((self.z_max - self.z_min) / self.z_step) + 1
        return self.z_min + self.z_step * np.arange(count)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": "stream", **asdict(self)}


def _runs(above: np.ndarray) -> list[tuple[int, int]]:
    """Half-open (start, end) of each run of True in ``above``."""
    if not above.any():
        return []
    padded = np.concatenate([[False], above, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def dynamic_epsilon(history: np.ndarray, config: StreamRuleConfig) -> float:
    """The threshold over ``history`` chosen as step 1 of the module describes."""
    values = np.asarray(history, dtype=np.float64)
    mu = float(values.mean())
    sd = float(values.std())
    zs = config.zs()
    if sd <= 0.0 or mu <= 0.0:
        return mu + float(zs[-1]) * sd
    best_score, best = 0.0, mu + float(zs[-1]) * sd
    for z in zs:
        eps = mu + float(z) * sd
        above = values > eps
        n_above = int(above.sum())
        if n_above == 0 or n_above * 2 >= values.size:
            continue
        below = values[~above]
        n_runs = len(_runs(above))
        score = ((mu - below.mean()) / mu + (sd - below.std()) / sd) / (n_above + n_runs**2)
        if score > best_score:
            best_score, best = float(score), eps
    return best


def kept_by_pruning(history: np.ndarray, eps: float, prune: float) -> bool:
    """Whether the run holding the newest statistic survives pruning (step 3)."""
    values = np.asarray(history, dtype=np.float64)
    above = values > eps
    if not above[-1]:
        return False
    runs = _runs(above)
    maxima = np.array([values[a:b].max() for a, b in runs])
    normal = values[~above]
    ladder = np.sort(maxima)[::-1]
    ladder = np.append(ladder, normal.max() if normal.size else 0.0)
    drops = (ladder[:-1] - ladder[1:]) / np.where(ladder[:-1] > 0, ladder[:-1], 1.0)
    steep = np.flatnonzero(drops >= prune)
    if steep.size == 0:
        return False
    cutoff = ladder[int(steep[-1])]
    return bool(maxima[-1] >= cutoff)


@dataclass
class StreamState:
    """What the stream rule remembers of one stream: its last ``history`` statistics."""

    statistics: deque[float]

    @classmethod
    def empty(cls, config: StreamRuleConfig) -> StreamState:
        return cls(deque(maxlen=config.history))


class StreamRule:
    """The stream rule for one channel: ``floor`` and ``static`` from its training windows.

    :meth:`decide` takes a stream's windows in order (one statistic each) and returns
    each one's decision; the state it updates is the stream's :class:`StreamState`.
    """

    def __init__(
        self,
        floor: float,
        static: float,
        config: StreamRuleConfig | None = None,
        seed: Iterable[float] = (),
    ):
        if not (np.isfinite(floor) and np.isfinite(static)):
            raise ValueError(f"stream rule: floor {floor} and static {static} must be finite")
        self.floor = float(floor)
        self.static = float(static)
        self.config = config or StreamRuleConfig()
        #: training statistics before every stream, newest last (at most ``history``)
        self.seed = np.asarray(list(seed), dtype=np.float64)[-self.config.history :]
        if self.seed.ndim != 1 or not np.isfinite(self.seed).all():
            raise ValueError("stream rule: the seed must be finite window statistics")

    def judge(self, history: np.ndarray) -> bool:
        """Judge the newest window of ``history`` (its stream's statistics in window order,
        the newest last, at most ``history`` of them)."""
        values = np.asarray(history, dtype=np.float64)
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"stream rule: history has shape {values.shape}, need (n >= 1,)")
        if values.size > self.config.history:
            raise ValueError(
                f"stream rule: history of {values.size} windows, at most {self.config.history}"
            )
        value = float(values[-1])
        missing = self.config.history - values.size
        if missing > 0 and self.seed.size:
            values = np.concatenate([self.seed[-missing:], values])
        if values.size < self.config.min_history:
            return self.config.warm_up == "static" and value > self.static
        if value <= self.floor:
            return False
        eps = dynamic_epsilon(values, self.config)
        return kept_by_pruning(values, eps, self.config.prune)

    def confirms(self, history: np.ndarray) -> bool:
        """Whether the confirmed rule keeps the newest window of ``history``: above the
        static threshold, and kept by the stream rule."""
        values = np.asarray(history, dtype=np.float64)
        return bool(values.size and values[-1] > self.static and self.judge(values))

    def decide(self, state: StreamState, statistic: float) -> bool:
        """Append ``statistic`` (the newest window's) to ``state`` and judge that window."""
        value = float(statistic)
        if not np.isfinite(value):
            raise ValueError(f"stream rule: window statistic {statistic!r} is not finite")
        state.statistics.append(value)
        history = np.fromiter(state.statistics, dtype=np.float64, count=len(state.statistics))
        return self.judge(history)

    def flags(self, statistics: Iterable[float]) -> np.ndarray:
        """Decisions of a whole stream's windows, in order, from an empty state."""
        state = StreamState.empty(self.config)
        return np.array([self.decide(state, s) for s in statistics], dtype=bool)


def stream_flags(
    statistics: np.ndarray, floor: float, static: float, config: StreamRuleConfig | None = None
) -> np.ndarray:
    """Window decisions ``[k]`` of one stream's window statistics ``[k]`` under the rule."""
    return StreamRule(floor, static, config).flags(np.asarray(statistics, dtype=np.float64))


def confirmed_flags(statistics: np.ndarray, rule: StreamRule) -> np.ndarray:
    """Window decisions ``[k]`` of one stream under the confirmed rule: the static
    threshold's, kept only where the stream rule agrees."""
    values = np.asarray(statistics, dtype=np.float64)
    return (values > rule.static) & rule.flags(values)


def stream_rule_from_metadata(
    model_name: str, metadata: dict[str, Any], config: StreamRuleConfig | None = None
) -> StreamRule:
    """A channel's stream rule from its metadata.json: the static threshold and, as the
    floor, POT's initial threshold (the ``level`` quantile of its training statistics)."""
    parameters = metadata.get("threshold_parameters") or {}
    floor = parameters.get("pot_initial")
    static = metadata.get("threshold")
    if isinstance(static, dict):
        static = static.get("value")
    for name, value in (("threshold_parameters.pot_initial", floor), ("threshold", static)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            raise ValueError(f"{model_name}: metadata.json has no finite {name} (got {value!r})")
    assert isinstance(floor, int | float) and isinstance(static, int | float)  # for mypy
    return StreamRule(float(floor), float(static), config)
