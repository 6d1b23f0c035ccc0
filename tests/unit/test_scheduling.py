"""The window scheduler in memory: windows, job ids, rejections, offsets across restarts."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from smap_bench.catalog import Subsystem
from smap_bench.scheduling import (
    CommitPlan,
    Position,
    WindowScheduler,
    batch_tasks,
    next_grid_start,
    record_fingerprint,
)
from smap_bench.schema import InferenceTask, deterministic_job_id
from smap_bench.windows import Rejection, window_starts

T0 = datetime(2025, 11, 12, 10, 0, tzinfo=UTC)
SAT = "sat7"
TOPIC = "telemetry.TCS.sat7"


def features(index: int) -> list[float]:
    row = [0.0] * 25
    row[0] = round(np.sin(index / 7.0), 6)
    row[1 + index % 24] = 1.0
    return row


def record(
    index: int,
    *,
    loop: int = 1,
    satellite: str = SAT,
    subsystem: str = "TCS",
    channel: str | None = "T-1",
    **changes: Any,
) -> bytes:
    data: dict[str, Any] = {
        "satellite_id": satellite,
        "subsystem": subsystem,
        "code": Subsystem.parse(subsystem).code,
        "timestamp": (T0 + timedelta(seconds=index)).isoformat(),
        "loop": loop,
        "record_index": index,
        "features": features(index),
        "num_features": 25,
        "stages": {"simulator": 1000.0 + index, "router": 1000.5 + index},
    }
    if channel is not None:
        data["channel"] = channel
    data.update(changes)
    return json.dumps(data).encode()


def feed(
    scheduler: WindowScheduler,
    indices: range | list[int],
    *,
    first_offset: int = 0,
    topic: str = TOPIC,
    **kwargs: Any,
) -> list[InferenceTask]:
    tasks = []
    for offset, index in enumerate(indices, start=first_offset):
        outcome = scheduler.accept(record(index, **kwargs), Position(topic, 0, offset))
        assert outcome.rejected is None, outcome.rejected
        if outcome.task is not None:
            tasks.append(outcome.task)
    return tasks


def job_id(start: int, loop: int = 1) -> str:
    return deterministic_job_id(SAT, "TCS", loop, start)


# --- windows ----------------------------------------------------------------------------


def test_a_split_of_100_records_gives_the_seed_windows() -> None:
    tasks = feed(WindowScheduler(30, 10), range(100))
    assert [t.record_index_start for t in tasks] == window_starts(100, 30, 10).tolist()
    assert [t.job_id for t in tasks] == [job_id(s) for s in range(0, 80, 10)]
    for task in tasks:
        start = task.record_index_start
        assert task.model_name == "SMAP_T-1" and task.channel == "T-1" and task.loop == 1
        assert task.satellite_id == SAT and task.subsystem is Subsystem.TCS
        assert task.window_start == T0 + timedelta(seconds=start)
        assert task.window_end == T0 + timedelta(seconds=start + 29)
        expected = np.array([features(i) for i in range(start, start + 30)], dtype=np.float32)
        np.testing.assert_array_equal(task.input_array(), expected)


def test_a_task_keeps_its_newest_records_stamps_and_adds_the_scheduler() -> None:
    clock_before = datetime.now(UTC).timestamp()
    (task,) = feed(WindowScheduler(30, 10), range(30))
    assert task.stages is not None
    assert task.stages["simulator"] == 1000.0 + 29  # the record that completed the window
    assert task.stages["router"] == 1000.5 + 29
    assert task.stages["scheduler"] >= clock_before


def test_job_ids_are_the_same_in_every_run() -> None:
    first = feed(WindowScheduler(30, 10), range(75))
    second = feed(WindowScheduler(30, 10), range(75))
    assert [t.job_id for t in first] == [t.job_id for t in second]
    assert len({t.job_id for t in first}) == len(first) == 5


def test_streams_are_windowed_independently() -> None:
    scheduler = WindowScheduler(30, 10)
    tasks = []
    for offset, index in enumerate(range(40)):
        for subsystem, channel in (("TCS", "T-1"), ("ACS", "A-2")):
            topic = f"telemetry.{subsystem}.{SAT}"
            outcome = scheduler.accept(
                record(index, subsystem=subsystem, channel=channel), Position(topic, 0, offset)
            )
            if outcome.task is not None:
                tasks.append(outcome.task)
    assert scheduler.streams == 2
    assert sorted((t.subsystem.value, t.record_index_start, t.model_name) for t in tasks) == [
        ("ACS", 0, "SMAP_A-2"),
        ("ACS", 10, "SMAP_A-2"),
        ("TCS", 0, "SMAP_T-1"),
        ("TCS", 10, "SMAP_T-1"),
    ]


def test_a_gap_restarts_windows_at_the_next_grid_point() -> None:
    scheduler = WindowScheduler(30, 10)
    tasks = feed(scheduler, [*range(15), *range(23, 70)])
    # after the gap the run starts at 23: the first full window on the grid starts at 30
    assert [t.record_index_start for t in tasks] == [30, 40]


def test_a_new_loop_starts_a_new_grid() -> None:
    scheduler = WindowScheduler(30, 10)
    tasks = feed(scheduler, range(45), loop=1)
    tasks += feed(scheduler, range(30), loop=2, first_offset=45)
    assert [(t.loop, t.record_index_start) for t in tasks] == [(1, 0), (1, 10), (2, 0)]
    assert tasks[-1].job_id == job_id(0, loop=2) != tasks[0].job_id


def test_windows_say_where_their_run_began() -> None:
    """The first window of the stream's current run: where it joined mid-loop, after a
    gap, and in a new loop."""
    scheduler = WindowScheduler(30, 10)
    tasks = feed(scheduler, [*range(5, 47), *range(52, 100)])
    tasks += feed(scheduler, range(3, 40), loop=2, first_offset=200)
    assert [(t.loop, t.record_index_start, t.run_window_start) for t in tasks] == [
        (1, 10, 10),
        (1, 60, 60),
        (1, 70, 60),
        (2, 10, 10),
    ]


def test_a_resumed_run_does_not_say_where_it_began_until_a_new_run() -> None:
    """After a restart the scheduler re-reads a run it saw begin before: its windows leave
    the start unknown (the confirmation then waits for the whole history), and a later
    gap or loop starts a run it sees begin."""
    scheduler = WindowScheduler(30, 10)
    scheduler.resume({(TOPIC, 0): (40, 40, None)})
    tasks = feed(scheduler, [*range(40, 80), *range(85, 125)], first_offset=40)
    assert [(t.record_index_start, t.run_window_start) for t in tasks] == [
        (40, None),
        (50, None),
        (90, 90),
    ]
    other = WindowScheduler(30, 10)  # a partition not resumed: its runs begin where seen
    other.resume({("telemetry.EPS.sat7", 0): (40, 40, None)})
    assert [t.run_window_start for t in feed(other, range(40, 80), first_offset=40)] == [40, 40]


def test_next_grid_start() -> None:
    assert [next_grid_start(i, 10) for i in (0, 1, 9, 10, 11, 23)] == [0, 10, 10, 10, 20, 30]
    assert next_grid_start(7, 5, origin=2) == 7 and next_grid_start(8, 5, origin=2) == 12


# --- rejections -------------------------------------------------------------------------


def reject_reason(scheduler: WindowScheduler, value: bytes | None, offset: int) -> str:
    outcome = scheduler.accept(value, Position(TOPIC, 0, offset))
    assert outcome.task is None and outcome.rejected is not None
    return outcome.rejected


def test_bad_records_are_rejected_with_a_reason_and_not_buffered() -> None:
    scheduler = WindowScheduler(30, 10, known_models=lambda name: name == "SMAP_T-1")
    feed(scheduler, range(10))
    reasons = [
        reject_reason(scheduler, b"{not json", 10),
        reject_reason(scheduler, None, 11),
        reject_reason(scheduler, record(10, features=[1.0] * 24), 12),
        reject_reason(scheduler, record(10).replace(b'"features": [', b'"features": [NaN, '), 13),
        reject_reason(scheduler, record(10, channel=None), 14),
        reject_reason(scheduler, record(10, channel="nonsense"), 15),
        reject_reason(scheduler, record(10, channel="T-9"), 16),
        reject_reason(scheduler, record(5), 17),
    ]
    assert reasons[0].startswith("SubsystemRecord: ") and "json" in reasons[0].lower()
    assert "empty message" in reasons[1]
    assert "features has 24 values" in reasons[2]
    assert "finite" in reasons[3].lower()
    assert reasons[4].startswith("ValueError: no channel") and "sat7/TCS" in reasons[4]
    assert "bad channel name 'nonsense'" in reasons[5]
    assert "unknown model SMAP_T-9" in reasons[6]
    assert reasons[7].startswith(Rejection.DUPLICATE.value) and "record_index 5" in reasons[7]
    # none of them entered the buffer: the stream goes on at record 10 as if nothing happened
    tasks = feed(scheduler, range(10, 40), first_offset=18)
    assert [t.record_index_start for t in tasks] == [0, 10]
    assert scheduler.counts.rejected == 8
    assert scheduler.counts.received == 10 + 8 + 30


def test_out_of_order_and_stale_loop_are_rejected() -> None:
    scheduler = WindowScheduler(30, 10)
    feed(scheduler, [*range(5), *range(8, 12)], loop=2)
    assert reject_reason(scheduler, record(6, loop=2), 20).startswith(Rejection.OUT_OF_ORDER.value)
    assert reject_reason(scheduler, record(12, loop=1), 21).startswith(Rejection.STALE_LOOP.value)


# --- offsets ----------------------------------------------------------------------------


def test_commit_stops_at_the_first_record_of_the_next_window() -> None:
    scheduler = WindowScheduler(30, 10)
    feed(scheduler, range(55))  # windows 0, 10, 20 sent; the next one starts at 30
    assert scheduler.commit_positions() == {(TOPIC, 0): 30}
    assert scheduler.held_records(SAT, "TCS") == list(range(30, 55))
    assert scheduler.commit_positions() == {}  # nothing consumed since
    feed(scheduler, range(55, 60), first_offset=55)  # completes window 30
    assert scheduler.commit_positions() == {(TOPIC, 0): 40}


def test_commit_before_the_first_grid_point_and_after_rejections() -> None:
    scheduler = WindowScheduler(30, 10)
    feed(scheduler, range(4, 8))  # resumed mid-stream: 4..7 belong to no future window
    assert scheduler.commit_positions() == {(TOPIC, 0): 4}
    assert scheduler.held_records(SAT, "TCS") == []
    reject_reason(scheduler, b"garbage", 4)
    assert scheduler.commit_positions() == {(TOPIC, 0): 5}
    feed(scheduler, range(8, 12), first_offset=5)
    assert scheduler.commit_positions() == {(TOPIC, 0): 7}  # record 10 at offset 7


def test_commit_per_partition_is_the_oldest_record_any_stream_needs() -> None:
    scheduler = WindowScheduler(30, 10)
    other = "telemetry.ACS.sat7"
    feed(scheduler, range(45))
    feed(scheduler, range(12), topic=other, subsystem="ACS", channel="A-1")
    assert scheduler.commit_positions() == {(TOPIC, 0): 20, (other, 0): 0}


@pytest.mark.parametrize("cut", [0, 1, 9, 29, 30, 31, 39, 40, 55, 69, 70, 99, 100])
def test_a_restart_loses_no_window_and_sends_none_twice(cut: int) -> None:
    """Consume ``cut`` records, commit, restart from the committed offset: the windows of
    both runs together are exactly those of one uninterrupted run."""
    records = [*range(0, 47), *range(52, 120)]  # a gap in the middle
    full = feed(WindowScheduler(30, 10), records)
    assert [t.record_index_start for t in full] == [0, 10, 60, 70, 80, 90]

    first = WindowScheduler(30, 10)
    sent = [t.job_id for t in feed(first, records[:cut])]
    committed = first.commit_positions().get((TOPIC, 0), 0)
    assert committed <= cut

    second = WindowScheduler(30, 10)  # a fresh process: empty buffers
    sent += [t.job_id for t in feed(second, records[committed:], first_offset=committed)]
    assert sent == [t.job_id for t in full]


@pytest.mark.parametrize("cut", [0, 1, 29, 30, 39, 40, 69, 70, 99, 100, 131, 150, 199, 240])
def test_a_restart_keeps_the_context_and_sends_no_window_twice(cut: int) -> None:
    """With a context, a restart given the sent frontier re-reads the context: both runs
    together send exactly the windows of one uninterrupted run, once each, and every window
    carries the context it carries there."""
    records = [*range(0, 147), *range(152, 260)]  # a gap in the middle
    full = {t.job_id: t for t in feed(WindowScheduler(30, 10, context=100), records)}
    assert sum(t.context is not None for t in full.values()) > 5

    first = WindowScheduler(30, 10, context=100)
    sent = feed(first, records[:cut])
    plan = first.commit_plan()
    read_at, sent_at = plan.read.get((TOPIC, 0), 0), plan.sent.get((TOPIC, 0), 0)
    assert read_at <= sent_at <= cut

    second = WindowScheduler(30, 10, context=100)  # a fresh process: empty buffers
    second.resume({(TOPIC, 0): (read_at, sent_at, plan.check.get((TOPIC, 0)))})
    sent += feed(second, records[read_at:], first_offset=read_at)
    assert [t.job_id for t in sent] == list(full)
    for task in sent:
        assert task.context == full[task.job_id].context, task.record_index_start


def test_the_windows_re_formed_before_the_frontier_are_counted_not_sent() -> None:
    first = WindowScheduler(30, 10, context=100)
    feed(first, range(145))
    plan = first.commit_plan()
    assert (plan.read[(TOPIC, 0)], plan.sent[(TOPIC, 0)]) == (50, 120)
    assert plan.check[(TOPIC, 0)] == record_fingerprint(1, 50)  # loop 1, record 50
    second = WindowScheduler(30, 10, context=100)
    second.resume({(TOPIC, 0): (50, 120, plan.check[(TOPIC, 0)])})
    tasks = feed(second, range(50, 160), first_offset=50)
    # windows 50..110 were sent before the restart; 120 is the first new one, with the
    # full context of records 50..149 read again
    assert second.counts.already_sent == 7
    assert [t.record_index_start for t in tasks] == [120, 130]
    assert tasks[0].context is not None and len(tasks[0].context) == 100


def test_a_restart_commits_the_frontier_it_resumed_from_until_it_passes_it() -> None:
    """A second restart soon after the first sends no window twice: while the re-formed
    windows are still before the resumed frontier, that frontier is what is committed."""
    first = WindowScheduler(30, 10, context=100)
    feed(first, range(145))
    plan = first.commit_plan()
    check = plan.check[(TOPIC, 0)]
    second = WindowScheduler(30, 10, context=100)
    second.resume({(TOPIC, 0): (50, 120, check)})
    assert feed(second, range(50, 100), first_offset=50) == []  # windows 50..60 dropped
    plan = second.commit_plan()
    assert (plan.read[(TOPIC, 0)], plan.sent[(TOPIC, 0)]) == (50, 120)  # not 70
    assert plan.check[(TOPIC, 0)] == check
    third = WindowScheduler(30, 10, context=100)  # restarted again, from that commit
    third.resume({(TOPIC, 0): (50, 120, plan.check[(TOPIC, 0)])})
    tasks = feed(third, range(50, 160), first_offset=50)
    assert [t.record_index_start for t in tasks] == [120, 130]  # none sent twice
    # once past it, the frontier is the scheduler's own again
    plan = third.commit_plan()
    assert plan.sent[(TOPIC, 0)] == 140


def test_without_a_context_the_read_position_is_the_sent_frontier() -> None:
    scheduler = WindowScheduler(30, 10)
    feed(scheduler, range(45))
    assert scheduler.commit_plan() == CommitPlan({(TOPIC, 0): 20}, {(TOPIC, 0): 20}, {})


def test_a_context_moves_the_read_position_back_and_not_the_frontier() -> None:
    scheduler = WindowScheduler(30, 10, context=100)
    feed(scheduler, range(145))
    # the next window starts at 120; its context reaches back 70 records before it
    plan = scheduler.commit_plan()
    assert (plan.read, plan.sent) == ({(TOPIC, 0): 50}, {(TOPIC, 0): 120})
    early = WindowScheduler(30, 10, context=100)
    feed(early, range(45))  # the run began at 0: nothing older to keep
    plan = early.commit_plan()
    assert (plan.read, plan.sent) == ({(TOPIC, 0): 0}, {(TOPIC, 0): 20})


@pytest.mark.parametrize("first_offset", [0, 50])
def test_a_frontier_is_dropped_when_the_partition_resumes_elsewhere(first_offset: int) -> None:
    """The log was re-created while the scheduler was down: reading starts at offset 0
    (not at the committed 50), or at 50 with another record there (the new log grew past
    it): the frontier is not trusted and no window of the new log is dropped."""
    scheduler = WindowScheduler(30, 10, context=100)
    scheduler.resume({(TOPIC, 0): (50, 120, record_fingerprint(1, 50))})
    tasks = feed(scheduler, range(150), first_offset=first_offset)
    assert scheduler.counts.frontiers_dropped == 1 and scheduler.counts.already_sent == 0
    assert [t.record_index_start for t in tasks] == list(range(0, 121, 10))


def test_a_frontier_without_its_check_is_not_trusted() -> None:
    scheduler = WindowScheduler(30, 10, context=100)
    scheduler.resume({(TOPIC, 0): (50, 120, None)})
    tasks = feed(scheduler, range(50, 160), first_offset=50)
    assert scheduler.counts.already_sent == 0
    assert [t.record_index_start for t in tasks][:2] == [50, 60]  # re-sent, not lost


@pytest.mark.parametrize("seed", range(12))
def test_restarts_at_random_never_lose_or_repeat_a_window(seed: int) -> None:
    """Random logs (gaps, new loops, duplicate and unreadable messages) cut by up to three
    restarts at random points, each resumed from the last commit: the runs together send
    exactly the windows of one uninterrupted run, once each, with the same contexts."""
    rng = random.Random(seed)
    messages: list[bytes] = []
    loop, index = 1, 0
    while len(messages) < 400:
        roll = rng.random()
        if roll < 0.02:
            loop, index = loop + 1, 0  # the simulator restarted the split
        elif roll < 0.04:
            index += rng.randint(1, 15)  # a gap
        elif roll < 0.05 and index > 0:
            messages.append(record(index - 1, loop=loop))  # a duplicate
            continue
        elif roll < 0.06:
            messages.append(b"not json")
            continue
        messages.append(record(index, loop=loop))
        index += 1

    def run(scheduler: WindowScheduler, start: int, stop: int) -> list[InferenceTask]:
        out = []
        for offset in range(start, stop):
            task = scheduler.accept(messages[offset], Position(TOPIC, 0, offset)).task
            if task is not None:
                out.append(task)
        return out

    full = {t.job_id: t for t in run(WindowScheduler(30, 10, context=100), 0, len(messages))}
    cuts = sorted(rng.sample(range(1, len(messages)), 3))
    sent: list[InferenceTask] = []
    scheduler = WindowScheduler(30, 10, context=100)
    position = 0
    for cut in [*cuts, len(messages)]:
        sent += run(scheduler, position, cut)
        plan = scheduler.commit_plan()  # a clean stop commits what it consumed
        key = (TOPIC, 0)
        position = plan.read.get(key, position)
        scheduler = WindowScheduler(30, 10, context=100)
        if key in plan.read:
            scheduler.resume({key: (plan.read[key], plan.sent[key], plan.check.get(key))})
    assert [t.job_id for t in sent] == list(full)
    assert all(t.context == full[t.job_id].context for t in sent)


def test_redelivered_offsets_are_skipped() -> None:
    scheduler = WindowScheduler(30, 10)
    feed(scheduler, range(45))
    assert scheduler.commit_positions() == {(TOPIC, 0): 20}
    # a rebalance: Kafka re-delivers from the committed offset; none of it is new
    for offset in range(20, 45):
        outcome = scheduler.accept(record(offset), Position(TOPIC, 0, offset))
        assert outcome.redelivered and outcome.task is None and outcome.rejected is None
    assert scheduler.counts.redelivered == 25
    assert [t.record_index_start for t in feed(scheduler, range(45, 50), first_offset=45)] == [20]


def test_a_restarted_log_resets_the_partition_and_no_window_is_sent_twice() -> None:
    scheduler = WindowScheduler(30, 10)
    assert len(feed(scheduler, range(45))) == 2
    scheduler.commit_positions()  # committed 20: nothing below can be a re-delivery
    # the topic was re-created and the same records produced again from offset 0
    outcomes = [scheduler.accept(record(i), Position(TOPIC, 0, i)) for i in range(45)]
    assert not any(o.redelivered or o.rejected for o in outcomes)
    assert [o.task for o in outcomes if o.task] == []
    assert sum(o.duplicate_window for o in outcomes) == 2
    assert scheduler.counts.duplicate_windows == 2


def test_after_a_log_reset_a_run_does_not_say_where_it_began() -> None:
    """The topic was re-created mid-run: the new log's records may continue a run whose
    earlier windows were formed, so its windows leave the run's start unknown."""
    scheduler = WindowScheduler(30, 10)
    assert [t.run_window_start for t in feed(scheduler, range(200))][-1] == 0
    scheduler.commit_positions()
    tasks = feed(scheduler, range(200, 260), first_offset=0)
    assert [(t.record_index_start, t.run_window_start) for t in tasks] == [
        (200, None),
        (210, None),
        (220, None),
        (230, None),
    ]


