"""The satellite simulator's logic: SMAP splits replayed as the seed's telemetry messages.

A fleet is N satellites x 7 subsystems; each (satellite, subsystem) replays one SMAP
channel (:func:`smap_bench.catalog.fleet_assignment`, or an explicit mapping such as the
labeled replay's, where a slot may carry a channel of another prefix, e.g. ``B-1``).
Record ``i`` of a satellite carries row ``i`` of each of its channels; a message's
``subsystems.<name>.channel`` says which channel a reading comes from.

Loop length. Channels differ in length, so a satellite's loop has one of two lengths:

- ``align="shortest"`` (default): the loop is as long as the satellite's shortest
  channel, so every record is the split's own row at ``record_index``; the tails of the
  longer channels are not replayed.
- ``align="longest"``: the loop is as long as the longest channel; a shorter channel
  wraps around to its first row (row ``record_index % len(channel)``). The labeled replay
  uses this and scores only the first ``len(channel)`` records of each stream.

Clocks. ``timestamp`` is the simulated clock: ``start + ((loop - first_loop) *
loop_length + record_index)`` seconds, one second per record (the dataset's nominal
rate) whatever the replay speed. ``stages.simulator`` is the wall clock at production,
the origin of every latency the pipeline measures.

Pacing. All satellites advance together: one *tick* produces the next record of every
satellite. Ticks come ``rate_hz`` times a second (or every ``delay_ms``, the seed's
field, when given), multiplied by ``speed``; ``speed=None`` ("max") ticks as fast as the
producer takes the messages. A tick that falls more than a second behind re-anchors the
schedule instead of bursting to catch up.

Phases. A real fleet is not synchronised: its satellites' records come at any moment of
the second, and their windows complete on different seconds. ``phases`` splits each
tick into that many evenly spaced slots, satellite ``k`` sending in slot ``k % phases``
(each satellite still sends one record per tick); ``stagger`` starts satellite ``k`` at
record ``k % stagger`` instead of 0, so that with ``stagger`` = the window stride the
fleet's windows complete evenly over the stride's seconds instead of all on one. Both
default to the synchronised replay (1 and 0), which the labeled replay needs.

Loops. Loop numbers increase forever (``first_loop``, ``first_loop + 1``, ...), so that
downstream stages, which refuse a loop older than the last, never see one go back; a
restarted simulator continues after the last loop it published (see
:func:`continue_loop`). ``loops`` counts complete passes over the split (0: forever).

Control. Commands (:data:`ControlCommand`: pause, resume, seek, speed, stop, status) come
as small JSON objects on the control topic; the simulator publishes its
:class:`SimulatorState` to the status topic every second (the latest one wins).
:class:`SimulatorControl` is the client the operations API uses. A ``seek`` starts a
new loop at the requested record, so that a record index never goes back within a loop.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import to_json

from smap_bench import catalog
from smap_bench.catalog import SUBSYSTEMS, Subsystem
from smap_bench.config import Settings
from smap_bench.data import DataSource, list_channels, load_channel, resolve_data_dir
from smap_bench.data.synthetic import SYNTHETIC_CHANNELS, generate_channel
from smap_bench.schema import NUM_FEATURES, describe

log = logging.getLogger(__name__)

Split = Literal["test", "train"]
Align = Literal["shortest", "longest"]
SPLITS: tuple[str, ...] = ("test", "train")
#: Simulated seconds between two records of a satellite (the dataset's nominal rate).
RECORD_PERIOD_S = 1.0
#: A tick later than this behind its schedule re-anchors the schedule.
MAX_LAG_S = 1.0
#: Seconds between two published states.
STATUS_INTERVAL_S = 1.0
#: Satellites listed one by one in a published state (the rest only in the summary).
MAX_STATUS_POSITIONS = 100
#: Identifier of a simulator that is given none (commands without target reach all).
DEFAULT_SIMULATOR_ID = "simulator"


class SimulationError(ValueError):
    """A fleet, mapping or replay setting the simulator cannot use."""


# --------------------------------------------------------------------------------------
# Fleet: which channel each (satellite, subsystem) replays, and its rows
# --------------------------------------------------------------------------------------

ChannelPlan = dict[str, dict[Subsystem, str]]
"""satellite_id -> {subsystem: channel}, all seven subsystems per satellite."""


def plan_channels(
    n_satellites: int,
    channels_available: Sequence[str],
    mapping: Mapping[str, Mapping[str, str]] | None = None,
) -> ChannelPlan:
    """The channel of every (satellite, subsystem): the catalog's assignment, or ``mapping``.

    ``mapping`` (``{"sat1": {"ACS": "A-1", ...}}``) replaces the catalog's fleet: exactly
    its satellites, each naming a channel for all seven subsystems (any prefix).
    """
    if mapping is not None:
        return _plan_from_mapping(mapping)
    if n_satellites < 1:
        raise SimulationError(f"number of satellites must be >= 1, got {n_satellites}")
    assignment = catalog.fleet_assignment(n_satellites, channels_available)
    missing = [s.value for s in SUBSYSTEMS if not catalog.channels_of(s, channels_available)]
    if missing:
        raise SimulationError(
            f"no channel for subsystem(s) {', '.join(missing)} among "
            f"{len(channels_available)} available channels"
        )
    plan: ChannelPlan = {}
    for (satellite, subsystem), channel in assignment.items():
        plan.setdefault(satellite, {})[subsystem] = channel
    return {sat: {s: slots[s] for s in SUBSYSTEMS} for sat, slots in plan.items()}


def _plan_from_mapping(mapping: Mapping[str, Mapping[str, str]]) -> ChannelPlan:
    if not mapping:
        raise SimulationError("channel mapping is empty: name at least one satellite")
    satellite_id = TypeAdapter(Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")])
    plan: ChannelPlan = {}
    for satellite, slots in mapping.items():
        try:
            satellite_id.validate_python(satellite)
        except ValidationError:
            raise SimulationError(
                f"bad satellite id {satellite!r} in the channel mapping: "
                "1-64 letters, digits, '.', '_' or '-'"
            ) from None
        parsed: dict[Subsystem, str] = {}
        for name, channel in slots.items():
            try:
                subsystem = Subsystem.parse(name)
                catalog.parse_channel(channel)
            except catalog.CatalogError as error:
                raise SimulationError(f"channel mapping of {satellite}: {error}") from None
            parsed[subsystem] = channel
        missing = [s.value for s in SUBSYSTEMS if s not in parsed]
        if missing:
            raise SimulationError(
                f"channel mapping of {satellite} names no channel for {', '.join(missing)}: "
                "every satellite carries all seven subsystems"
            )
        plan[satellite] = {s: parsed[s] for s in SUBSYSTEMS}
    return plan


@dataclass(frozen=True)
class SatelliteStreams:
    """One satellite's replay: its channels and their rows, in subsystem order."""

    satellite_id: str
    channels: tuple[str, ...]  #: one per subsystem, in SUBSYSTEMS order
    arrays: tuple[np.ndarray, ...] = field(repr=False)  #: (rows, 25) float32 per subsystem
    loop_length: int

    def rows_at(self, record_index: int) -> list[int]:
        """Row of each channel that record ``record_index`` carries (wrapping if shorter)."""
        return [record_index % len(array) for array in self.arrays]


