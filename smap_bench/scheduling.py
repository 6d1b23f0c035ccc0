"""Sliding-window scheduling: subsystem records in, inference tasks out, safe offsets back.

The scheduler stage (``pipeline/scheduler.py``) is a thin Kafka/Celery shell around
:class:`WindowScheduler`, which holds all the logic and no I/O:

- **Streams.** One :class:`~smap_bench.windows.WindowBuffer` per (satellite, subsystem),
  fed with validated :class:`~smap_bench.schema.SubsystemRecord` messages. Bad records
  (schema errors, duplicates, out-of-order indices, wrong shapes, a channel without a
  model) come back as a reason for the dead-letter topic and are not buffered.
- **Tasks.** Every window the buffer emits becomes an :class:`~smap_bench.schema.InferenceTask`
  whose ``job_id`` is :func:`~smap_bench.schema.deterministic_job_id` of (satellite,
  subsystem, loop, first record index) and whose model is the newest record's channel's.
  Its ``stages`` are the newest record's, stamped ``scheduler``: a window's latency is
  measured from the production of the record that completed it. Its ``run_window_start``
  is the first window of the stream's current run (since the loop began or a gap), so
  the events stage's confirmation waits for no window before it (None in a run resumed
  after a restart: its beginning was seen by the scheduler before).
- **Offsets.** Kafka offsets may only be committed up to the oldest record that a future
  window still needs, or a restart would lose the records held in memory. For each stream
  the scheduler keeps the (loop, record_index, offset) of the records from the start of
  the next window (or of its context, below) on; :meth:`WindowScheduler.commit_positions`
  gives, per partition, the offset of the oldest such record (or, when nothing is held,
  the offset after the last record consumed). A restarted scheduler re-reads from there,
  its buffers refill, and it forms the same windows with the same job ids; without a
  context the first of them is the first window not yet dispatched. The caller commits
  only after the tasks of everything consumed so far were dispatched
  (``run_kafka_stage`` does it in that order).
- **Context across restarts.** With a context (``context`` > ``window_size``; the
  forecaster's ``forecast`` context counts the same, the longer of the two rules), a future
  window also needs the ``context - window_size`` records before its first, so
  :meth:`WindowScheduler.commit_plan` gives two positions per partition: where to read
  from (the oldest record a future window *or its context* needs) and the *sent frontier*
  (the oldest record a future window needs: every window starting before it was
  dispatched), with a fingerprint of the record at the read position. The shell commits
  the first for its consumer group, the others for companion groups (``<group>.sent``,
  ``<group>.check``: Tansu drops commit metadata). A restarted scheduler given them
  (:meth:`WindowScheduler.resume`) re-reads the context, so its first windows carry the
  same context as they would have without the restart, and drops the windows it re-forms
  before the frontier (``counts.already_sent``), so none is sent twice after a clean stop
  (a crash re-sends what it dispatched since the last commit, as before). The frontier
  is trusted only when the partition's first message is the committed record: a log
  reset (topic re-created) or another consumer's progress costs it, so re-sent windows
  are the worst case, never lost ones. This holds for one stream per partition (the
  router's topics); streams sharing a partition share its oldest positions, and some of
  their windows are then sent again.
- **Redeliveries.** Within one run, a message at an offset already consumed (Kafka
  re-delivers from the committed offset after a rebalance) is skipped, and a job id
  dispatched recently is never dispatched again. An offset below the last committed one
  cannot be a re-delivery: the partition's log restarted (topic re-created, broker lost
  its data), so the partition's buffers are dropped and its records taken as new. Across
  runs a re-sent window is recognised downstream by its job id.
- **Micro-batches.** :func:`batch_tasks` packs the windows of one poll into Celery
  messages of up to ``max_windows`` windows, grouped by model, so the worker makes one
  backend call per model and the per-message overhead is paid once per batch.

Assumption: one stream's records come from one Kafka partition (the router publishes
each stream to its own topic, keyed by satellite), and one scheduler instance consumes
them (a second instance in the same group would split the topics between them, which is
fine, but this class does not drop buffers of revoked partitions: one handed back later
takes the records the other instance windowed meanwhile for a gap, and its windows then
say a run began there).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import TypeAdapter, ValidationError

from smap_bench.catalog import CatalogError, Subsystem, model_name
from smap_bench.schema import (
    InferenceTask,
    SubsystemRecord,
    decode,
    describe,
    deterministic_job_id,
)
from smap_bench.stage import stamp
from smap_bench.windows import Window, WindowBuffer

__all__ = [
    "DEFAULT_QUEUE",
    "STAGE",
    "TASK_NAME",
    "CommitPlan",
    "Outcome",
    "PartitionKey",
    "Position",
    "SchedulerCounts",
    "WindowScheduler",
    "batch_tasks",
    "check_group",
    "encode_tasks",
    "next_grid_start",
    "record_fingerprint",
    "sent_group",
]

#: Stage name: Kafka consumer group, logger, metric label.
STAGE = "scheduler"


def sent_group(group: str) -> str:
    """The companion consumer group that holds ``group``'s sent frontiers."""
    return f"{group}.sent"


