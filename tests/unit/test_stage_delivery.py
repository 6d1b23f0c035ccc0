"""A stage's producer reports Kafka's refusals, so a batch whose outputs were refused is
never committed (no broker: a closed port makes librdkafka time the messages out)."""

from __future__ import annotations

from confluent_kafka import KafkaError

from smap_bench.stage import Outgoing, StageProducer, deliver, delivery_failures

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
    assert refused is not None and refused.startswith("2 messages")
    assert "timed out" in refused.lower()
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
