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
    """Topics of one partition each, with scripted committed offsets, positions and high
    watermarks."""

    def __init__(self, topics: list[str]) -> None:
        self.topics = topics
        self.assigned: dict[str, int] = {}  #: topic -> offset it was assigned from
        self.committed_of: dict[str, int] = {}
        self.position_of: dict[str, int] = {}
        self.high_of: dict[str, int] = {}

    def list_topics(self, timeout: float = 0) -> Any:
        return SimpleNamespace(
            topics={t: SimpleNamespace(error=None, partitions={0: None}) for t in self.topics}
        )

    def committed(self, partitions: list[TopicPartition], timeout: float = 0) -> list:
        return [
            TopicPartition(tp.topic, tp.partition, self.committed_of.get(tp.topic, -1001))
            for tp in partitions
        ]

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned |= {tp.topic: tp.offset for tp in partitions}

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            del self.assigned[tp.topic]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.position_of.get(tp.topic, -1001))
            for tp in partitions
        ]

    def get_watermark_offsets(self, partition: TopicPartition, cached: bool = False) -> tuple:
        assert cached, "the cached watermarks: no broker request per partition and pass"
        return 0, self.high_of.get(partition.topic, -1001)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


SETTINGS = Settings()
SAT1, ACS7, EPS7 = "telemetry.ACS.sat1", "telemetry.ACS.bench-7", "telemetry.EPS.bench-7"
TOPICS = [SAT1, ACS7, EPS7, "other"]


def assigner(consumer: FleetConsumer, fleet: set[str], clock: Clock | None = None) -> TopicAssigner:
    def keep(topic: str) -> bool:
        return SETTINGS.satellite_of_topic(topic) in fleet

    return TopicAssigner(
        consumer,  # type: ignore[arg-type]
        [r"^telemetry\..*"],
        every_s=0.0,
        keep=keep,
        release_after_s=60.0,
        clock=clock or Clock(),
    )


def test_only_the_fleets_satellites_are_assigned_from_their_committed_offset() -> None:
    consumer = FleetConsumer(TOPICS)
    consumer.committed_of[SAT1] = 42
    assigner(consumer, {"sat1"}).refresh(force=True)
    assert consumer.assigned == {SAT1: 42}


def test_a_satellite_leaving_the_fleet_is_released_once_drained_and_quiet() -> None:
    consumer, clock = FleetConsumer(TOPICS), Clock()
    fleet = {"sat1", "bench-7"}
    topics = assigner(consumer, fleet, clock)
    topics.refresh(force=True)
    assert set(consumer.assigned) == {SAT1, ACS7, EPS7}
    fleet.discard("bench-7")  # marked inactive: the router may still route for a while
    consumer.position_of |= {ACS7: 90, EPS7: 100}
    consumer.high_of |= {ACS7: 100, EPS7: 100}
    topics.refresh(force=True)
    assert set(consumer.assigned) == {SAT1, ACS7, EPS7}  # EPS drained, but only just
    clock.now = 30.0
    consumer.high_of[EPS7] = consumer.position_of[EPS7] = 103  # records still came in
    topics.refresh(force=True)
    clock.now = 80.0  # 80 s since drained first, 50 s since its end last moved
    topics.refresh(force=True)
    assert set(consumer.assigned) == {SAT1, ACS7, EPS7}
    clock.now = 95.0  # quiet for 65 s: released; ACS still holds 10 records to consume
    topics.refresh(force=True)
    assert set(consumer.assigned) == {SAT1, ACS7}
    consumer.position_of[ACS7] = 100
    topics.refresh(force=True)
    clock.now = 160.0
    topics.refresh(force=True)
    assert set(consumer.assigned) == {SAT1}
    fleet.add("bench-7")  # back in the fleet: assigned again, from the committed offset
    consumer.committed_of[EPS7] = 97
    topics.refresh(force=True)
    assert consumer.assigned[EPS7] == 97


def test_a_partition_nothing_was_consumed_from_is_judged_from_where_it_started() -> None:
    consumer, clock = FleetConsumer(TOPICS), Clock()
    fleet = {"bench-7"}
    consumer.committed_of |= {ACS7: 100, EPS7: 40}
    topics = assigner(consumer, fleet, clock)
    topics.refresh(force=True)
    fleet.clear()
    consumer.high_of |= {ACS7: 100, EPS7: 100}  # ACS: nothing new since; EPS: 60 unread
    topics.refresh(force=True)
    clock.now = 61.0
    topics.refresh(force=True)
    assert set(consumer.assigned) == {EPS7}


def test_an_unknown_end_is_not_taken_for_drained() -> None:
    consumer, clock = FleetConsumer(TOPICS), Clock()
    fleet = {"bench-7"}
    topics = assigner(consumer, fleet, clock)
    topics.refresh(force=True)
    fleet.clear()
    consumer.position_of[ACS7] = 5  # consumed, but no fetch answer has told the end yet
    for clock.now in (0.0, 61.0, 200.0):
        topics.refresh(force=True)
    assert ACS7 in consumer.assigned


def test_the_satellite_of_a_subsystem_topic() -> None:
    assert SETTINGS.satellite_of_topic("telemetry.ACS.sat1") == "sat1"
    assert SETTINGS.satellite_of_topic("telemetry.EPS.bdce41-10") == "bdce41-10"
    assert SETTINGS.satellite_of_topic("telemetry.XYZ.sat1") is None  # no such subsystem
    assert SETTINGS.satellite_of_topic("inference-results") is None
    dashed = Settings(topic_subsystem_template="{subsystem}-{satellite_id}")
    assert dashed.satellite_of_topic("ACS-sat-9") == "sat-9"
    custom = Settings(topic_subsystem_template="fleet-{satellite_id}-{subsystem}")
    assert custom.satellite_of_topic("fleet-sat9-TCS") == "sat9"
    assert Settings(topic_subsystem_template="t.{subsystem}").satellite_of_topic("t.ACS") is None
