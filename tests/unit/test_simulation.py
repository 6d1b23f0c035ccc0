"""The simulator's logic: fleet plans, replay positions and messages, pacing, control."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from smap_bench.catalog import SMAP_CHANNELS, SUBSYSTEMS, Subsystem
from smap_bench.data.synthetic import write_synthetic_dataset
from smap_bench.schema import NUM_FEATURES, TelemetryMessage, decode
from smap_bench.simulation import (
    MAX_LAG_S,
    PauseCommand,
    Replay,
    ResumeCommand,
    SatelliteStreams,
    SeekCommand,
    SimulationError,
    SimulatorCore,
    SimulatorIO,
    SimulatorState,
    SpeedCommand,
    StatusCommand,
    StopCommand,
    build_fleet,
    continue_loop,
    load_fleet,
    parse_command,
    parse_speed,
    plan_channels,
    run_simulator,
    tick_period,
)

START = datetime(2025, 11, 12, 10, 0, tzinfo=UTC)
ALL_SEVEN = {s.value: f"{s.code}-1" for s in SUBSYSTEMS}


def channel_array(channel: str, rows: int) -> np.ndarray:
    """Rows whose column 0 encodes (channel, row), so a reading names its source."""
    array = np.zeros((rows, NUM_FEATURES), dtype=np.float32)
    array[:, 0] = np.arange(rows, dtype=np.float32)
    array[:, 1] = float(SMAP_CHANNELS.index(channel))
    return array


def arrays_for(lengths: dict[str, int]) -> dict[str, np.ndarray]:
    return {channel: channel_array(channel, rows) for channel, rows in lengths.items()}


def fleet_of(mapping: dict[str, dict[str, str]], lengths: dict[str, int], **kw) -> list:
    return build_fleet(plan_channels(0, [], mapping), arrays_for(lengths), **kw)


def decoded(values: list[tuple[bytes, bytes]]) -> list[TelemetryMessage]:
    return [decode(TelemetryMessage, value) for _, value in values]


# --------------------------------------------------------------------------------------
# plans and fleets
# --------------------------------------------------------------------------------------


def test_plan_follows_the_catalog_round_robin() -> None:
    plan = plan_channels(3, SMAP_CHANNELS)
    assert list(plan) == ["sat1", "sat2", "sat3"]
    assert plan["sat1"][Subsystem.ACS] == "A-1"
    assert plan["sat2"][Subsystem.ACS] == "A-2"
    assert plan["sat2"][Subsystem.SS] == "S-1"  # one SS channel: every satellite shares it
    assert all(list(slots) == list(SUBSYSTEMS) for slots in plan.values())


def test_plan_refuses_a_dataset_without_some_subsystem() -> None:
    without_tcs = [c for c in SMAP_CHANNELS if not c.startswith("T-")]
    with pytest.raises(SimulationError, match="TCS"):
        plan_channels(2, without_tcs)


def test_mapping_may_put_any_channel_in_any_slot() -> None:
    mapping = {"replay1": {**ALL_SEVEN, "ACS": "B-1", "PS": "G-3"}}
    plan = plan_channels(99, SMAP_CHANNELS, mapping)
    assert list(plan) == ["replay1"]
    assert plan["replay1"][Subsystem.ACS] == "B-1"
    assert plan["replay1"][Subsystem.PS] == "G-3"


@pytest.mark.parametrize(
    ("mapping", "match"),
    [
        ({"sat1": {k: v for k, v in ALL_SEVEN.items() if k != "EPS"}}, "no channel for EPS"),
        ({"sat 1": ALL_SEVEN}, "bad satellite id"),
        ({"sat1": {**ALL_SEVEN, "XYZ": "A-1"}}, "unknown subsystem"),
        ({"sat1": {**ALL_SEVEN, "ACS": "a1"}}, "bad channel name"),
        ({}, "empty"),
    ],
)
def test_bad_mappings_are_refused(mapping: dict, match: str) -> None:
    with pytest.raises(SimulationError, match=match):
        plan_channels(1, SMAP_CHANNELS, mapping)


def test_loop_length_is_the_shortest_channel_by_default() -> None:
    lengths = {c: 50 + 10 * i for i, c in enumerate(ALL_SEVEN.values())}
    (sat,) = fleet_of({"s": ALL_SEVEN}, lengths)
    assert sat.loop_length == min(lengths.values())
    (sat,) = fleet_of({"s": ALL_SEVEN}, lengths, align="longest")
    assert sat.loop_length == max(lengths.values())
    (sat,) = fleet_of({"s": ALL_SEVEN}, lengths, limit=7)
    assert sat.loop_length == 7


def test_fleet_needs_the_rows_of_every_channel() -> None:
    plan = plan_channels(0, [], {"s": ALL_SEVEN})
    with pytest.raises(SimulationError, match="no rows loaded"):
        build_fleet(plan, arrays_for({"A-1": 10}))
    bad = arrays_for(dict.fromkeys(ALL_SEVEN.values(), 10))
    bad["A-1"] = np.zeros((10, 3), dtype=np.float32)
    with pytest.raises(SimulationError, match="shape"):
        build_fleet(plan, bad)


def test_load_fleet_reads_the_telemanom_layout(tmp_path: Path) -> None:
    data_dir = write_synthetic_dataset(
        tmp_path / "smap", [*ALL_SEVEN.values(), "A-2"], train_rows=60, test_rows=80
    )
    fleet, source = load_fleet(2, data_dir=data_dir)
    assert source.path == data_dir
    assert [s.channels[0] for s in fleet] == ["A-1", "A-2"]
    expected = np.load(data_dir / "test" / "A-2.npy").astype(np.float32)
    np.testing.assert_array_equal(fleet[1].arrays[0], expected)
    train, _ = load_fleet(1, data_dir=data_dir, split="train")
    assert train[0].loop_length == 60


# --------------------------------------------------------------------------------------
# replay: messages, loops, seek
# --------------------------------------------------------------------------------------


def test_record_i_carries_row_i_of_each_channel() -> None:
    lengths = dict.fromkeys(ALL_SEVEN.values(), 12)
    replay = Replay(fleet_of({"s": ALL_SEVEN}, lengths), loops=1, start_time=START)
    messages = []
    for _ in range(12):
        messages += decoded(replay.tick(wall=123.5))
    assert [m.record_index for m in messages] == list(range(12))
    for message in messages:
        assert message.satellite_id == "s"
        assert message.loop == 0
        assert message.timestamp == START + timedelta(seconds=message.record_index)
        assert message.stages == {"simulator": 123.5}
        assert list(message.subsystems) == list(SUBSYSTEMS)
        for subsystem, reading in message.subsystems.items():
            channel = ALL_SEVEN[subsystem.value]
            assert reading.code == subsystem.code
            assert reading.channel == channel  # type: ignore[attr-defined]
            assert reading.num_features == NUM_FEATURES
            assert reading.features[0] == message.record_index
            assert reading.features[1] == SMAP_CHANNELS.index(channel)
    assert replay.finished


def test_loops_advance_and_timestamps_keep_increasing() -> None:
    lengths = dict.fromkeys(ALL_SEVEN.values(), 3)
    replay = Replay(fleet_of({"s": ALL_SEVEN}, lengths), loops=2, first_loop=5, start_time=START)
    messages = []
    while not replay.finished:
        messages += decoded(replay.tick(wall=0.0))
    assert [(m.loop, m.record_index) for m in messages] == [
        (5, 0), (5, 1), (5, 2), (6, 0), (6, 1), (6, 2),
    ]  # fmt: skip
    assert [m.timestamp for m in messages] == [START + timedelta(seconds=i) for i in range(6)]
    assert replay.tick(wall=0.0) == []


def test_longest_alignment_wraps_the_shorter_channels() -> None:
    lengths = {c: 5 for c in ALL_SEVEN.values()} | {"A-1": 3}
    replay = Replay(fleet_of({"s": ALL_SEVEN}, lengths, align="longest"), loops=1)
    messages = []
    while not replay.finished:
        messages += decoded(replay.tick(wall=0.0))
    assert len(messages) == 5
    assert [m.subsystems[Subsystem.ACS].features[0] for m in messages] == [0, 1, 2, 0, 1]
    assert [m.subsystems[Subsystem.EPS].features[0] for m in messages] == [0, 1, 2, 3, 4]


def test_satellites_advance_together_and_loop_on_their_own_length() -> None:
    short = {**ALL_SEVEN, "ACS": "A-2", "EPS": "B-1"}
    lengths = dict.fromkeys(ALL_SEVEN.values(), 3) | {"A-2": 2, "B-1": 4}
    replay = Replay(fleet_of({"a": ALL_SEVEN, "b": short}, lengths), loops=1)
    ticks = []
    while not replay.finished:
        ticks.append([(m.satellite_id, m.record_index) for m in decoded(replay.tick(0.0))])
    assert ticks == [[("a", 0), ("b", 0)], [("a", 1), ("b", 1)], [("a", 2)]]


def test_phases_spread_a_tick_over_slots_each_satellite_once_per_period() -> None:
    lengths = dict.fromkeys(ALL_SEVEN.values(), 10)
    mapping = {name: ALL_SEVEN for name in ("a", "b", "c", "d", "e")}
    replay = Replay(fleet_of(mapping, lengths), phases=2)
    slots = [[(m.satellite_id, m.record_index) for m in decoded(replay.tick(0))] for _ in range(4)]
    assert slots == [
        [("a", 0), ("c", 0), ("e", 0)], [("b", 0), ("d", 0)],
        [("a", 1), ("c", 1), ("e", 1)], [("b", 1), ("d", 1)],
    ]  # fmt: skip
    assert Replay(fleet_of({"a": ALL_SEVEN}, lengths), phases=4).phases == 1  # at most one each
    with pytest.raises(SimulationError, match="phases"):
        Replay(fleet_of(mapping, lengths), phases=0)


def test_stagger_starts_satellites_on_different_records() -> None:
    lengths = dict.fromkeys(ALL_SEVEN.values(), 3)
    mapping = {name: ALL_SEVEN for name in ("a", "b", "c", "d")}
    replay = Replay(fleet_of(mapping, lengths), stagger=10)
    first = [(m.satellite_id, m.record_index) for m in decoded(replay.tick(0.0))]
    assert first == [("a", 0), ("b", 1), ("c", 2), ("d", 0)]  # modulo the loop's length
    with pytest.raises(SimulationError, match="stagger"):
        Replay(fleet_of(mapping, lengths), stagger=-1)


def test_phased_core_ticks_phases_times_per_period() -> None:
    mapping = {f"sat{i + 1}": ALL_SEVEN for i in range(4)}
    fleet = fleet_of(mapping, dict.fromkeys(ALL_SEVEN.values(), 100))
    core = SimulatorCore(Replay(fleet, phases=4), period_s=1.0, speed=1.0, now=0.0)
    sent = [len(core.step(t / 4, wall=0.0)) for t in range(8)]
    assert sent == [1] * 8  # four slots a second, one satellite each
    assert core.due_in(2.0) == 0.0 and core.due_in(1.9) == pytest.approx(0.1)


def test_keys_are_satellite_ids() -> None:
    lengths = dict.fromkeys(ALL_SEVEN.values(), 4)
    replay = Replay(fleet_of({"a": ALL_SEVEN, "b": ALL_SEVEN}, lengths))
    assert [key for key, _ in replay.tick(0.0)] == [b"a", b"b"]


def test_seek_starts_a_new_loop_at_the_record() -> None:
    lengths = dict.fromkeys(ALL_SEVEN.values(), 10)
    replay = Replay(fleet_of({"a": ALL_SEVEN, "b": ALL_SEVEN}, lengths), start_time=START)
    for _ in range(4):
        replay.tick(0.0)
    assert replay.seek(2) == 2
    first = decoded(replay.tick(0.0))
    assert [(m.loop, m.record_index) for m in first] == [(1, 2), (1, 2)]
    assert first[0].timestamp == START + timedelta(seconds=10 + 2)
    assert replay.seek(99, "b") == 1  # clamped to the last record
    assert [(m.loop, m.record_index) for m in decoded(replay.tick(0.0))] == [(1, 3), (2, 9)]
    with pytest.raises(SimulationError, match="unknown satellite"):
        replay.seek(0, "nope")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"loops": -1}, "loops"), ({"first_loop": -2}, "first_loop")],
)
def test_replay_refuses_bad_settings(kwargs: dict, match: str) -> None:
    fleet = fleet_of({"s": ALL_SEVEN}, dict.fromkeys(ALL_SEVEN.values(), 3))
    with pytest.raises(SimulationError, match=match):
        Replay(fleet, **kwargs)
    with pytest.raises(SimulationError, match="timezone"):
        Replay(fleet, start_time=datetime(2025, 1, 1))
    with pytest.raises(SimulationError, match="not unique"):
        Replay(fleet + fleet)


def test_a_thousand_messages_serialise_well_under_a_second() -> None:
    # 1,000 satellites at 1 Hz is 1,000 messages a second; building them must be cheap.
    lengths = {c: 100 for c in SMAP_CHANNELS}
    plan = plan_channels(1000, SMAP_CHANNELS)
    replay = Replay(build_fleet(plan, arrays_for(lengths)))
    started = time.perf_counter()
    out = replay.tick(time.time())
    elapsed = time.perf_counter() - started
    assert len(out) == 1000
    assert elapsed < 0.5, f"{elapsed:.3f} s for one tick of 1,000 satellites"


# --------------------------------------------------------------------------------------
# commands, pacing, state
# --------------------------------------------------------------------------------------


def test_commands_parse_from_json() -> None:
    assert isinstance(parse_command(b'{"command": "pause"}'), PauseCommand)
    seek = parse_command('{"command": "seek", "record_index": 40, "target": "sim-a"}')
    assert isinstance(seek, SeekCommand) and seek.record_index == 40 and seek.target == "sim-a"
    assert parse_command('{"command": "speed", "factor": "max"}').factor == "max"  # type: ignore[union-attr]
    assert parse_command('{"command": "speed", "factor": 2.5}').factor == 2.5  # type: ignore[union-attr]
    assert isinstance(parse_command('{"command": "stop"}'), StopCommand)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"command": "explode"}',
        b'{"command": "seek"}',
        b'{"command": "seek", "record_index": -1}',
        b'{"command": "speed", "factor": 0}',
        b'{"command": "speed", "factor": NaN}',
        b'{"command": "pause", "extra": 1}',
    ],
)
def test_bad_commands_are_refused(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        parse_command(raw)


def test_tick_period_and_speed_parsing() -> None:
    assert tick_period(1.0) == 1.0
    assert tick_period(4.0) == 0.25
    assert tick_period(1.0, delay_ms=200) == 0.2
    assert parse_speed("max") is None
    assert parse_speed("2") == 2.0
    for bad in ("0", "-1", "fast", "nan"):
        with pytest.raises(SimulationError):
            parse_speed(bad)
    with pytest.raises(SimulationError):
        tick_period(0.0)
    with pytest.raises(SimulationError):
        tick_period(1.0, delay_ms=-5)


def make_core(rows: int = 100, satellites: int = 1, **kw) -> SimulatorCore:
    mapping = {f"sat{i + 1}": ALL_SEVEN for i in range(satellites)}
    fleet = fleet_of(mapping, dict.fromkeys(ALL_SEVEN.values(), rows))
    return SimulatorCore(Replay(fleet, loops=kw.pop("loops", 0)), **kw)


def test_pacing_follows_the_period_and_speed() -> None:
    core = make_core(period_s=1.0, speed=2.0, now=10.0)
    assert core.due_in(10.0) == 0.0
    assert len(core.step(10.0, wall=0.0)) == 1
    assert core.due_in(10.1) == pytest.approx(0.4)
    assert core.step(10.1, wall=0.0) == []
    assert len(core.step(10.5, wall=0.0)) == 1
    core.apply(SpeedCommand(factor="max"), now=10.6)
    assert core.due_in(10.6) == 0.0
    assert len(core.step(10.6, 0.0)) == 1 and len(core.step(10.6, 0.0)) == 1


def test_a_late_tick_reanchors_instead_of_bursting() -> None:
    core = make_core(period_s=0.1, speed=1.0, now=0.0)
    core.step(0.0, 0.0)
    core.step(MAX_LAG_S + 5.0, 0.0)  # stalled for seconds
    assert core.lag_resets == 1
    assert core.due_in(MAX_LAG_S + 5.0) == 0.0  # one tick due now, not fifty
    core.step(MAX_LAG_S + 5.0, 0.0)
    assert core.due_in(MAX_LAG_S + 5.0) == pytest.approx(0.1)


def test_pause_resume_seek_stop() -> None:
    core = make_core(period_s=1.0, now=0.0)
    core.step(0.0, 0.0)
    core.apply(PauseCommand(), now=0.5)
    assert core.due_in(5.0) is None and core.step(5.0, 0.0) == []
    assert core.state(1.0).state == "paused"
    core.apply(ResumeCommand(), now=7.0)
    assert core.due_in(7.0) == 0.0
    core.apply(SeekCommand(record_index=50), now=7.0)
    (message,) = decoded(core.step(7.0, 0.0))
    assert (message.loop, message.record_index) == (1, 50)
    core.apply(StopCommand(), now=8.0)
    assert core.due_in(8.0) is None
    assert core.state(8.0).state == "stopped"


def test_commands_are_addressed_and_old_ones_ignored() -> None:
    core = make_core(simulator_id="sim-a", started_at=1000.0)
    assert core.accepts(PauseCommand(issued_at=1001.0))
    assert core.accepts(PauseCommand(target="sim-a", issued_at=1001.0))
    assert not core.accepts(PauseCommand(target="sim-b", issued_at=1001.0))
    assert not core.accepts(PauseCommand(issued_at=999.0))


def test_state_reports_positions_and_counts() -> None:
    core = make_core(rows=10, satellites=2, speed=None, split="train", simulator_id="x")
    for _ in range(3):
        core.step(0.0, 0.0)
    state = core.state(wall=5.0)
    assert state.simulator_id == "x" and state.split == "train" and state.speed == "max"
    assert state.produced == 6 and state.satellites == 2
    assert state.positions["sat2"].record_index == 3
    assert (state.loop_min, state.loop_max, state.record_index_max) == (0, 0, 3)
    again = SimulatorState.model_validate_json(state.model_dump_json())
    assert again == state
    assert continue_loop(state) == 1
    assert continue_loop(None) == 0
    for _ in range(7):
        core.step(0.0, 0.0)
    finished = core.state(wall=6.0)  # both satellites wait at record 0 of loop 1
    assert (finished.loop_max, finished.record_index_max) == (1, 0)
    assert continue_loop(finished) == 1


# --------------------------------------------------------------------------------------
# the run loop over in-memory I/O and a fake clock
# --------------------------------------------------------------------------------------


class FakeIO:
    def __init__(self, commands: dict[int, list[bytes]] | None = None) -> None:
        self.now = 0.0
        self.sent: list[tuple[bytes, bytes]] = []
        self.states: list[SimulatorState] = []
        self.rejected: list[str] = []
        self.commands = commands or {}  # after N messages sent -> commands to deliver

    def io(self) -> SimulatorIO:
        return SimulatorIO(
            send=lambda key, value: self.sent.append((key, value)),
            poll_commands=lambda: self.commands.pop(len(self.sent), []),
            publish_state=self.states.append,
            reject=lambda raw, reason: self.rejected.append(reason),
            monotonic=lambda: self.now,
            wall=lambda: 1000.0 + self.now,
            sleep=self.sleep,
        )

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


def test_run_replays_every_loop_at_the_rate_and_finishes() -> None:
    fake = FakeIO()
    core = make_core(rows=5, satellites=2, loops=2, period_s=0.5)
    assert run_simulator(core, fake.io()) == "finished"
    assert len(fake.sent) == 2 * 5 * 2
    assert fake.now == pytest.approx(0.5 * (2 * 5 - 1))  # ten ticks, half a second apart
    assert fake.states[-1].state == "finished"
    assert fake.states[-1].produced == 20
    assert len(fake.states) >= 4  # once a second, and at the end


def test_run_obeys_commands_and_refuses_bad_ones() -> None:
    fake = FakeIO(
        {
            2: [b'{"command": "speed", "factor": "max"}', b"{oops"],
            4: [json.dumps({"command": "seek", "record_index": 7}).encode()],
            6: [b'{"command": "status"}', b'{"command": "stop"}'],
        }
    )
    core = make_core(rows=20, period_s=1.0)
    assert run_simulator(core, fake.io()) == "stopped"
    messages = decoded(fake.sent)
    assert [(m.loop, m.record_index) for m in messages] == [
        (0, 0), (0, 1), (0, 2), (0, 3), (1, 7), (1, 8),
    ]  # fmt: skip
    # two ticks at 1 Hz; the speed command is read within max_sleep_s (0.1 s) of the
    # second, and from then on ticks come without waiting
    assert fake.now == pytest.approx(1.1)
    assert len(fake.rejected) == 1 and fake.rejected[0].startswith("invalid command")
    assert core.rejected == 1
    assert fake.states[-1].state == "stopped"


def test_run_stops_on_signal() -> None:
    fake = FakeIO()
    core = make_core(rows=5, period_s=1.0)
    calls = iter(range(1000))
    assert run_simulator(core, fake.io(), should_stop=lambda: next(calls) >= 3) == "stopped"
    assert 1 <= len(fake.sent) <= 3


def test_streams_are_plain_values() -> None:
    sat = SatelliteStreams("s", ("A-1",), (channel_array("A-1", 4),), 4)
    assert sat.rows_at(6) == [2]
    assert isinstance(StatusCommand().issued_at, float)
