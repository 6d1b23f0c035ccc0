"""Alarm confirmation, live: the confirmed rule judged per stream, in window order.

Under the confirmed rule (:mod:`smap_bench.model.stream_rule`), a window that TranAD's
score flags is an alarm only when the stream rule keeps it against the stream's last
``history`` windows. A worker judges each window alone and never sees the stream's
history; the events stage, where a stream's results meet, confirms. :class:`Confirmer`
is what that needs, as pure state (no I/O, no Kafka):

- **Streams and windows.** A stream is (satellite, subsystem, loop). Its windows are
  numbered by their first record over the stride (``record_index_start // stride``), 0 at
  the loop's first record, as the offline evaluation numbers a split's windows.
- **Order.** Results come out of window order (several workers, retries, redeliveries).
  A flagged window ``k`` waits until every window of its history,
  ``max(0, k - history + 1) .. k - 1``, has arrived, then is judged: its decision is
  exactly the offline evaluation's over the same records.
- **Runs.** A stream need not start at its loop's first window (a satellite joins
  mid-loop), and a gap in its records leaves windows that were never formed. A result
  says where its run's windows begin (``run_window_start``, from the scheduler): a window
  waits for, and is judged on, the history windows of its own run only, as the offline
  rule judges a stream from that run's first window (after a gap the history starts
  again, whatever order the results come in and whether or not the stage restarted). A
  result that does not say (the scheduler resumed mid-run after a restart) waits for the
  whole history.
- **Patience.** A window of the history that never comes (dead-lettered, or from before
  the stage started) must not hold an alarm back for ever: a waiting window is judged on
  what has arrived once ``patience`` later windows of its stream have arrived and it
  has waited ``grace_s`` (a stream's windows formed in a burst, a backlog caught up,
  reach the topic hundreds of windows out of order within a fraction of a second), or
  ``patience_s`` seconds after it came (:meth:`Confirmer.expire`), and counted as judged
  on an incomplete history. The seconds count up to the stage's last poll (the events
  stage's ``tick``): the time spent handling a batch does not count, since a history
  window produced just after its flagged one may be in the next poll.
- **Redeliveries.** A flagged window judged before keeps its first decision (remembered
  ten histories long); one redelivered after that, or of a loop already forgotten, is
  not confirmed: a stale redelivery never raises a new alarm.
- **Memory.** A stream keeps the statistics its waiting and later windows can need.
  When a satellite and subsystem start loop ``n``, their loops before ``n - 1`` are
  judged and forgotten; a stream idle for ``idle_s`` seconds with nothing waiting is
  forgotten too.
- **Offsets.** Every message's Kafka position passes through :meth:`Confirmer.seen`;
  :meth:`Confirmer.commit_positions` gives, per partition, where a restart must read
  from: the oldest waiting window's offset, else one past the newest read. Windows before
  that were all judged; the history they form is read back on start
  (:meth:`Confirmer.remember`), not kept uncommitted.

- **Rules.** A flagged window is judged by the rule its result carries
  (:class:`ResultRules`): its detector's static threshold, which the worker flagged it
  by, and the floor beside it (TranAD's read from the model's metadata, the
  forecaster's as the worker fitted it). The events stage needs no model repository,
  and after a model's metadata changes (a retrained model) its flags are confirmed by
  the threshold they were flagged by, from the first window the worker scored after
  reading it (the stream's history may still hold the old model's statistics). A
  result that carries no rule (a producer that does not send the floor, such as a
  worker from before the floor was sent) has its flag stand as the worker decided,
  counted as unconfirmed.

Only flagged windows are judged; the others are recorded (their statistic is history)
and need nothing. A window may arrive without a statistic (NaN: the forecaster's series
has none for a run's first windows): it has arrived, and is no part of any history, as
offline, where a stream's history begins with its first statistic. A window judged on a
stream's first windows (fewer than the rule's ``min_history``) keeps the static decision,
as offline.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from smap_bench.model.stream_rule import StreamRule, StreamRuleConfig
from smap_bench.schema import InferenceResult

__all__ = [
    "CONFIRMED_DETECTORS",
    "RULE_FIELDS",
    "Arrival",
    "ConfirmationCounts",
    "Confirmer",
    "ForecastLane",
    "Judgement",
    "PartitionKey",
    "ResultConfirmation",
    "ResultRules",
    "StreamKey",
    "judged_result",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

StreamKey = tuple[str, str, int]
"""(satellite_id, subsystem, loop)."""

PartitionKey = tuple[str, int]
"""(topic, partition)."""


@dataclass(frozen=True, slots=True)
class Arrival(Generic[T]):
    """One window's result as the confirmer needs it."""

    stream: StreamKey
    index: int  #: the window's number in its loop (first record // stride)
    #: the window statistic (the worker's mean_anomaly_score); NaN: the window has none
    #: in this series (it cannot be flagged then)
    statistic: float
    flagged: bool  #: TranAD's score flags it: the stream rule must confirm
    rule: StreamRule | None  #: the channel's rule (None: the window is not flagged)
    item: T
    partition: PartitionKey | None = None
    offset: int | None = None
    #: the first window of its run (:attr:`InferenceResult.run_window_start` over the
    #: stride): the windows before it were never formed in this run (None: not known)
    run_first: int | None = None


