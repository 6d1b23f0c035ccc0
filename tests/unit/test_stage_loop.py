"""The Kafka loop's batching and commits, on fake consumers (no broker)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition

from smap_bench.stage import Committer, next_batch


class FakeConsumer:
    """Messages waiting locally; records what consume/poll/commit were asked."""

    def __init__(self, waiting: list[str]) -> None:
        self.waiting = list(waiting)
        self.commits: list[tuple[list[TopicPartition] | None, bool]] = []
        self.calls: list[tuple[str, Any, float]] = []

    def poll(self, timeout: float) -> str | None:
        self.calls.append(("poll", 1, timeout))
        return self.waiting.pop(0) if self.waiting else None

    def consume(self, n: int, timeout: float) -> list[str]:
        self.calls.append(("consume", n, timeout))
        taken, self.waiting = self.waiting[:n], self.waiting[n:]
        return taken

    def commit(self, offsets: list[TopicPartition] | None = None, asynchronous: bool = True):
        self.commits.append((offsets, asynchronous))


def test_a_batch_is_what_is_already_there_up_to_its_size() -> None:
    consumer = FakeConsumer(["a", "b", "c", "d", "e"])
    assert next_batch(consumer, 3, 0.1) == ["a", "b", "c"]  # type: ignore[arg-type]
    # the first message waits up to the poll timeout, the rest are not waited for
    assert consumer.calls == [("poll", 1, 0.1), ("consume", 2, 0.0)]
    assert next_batch(consumer, 10, 0.1, batch_wait_s=0.02) == ["d", "e"]  # type: ignore[arg-type]
    assert consumer.calls[-1] == ("consume", 9, 0.02)
    assert next_batch(consumer, 10, 0.1) == []  # type: ignore[arg-type]
    assert consumer.calls[-1] == ("poll", 1, 0.1)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_without_a_period_every_flushed_batch_is_committed_synchronously() -> None:
    consumer = FakeConsumer([])
    committer = Committer(consumer, None, None)  # type: ignore[arg-type]
    committer.flushed()
    committer.flushed()
    assert consumer.commits == [(None, False), (None, False)]
    committer.final()  # nothing pending
    assert len(consumer.commits) == 2


def test_with_a_period_commits_are_asynchronous_spaced_and_the_last_one_waited_for() -> None:
    consumer = FakeConsumer([])
    clock = Clock()
    positions = iter([[TopicPartition("t", 0, 5)], [TopicPartition("t", 0, 9)]])
    committer = Committer(consumer, lambda: next(positions), 1.0, clock)  # type: ignore[arg-type]
    clock.now = 0.5
    committer.flushed()  # too soon after the start
    assert consumer.commits == []
    committer.idle()
    assert consumer.commits == []
    clock.now = 1.2
    committer.idle()  # pending, and its time has come
    assert [(o[0].offset, a) for o, a in consumer.commits] == [(5, True)]  # type: ignore[index]
    committer.idle()  # nothing pending any more
    clock.now = 1.5
    committer.flushed()
    assert len(consumer.commits) == 1
    committer.final()
    assert [(o[0].offset, a) for o, a in consumer.commits] == [(5, True), (9, False)]  # type: ignore[index]
    committer.final()
    assert len(consumer.commits) == 2