def build_fleet(
    plan: ChannelPlan,
    arrays: Mapping[str, np.ndarray],
    *,
    align: Align = "shortest",
    limit: int = 0,
) -> list[SatelliteStreams]:
    """Each satellite's streams from the plan and every channel's split (see module).

    ``limit`` > 0 caps the loop length (a short replay for tests and probes).
    """
    if align not in ("shortest", "longest"):
        raise SimulationError(f"align must be 'shortest' or 'longest', got {align!r}")
    if limit < 0:
        raise SimulationError(f"limit must be >= 0, got {limit}")
    fleet = []
    for satellite, slots in plan.items():
        channels = tuple(slots[s] for s in SUBSYSTEMS)
        missing = [c for c in channels if c not in arrays]
        if missing:
            raise SimulationError(f"{satellite}: no rows loaded for channel(s) {missing}")
        chosen = tuple(arrays[c] for c in channels)
        for channel, array in zip(channels, chosen, strict=True):
            if array.ndim != 2 or array.shape[1] != NUM_FEATURES or len(array) == 0:
                raise SimulationError(
                    f"channel {channel}: shape {array.shape}, expected (rows>0, {NUM_FEATURES})"
                )
        lengths = [len(a) for a in chosen]
        length = min(lengths) if align == "shortest" else max(lengths)
        if limit:
            length = min(length, limit)
        fleet.append(SatelliteStreams(satellite, channels, chosen, length))
    return fleet