@dataclass(frozen=True, slots=True)
class Judgement(Generic[T]):
    """A flagged window judged: ``confirmed`` by the stream rule or not, on its whole
    history (``complete``) or on what had arrived when patience ran out."""

    item: T
    confirmed: bool
    complete: bool


@dataclass
class ConfirmationCounts:
    judged: int = 0
    confirmed: int = 0
    incomplete: int = 0  #: judged before its whole history had arrived
    #: windows that arrived after a flagged window whose history they belong to was
    #: judged without them (late, not lost: the patience was too short for them)
    late: int = 0


@dataclass
class _Waiting(Generic[T]):
    arrival: Arrival[T]
    since: float


@dataclass
class _Stream(Generic[T]):
    statistics: dict[int, float] = field(default_factory=dict)
    waiting: dict[int, _Waiting[T]] = field(default_factory=dict)
    #: flagged windows judged: confirmed or not, and on a complete history or not
    decided: dict[int, tuple[bool, bool]] = field(default_factory=dict)
    newest: int = -1
    last_seen: float = 0.0
    forgotten_below: int = 0  #: statistics of windows below this index were dropped
    #: the first window of the newest window's run, where known (what a read-back needs)
    newest_run_first: int | None = None
    #: flagged windows judged on an incomplete history: when (the clock), by index
    given_up: dict[int, float] = field(default_factory=dict)