def check_group(group: str) -> str:
    """The companion consumer group that holds the records ``group`` expects where it
    resumes (:func:`record_fingerprint`)."""
    return f"{group}.check"


#: The Celery task the scheduler sends and the worker runs (the seed's name).
TASK_NAME = "run_inference_task"
#: The RabbitMQ queue the tasks go to unless told otherwise.
DEFAULT_QUEUE = "inference"

StreamKey = tuple[str, Subsystem]
PartitionKey = tuple[str, int]

_TASK_LIST: TypeAdapter[list[InferenceTask]] = TypeAdapter(list[InferenceTask])


@dataclass(frozen=True, slots=True)
class Position:
    """Where a message was read: Kafka topic, partition and offset."""

    topic: str
    partition: int
    offset: int

    @property
    def partition_key(self) -> PartitionKey:
        return (self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one message did: the task it completed, the reason it was refused, or nothing.

    ``redelivered`` marks a message at an offset this scheduler had already consumed; it
    is ignored (neither counted as received nor dead-lettered).
    """

    task: InferenceTask | None = None
    rejected: str | None = None
    redelivered: bool = False
    duplicate_window: bool = False
    already_sent: bool = False  #: a window re-formed after a restart, sent before it


@dataclass
class SchedulerCounts:
    """Running totals, for logs and tests (the shell also exports them as metrics)."""

    received: int = 0
    windows: int = 0
    rejected: int = 0
    redelivered: int = 0
    duplicate_windows: int = 0
    already_sent: int = 0  #: windows re-formed after a restart, before the sent frontier
    frontiers_dropped: int = 0  #: frontiers not trusted: the partition resumed elsewhere


def next_grid_start(record_index: int, stride: int, origin: int = 0) -> int:
    """The first window start on the stride grid from ``origin`` at or after ``record_index``."""
    return origin + math.ceil((record_index - origin) / stride) * stride


def record_fingerprint(loop: int, record_index: int) -> int:
    """One non-negative integer for a record's (loop, record_index), committable as a
    Kafka offset (the companion group ``<group>.check``)."""
    return (loop << 32) | record_index


@dataclass(frozen=True, slots=True)
class CommitPlan:
    """Per partition: where to read from, the sent frontier, and the record expected at
    the read position (:meth:`WindowScheduler.commit_plan`)."""

    read: dict[PartitionKey, int]
    sent: dict[PartitionKey, int]
    check: dict[PartitionKey, int]


@dataclass(slots=True)
class _Held:
    loop: int
    record_index: int
    offset: int


@dataclass(slots=True)
class _Stream:
    buffer: WindowBuffer
    partition: PartitionKey
    #: Records from the next window's context on, oldest first (what a restart re-reads).
    held: deque[_Held] = field(default_factory=deque)
    run_start: int = 0
    #: whether the current run began where this scheduler saw it begin (False: it was
    #: resumed after a restart, and earlier windows of the run were formed before)
    run_known: bool = True
    last_start: int | None = None  # start of the last window emitted in the current run


class WindowScheduler:
    """Turns subsystem records into inference tasks and tracks the offsets safe to commit.

    ``known_models`` (optional) says whether a model exists; records whose channel's model
    does not are refused. ``recent_job_ids`` bounds the memory of dispatched job ids.
    """

    def __init__(
        self,
        window_size: int = 30,
        stride: int = 10,
        *,
        n_features: int = 25,
        origin: int = 0,
        known_models: Callable[[str], bool] | None = None,
        recent_job_ids: int = 200_000,
        context: int = 0,
        forecast: int = 0,
    ) -> None:
        # checks the geometry
        WindowBuffer(window_size, stride, n_features, origin, context, forecast)
        self.context = context
        self.forecast = forecast
        self.window_size = window_size
        self.stride = stride
        self.n_features = n_features
        self.origin = origin
        self.known_models = known_models
        self.counts = SchedulerCounts()
        self._streams: dict[StreamKey, _Stream] = {}
        self._next_offset: dict[PartitionKey, int] = {}
        #: Lowest offset Kafka may re-deliver (the first consumed, then the last committed).
        self._floor: dict[PartitionKey, int] = {}
        self._partition_streams: dict[PartitionKey, set[StreamKey]] = {}
        self._dirty: set[PartitionKey] = set()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._recent_limit = recent_job_ids
        self._model_names: dict[str, str] = {}
        #: Per partition, the sent frontier a restarted scheduler was given (see the module),
        #: and the (offset, record fingerprint) its first message must match for it to hold.
        self._sent_frontier: dict[PartitionKey, int] = {}
        self._resume_check: dict[PartitionKey, tuple[int, int]] = {}
        #: Partitions a restarted scheduler resumes (a committed read position was given).
        self._resumed: set[PartitionKey] = set()

    # --- input ------------------------------------------------------------------------
    def accept(self, value: bytes | str | None, position: Position) -> Outcome:
        """Handle one message of a subsystem topic; return its task, or why it was refused."""
        key = position.partition_key
        next_offset = self._next_offset.get(key)
        resumed = None
        if next_offset is None:
            self._floor[key] = position.offset
            resumed = self._resume_check.pop(key, None)
        elif position.offset < next_offset:
            if position.offset >= self._floor[key]:
                self.counts.redelivered += 1
                return Outcome(redelivered=True)
            self._forget_partition(key)  # below anything Kafka could re-deliver: log reset
            self._floor[key] = position.offset
        self._next_offset[key] = position.offset + 1
        self._dirty.add(key)
        self.counts.received += 1

        try:
            if value is None:
                raise ValueError("empty message (no value)")
            record = decode(SubsystemRecord, value)
        except (ValidationError, ValueError) as error:
            record = None
            reason = describe(error)
        if resumed is not None and (
            record is None
            or (position.offset, record_fingerprint(record.loop, record.record_index)) != resumed
        ):
            self._sent_frontier.pop(key, None)
            self.counts.frontiers_dropped += 1
        if record is None:
            return self._reject(reason)
        try:
            model = self._model_of(record)
        except ValueError as error:
            return self._reject(describe(error))

        stream = self._stream(record, key)
        first_of_stream = stream.buffer.loop is None
        pushed = stream.buffer.push(
            record.loop, record.record_index, record.features, record.timestamp
        )
        if pushed.rejected is not None:
            return self._reject(f"{pushed.rejected.value}: {_where(record)}")
        if pushed.new_loop or pushed.gap:
            stream.run_start = record.record_index
            stream.run_known = not (first_of_stream and key in self._resumed)
            stream.last_start = None
            stream.held.clear()
        stream.held.append(_Held(record.loop, record.record_index, position.offset))

        task = None
        duplicate = already_sent = False
        if pushed.windows:
            window = pushed.windows[0]
            stream.last_start = window.first_record_index
            task = self._task(record, stream, window, model)
            if self._sent_before_restart(key, stream, window.first_record_index):
                self.counts.already_sent += 1
                task, already_sent = None, True
            elif task.job_id in self._recent:
                self.counts.duplicate_windows += 1
                task, duplicate = None, True
            else:
                self._remember(task.job_id)
                self.counts.windows += 1
        self._trim(stream)
        return Outcome(task=task, duplicate_window=duplicate, already_sent=already_sent)

    # --- offsets ----------------------------------------------------------------------
    def commit_plan(self) -> CommitPlan:
        """Offsets to commit for each partition that changed since the last call: where a
        restart reads from, the sent frontier, and the record expected at the read
        position (see the module).

        ``read`` is the offset of the oldest record a future window of the partition's
        streams or its context still needs, ``sent`` that of the oldest record a future
        window needs (both the offset after the last record consumed when nothing is
        held; after a restart, at least the frontier it resumed from while that one is
        still ahead); ``check`` is :func:`record_fingerprint` of the record at ``read``,
        where ``read`` < ``sent`` (only then can a restart drop a window).
        """
        plan = CommitPlan({}, {}, {})
        for key in self._dirty:
            offset = frontier = self._next_offset[key]
            oldest: _Held | None = None
            for stream_key in self._partition_streams.get(key, ()):
                stream = self._streams[stream_key]
                held = stream.held
                if held and held[0].offset < offset:
                    offset, oldest = held[0].offset, held[0]
                first = self._first_window_held(stream)
                if first is not None and first.offset < frontier:
                    frontier = first.offset
            # after a restart, until the re-formed windows pass the frontier resumed from,
            # that frontier still stands: every window before it was sent before the
            # restart (committing the re-read position instead would have a second
            # restart send them again)
            resumed = self._sent_frontier.get(key)
            if resumed is not None and resumed > frontier:
                frontier = resumed
            plan.read[key] = offset
            plan.sent[key] = frontier
            if oldest is not None and offset < frontier:
                plan.check[key] = record_fingerprint(oldest.loop, oldest.record_index)
            self._floor[key] = offset
        self._dirty.clear()
        return plan

    def commit_positions(self) -> dict[PartitionKey, int]:
        """Where a restart reads from, for each partition that changed since the last call
        (:meth:`commit_plan` without the sent frontier)."""
        return self.commit_plan().read

    def resume(self, positions: dict[PartitionKey, tuple[int, int, int | None]]) -> None:
        """A restarted scheduler's committed (read, sent, check) per partition, as
        :meth:`commit_plan` gave them: windows that start at an offset before the sent
        frontier were dispatched before the restart and are not sent again. A partition
        whose first message is not the record committed as ``check`` at the read
        position (its log was reset, or another consumer moved on) keeps no frontier
        (``counts.frontiers_dropped``); so does one whose check is missing. Every
        partition given resumes mid-run: the windows of the runs its streams resume in
        do not say where those runs began (``run_window_start`` None). A read position
        of -1 says only that: resumed, nothing known to drop (its lookup failed)."""
        for key, (read, sent, check) in positions.items():
            if key not in self._next_offset:
                self._resumed.add(key)
            if read < sent and check is not None and key not in self._next_offset:
                self._resume_check[key] = (read, check)
                self._sent_frontier[key] = sent

    def knows_partition(self, key: PartitionKey) -> bool:
        """Whether a message of this partition was seen or its frontier given."""
        return key in self._next_offset or key in self._sent_frontier

    @property
    def streams(self) -> int:
        """How many (satellite, subsystem) streams are buffered."""
        return len(self._streams)

    def held_records(self, satellite_id: str, subsystem: Subsystem | str) -> list[int]:
        """Record indices a restart would re-read for one stream (for tests and logs)."""
        key = (
            satellite_id,
            Subsystem.parse(subsystem) if isinstance(subsystem, str) else subsystem,
        )
        stream = self._streams.get(key)
        return [] if stream is None else [h.record_index for h in stream.held]

    # --- internals --------------------------------------------------------------------
    def _reject(self, reason: str) -> Outcome:
        self.counts.rejected += 1
        return Outcome(rejected=reason)

    def _forget_partition(self, key: PartitionKey) -> None:
        """Drop every buffer fed by a partition whose log restarted (topic re-created)."""
        for stream_key in self._partition_streams.pop(key, set()):
            del self._streams[stream_key]
        # the new log's first records may continue runs whose earlier windows were formed
        self._resumed.add(key)
        self._next_offset.pop(key, None)
        self._sent_frontier.pop(key, None)
        self._resume_check.pop(key, None)

    def _held_at(self, stream: _Stream, record_index: int) -> _Held | None:
        """The held record of ``record_index`` (held records are consecutive in a run)."""
        held = stream.held
        if not held:
            return None
        at = record_index - held[0].record_index
        if 0 <= at < len(held) and held[at].record_index == record_index:
            return held[at]
        return None

    def _window_first_needed(self, stream: _Stream) -> int:
        """The first record a future window of the stream can contain."""
        if stream.last_start is None:
            return next_grid_start(stream.run_start, self.stride, self.origin)
        return stream.last_start + self.stride

    def _first_window_held(self, stream: _Stream) -> _Held | None:
        """The oldest held record a future window (not only its context) needs."""
        held = stream.held
        first_needed = self._window_first_needed(stream)
        if not held or held[-1].record_index < first_needed:
            return None
        found = self._held_at(stream, max(first_needed, held[0].record_index))
        return found if found is not None else held[0]

    def _sent_before_restart(self, key: PartitionKey, stream: _Stream, first: int) -> bool:
        frontier = self._sent_frontier.get(key)
        if frontier is None:
            return False
        held = self._held_at(stream, first)
        if held is None:
            return False  # cannot place it: send it (a duplicate at worst, never a loss)
        if held.offset >= frontier:
            del self._sent_frontier[key]  # every later window starts past it too
            return False
        return True

    def _model_of(self, record: SubsystemRecord) -> str:
        channel = record.channel
        if not channel:
            raise ValueError(f"no channel on the record of {_where(record)}")
        name = self._model_names.get(channel)
        if name is None:
            try:
                name = model_name(channel)
            except CatalogError as error:
                raise ValueError(f"{error} ({_where(record)})") from None
            if len(self._model_names) < 10_000:
                self._model_names[channel] = name
        if self.known_models is not None and not self.known_models(name):
            raise ValueError(
                f"unknown model {name} for channel {record.channel} ({_where(record)})"
            )
        return name

    def _stream(self, record: SubsystemRecord, key: PartitionKey) -> _Stream:
        stream_key = (record.satellite_id, record.subsystem)
        stream = self._streams.get(stream_key)
        if stream is None:
            buffer = WindowBuffer(
                self.window_size,
                self.stride,
                self.n_features,
                self.origin,
                self.context,
                self.forecast,
            )
            stream = _Stream(buffer=buffer, partition=key)
            self._streams[stream_key] = stream
            self._partition_streams.setdefault(key, set()).add(stream_key)
        elif stream.partition != key:  # the stream moved (topic re-created): follow it
            self._partition_streams[stream.partition].discard(stream_key)
            self._dirty.add(stream.partition)
            stream.partition = key
            self._partition_streams.setdefault(key, set()).add(stream_key)
        return stream

    def _trim(self, stream: _Stream) -> None:
        """Drop held records that no future window of the stream, or its context, can
        contain."""
        behind = max(self.context, self.forecast) - self.window_size
        first_needed = self._window_first_needed(stream) - max(0, behind)
        held = stream.held
        while held and held[0].record_index < first_needed:
            held.popleft()

    def _task(
        self, record: SubsystemRecord, stream: _Stream, window: Window, model: str
    ) -> InferenceTask:
        # Built from validated records and a finite float32 window: no second validation
        # (the worker validates what it receives).
        return InferenceTask.model_construct(
            job_id=deterministic_job_id(
                record.satellite_id, record.subsystem, window.loop, window.first_record_index
            ),
            satellite_id=record.satellite_id,
            subsystem=record.subsystem,
            model_name=model,
            input_data=window.data.tolist(),
            context=None if window.context is None else window.context.tolist(),
            forecast_values=(
                None if window.forecast_values is None else window.forecast_values.tolist()
            ),
            forecast_masks=(
                None if window.forecast_masks is None else window.forecast_masks.tolist()
            ),
            window_start=window.timestamps[0],
            window_end=window.timestamps[-1],
            loop=window.loop,
            record_index_start=window.first_record_index,
            run_window_start=(
                next_grid_start(stream.run_start, self.stride, self.origin)
                if stream.run_known
                else None
            ),
            channel=record.channel,
            stages=stamp(record.stages, STAGE),
        )

    def _remember(self, job_id: str) -> None:
        self._recent[job_id] = None
        if len(self._recent) > self._recent_limit:
            self._recent.popitem(last=False)


def _where(record: SubsystemRecord) -> str:
    return (
        f"{record.satellite_id}/{record.subsystem.value} "
        f"loop {record.loop} record_index {record.record_index}"
    )


def encode_tasks(tasks: Sequence[InferenceTask]) -> str:
    """The Celery payload of a micro-batch: a JSON array of inference tasks, as one string.

    Passing one string rather than a list of dicts lets pydantic's serializer and parser
    do the work instead of the Python JSON module on hundreds of floats per window.
    """
    return _TASK_LIST.dump_json(list(tasks)).decode()


def batch_tasks(
    tasks: Iterable[InferenceTask], max_windows: int, min_messages: int = 1
) -> list[list[InferenceTask]]:
    """Pack tasks into Celery messages of at most ``max_windows`` windows each, and into
    at least ``min_messages`` messages (while there are windows to spread), of even sizes.

    Windows of one model go together (the worker makes one backend call per model and
    message); within a model the arrival order is kept. ``min_messages`` is the number
    of workers: every stream completes a window on the same second, so a burst packed
    into one message would be scored by one worker while the others idle.
    """
    if max_windows < 1:
        raise ValueError(f"max_windows must be at least 1, got {max_windows}")
    if min_messages < 1:
        raise ValueError(f"min_messages must be at least 1, got {min_messages}")
    by_model: dict[str, list[InferenceTask]] = {}
    for task in tasks:
        by_model.setdefault(task.model_name, []).append(task)
    ordered: Sequence[InferenceTask] = [t for group in by_model.values() for t in group]
    if not ordered:
        return []
    messages = max(math.ceil(len(ordered) / max_windows), min(min_messages, len(ordered)))
    size = math.ceil(len(ordered) / messages)
    return [list(ordered[i : i + size]) for i in range(0, len(ordered), size)]