def available_channels(source: DataSource) -> list[str]:
    """Channels with both splits in ``source`` (the synthetic source has all 54 names)."""
    if source.path is None:
        return list(SYNTHETIC_CHANNELS)
    return list_channels(source.path)


def load_arrays(channels: Iterable[str], split: Split, source: DataSource) -> dict[str, np.ndarray]:
    """The ``split`` rows of each named channel (each loaded once), from ``source``."""
    if split not in SPLITS:
        raise SimulationError(f"split must be one of {SPLITS}, got {split!r}")
    arrays: dict[str, np.ndarray] = {}
    for channel in catalog.sort_channels(channels):
        data = (
            generate_channel(channel)
            if source.path is None
            else load_channel(channel, Path(source.path))
        )
        arrays[channel] = data.test if split == "test" else data.train
    return arrays


def load_fleet(
    n_satellites: int,
    *,
    split: Split = "test",
    data_dir: Path | None = None,
    mapping: Mapping[str, Mapping[str, str]] | None = None,
    align: Align = "shortest",
    limit: int = 0,
) -> tuple[list[SatelliteStreams], DataSource]:
    """The fleet's streams, read from the dataset (``data_dir`` or the usual places)."""
    source = resolve_data_dir(data_dir)
    plan = plan_channels(n_satellites, available_channels(source), mapping)
    needed = {channel for slots in plan.values() for channel in slots.values()}
    arrays = load_arrays(needed, split, source)
    return build_fleet(plan, arrays, align=align, limit=limit), source


# --------------------------------------------------------------------------------------
# Replay: positions, loops and the messages they produce
# --------------------------------------------------------------------------------------


@dataclass
class Cursor:
    """Where one satellite is: the next record to send, and complete passes so far."""

    loop: int
    record_index: int = 0
    passes: int = 0