class Confirmer(Generic[T]):
    """Per-stream histories and the flagged windows waiting for them (see the module)."""

    def __init__(
        self,
        history: int,
        *,
        patience: int | None = None,
        patience_s: float = 10.0,
        grace_s: float = 2.0,
        idle_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if history < 1:
            raise ValueError(f"confirmation: history must be at least 1 window, got {history}")
        self.history = history
        self.patience = history if patience is None else patience
        #: how long a window waits before ``patience`` later windows can judge it
        self.grace_s = grace_s
        self.patience_s = patience_s
        self.idle_s = idle_s
        self._clock = clock
        self._streams: dict[StreamKey, _Stream[T]] = {}
        self._loops: dict[tuple[str, str], int] = {}
        self._read: dict[PartitionKey, int] = {}
        self.counts = ConfirmationCounts()

    # -- what comes in -------------------------------------------------------------------

    def seen(self, partition: PartitionKey, offset: int) -> None:
        """A message at ``offset`` of ``partition`` was read (whatever it held)."""
        self._read[partition] = max(self._read.get(partition, 0), offset + 1)

    def remember(
        self, stream: StreamKey, index: int, statistic: float, run_first: int | None = None
    ) -> None:
        """History only: a window judged before the stage started (read back on start),
        with the first window of its run where known."""
        state = self._stream(stream)
        if state is not None:
            state.statistics.setdefault(index, float(statistic))
            if index >= state.newest:
                state.newest = index
                state.newest_run_first = run_first
            state.last_seen = self._clock()

    def add(self, arrival: Arrival[T]) -> list[Judgement[T]]:
        """Record ``arrival``; the flagged windows of its stream judged now (it and any
        that were waiting for it), in window order."""
        if arrival.index < 0:
            raise ValueError(f"confirmation: window index {arrival.index} is negative")
        if arrival.run_first is not None and not 0 <= arrival.run_first <= arrival.index:
            raise ValueError(
                f"confirmation: run's first window {arrival.run_first} does not precede"
                f" window {arrival.index}"
            )
        if arrival.flagged and arrival.rule is None:
            raise ValueError("confirmation: a flagged window needs its channel's rule")
        if np.isinf(arrival.statistic) or (arrival.flagged and np.isnan(arrival.statistic)):
            raise ValueError(f"confirmation: window statistic {arrival.statistic} is not finite")
        judged = self._new_loop(arrival.stream)
        state = self._stream(arrival.stream)
        if state is None:  # a loop already forgotten: its flagged window is not confirmed
            return [*judged, *self._judge_alone(arrival)]
        state.last_seen = self._clock()
        if state.given_up and arrival.index not in state.statistics:
            self._late(arrival, state)
        state.statistics.setdefault(arrival.index, float(arrival.statistic))
        state.newest = max(state.newest, arrival.index)
        if arrival.flagged and arrival.index in state.decided:
            # a redelivered window keeps its first decision (its history may be gone)
            confirmed, complete = state.decided[arrival.index]
            judged.append(self._count(Judgement(arrival.item, confirmed, complete)))
        elif arrival.flagged:
            state.waiting[arrival.index] = _Waiting(arrival, state.last_seen)
        judged += self._ready(state)
        self._forget_old(state)
        return judged

    def now(self) -> float:
        """A reading of the clock that patience is counted by."""
        return self._clock()

    def expire(self, as_of: float | None = None) -> list[Judgement[T]]:
        """Judge the windows that had waited ``patience_s`` by ``as_of`` (a reading of
        :meth:`now`; default: now); forget idle streams."""
        now = self._clock() if as_of is None else as_of
        judged: list[Judgement[T]] = []
        for key, state in list(self._streams.items()):
            for index in sorted(state.waiting):
                if now - state.waiting[index].since >= self.patience_s:
                    judged.append(self._judge(state, index))
            if not state.waiting and now - state.last_seen >= self.idle_s:
                del self._streams[key]
        return judged

    # -- what goes out -------------------------------------------------------------------

    def commit_positions(self) -> dict[PartitionKey, int]:
        """Per partition read so far, the offset a restart must read from."""
        positions = dict(self._read)
        for state in self._streams.values():
            for waiting in state.waiting.values():
                arrival = waiting.arrival
                if arrival.partition is not None and arrival.offset is not None:
                    positions[arrival.partition] = min(
                        positions.get(arrival.partition, arrival.offset + 1), arrival.offset
                    )
        return positions

    def reaches_back(self, stream: StreamKey) -> bool:
        """Whether ``stream`` holds a window as old as its newest window's history reaches,
        or as its run's first window (what a read-back needs before the windows after it
        are judged; windows missing in between were dead-lettered or never formed, and
        reading further cannot help)."""
        state = self._streams.get(stream)
        if state is None or not state.statistics:
            return False
        reach = max(self._history_from(state.newest), state.newest_run_first or 0)
        return min(state.statistics) <= reach

    @property
    def waiting(self) -> int:
        """Flagged windows still waiting for their history."""
        return sum(len(state.waiting) for state in self._streams.values())

    @property
    def streams(self) -> int:
        return len(self._streams)

    # -- inside --------------------------------------------------------------------------

    def _stream(self, key: StreamKey) -> _Stream[T] | None:
        satellite, subsystem, loop = key
        current = self._loops.get((satellite, subsystem))
        if current is not None and loop < current - 1:
            return None
        state = self._streams.get(key)
        if state is None:
            state = self._streams[key] = _Stream()
        return state

    def _new_loop(self, key: StreamKey) -> list[Judgement[T]]:
        """A loop newer than any seen of its satellite and subsystem: the loops before the
        one it follows are judged and forgotten."""
        satellite, subsystem, loop = key
        current = self._loops.get((satellite, subsystem))
        if current is not None and loop <= current:
            return []
        self._loops[(satellite, subsystem)] = loop
        judged: list[Judgement[T]] = []
        for old in [k for k in self._streams if k[:2] == key[:2] and k[2] < loop - 1]:
            state = self._streams.pop(old)
            judged += [self._judge(state, index) for index in sorted(state.waiting)]
        return judged

    def _history_from(self, index: int) -> int:
        return max(0, index - self.history + 1)

    def _expected_from(self, arrival: Arrival[T]) -> int:
        """The first window of ``arrival``'s history that must arrive before it is judged
        (the history's first, or its run's first if later)."""
        return max(self._history_from(arrival.index), arrival.run_first or 0)

    def _complete(self, state: _Stream[T], arrival: Arrival[T]) -> bool:
        statistics = state.statistics
        return all(i in statistics for i in range(self._expected_from(arrival), arrival.index))

    def _ready(self, state: _Stream[T]) -> list[Judgement[T]]:
        judged = []
        now = self._clock()
        for index in sorted(state.waiting):
            waiting = state.waiting[index]
            outrun = state.newest - index >= self.patience
            if self._complete(state, waiting.arrival) or (
                outrun and now - waiting.since >= self.grace_s
            ):
                judged.append(self._judge(state, index))
        return judged

    def _judge(self, state: _Stream[T], index: int) -> Judgement[T]:
        arrival = state.waiting.pop(index).arrival
        assert arrival.rule is not None  # checked by add
        first = self._expected_from(arrival)
        known = [state.statistics[i] for i in range(first, index + 1) if i in state.statistics]
        complete = len(known) == index - first + 1
        known = [value for value in known if not np.isnan(value)]  # windows without one
        if not complete and first < state.forgotten_below:
            # its history was forgotten (a redelivery long after): never a new alarm
            confirmed = False
        else:
            confirmed = arrival.rule.confirms(np.asarray(known, dtype=np.float64))
        state.decided[index] = (confirmed, complete)
        if not complete:
            state.given_up[index] = self._clock()
        return self._count(Judgement(arrival.item, confirmed, complete))

    def _late(self, arrival: Arrival[T], state: _Stream[T]) -> None:
        """Count (and log) ``arrival`` if a flagged window whose history it belongs to was
        judged without it."""
        after = [j for j in state.given_up if self._history_from(j) <= arrival.index < j]
        if after:
            self.counts.late += 1
            first = min(after)
            log.warning(
                "confirmation: window %d of %s arrived %.1f s after window %d was judged"
                " without it",
                arrival.index,
                arrival.stream,
                self._clock() - state.given_up[first],
                first,
            )

    def _judge_alone(self, arrival: Arrival[T]) -> list[Judgement[T]]:
        """A flagged window of a loop already forgotten: its history is gone, so it is
        not confirmed (it cannot raise a new alarm on a stale stream)."""
        if not arrival.flagged:
            return []
        return [self._count(Judgement(arrival.item, False, False))]

    def _count(self, judgement: Judgement[T]) -> Judgement[T]:
        self.counts.judged += 1
        self.counts.confirmed += judgement.confirmed
        self.counts.incomplete += not judgement.complete
        return judgement

    def _forget_old(self, state: _Stream[T]) -> None:
        """Drop the statistics no waiting or later window can need (with ``patience`` of
        slack for windows still to come out of order); decisions are kept ten times as
        long, so a redelivery keeps its first decision."""
        oldest = min([state.newest, *state.waiting])
        keep_from = oldest - self.history - self.patience + 1
        if keep_from > 0 and len(state.statistics) > 2 * (self.history + self.patience):
            for index in [i for i in state.statistics if i < keep_from]:
                del state.statistics[index]
            state.forgotten_below = max(state.forgotten_below, keep_from)
            decided_from = oldest - 10 * (self.history + self.patience)
            for index in [i for i in state.decided if i < decided_from]:
                del state.decided[index]
            for index in [i for i in state.given_up if i < keep_from]:
                del state.given_up[index]


# --------------------------------------------------------------------------------------
# Inference results
# --------------------------------------------------------------------------------------


#: Per confirmed detector, the result fields that carry the rule the worker flagged a
#: window by: (floor, static threshold).
RULE_FIELDS: dict[str, tuple[str, str]] = {
    "model": ("stream_floor", "threshold"),
    "forecaster": ("forecast_floor", "forecast_threshold"),
}


class ResultRules:
    """The stream rule of a result for one detector (``model``: TranAD's score,
    ``forecaster``: the forecaster's statistic), built from the floor and threshold the
    result carries (:data:`RULE_FIELDS`: ``stream_floor`` and ``threshold``, or
    ``forecast_floor`` and ``forecast_threshold``; the worker flagged it by that
    threshold). The events stage so confirms without a model repository or a
    forecaster of its own (None: a result that does not carry them, whose flag then
    stands as the worker decided). One rule per model and pair, built once (the last
    ``keep`` pairs kept)."""

    def __init__(
        self, detector: str, config: StreamRuleConfig | None = None, keep: int = 4096
    ) -> None:
        if detector not in RULE_FIELDS:
            raise ValueError(f"no rule fields for detector {detector!r}: {sorted(RULE_FIELDS)}")
        self.detector = detector
        self.config = config or StreamRuleConfig()
        self.keep = keep
        self._fields = RULE_FIELDS[detector]
        self._rules: dict[tuple[str, float, float], StreamRule] = {}

    def __call__(self, result: InferenceResult) -> StreamRule | None:
        floor, static = (getattr(result, name) for name in self._fields)
        if floor is None or static is None:
            return None
        key = (result.model_name, float(floor), float(static))
        rule = self._rules.get(key)
        if rule is None:
            if len(self._rules) >= self.keep:  # a producer sending ever new pairs
                del self._rules[next(iter(self._rules))]
            rule = self._rules[key] = StreamRule(floor, static, self.config)
        return rule


@dataclass(frozen=True)
class ForecastLane:
    """What confirming the forecaster's flags needs besides TranAD's: its rule for a
    result (None: not confirmed; :class:`ResultRules`, served) and a confirmer of its own
    (its statistics are another series). Every result arrives in it, those without a
    forecast (a run's first windows) without a statistic, so a flagged window waits for
    the same windows as TranAD's and its history is the forecasts among them, as offline."""

    rules: Callable[[InferenceResult], StreamRule | None]
    confirmer: Confirmer[_Pending]


@dataclass(eq=False)
class _Pending:
    """A result whose flags are being confirmed: the detectors still to be judged, and
    those the stream rule did not keep."""

    result: InferenceResult
    waiting: set[str] = field(default_factory=set)
    dropped: set[str] = field(default_factory=set)


#: The detectors whose flags the stream rule confirms (the others stand as flagged).
CONFIRMED_DETECTORS = ("model", "forecaster")


class ResultConfirmation:
    """The confirmed rule over inference results: what :class:`Confirmer` does, for the
    events stage. :meth:`offer` takes each result read (the caller notes every message's
    position with :meth:`seen`, results or not) and returns the results decided now,
    their ``detected_by`` final: a flagged window's ``model`` kept only when confirmed on
    TranAD's statistics, its ``forecaster`` (with ``forecaster``, a :class:`ForecastLane`)
    only when confirmed on the forecaster's, each by its own stream rule; a window flagged
    by both is decided once both are judged (``is_anomaly`` follows). Results it cannot
    place (no loop or record index) pass through as the worker decided them, and so does
    a flag whose result carries no rule (``unconfirmed``; ``rules`` gives a result's
    rule, :class:`ResultRules` served)."""

    def __init__(
        self,
        rules: Callable[[InferenceResult], StreamRule | None],
        stride: int,
        confirmer: Confirmer[_Pending],
        forecaster: ForecastLane | None = None,
    ) -> None:
        self.rules = rules
        self.stride = stride
        self.confirmer = confirmer
        self.forecaster = forecaster
        self.unconfirmed = 0

    @property
    def confirmers(self) -> list[Confirmer[_Pending]]:
        return [self.confirmer] + ([self.forecaster.confirmer] if self.forecaster else [])

    def seen(self, partition: PartitionKey, offset: int) -> None:
        """A message at ``offset`` of ``partition`` was read (whatever it held)."""
        for confirmer in self.confirmers:
            confirmer.seen(partition, offset)

    def commit_positions(self) -> dict[PartitionKey, int]:
        """Per partition, where a restart must read from: the oldest any waits for."""
        positions: dict[PartitionKey, int] = {}
        for confirmer in self.confirmers:
            for partition, offset in confirmer.commit_positions().items():
                positions[partition] = min(positions.get(partition, offset), offset)
        return positions

    def reaches_back(self, stream: StreamKey) -> bool:
        """Whether every history of ``stream`` was read back far enough
        (:meth:`Confirmer.reaches_back`)."""
        return all(confirmer.reaches_back(stream) for confirmer in self.confirmers)

    @property
    def waiting(self) -> int:
        return sum(confirmer.waiting for confirmer in self.confirmers)

    @property
    def counts(self) -> ConfirmationCounts:
        """Flags judged, confirmed and judged on an incomplete history, over both."""
        total = ConfirmationCounts()
        for confirmer in self.confirmers:
            total.judged += confirmer.counts.judged
            total.confirmed += confirmer.counts.confirmed
            total.incomplete += confirmer.counts.incomplete
            total.late += confirmer.counts.late
        return total

    def offer(
        self, result: InferenceResult, partition: PartitionKey | None, offset: int | None
    ) -> list[InferenceResult]:
        if result.loop is None or result.record_index_start is None:
            return [result]
        pending = _Pending(result)
        # every arrival first: a window flagged by both must wait for both before either
        # confirmer can judge it
        arrivals = [
            (name, arrival)
            for name in CONFIRMED_DETECTORS
            if (arrival := self._arrival(pending, name, partition, offset)) is not None
        ]
        decided = [] if pending.waiting else [result]
        for name, arrival in arrivals:
            decided += self._settled(name, self._confirmer_of(name).add(arrival))
        return decided

    def now(self) -> float:
        """A reading of the confirmers' clock (what :meth:`expire` takes)."""
        return self.confirmer.now()

    def expire(self, as_of: float | None = None) -> list[InferenceResult]:
        """The results whose patience had run out by ``as_of`` (default: now; both
        confirmers count by the model confirmer's clock), decided on what had arrived
        (:meth:`Confirmer.expire`)."""
        decided = self._settled("model", self.confirmer.expire(as_of))
        if self.forecaster is not None:
            decided += self._settled("forecaster", self.forecaster.confirmer.expire(as_of))
        return decided

    def remember(self, result: InferenceResult) -> StreamKey | None:
        """A result read back on start: history only. Returns its stream (None: a result
        without a position)."""
        if result.loop is None or result.record_index_start is None:
            return None
        stream = (result.satellite_id, result.subsystem.value, result.loop)
        index = result.record_index_start // self.stride
        run_first = self._run_first(result)
        self.confirmer.remember(stream, index, result.mean_anomaly_score, run_first)
        if self.forecaster is not None:
            self.forecaster.confirmer.remember(
                stream, index, _or_nan(result.forecast_statistic), run_first
            )
        return stream

    # -- inside --------------------------------------------------------------------------

    def _confirmer_of(self, name: str) -> Confirmer[_Pending]:
        if name == "model":
            return self.confirmer
        assert self.forecaster is not None
        return self.forecaster.confirmer

    def _arrival(
        self,
        pending: _Pending,
        name: str,
        partition: PartitionKey | None,
        offset: int | None,
    ) -> Arrival[_Pending] | None:
        """What the detector ``name``'s confirmer is given of the pending result (None: no
        forecaster lane). A flag that cannot be confirmed (no rule in the result, or a
        forecaster flag without a statistic) stands as the worker decided (counted by
        ``unconfirmed``), its window recorded unflagged."""
        result = pending.result
        flagged = name in _detectors(result)
        rule: StreamRule | None = None
        if name == "model":
            statistic = result.mean_anomaly_score
            if flagged:
                rule = self.rules(result)
        elif self.forecaster is None:
            return None
        else:
            statistic = _or_nan(result.forecast_statistic)
            if flagged and not math.isnan(statistic):
                rule = self.forecaster.rules(result)
        if flagged and rule is None:
            self.unconfirmed += 1
            flagged = False
        if flagged:
            pending.waiting.add(name)
        assert result.loop is not None and result.record_index_start is not None
        return Arrival(
            stream=(result.satellite_id, result.subsystem.value, result.loop),
            index=result.record_index_start // self.stride,
            statistic=statistic,
            flagged=flagged,
            rule=rule,
            item=pending,
            partition=partition,
            offset=offset,
            run_first=self._run_first(result),
        )

    def _settled(self, name: str, judgements: list[Judgement[_Pending]]) -> list[InferenceResult]:
        """The results that ``name``'s judgements leave with nothing more to wait for."""
        out = []
        for judgement in judgements:
            pending = judgement.item
            pending.waiting.discard(name)
            if not judgement.confirmed:
                pending.dropped.add(name)
            if not pending.waiting:
                out.append(_decided(pending.result, pending.dropped))
        return out

    def _run_first(self, result: InferenceResult) -> int | None:
        start = result.run_window_start
        return None if start is None else start // self.stride


def _or_nan(value: float | None) -> float:
    """A statistic, NaN for none (a window that arrived without one)."""
    return math.nan if value is None else float(value)


def _detectors(result: InferenceResult) -> list[str]:
    """What flagged ``result`` (a producer that does not say: the model, if anomalous)."""
    if result.detected_by is not None:
        return list(result.detected_by)
    return ["model"] if result.is_anomaly else []


def _decided(result: InferenceResult, dropped: set[str]) -> InferenceResult:
    """``result`` with its final detectors: those the stream rule did not drop."""
    if not dropped:
        return result if result.detected_by is not None else _with(result, _detectors(result))
    return _with(result, [name for name in _detectors(result) if name not in dropped])


def _with(result: InferenceResult, detectors: list[str]) -> InferenceResult:
    return result.model_copy(update={"detected_by": detectors, "is_anomaly": bool(detectors)})


def judged_result(judgement: Judgement[InferenceResult]) -> InferenceResult:
    """The result of a window judged on TranAD's statistics, with its final detectors."""
    return _decided(judgement.item, set() if judgement.confirmed else {"model"})