# --- micro-batches ----------------------------------------------------------------------


def test_batch_tasks_groups_by_model_and_caps_the_size() -> None:
    tasks = feed(WindowScheduler(30, 10), range(100))  # 8 windows of SMAP_T-1
    other = feed(WindowScheduler(30, 10), range(50), channel="T-2")  # 3 of SMAP_T-2
    mixed = [tasks[0], other[0], tasks[1], other[1], *tasks[2:], other[2]]
    batches = batch_tasks(mixed, 4)
    assert [len(b) for b in batches] == [4, 4, 3]
    flat = [t for b in batches for t in b]
    assert [t.job_id for t in flat] == [t.job_id for t in [*tasks, *other]]
    assert batch_tasks([], 4) == []
    with pytest.raises(ValueError, match="max_windows"):
        batch_tasks(tasks, 0)


def test_batch_tasks_spreads_a_burst_over_the_workers_in_even_messages() -> None:
    tasks = feed(WindowScheduler(30, 10), range(100))  # 8 windows of SMAP_T-1
    other = feed(WindowScheduler(30, 10), range(50), channel="T-2")  # 3 of SMAP_T-2
    batches = batch_tasks([*tasks, *other], 32, min_messages=2)
    assert [len(b) for b in batches] == [6, 5]
    assert [t.job_id for b in batches for t in b] == [t.job_id for t in [*tasks, *other]]
    # the cap still holds, and fewer windows than workers make one message each
    assert [len(b) for b in batch_tasks([*tasks, *other], 4, min_messages=2)] == [4, 4, 3]
    assert [len(b) for b in batch_tasks(other, 32, min_messages=8)] == [1, 1, 1]
    with pytest.raises(ValueError, match="min_messages"):
        batch_tasks(tasks, 4, min_messages=0)