class Replay:
    """The fleet's positions, advanced one tick at a time; builds the messages."""

    def __init__(
        self,
        fleet: Sequence[SatelliteStreams],
        *,
        loops: int = 0,
        first_loop: int = 0,
        start_time: datetime | None = None,
        phases: int = 1,
        stagger: int = 0,
    ) -> None:
        if not fleet:
            raise SimulationError("the fleet is empty")
        if phases < 1:
            raise SimulationError(f"phases must be >= 1, got {phases}")
        if stagger < 0:
            raise SimulationError(f"stagger must be >= 0 (0: none), got {stagger}")
        if loops < 0:
            raise SimulationError(f"loops must be >= 0 (0: forever), got {loops}")
        if first_loop < 0:
            raise SimulationError(f"first_loop must be >= 0, got {first_loop}")
        ids = [s.satellite_id for s in fleet]
        if len(set(ids)) != len(ids):
            raise SimulationError("satellite ids in the fleet are not unique")
        start = start_time or datetime.now(UTC).replace(microsecond=0)
        if start.tzinfo is None:
            raise SimulationError("start_time must be timezone-aware")
        self.fleet = list(fleet)
        self.loops = loops
        self.first_loop = first_loop
        self.start_time = start
        self.cursors = [
            Cursor(first_loop, (k % stagger) % sat.loop_length if stagger else 0)
            for k, sat in enumerate(self.fleet)
        ]
        self.phases = min(phases, len(self.fleet))
        self._phase = 0  # the slot the next tick sends
        self._keys = [s.satellite_id.encode() for s in self.fleet]
        # the constant part of every reading, per satellite and subsystem
        self._slots = [
            [
                (subsystem.value, subsystem.code, channel, array)
                for subsystem, channel, array in zip(
                    SUBSYSTEMS, sat.channels, sat.arrays, strict=True
                )
            ]
            for sat in self.fleet
        ]

    # -- state ------------------------------------------------------------------------
    def done(self, index: int) -> bool:
        return bool(self.loops) and self.cursors[index].passes >= self.loops

    @property
    def finished(self) -> bool:
        """Every satellite has completed ``loops`` passes (never, with loops=0)."""
        return all(self.done(i) for i in range(len(self.fleet)))

    def timestamp(self, index: int, loop: int, record_index: int) -> datetime:
        """The simulated time of a record of satellite number ``index`` (see module)."""
        offset = (loop - self.first_loop) * self.fleet[index].loop_length + record_index
        return self.start_time + timedelta(seconds=offset * RECORD_PERIOD_S)

    # -- messages ---------------------------------------------------------------------
    def message(self, index: int, loop: int, record_index: int, wall: float) -> dict[str, Any]:
        """The seed's telemetry message of one record, as plain JSON-ready values."""
        subsystems = {}
        for name, code, channel, array in self._slots[index]:
            subsystems[name] = {
                "code": code,
                "features": array[record_index % len(array)].tolist(),
                "num_features": NUM_FEATURES,
                "channel": channel,
            }
        return {
            "satellite_id": self.fleet[index].satellite_id,
            "timestamp": self.timestamp(index, loop, record_index).isoformat(),
            "loop": loop,
            "record_index": record_index,
            "subsystems": subsystems,
            "stages": {"simulator": wall},
        }

    def tick(self, wall: float) -> list[tuple[bytes, bytes]]:
        """The next record of every unfinished satellite of this slot (all of them with one
        phase) as (key, JSON), and advance."""
        out = []
        phase, self._phase = self._phase, (self._phase + 1) % self.phases
        for index in range(phase, len(self.cursors), self.phases):
            cursor = self.cursors[index]
            if self.done(index):
                continue
            value = to_json(self.message(index, cursor.loop, cursor.record_index, wall))
            out.append((self._keys[index], value))
            cursor.record_index += 1
            if cursor.record_index >= self.fleet[index].loop_length:
                cursor.loop += 1
                cursor.record_index = 0
                cursor.passes += 1
        return out

    def seek(self, record_index: int, satellite_id: str | None = None) -> int:
        """Continue at ``record_index`` in a new loop (all satellites, or one); how many moved.

        An index beyond a satellite's loop is clamped to its last record.
        """
        if record_index < 0:
            raise SimulationError(f"seek record_index must be >= 0, got {record_index}")
        if satellite_id is not None and not any(s.satellite_id == satellite_id for s in self.fleet):
            raise SimulationError(f"seek: unknown satellite {satellite_id!r}")
        moved = 0
        for index, cursor in enumerate(self.cursors):
            sat = self.fleet[index]
            if satellite_id is not None and sat.satellite_id != satellite_id:
                continue
            if self.done(index):
                continue
            cursor.loop += 1
            cursor.record_index = min(record_index, sat.loop_length - 1)
            moved += 1
        return moved

    def positions(self) -> dict[str, SatellitePosition]:
        return {
            sat.satellite_id: SatellitePosition(
                loop=c.loop,
                record_index=c.record_index,
                loop_length=sat.loop_length,
                passes=c.passes,
            )
            for sat, c in zip(self.fleet, self.cursors, strict=True)
        }


# --------------------------------------------------------------------------------------
# Control commands and published state
# --------------------------------------------------------------------------------------

PositiveSpeed = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The simulator the command is for; None: every simulator listening.
    target: str | None = None
    #: Wall-clock seconds when the command was issued (commands older than the simulator
    #: are ignored, so a restarted simulator does not replay old commands).
    issued_at: float = Field(default_factory=time.time, allow_inf_nan=False)


class PauseCommand(_Command):
    command: Literal["pause"] = "pause"


class ResumeCommand(_Command):
    command: Literal["resume"] = "resume"


class SeekCommand(_Command):
    """Continue at ``record_index`` in a new loop (one satellite, or all)."""

    command: Literal["seek"] = "seek"
    record_index: int = Field(ge=0)
    satellite_id: str | None = None


class SpeedCommand(_Command):
    """Set the speed factor; ``"max"``: as fast as the pipeline takes it."""

    command: Literal["speed"] = "speed"
    factor: PositiveSpeed | Literal["max"]


