from __future__ import annotations

from typing import Any

import pytest

import pipeline.scheduler as scheduler
from smap_bench.stage import StageMetrics


class FlakyBroker:
    """Stands in for Celery's send_task: refuses the first ``failures`` publishes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[dict[str, Any]] = []

    def __call__(self, name: str, **kwargs: Any) -> None:
        self.calls.append({"name": name, **kwargs})
        if len(self.calls) <= self.failures:
            raise ConnectionError("broker away")


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FlakyBroker:
    from pipeline.worker import app

    flaky = FlakyBroker(failures=2)
    monkeypatch.setattr(app, "send_task", flaky)
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda s: None)
    return flaky


def test_dispatch_counts_each_retry_and_leaves_none_to_celery(broker: FlakyBroker) -> None:
    metrics = StageMetrics("scheduler")
    dispatch = scheduler.make_dispatch("inference", metrics)
    dispatch([])
    assert len(broker.calls) == 3
    assert metrics.counts["retried"] == 2
    assert all(call["retry"] is False and call["queue"] == "inference" for call in broker.calls)
    assert {call["name"] for call in broker.calls} == {scheduler.TASK_NAME}


class FakeOffsets:
    """A consumer that only reads and writes committed offsets (as SentFrontier uses it)."""

    def __init__(self, committed: dict[tuple[str, int], int], fail: bool = False) -> None:
        self.committed_offsets = dict(committed)
        self.fail = fail
        self.commits: list[list[tuple[str, int, int]]] = []

    def committed(self, parts: list[Any], timeout: float) -> list[Any]:
        if self.fail:
            raise scheduler.KafkaException("broker away")
        out = []
        for part in parts:
            offset = self.committed_offsets.get((part.topic, part.partition), -1001)
            out.append(scheduler.TopicPartition(part.topic, part.partition, offset))
        return out

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        assert asynchronous is False
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])

    def close(self) -> None:
        pass


def _frontier(main: FakeOffsets, sent: FakeOffsets, check: FakeOffsets) -> Any:
    frontier = scheduler.SentFrontier.__new__(scheduler.SentFrontier)
    frontier._main, frontier._sent, frontier._check = main, sent, check
    frontier._looked_up = set()
    return frontier


def test_sent_frontier_reads_each_partition_once_and_says_which_resume() -> None:
    a, b, c = ("telemetry.TCS.sat1", 0), ("telemetry.ACS.sat1", 0), ("telemetry.EPS.sat1", 0)
    frontier = _frontier(
        FakeOffsets({a: 50, b: 20, c: 7}), FakeOffsets({a: 120, c: 9}), FakeOffsets({a: 77})
    )
    # b has no sent frontier: resumed with nothing to drop; c has no check: resumed
    # without one; d was never committed: not resumed
    d = ("telemetry.COM.sat1", 0)
    assert frontier.lookup({a, b, c, d}) == {a: (50, 120, 77), b: (20, 20, None), c: (7, 9, None)}
    assert frontier.lookup({a, b, c, d}) == {}  # looked up once per process


def test_sent_frontier_costs_only_the_frontier_when_the_broker_is_away() -> None:
    frontier = _frontier(FakeOffsets({}, fail=True), FakeOffsets({}), FakeOffsets({}))
    # taken as resumed with nothing to drop: the runs' beginnings are not known
    assert frontier.lookup({("telemetry.TCS.sat1", 0)}) == {
        ("telemetry.TCS.sat1", 0): (-1, -1, None)
    }


def test_sent_frontier_commits_the_check_and_the_frontier() -> None:
    main, sent, check = FakeOffsets({}), FakeOffsets({}), FakeOffsets({})
    frontier = _frontier(main, sent, check)
    key = ("telemetry.TCS.sat1", 0)
    frontier.commit(scheduler.CommitPlan({key: 50}, {key: 120}, {key: 77}))
    frontier.commit(scheduler.CommitPlan({key: 130}, {key: 130}, {}))  # nothing to check
    assert check.commits == [[(*key, 77)]]
    assert sent.commits == [[(*key, 120)], [(*key, 130)]]
    assert main.commits == []  # the group's own offsets are run_kafka_stage's to commit
