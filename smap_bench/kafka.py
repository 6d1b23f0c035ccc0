"""Kafka plumbing shared by every stage: client configuration and topic creation.

Works with any Kafka-protocol broker reached through ``SMAP_KAFKA_BOOTSTRAP``: Apache
Kafka in production, the Tansu broker in the local stack.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from smap_bench.config import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 1


def topic_specs(
    settings: Settings, satellite_ids: Iterable[str], subsystems: Iterable[str]
) -> list[TopicSpec]:
    """Every topic the pipeline uses, for the given satellites and subsystems."""
    specs = [
        TopicSpec(settings.topic_raw, settings.topic_raw_partitions),
        TopicSpec(settings.topic_results, settings.topic_raw_partitions),
        TopicSpec(settings.topic_dead_letter, 1),
        TopicSpec(settings.topic_control, 1),
        TopicSpec(settings.topic_status, 1),
    ]
    subsystem_list = list(subsystems)
    specs += [
        TopicSpec(settings.subsystem_topic(subsystem, satellite))
        for satellite in satellite_ids
        for subsystem in subsystem_list
    ]
    return specs


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap})


def ensure_topics(settings: Settings, specs: Iterable[TopicSpec], timeout_s: float = 30) -> int:
    """Create the topics that do not exist yet; returns how many were created.

    Idempotent: a topic that already exists (with whatever partition count) is left alone.
    """
    admin = admin_client(settings)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [spec for spec in specs if spec.name not in existing]
    if not missing:
        return 0
    futures = admin.create_topics(
        [
            NewTopic(spec.name, num_partitions=spec.partitions, replication_factor=1)
            for spec in missing
        ],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created = 0
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            created += 1
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise RuntimeError(f"could not create Kafka topic {name}: {error}") from None
    return created


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer that joins quickly, commits manually, shares topics fairly, and fetches
    with little delay.

    Short session timeouts make group joins take seconds instead of tens of seconds;
    round-robin assignment spreads one-partition topics over the group's members.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "partition.assignment.strategy": "roundrobin",
        # The broker answers a fetch when data is there or after this wait; the local
        # Tansu broker does not wake a waiting fetch on new data, so the default 500 ms
        # became each hop's latency. Much shorter waits cost the broker CPU (each fetch
        # walks every assigned partition); 100 ms bounds the wait per hop.
        "fetch.wait.max.ms": 100,
    }
    config.update(overrides)
    return config


def producer_config(settings: Settings, client_id: str, **overrides: Any) -> dict[str, Any]:
    """An idempotent producer: retries never duplicate or reorder within a partition."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    config.update(overrides)
    return config