class StopCommand(_Command):
    command: Literal["stop"] = "stop"


class StatusCommand(_Command):
    """Publish the state now (instead of at the next second)."""

    command: Literal["status"] = "status"


AnyCommand = PauseCommand | ResumeCommand | SeekCommand | SpeedCommand | StopCommand | StatusCommand
ControlCommand = Annotated[AnyCommand, Field(discriminator="command")]
_COMMANDS: TypeAdapter[ControlCommand] = TypeAdapter(ControlCommand)


def parse_command(raw: bytes | str) -> ControlCommand:
    """A control command from its JSON; raises ValidationError (a dead-letter reason)."""
    return _COMMANDS.validate_json(raw)


class SatellitePosition(BaseModel):
    loop: int
    record_index: int  #: the next record to be sent
    loop_length: int
    passes: int


class SimulatorState(BaseModel):
    """What a simulator publishes every second on the status topic (latest wins)."""

    model_config = ConfigDict(extra="allow")

    simulator_id: str
    published_at: float  #: wall clock
    started_at: float
    state: Literal["running", "paused", "finished", "stopped"]
    speed: float | Literal["max"]
    period_s: float  #: seconds between ticks at speed 1
    split: str
    satellites: int
    loops: int
    produced: int
    rejected: int
    loop_min: int
    loop_max: int
    record_index_min: int
    record_index_max: int
    positions: dict[str, SatellitePosition]  #: the first MAX_STATUS_POSITIONS satellites

    @property
    def paused(self) -> bool:
        return self.state == "paused"


def tick_period(rate_hz: float = 1.0, delay_ms: float | None = None) -> float:
    """Seconds between ticks at speed 1: ``delay_ms`` when given, else ``1 / rate_hz``."""
    if delay_ms is not None:
        if not (math.isfinite(delay_ms) and delay_ms > 0):
            raise SimulationError(f"delay_ms must be a positive number, got {delay_ms}")
        return delay_ms / 1000.0
    if not (math.isfinite(rate_hz) and rate_hz > 0):
        raise SimulationError(f"rate_hz must be a positive number, got {rate_hz}")
    return 1.0 / rate_hz


