"""Sliding windows over telemetry records, as pure functions and one in-memory buffer.

The offline evaluation and the live pipeline must form the same windows and turn window
decisions into record decisions by the same rule, or their scores cannot agree
(EVALUATION.md). Both therefore use this module:

- **Windows.** A split of ``n`` records yields the windows ``[s, s + window)`` for
  ``s = 0, stride, 2 * stride, ...`` while ``s + window <= n``, counted from the split's
  first record. The live :class:`WindowBuffer` emits exactly these (its grid is anchored at
  ``origin``, the split's first ``record_index``, 0 by default).
- **Responsibility rule.** Each window is responsible for its newest ``stride`` records,
  ``[s + window - stride, s + window)``; the split's first window (``s == 0``) is also
  responsible for its older records, so it covers ``[0, window)``. These ranges tile the
  split without overlap, every record is judged by exactly one window, and that window is
  the first one that contains the record, so a live decision about a record is available
  as soon as the record arrives in a window. A tail of fewer than ``stride`` records after
  the last window belongs to no window: its scores are NaN and its flags False.

A stride-1 evaluation uses the same rule with ``stride=1`` (each window judges its last
record).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "MAX_MASK_COMMANDS",
    "PushResult",
    "Rejection",
    "Window",
    "WindowBuffer",
    "command_masks",
    "commands_from_masks",
    "expected_windows",
    "make_windows",
    "record_flags",
    "record_flags_from_windows",
    "record_owner",
    "record_scores",
    "responsible_range",
    "window_starts",
]


def _check_geometry(window: int, stride: int) -> None:
    if window < 1:
        raise ValueError(f"window must be at least 1 record, got {window}")
    if not 1 <= stride <= window:
        raise ValueError(
            f"stride must be between 1 and window ({window}), got {stride}: "
            "a larger stride would leave records no window judges"
        )


# --------------------------------------------------------------------------------------
# Offline: whole splits at once
# --------------------------------------------------------------------------------------


def window_starts(n_records: int, window: int = 30, stride: int = 10) -> np.ndarray:
    """First-record offsets of every window of a split of ``n_records`` (int64, ascending)."""
    _check_geometry(window, stride)
    if n_records < 0:
        raise ValueError(f"n_records must not be negative, got {n_records}")
    if n_records < window:
        return np.empty(0, dtype=np.int64)
    return np.arange(0, n_records - window + 1, stride, dtype=np.int64)


def make_windows(
    array: np.ndarray, window: int = 30, stride: int = 10, *, copy: bool = True
) -> np.ndarray:
    """Windows ``(k, window, f)`` of a ``(n, f)`` array, at :func:`window_starts`.

    With ``copy=True`` (default) the result is a contiguous float32 array ready for a model;
    with ``copy=False`` it is a read-only view sharing memory with ``array`` (no copy, the
    input's dtype).
    """
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"expected a (records, features) array, got shape {array.shape}")
    starts = window_starts(array.shape[0], window, stride)
    if starts.size == 0:
        view = np.empty((0, window, array.shape[1]), dtype=array.dtype)
    else:
        # sliding_window_view puts the window axis last: (n - window + 1, f, window)
        view = sliding_window_view(array, window, axis=0)[::stride].transpose(0, 2, 1)
    if copy:
        return np.ascontiguousarray(view, dtype=np.float32)
    return view


def responsible_range(start: int, window: int = 30, stride: int = 10) -> tuple[int, int]:
    """Half-open record range ``[lo, hi)`` the window starting at ``start`` judges.

    ``start`` is counted from the split's first record; the window at 0 judges
    ``[0, window)``, every later one its newest ``stride`` records.
    """
    _check_geometry(window, stride)
    if start < 0 or start % stride:
        raise ValueError(f"window start {start} is not on the stride-{stride} grid from 0")
    return (0 if start == 0 else start + window - stride), start + window


def _check_starts(starts: np.ndarray, n_records: int, window: int, stride: int) -> np.ndarray:
    _check_geometry(window, stride)
    starts = np.asarray(starts, dtype=np.int64)
    if starts.ndim != 1:
        raise ValueError(f"window starts must be one-dimensional, got shape {starts.shape}")
    if starts.size:
        if starts[0] < 0 or np.any(starts % stride):
            raise ValueError(f"window starts must lie on the stride-{stride} grid from 0")
        if np.any(np.diff(starts) <= 0):
            raise ValueError("window starts must be strictly increasing (no duplicates)")
        if starts[-1] + window > n_records:
            raise ValueError(f"window at {starts[-1]} ends past the split's {n_records} records")
    return starts


def record_owner(
    starts: np.ndarray, n_records: int, window: int = 30, stride: int = 10
) -> np.ndarray:
    """For each record, the index into ``starts`` of the window that judges it, else -1.

    ``starts`` may be a subset of :func:`window_starts` (a live replay that lost windows);
    records whose responsible window is absent get -1.
    """
    starts = _check_starts(starts, n_records, window, stride)
    records = np.arange(n_records, dtype=np.int64)
    # The grid start s with r in [s + window - stride, s + window), or 0 for the first window.
    wanted = np.maximum(0, (records - window + stride) // stride * stride)
    owner = np.searchsorted(starts, wanted)
    found = owner < starts.size
    found[found] = starts[owner[found]] == wanted[found]
    return np.where(found, owner, -1)


def record_scores(
    window_scores: np.ndarray,
    starts: np.ndarray,
    n_records: int,
    window: int = 30,
    stride: int = 10,
) -> np.ndarray:
    """Per-record scores ``(n,)`` taken from each record's responsible window.

    ``window_scores`` holds one score per timestep of each window, ``(k, window)``, aligned
    with ``starts``; records no window judges get NaN.
    """
    window_scores = np.asarray(window_scores)
    owner = record_owner(starts, n_records, window, stride)
    starts = np.asarray(starts, dtype=np.int64)
    if window_scores.shape != (starts.size, window):
        raise ValueError(
            f"window scores have shape {window_scores.shape}, expected {(starts.size, window)}"
        )
    out = np.full(n_records, np.nan, dtype=np.float64)
    covered = np.flatnonzero(owner >= 0)
    offsets = covered - starts[owner[covered]]
    out[covered] = window_scores[owner[covered], offsets]
    return out


def record_flags_from_windows(
    window_flags: np.ndarray,
    starts: np.ndarray,
    n_records: int,
    window: int = 30,
    stride: int = 10,
) -> np.ndarray:
    """Per-record anomaly flags ``(n,)``: a flagged window marks the records it judges."""
    window_flags = np.asarray(window_flags, dtype=bool)
    owner = record_owner(starts, n_records, window, stride)
    if window_flags.shape != (np.asarray(starts).size,):
        raise ValueError(
            f"window flags have shape {window_flags.shape}, "
            f"expected one flag per window ({np.asarray(starts).size},)"
        )
    flags = np.zeros(n_records, dtype=bool)
    covered = owner >= 0
    flags[covered] = window_flags[owner[covered]]
    return flags


def record_flags(scores: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """Record flags from record scores: ``score > threshold``; NaN scores are never flagged.

    ``threshold`` is a number or a per-record array (a dynamic threshold).
    """
    scores = np.asarray(scores, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.asarray(scores > threshold) & ~np.isnan(scores)


# --------------------------------------------------------------------------------------
# Live: one stream of records at a time
# --------------------------------------------------------------------------------------


class Rejection(StrEnum):
    """Why :meth:`WindowBuffer.push` refused a record (a dead-letter reason)."""

    DUPLICATE = "duplicate record_index"
    OUT_OF_ORDER = "out-of-order record_index"
    STALE_LOOP = "loop older than the stream's current loop"
    WRONG_FEATURE_COUNT = "wrong feature count"
    NOT_NUMERIC = "non-numeric feature value"
    NON_FINITE = "non-finite feature value"


@dataclass(frozen=True, slots=True)
class Window:
    """A full window of one stream: ``window_size`` consecutive records of one loop."""

    loop: int
    first_record_index: int
    last_record_index: int
    data: np.ndarray = field(repr=False)  #: (window_size, n_features) float32
    timestamps: tuple[Any, ...] = field(repr=False)  #: the records' timestamps, as pushed
    #: the telemetry value (column 0) of the ``context`` records ending with the window's
    #: last, float32; None when the buffer keeps no context or holds fewer records
    context: np.ndarray | None = field(default=None, repr=False)
    #: the telemetry value (float32) and the command mask (int64, :func:`command_masks`)
    #: of the last ``forecast`` records ending with the window's last, or of all the
    #: run's records when it holds fewer; None when the buffer keeps no forecast context
    forecast_values: np.ndarray | None = field(default=None, repr=False)
    forecast_masks: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class PushResult:
    """Outcome of one push: the window it completed (at most one), or why it was refused.

    ``gap`` is the number of records missing just before this one (the buffer restarted at
    this record); ``new_loop`` says this record began a new loop of the stream.
    """

    windows: tuple[Window, ...] = ()
    rejected: Rejection | None = None
    gap: int = 0
    new_loop: bool = False

    @property
    def accepted(self) -> bool:
        return self.rejected is None


_ACCEPTED = PushResult()
_REJECTED = {reason: PushResult(rejected=reason) for reason in Rejection}


class WindowBuffer:
    """Turns one stream's records (one satellite and subsystem) into windows as they arrive.

    Records must come in ``record_index`` order within a loop. A window is emitted when the
    newest ``window_size`` consecutive records are held and the first of them lies on the
    stride grid anchored at ``origin`` (the split's first ``record_index``). The grid is
    fixed rather than taken from the first record seen, so a restarted scheduler that
    resumes mid-stream forms the same windows (and job ids) as before.

    - A ``record_index`` already accepted in this loop is refused as a duplicate; a lower
      one that was never accepted is refused as out of order.
    - A gap (a higher ``record_index`` than the next) empties the buffer: no window spans
      missing records; windows resume at the next grid point with a full window behind it.
      The result reports the gap's size.
    - A higher ``loop`` (the simulator restarted the split) starts a new segment; a lower
      one is refused.
    - A record of the wrong length, with a non-number or with NaN/infinity (also after
      conversion to float32) is refused and not buffered, so
      it counts as a gap for the records after it.

    Memory is a ring of ``2 * window_size`` rows in which each record is written twice, so
    the newest window is always one contiguous slice.

    With ``context`` > 0 the buffer also keeps the telemetry value (column 0) of the last
    ``context`` records, in a ring of its own, and hands it out with each window whose
    run (the consecutive records since the last gap or new loop) holds that many records:
    the history the context detector judges (:mod:`smap_bench.model.context`).

    With ``forecast`` > 0 it keeps the value and the command mask of the last ``forecast``
    records too, and hands out those of the run's last ``forecast`` records (all of them
    while the run is shorter) with every window: what the forecaster judges
    (:func:`smap_bench.model.forecaster.context_statistic`).
    """

    __slots__ = (
        "_bits",
        "_closed_runs",
        "_count",
        "_forecast_masks",
        "_forecast_pos",
        "_forecast_values",
        "_history",
        "_history_pos",
        "_last",
        "_loop",
        "_pos",
        "_ring",
        "_run_start",
        "_times",
        "_zeros",
        "context",
        "forecast",
        "n_features",
        "origin",
        "stride",
        "window_size",
    )

    #: How many earlier runs (between gaps) of the current loop are remembered for
    #: telling a duplicate from an out-of-order record.
    MAX_REMEMBERED_RUNS = 64

    def __init__(
        self,
        window_size: int = 30,
        stride: int = 10,
        n_features: int = 25,
        origin: int = 0,
        context: int = 0,
        forecast: int = 0,
    ) -> None:
        _check_geometry(window_size, stride)
        if n_features < 1:
            raise ValueError(f"n_features must be at least 1, got {n_features}")
        if context < 0:
            raise ValueError(f"context must be 0 (none) or a number of records, got {context}")
        if forecast < 0:
            raise ValueError(f"forecast must be 0 (none) or a number of records, got {forecast}")
        if forecast and not 1 < n_features <= MAX_MASK_COMMANDS + 1:
            raise ValueError(
                f"a forecast context needs 1 to {MAX_MASK_COMMANDS} command columns, "
                f"got {n_features - 1}"
            )
        self.context = context
        self.forecast = forecast
        self._forecast_values = np.zeros(2 * forecast, dtype=np.float32)
        self._forecast_masks = np.zeros(2 * forecast, dtype=np.int64)
        self._forecast_pos = 0
        self._bits = (2.0 ** np.arange(max(n_features - 1, 0))).astype(np.float64)
        self._history = np.zeros(2 * context, dtype=np.float32)
        self._history_pos = 0
        self.window_size = window_size
        self.stride = stride
        self.n_features = n_features
        self.origin = origin
        self._ring = np.zeros((2 * window_size, n_features), dtype=np.float32)
        self._times: list[Any] = [None] * (2 * window_size)
        self._zeros = np.zeros(n_features, dtype=np.float32)
        self._pos = 0
        self._count = 0
        self._loop: int | None = None
        self._last = 0
        self._run_start = 0
        self._closed_runs: deque[tuple[int, int]] = deque(maxlen=self.MAX_REMEMBERED_RUNS)

    @property
    def loop(self) -> int | None:
        """The stream's current loop (None before the first record)."""
        return self._loop

    @property
    def last_record_index(self) -> int | None:
        """The last accepted ``record_index`` of the current loop (None before any)."""
        return None if self._loop is None else self._last

    @property
    def buffered(self) -> int:
        """How many consecutive records the next window can draw on (at most window_size)."""
        return min(self._count, self.window_size)

    def _seen(self, record_index: int) -> bool:
        if self._run_start <= record_index <= self._last:
            return True
        return any(lo <= record_index <= hi for lo, hi in self._closed_runs)

    def push(
        self,
        loop: int,
        record_index: int,
        features: Sequence[float] | np.ndarray,
        timestamp: Any = None,
    ) -> PushResult:
        """Add one record; return the window it completes, if any, or why it was refused."""
        gap = 0
        new_loop = False
        if self._loop is None or loop > self._loop:
            new_loop = True
        elif loop < self._loop:
            return _REJECTED[Rejection.STALE_LOOP]
        elif record_index <= self._last:
            if self._seen(record_index):
                return _REJECTED[Rejection.DUPLICATE]
            return _REJECTED[Rejection.OUT_OF_ORDER]
        elif record_index != self._last + 1:
            gap = record_index - self._last - 1

        size = self.window_size
        pos = self._pos
        ring = self._ring
        if len(features) != self.n_features or (
            isinstance(features, np.ndarray) and features.ndim != 1
        ):
            return _REJECTED[Rejection.WRONG_FEATURE_COUNT]
        # Convert straight into the ring. Row `pos` holds the oldest buffered record, which
        # no window needs again: the next window is emitted only after an accepted record
        # has overwritten this row and its mirror, so a refused record leaves no trace.
        # (A finite value beyond float32's range becomes inf here, with numpy's one-time
        # RuntimeWarning; np.errstate would cost more than the whole push.)
        try:
            ring[pos] = features
        except (TypeError, ValueError):
            return _REJECTED[Rejection.NOT_NUMERIC]
        row = ring[pos]
        # row . 0 is 0 for finite rows and NaN if any value is NaN or infinite (inf * 0),
        # several times faster than isfinite().all() on a 25-vector.
        if math.isnan(row.dot(self._zeros)):
            return _REJECTED[Rejection.NON_FINITE]

        if new_loop:
            self._loop = loop
            self._closed_runs.clear()
            self._run_start = record_index
            self._count = 0
        elif gap:
            self._closed_runs.append((self._run_start, self._last))
            self._run_start = record_index
            self._count = 0
        self._last = record_index

        ring[pos + size] = row
        times = self._times
        times[pos] = timestamp
        times[pos + size] = timestamp
        pos = pos + 1 if pos + 1 < size else 0
        self._pos = pos
        self._count += 1
        context = self.context
        if context:
            history = self._history
            hpos = self._history_pos
            history[hpos] = history[hpos + context] = row[0]
            self._history_pos = hpos = hpos + 1 if hpos + 1 < context else 0
        forecast = self.forecast
        if forecast:
            fpos = self._forecast_pos
            commands = row[1:]
            # 0/1 commands: a mask of their bits; any other value: -1 (not carried)
            binary = np.count_nonzero(commands) == np.count_nonzero(commands == 1)
            mask = int(commands.dot(self._bits)) if binary else -1
            self._forecast_values[fpos] = self._forecast_values[fpos + forecast] = row[0]
            self._forecast_masks[fpos] = self._forecast_masks[fpos + forecast] = mask
            self._forecast_pos = fpos = fpos + 1 if fpos + 1 < forecast else 0

        first = record_index - size + 1
        if self._count >= size and (first - self.origin) % self.stride == 0:
            window = Window(
                loop=loop,
                first_record_index=first,
                last_record_index=record_index,
                data=ring[pos : pos + size].copy(),
                timestamps=tuple(times[pos : pos + size]),
                context=(
                    self._history[hpos : hpos + context].copy()
                    if context and self._count >= context
                    else None
                ),
                **(self._forecast_context() if forecast else {}),
            )
            return PushResult(windows=(window,), gap=gap, new_loop=new_loop)
        if gap or new_loop:
            return PushResult(gap=gap, new_loop=new_loop)
        return _ACCEPTED

    def _forecast_context(self) -> dict[str, np.ndarray]:
        """The forecast context of the newest record: the run's last ``forecast`` records
        (fewer while the run is shorter), oldest first."""
        forecast, end = self.forecast, self._forecast_pos + self.forecast
        start = end - min(self._count, forecast)
        return {
            "forecast_values": self._forecast_values[start:end].copy(),
            "forecast_masks": self._forecast_masks[start:end].copy(),
        }


#: Command columns a mask can carry (bits of an integer a float64 holds exactly).
MAX_MASK_COMMANDS = 52


def command_masks(commands: np.ndarray) -> np.ndarray:
    """Each record's command columns ``[n, c]`` as one integer (bit ``j``: column ``j``
    is 1), as :class:`WindowBuffer` hands them out; -1 for a record whose commands are not
    all 0 or 1 (a mask cannot carry it)."""
    values = np.asarray(commands)
    if values.ndim != 2 or values.shape[1] > MAX_MASK_COMMANDS:
        raise ValueError(
            f"command_masks: commands have shape {values.shape}, need (n, <= {MAX_MASK_COMMANDS})"
        )
    binary = ((values == 0) | (values == 1)).all(axis=1)
    masks = (values == 1).astype(np.int64) @ (np.int64(1) << np.arange(values.shape[1]))
    return np.where(binary, masks, -1)


def commands_from_masks(masks: np.ndarray, n_commands: int) -> np.ndarray:
    """The command columns ``[n, n_commands]`` (float32 0/1) of non-negative masks."""
    bits = np.asarray(masks, dtype=np.int64)
    if (bits < 0).any():
        raise ValueError("commands_from_masks: a mask is negative (commands not carried)")
    return ((bits[:, None] >> np.arange(n_commands)) & 1).astype(np.float32)


def expected_windows(n_records: int, window: int = 30, stride: int = 10) -> int:
    """Number of windows a split of ``n_records`` yields (what a replay should score)."""
    _check_geometry(window, stride)
    return 0 if n_records < window else (n_records - window) // stride + 1
