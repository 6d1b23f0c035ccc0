"""The topic assigner with a fleet: only the fleet's satellites' partitions are held, and a
satellite that leaves the fleet is released once its partitions are drained (fake
consumer, no broker)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from confluent_kafka import TopicPartition

from smap_bench.config import Settings
from smap_bench.stage import TopicAssigner


class FleetConsumer:
    """Topics of one partition each, with scripted positions and high watermarks."""

    def __init__(self, topics: list[str]) -> None:
        self.topics = topics
        self.assigned: set[str] = set()
        self.position_of: dict[str, int] = {}
        self.high_of: dict[str, int] = {}

    def list_topics(self, timeout: float = 0) -> Any:
        return SimpleNamespace(
            topics={t: SimpleNamespace(error=None, partitions={0: None}) for t in self.topics}
        )

    def committed(self, partitions: list[TopicPartition], timeout: float = 0) -> list:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned |= {tp.topic for tp in partitions}

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        self.assigned -= {tp.topic for tp in partitions}

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.position_of.get(tp.topic, -1001))
            for tp in partitions
        ]

    def get_watermark_offsets(self, partition: TopicPartition, cached: bool = False) -> tuple:
        return 0, self.high_of.get(partition.topic, -1001)


SETTINGS = Settings()
TOPICS = ["telemetry.ACS.sat1", "telemetry.ACS.bench-7", "telemetry.EPS.bench-7", "other"]


def assigner(consumer: FleetConsumer, fleet: set[str]) -> TopicAssigner:
    def keep(topic: str) -> bool:
        return SETTINGS.satellite_of_topic(topic) in fleet

    return TopicAssigner(consumer, [r"^telemetry\..*"], every_s=0.0, keep=keep)  # type: ignore[arg-type]


def test_only_the_fleets_satellites_are_assigned() -> None:
    consumer = FleetConsumer(TOPICS)
    assigner(consumer, {"sat1"}).refresh(force=True)
    assert consumer.assigned == {"telemetry.ACS.sat1"}


def test_a_satellite_leaving_the_fleet_is_released_once_drained() -> None:
    consumer = FleetConsumer(TOPICS)
    fleet = {"sat1", "bench-7"}
    topics = assigner(consumer, fleet)
    topics.refresh(force=True)
    assert consumer.assigned == {
        "telemetry.ACS.sat1",
        "telemetry.ACS.bench-7",
        "telemetry.EPS.bench-7",
    }
    fleet.discard("bench-7")  # the benchmark ended: its satellites marked inactive
    consumer.position_of |= {"telemetry.ACS.bench-7": 90, "telemetry.EPS.bench-7": 100}
    consumer.high_of |= {"telemetry.ACS.bench-7": 100, "telemetry.EPS.bench-7": 100}
    topics.refresh(force=True)
    # EPS consumed to its end: released; ACS still has 10 records to consume: kept
    assert consumer.assigned == {"telemetry.ACS.sat1", "telemetry.ACS.bench-7"}
    consumer.position_of["telemetry.ACS.bench-7"] = 100
    topics.refresh(force=True)
    assert consumer.assigned == {"telemetry.ACS.sat1"}
    fleet.add("bench-7")  # back in the fleet: assigned again, from the committed offset
    topics.refresh(force=True)
    assert "telemetry.EPS.bench-7" in consumer.assigned


def test_a_partition_with_no_known_position_is_not_taken_for_drained() -> None:
    consumer = FleetConsumer(TOPICS)
    fleet = {"bench-7"}
    topics = assigner(consumer, fleet)
    topics.refresh(force=True)
    fleet.clear()
    consumer.high_of["telemetry.ACS.bench-7"] = 100  # nothing consumed yet this run
    topics.refresh(force=True)
    assert "telemetry.ACS.bench-7" in consumer.assigned


def test_the_satellite_of_a_subsystem_topic() -> None:
    assert SETTINGS.satellite_of_topic("telemetry.ACS.sat1") == "sat1"
    assert SETTINGS.satellite_of_topic("telemetry.EPS.bdce41-10") == "bdce41-10"
    assert SETTINGS.satellite_of_topic("inference-results") is None
    custom = Settings(topic_subsystem_template="fleet-{satellite_id}-{subsystem}")
    assert custom.satellite_of_topic("fleet-sat9-TCS") == "sat9"