def parse_speed(text: str | float) -> float | None:
    """A speed factor from the command line: a positive number, or ``max`` (None)."""
    if isinstance(text, str) and text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise SimulationError(f"speed must be a positive number or 'max', got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise SimulationError(f"speed must be a positive number or 'max', got {text!r}")
    return value


class SimulatorCore:
    """The replay with its pacing and its control state; pure (times are passed in)."""

    def __init__(
        self,
        replay: Replay,
        *,
        period_s: float = 1.0,
        speed: float | None = 1.0,
        simulator_id: str = DEFAULT_SIMULATOR_ID,
        split: str = "test",
        started_at: float = 0.0,
        now: float = 0.0,
    ) -> None:
        if not (math.isfinite(period_s) and period_s > 0):
            raise SimulationError(f"period_s must be positive, got {period_s}")
        self.replay = replay
        self.period_s = period_s
        self.speed = speed
        self.simulator_id = simulator_id
        self.split = split
        self.started_at = started_at
        self.paused = False
        self.stopped = False
        self.produced = 0
        self.rejected = 0
        self.lag_resets = 0
        self._next_due = now

    # -- pacing -----------------------------------------------------------------------
    @property
    def interval_s(self) -> float:
        """Seconds between ticks now (0 at speed max); a tick is one of the replay's
        ``phases`` slots, so each satellite still sends once per ``period_s``."""
        return 0.0 if self.speed is None else self.period_s / self.speed / self.replay.phases

    def due_in(self, now: float) -> float | None:
        """Seconds until the next tick (0: now); None while paused, stopped or finished."""
        if self.paused or self.stopped or self.replay.finished:
            return None
        if self.speed is None:
            return 0.0
        return max(0.0, self._next_due - now)

    def step(self, now: float, wall: float) -> list[tuple[bytes, bytes]]:
        """Produce the tick that is due (nothing if none is) and schedule the next one."""
        if self.due_in(now) != 0.0:
            return []
        out = self.replay.tick(wall)
        self.produced += len(out)
        if self.speed is not None:
            self._next_due += self.interval_s
            if now - self._next_due > MAX_LAG_S:
                self._next_due = now
                self.lag_resets += 1
        return out

    # -- control ----------------------------------------------------------------------
    def accepts(self, command: ControlCommand, started_at: float | None = None) -> bool:
        """Whether ``command`` is for this simulator and not older than its start."""
        if command.target is not None and command.target != self.simulator_id:
            return False
        return command.issued_at >= (self.started_at if started_at is None else started_at)

    def apply(self, command: ControlCommand, now: float) -> str:
        """Carry out a command; returns what was done, for the log."""
        if isinstance(command, PauseCommand):
            self.paused = True
            return "paused"
        if isinstance(command, ResumeCommand):
            if self.paused:
                self.paused = False
                self._next_due = now
            return "resumed"
        if isinstance(command, SeekCommand):
            moved = self.replay.seek(command.record_index, command.satellite_id)
            self._next_due = now
            return f"seek to record {command.record_index} in a new loop ({moved} satellites)"
        if isinstance(command, SpeedCommand):
            self.speed = None if command.factor == "max" else float(command.factor)
            self._next_due = now
            return f"speed {command.factor}"
        if isinstance(command, StopCommand):
            self.stopped = True
            return "stopping"
        return "status requested"

    def state(self, wall: float) -> SimulatorState:
        positions = self.replay.positions()
        cursors = self.replay.cursors
        if self.stopped:
            state: Literal["running", "paused", "finished", "stopped"] = "stopped"
        elif self.replay.finished:
            state = "finished"
        elif self.paused:
            state = "paused"
        else:
            state = "running"
        return SimulatorState(
            simulator_id=self.simulator_id,
            published_at=wall,
            started_at=self.started_at,
            state=state,
            speed="max" if self.speed is None else self.speed,
            period_s=self.period_s,
            split=self.split,
            satellites=len(cursors),
            loops=self.replay.loops,
            produced=self.produced,
            rejected=self.rejected,
            loop_min=min(c.loop for c in cursors),
            loop_max=max(c.loop for c in cursors),
            record_index_min=min(c.record_index for c in cursors),
            record_index_max=max(c.record_index for c in cursors),
            positions=dict(list(positions.items())[:MAX_STATUS_POSITIONS]),
        )


def continue_loop(state: SimulatorState | None) -> int:
    """First loop of a restarted simulator: the first loop number it has not used (0 if none).

    The state holds each satellite's next record; a loop in which no satellite has sent
    a record yet (every next record_index is 0) is still unused.
    """
    if state is None:
        return 0
    return state.loop_max if state.record_index_max == 0 else state.loop_max + 1


# --------------------------------------------------------------------------------------
# The run loop, over injected I/O (Kafka in the service, lists in tests)
# --------------------------------------------------------------------------------------


@dataclass
class SimulatorIO:
    """What the run loop talks to; the service binds these to Kafka and the clocks."""

    send: Callable[[bytes, bytes], None]  #: produce one (key, value) telemetry message
    poll_commands: Callable[[], list[bytes]]  #: raw control messages received since last call
    publish_state: Callable[[SimulatorState], None]
    reject: Callable[[bytes, str], None]  #: a refused control message and its reason
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], object] = time.sleep
    after_tick: Callable[[], None] = lambda: None  #: e.g. serve producer callbacks


def run_simulator(
    core: SimulatorCore,
    io: SimulatorIO,
    should_stop: Callable[[], bool] = lambda: False,
    *,
    status_interval_s: float = STATUS_INTERVAL_S,
    max_sleep_s: float = 0.1,
) -> str:
    """Replay until finished, stopped by command, or ``should_stop``; returns which."""
    next_status = io.monotonic()
    while True:
        for raw in io.poll_commands():
            handle_command(core, raw, io)
        if should_stop():
            core.stopped = True
        now = io.monotonic()
        if core.stopped or core.replay.finished:
            io.publish_state(core.state(io.wall()))
            return "stopped" if core.stopped else "finished"
        batch = core.step(now, io.wall())
        for key, value in batch:
            io.send(key, value)
        if batch:
            io.after_tick()
        if now >= next_status:
            io.publish_state(core.state(io.wall()))
            next_status = now + status_interval_s
        if core.stopped or core.replay.finished:
            continue
        now = io.monotonic()
        wait = core.due_in(now)
        pause = max_sleep_s if wait is None else min(wait, max_sleep_s)
        pause = min(pause, max(next_status - now, 0.0))
        if pause > 0:
            io.sleep(pause)


