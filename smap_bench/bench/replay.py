"""Replay-as-test: the labeled test splits through the live pipeline, scored like `evaluate`.

Planning and scoring are pure and live here; the command in :mod:`smap_bench.bench.cli`
runs the simulator with the plan and reads the detections back from the sinks.

Packing. Every channel gets one (satellite, subsystem) stream. Channels are sorted by
length and packed seven to a satellite, so the channels of one satellite have similar
lengths; a satellite's loop is as long as its longest channel, and a shorter channel in
it repeats from its start (the simulator's loop) — those extra records are scored by
the pipeline but left out of the evaluation, which uses only the first ``length``
records of each stream, exactly the split. A satellite with fewer than seven channels
fills its free subsystems with a filler copy of one of its channels, scored by nobody.

Scoring. The evaluation forms windows from the first record of each split (window 30,
stride 10); a window the live pipeline formed that runs past the split's end is ignored.
Window flags become record flags by :func:`smap_bench.windows.record_flags_from_windows`,
the rule the offline evaluation uses, and :mod:`smap_bench.evaluation` scores them. The
anomaly events read back from PostgreSQL are scored the same way
(:func:`score_events`): they are the detections operators get, after the events stage's
confirmation (:mod:`smap_bench.confirmation`), and the window flags are the workers'
verdicts before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from smap_bench import catalog, evaluation, windows


@dataclass(frozen=True)
class SatellitePlan:
    """One replay satellite: which channel each subsystem carries."""

    satellite_id: str
    channels: dict[str, str]  # subsystem name -> channel
    evaluated: frozenset[str]  # subsystems whose stream is scored (not fillers)
    loop_length: int


@dataclass(frozen=True)
class ReplayPlan:
    satellites: list[SatellitePlan]
    lengths: dict[str, int] = field(default_factory=dict)

    def streams(self) -> list[tuple[str, str, str]]:
        """(satellite_id, subsystem, channel) of every evaluated stream."""
        return [
            (sat.satellite_id, subsystem, channel)
            for sat in self.satellites
            for subsystem, channel in sat.channels.items()
            if subsystem in sat.evaluated
        ]

    def expected_windows(self, window: int, stride: int) -> int:
        """Windows the pipeline forms over one loop of every stream, fillers included."""
        return sum(
            windows.expected_windows(sat.loop_length, window, stride) * len(sat.channels)
            for sat in self.satellites
        )


def pack_channels(lengths: Mapping[str, int], prefix: str = "replay") -> ReplayPlan:
    """Pack channels seven to a satellite, channels of similar length together.

    A channel goes to the subsystem its prefix names when that slot is free in its
    satellite, otherwise to any free slot (B, G and R channels belong to no subsystem).
    """
    subsystems = [s.value for s in catalog.Subsystem]
    ordered = sorted(lengths, key=lambda c: (-lengths[c], catalog.channel_sort_key(c)))
    plans = []
    for number, start in enumerate(range(0, len(ordered), len(subsystems)), start=1):
        group = ordered[start : start + len(subsystems)]
        slots: dict[str, str] = {}
        leftovers = []
        for channel in group:
            own = catalog.subsystem_of(channel)
            if own is not None and own.value not in slots:
                slots[own.value] = channel
            else:
                leftovers.append(channel)
        free = [s for s in subsystems if s not in slots]
        for channel in leftovers:
            slots[free.pop(0)] = channel
        evaluated = frozenset(slots)
        for subsystem in free:
            slots[subsystem] = group[-1]  # filler: replayed, never scored
        ordered_slots = {s: slots[s] for s in subsystems}
        plans.append(
            SatellitePlan(
                satellite_id=f"{prefix}{number}",
                channels=ordered_slots,
                evaluated=evaluated,
                loop_length=max(lengths[c] for c in group),
            )
        )
    return ReplayPlan(plans, dict(lengths))


def record_flags_from_live(
    window_flags: Mapping[int, bool], n_records: int, window: int = 30, stride: int = 10
) -> tuple[np.ndarray, int]:
    """Record flags of one split from the live windows' flags, keyed by window start.

    Returns the flags and how many of the split's windows were missing from the sinks.
    A missing window leaves its records unflagged (and is counted, never guessed).
    """
    starts = windows.window_starts(n_records, window, stride)
    present = np.array([int(s) in window_flags for s in starts], dtype=bool)
    flags = np.array([bool(window_flags.get(int(s), False)) for s in starts], dtype=bool)
    records = windows.record_flags_from_windows(
        flags[present], starts[present], n_records, window, stride
    )
    return records, int((~present).sum())


def score_streams(
    live: Mapping[str, Mapping[int, bool]],
    labels: Mapping[str, Sequence[evaluation.RangeLike]],
    lengths: Mapping[str, int],
    window: int = 30,
    stride: int = 10,
    event_gap: int = 0,
) -> tuple[dict, int]:
    """Pool the event-wise evaluation over channels from their live window flags.

    ``live`` maps channel -> {window start: is_anomaly}; ``event_gap`` is the event rule
    (:func:`smap_bench.evaluation.bridge_gaps`), as the offline evaluation applies it.
    Returns the pooled evaluation (the `evaluate` JSON fields) and the number of split
    windows missing from the sinks.
    """
    results = []
    missing = 0
    for channel in sorted(lengths, key=catalog.channel_sort_key):
        flags, absent = record_flags_from_live(
            live.get(channel, {}), lengths[channel], window, stride
        )
        missing += absent
        results.append(
            evaluation.evaluate_channel(
                channel, flags, labels.get(channel, ()), lengths[channel], event_gap=event_gap
            )
        )
    return evaluation.pool(results), missing


def record_flags_from_events(
    events: Sequence[tuple[int, int]], n_records: int, window: int = 30, stride: int = 10
) -> np.ndarray:
    """Record flags ``[n_records]`` of a stream's anomaly events (first and last record,
    inclusive), kept only on the records the split's own windows judge: a window that
    runs past the split's end (into the records a packed stream repeats) is left out here
    as it is from the window flags."""
    flags = np.zeros(n_records, dtype=bool)
    for start, end in events:
        if start < 0 or end < start:
            raise ValueError(f"event ({start}, {end}) is not a valid inclusive range")
        if start < n_records:
            flags[start : min(end, n_records - 1) + 1] = True
    starts = windows.window_starts(n_records, window, stride)
    judged = windows.record_flags_from_windows(
        np.ones(len(starts), dtype=bool), starts, n_records, window, stride
    )
    return flags & judged


def score_events(
    events: Mapping[str, Sequence[tuple[int, int]]],
    labels: Mapping[str, Sequence[evaluation.RangeLike]],
    lengths: Mapping[str, int],
    window: int = 30,
    stride: int = 10,
    event_gap: int = 0,
) -> dict:
    """Pool the event-wise evaluation over channels from their anomaly events (channel ->
    events), as :func:`score_streams` does from window flags."""
    results = [
        evaluation.evaluate_channel(
            channel,
            record_flags_from_events(events.get(channel, ()), lengths[channel], window, stride),
            labels.get(channel, ()),
            lengths[channel],
            event_gap=event_gap,
        )
        for channel in sorted(lengths, key=catalog.channel_sort_key)
    ]
    return evaluation.pool(results)
