"""A stage's producer reports Kafka's refusals, so a batch whose outputs were refused is
never committed (no broker: a closed port makes librdkafka time the messages out)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError

from smap_bench.config import Settings
from smap_bench.stage import (
    Outgoing,
    StageMetrics,
    StageProducer,
    StopFlag,
    deliver,
    delivery_failures,
    is_transient,
    run_kafka_stage,
)

NOWHERE = {
    "bootstrap.servers": "127.0.0.1:9",  # nothing listens: every message times out
    "message.timeout.ms": 300,
    "enable.idempotence": True,
    "log_level": 0,
}


def test_refusals_of_messages_without_their_own_callback_are_counted_once() -> None:
    producer = StageProducer(NOWHERE)
    own: list[KafkaError | None] = []
    producer.produce("t", b"a")
    producer.produce("t", b"b")
    producer.produce("t", b"c", on_delivery=lambda error, _message: own.append(error))
    assert producer.flush(10) == 0  # every message answered ...
    refused = delivery_failures(producer)  # ... but two of them refused
    assert refused is not None and (refused.transient, refused.permanent) == (2, 0)
    assert "timed out" in str(refused.first_transient).lower()
    assert len(own) == 1 and own[0] is not None  # its own callback, not counted twice
    assert delivery_failures(producer) is None  # taken


def test_deliver_sees_the_refusals_on_a_stage_producer() -> None:
    producer = StageProducer(NOWHERE)
    delivery = deliver(producer, [Outgoing("t", b"a"), Outgoing("t", b"b")], 10)
    assert delivery.confirmed == frozenset()
    assert delivery.problem is not None
    assert delivery_failures(producer) is None  # answered through deliver's callbacks


def test_a_default_callback_given_in_the_configuration_is_still_called() -> None:
    seen: list[KafkaError | None] = []
    producer = StageProducer({**NOWHERE, "on_delivery": lambda error, _m: seen.append(error)})
    producer.produce("t", b"a")
    producer.flush(10)
    assert len(seen) == 1 and seen[0] is not None
    assert delivery_failures(producer) is not None


class FakeMessage:
    def error(self) -> None:
        return None


class OneBatchConsumer:
    """Hands out one batch of one message, then nothing; records commits."""

    def __init__(self, _config: dict) -> None:
        self.batches = [[FakeMessage()]]
        self.commits: list[bool] = []
        OneBatchConsumer.last = self

    def subscribe(self, _topics: list[str]) -> None:
        pass

    def poll(self, _timeout: float) -> FakeMessage | None:
        batch = self.batches.pop(0) if self.batches else []
        return batch[0] if batch else None

    def consume(self, _n: int, timeout: float = 0) -> list[FakeMessage]:
        return []

    def commit(self, offsets: object = None, asynchronous: bool = True) -> None:
        self.commits.append(asynchronous)

    def close(self) -> None:
        pass


def run_one_batch(monkeypatch: pytest.MonkeyPatch, handle: Callable) -> StageMetrics:
    monkeypatch.setattr("smap_bench.stage.Consumer", OneBatchConsumer)
    producer = StageProducer(NOWHERE)
    metrics = StageMetrics("router")
    stop = StopFlag()
    polls = {"n": 0}

    def tick() -> None:
        polls["n"] += 1
        if polls["n"] >= 2:
            stop.event.set()

    run_kafka_stage(
        Settings(),
        "router",
        ["t"],
        lambda batch: handle(producer),
        producer,
        stop,
        metrics=metrics,
        on_tick=tick,
    )
    return metrics


def test_a_batch_whose_output_kafka_refused_for_now_is_not_committed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(RuntimeError, match="not committed"):
        run_one_batch(monkeypatch, lambda producer: producer.produce("t", b"a"))  # times out
    assert OneBatchConsumer.last.commits == []


def test_an_output_refused_for_good_is_counted_lost_and_the_stage_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused_for_good(producer: StageProducer) -> None:
        # what the broker answers a message it will never take (as librdkafka reports it)
        producer.failures(KafkaError(KafkaError.INVALID_RECORD), None)  # type: ignore[arg-type]

    metrics = run_one_batch(monkeypatch, refused_for_good)
    assert metrics.counts["lost"] == 1
    assert OneBatchConsumer.last.commits == [False]  # the batch committed, the loop went on


def test_transient_and_permanent_refusals_are_told_apart() -> None:
    assert is_transient(KafkaError(KafkaError._MSG_TIMED_OUT))
    assert is_transient(KafkaError(KafkaError._TRANSPORT))
    assert not is_transient(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    assert not is_transient(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