def handle_command(core: SimulatorCore, raw: bytes, io: SimulatorIO) -> None:
    """Validate and apply one control message; a bad one is refused with its reason."""
    try:
        command = parse_command(raw)
    except ValidationError as error:
        core.rejected += 1
        io.reject(raw, f"invalid command: {describe(error)}")
        return
    if not core.accepts(command):
        return
    try:
        done = core.apply(command, io.monotonic())
    except SimulationError as error:
        core.rejected += 1
        io.reject(raw, f"invalid command: {error}")
        return
    log.info("simulator %s: %s", core.simulator_id, done)
    if not isinstance(command, StopCommand):  # stop publishes as the loop ends
        io.publish_state(core.state(io.wall()))


# --------------------------------------------------------------------------------------
# The client the operations API uses
# --------------------------------------------------------------------------------------


class SimulatorControl:
    """Sends control commands to simulators and reads their published state (Kafka).

    ``simulator_id`` None addresses every simulator (commands) and reads any one's state.
    """

    def __init__(
        self,
        settings: Settings,
        simulator_id: str | None = DEFAULT_SIMULATOR_ID,
        *,
        producer: Any = None,
    ) -> None:
        from confluent_kafka import Producer

        from smap_bench.kafka import producer_config

        self.settings = settings
        self.simulator_id = simulator_id
        self._producer = producer or Producer(producer_config(settings, "simulator-control"))

    # -- commands ---------------------------------------------------------------------
    def send(self, command: AnyCommand, timeout_s: float = 10.0) -> None:
        """Publish one command (addressed to this client's simulator) and wait for the ack."""
        if command.target is None and self.simulator_id is not None:
            command = command.model_copy(update={"target": self.simulator_id})
        self._producer.produce(
            self.settings.topic_control,
            value=command.model_dump_json().encode(),
            key=(command.target or "").encode() or None,
        )
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise TimeoutError(
                f"control command {command.command!r} not acknowledged by Kafka "
                f"({self.settings.kafka_bootstrap}) within {timeout_s} s"
            )

    def pause(self) -> None:
        self.send(PauseCommand())

    def resume(self) -> None:
        self.send(ResumeCommand())

    def seek(self, record_index: int, satellite_id: str | None = None) -> None:
        self.send(SeekCommand(record_index=record_index, satellite_id=satellite_id))

    def set_speed(self, factor: float | Literal["max"]) -> None:
        self.send(SpeedCommand(factor=factor))

    def stop(self) -> None:
        self.send(StopCommand())

    def request_status(self) -> None:
        self.send(StatusCommand())

    # -- state ------------------------------------------------------------------------
    def states(
        self,
        within_s: float = 5.0,
        timeout_s: float = 5.0,
        until: Callable[[SimulatorState], bool] | None = None,
    ) -> dict[str, SimulatorState]:
        """The latest state of each simulator published in the last ``within_s`` seconds.

        Reads the status topic from ``within_s`` ago (by timestamp, so that brokers with
        inexact end offsets are read right) until it is caught up, ``until`` holds for
        one of this client's states, or ``timeout_s`` passes.
        """
        from confluent_kafka import Consumer, TopicPartition

        from smap_bench.kafka import consumer_config

        since_ms = int((time.time() - within_s) * 1000)
        consumer = Consumer(
            consumer_config(
                self.settings,
                f"simulator-control-{uuid.uuid4().hex[:12]}",
                **{"enable.partition.eof": True},
            )
        )
        latest: dict[str, SimulatorState] = {}
        try:
            topic = self.settings.topic_status
            metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                return latest
            wanted = [TopicPartition(topic, p, since_ms) for p in metadata.partitions]
            offsets = consumer.offsets_for_times(wanted, timeout=timeout_s)
            consumer.assign(
                [TopicPartition(topic, tp.partition, max(tp.offset, 0)) for tp in offsets]
            )
            latest = self._read_states(consumer, len(offsets), since_ms, timeout_s, until)
        finally:
            consumer.close()
        return latest

    def _read_states(
        self,
        consumer: Any,
        n_partitions: int,
        since_ms: int,
        timeout_s: float,
        until: Callable[[SimulatorState], bool] | None,
    ) -> dict[str, SimulatorState]:
        from confluent_kafka import KafkaError

        latest: dict[str, SimulatorState] = {}
        deadline = time.monotonic() + timeout_s
        at_end: set[int] = set()
        idle_since = time.monotonic()
        while time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is None:
                if until is None and (
                    len(at_end) >= n_partitions or time.monotonic() - idle_since > 0.5
                ):
                    break
                continue
            idle_since = time.monotonic()
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                continue
            at_end.discard(message.partition())
            _, stamp_ms = message.timestamp()
            if stamp_ms and stamp_ms < since_ms:
                continue
            try:
                state = SimulatorState.model_validate_json(message.value())
            except ValidationError:
                continue
            if self.simulator_id is not None and state.simulator_id != self.simulator_id:
                continue
            latest[state.simulator_id] = state
            if until is not None and until(state):
                break
        return latest

    def latest_state(self, within_s: float = 5.0, timeout_s: float = 5.0) -> SimulatorState | None:
        """This client's simulator's latest state, or None if it published none lately."""
        found = self.states(within_s, timeout_s)
        if self.simulator_id is not None:
            return found.get(self.simulator_id)
        return max(found.values(), key=lambda s: s.published_at, default=None)

    def wait_for(
        self, predicate: Callable[[SimulatorState], bool], timeout_s: float = 10.0
    ) -> SimulatorState:
        """The first state (from now on) that satisfies ``predicate``; TimeoutError if none."""
        since = time.time()
        found = self.states(
            within_s=0.5,
            timeout_s=timeout_s,
            until=lambda s: s.published_at >= since and predicate(s),
        )
        for state in found.values():
            if state.published_at >= since and predicate(state):
                return state
        raise TimeoutError(
            f"simulator {self.simulator_id or '(any)'}: no matching state on "
            f"{self.settings.topic_status} within {timeout_s} s"
        )

    def close(self) -> None:
        self._producer.flush(5)


def find_last_state(
    control: SimulatorControl, lookbacks_s: Sequence[float] = (10, 300, 3600, 86400)
) -> SimulatorState | None:
    """The simulator's last published state, looking back further and further."""
    for within in lookbacks_s:
        state = control.latest_state(within_s=within, timeout_s=5.0)
        if state is not None:
            return state
    return None


class CommandListener:
    """Reads the control topic from the simulator's start on (Kafka, no consumer group).

    Every simulator reads every command (it picks its own by ``target``), so it assigns
    all partitions itself instead of sharing them in a group, and commits nothing.
    """

    def __init__(self, settings: Settings, since: float, timeout_s: float = 10.0) -> None:
        from confluent_kafka import Consumer, TopicPartition

        from smap_bench.kafka import consumer_config

        self.since_ms = int(since * 1000)
        self._consumer = Consumer(
            consumer_config(settings, f"simulator-listener-{uuid.uuid4().hex[:12]}")
        )
        topic = settings.topic_control
        metadata = self._consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise SimulationError(
                f"control topic {topic!r} is missing on {settings.kafka_bootstrap} "
                "(`smap-bench up` creates it)"
            )
        wanted = [TopicPartition(topic, p, self.since_ms) for p in metadata.partitions]
        offsets = self._consumer.offsets_for_times(wanted, timeout=timeout_s)
        self._consumer.assign(
            [TopicPartition(topic, tp.partition, max(tp.offset, 0)) for tp in offsets]
        )

    def poll(self) -> list[bytes]:
        """Control messages that arrived since the last call (never blocks)."""
        out = []
        for message in self._consumer.consume(100, timeout=0):
            if message.error() is not None:
                continue
            _, stamp_ms = message.timestamp()
            if stamp_ms and stamp_ms < self.since_ms - 1000:
                continue  # older than this simulator (brokers may start us early)
            out.append(message.value() or b"")
        return out

    def close(self) -> None:
        self._consumer.close()
