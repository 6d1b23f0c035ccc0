"""Pipeline health arithmetic: consumer lag from offsets, stage rows from query results."""

from __future__ import annotations

import math

from smap_bench.api.monitor import group_lag, ingestion_rate, stage_queries, stage_rows
from smap_bench.metrics import Series


def test_lag_is_end_minus_committed_summed_over_partitions() -> None:
    committed = {("raw", 0): 10, ("raw", 1): 5, ("results", 0): 7}
    latest = {("raw", 0): 15, ("raw", 1): 5, ("results", 0): 9}
    assert group_lag(committed, latest) == 5 + 0 + 2


def test_a_commit_past_the_end_counts_zero_not_negative() -> None:
    assert group_lag({("t", 0): 12}, {("t", 0): 10}) == 0


def test_partitions_without_a_commit_are_left_out() -> None:
    assert group_lag({("t", 0): -1001, ("t", 1): 3}, {("t", 1): 4}) == 1


def test_a_missing_end_offset_makes_the_lag_unknown() -> None:
    assert group_lag({("t", 0): 3}, {}) is None
    assert group_lag({("t", 0): 3}, {("t", 0): -1}) is None


def test_no_commits_is_zero_lag() -> None:
    assert group_lag({}, {("t", 0): 100}) == 0


def test_stage_rows_join_the_queries_by_stage_and_drop_nan() -> None:
    results = {
        "received_per_s": [
            Series({"stage": "router"}, [(1.0, 5.0), (2.0, 7.5)]),
            Series({"stage": "writer"}, [(2.0, 3.0)]),
        ],
        "latency_p99_s": [Series({"stage": "router"}, [(2.0, math.nan)])],
        "produced_per_s": [Series({}, [(2.0, 1.0)]), Series({"stage": "writer"}, [])],
    }
    rows = stage_rows(results)
    assert rows == [
        {"stage": "router", "received_per_s": 7.5, "latency_p99_s": None, "produced_per_s": None},
        {"stage": "writer", "received_per_s": 3.0, "latency_p99_s": None, "produced_per_s": None},
    ]
    assert ingestion_rate(rows) == 7.5
    assert ingestion_rate(rows[1:]) is None


def test_stage_queries_use_the_stage_self_metrics() -> None:
    queries = stage_queries("5m")
    assert queries["received_per_s"] == "sum by (stage) (rate(smap_stage_received_total[5m]))"
    assert queries["lost_per_s"] == "sum by (stage) (rate(smap_stage_lost_total[5m]))"
    assert "histogram_quantile(0.99," in queries["latency_p99_s"]
    assert "smap_stage_latency_seconds_bucket[5m]" in queries["latency_p50_s"]
    assert "by (stage, le)" in queries["latency_p50_s"]


def test_held_messages_past_the_commit_are_not_lag() -> None:
    # the scheduler's sent frontier: its dispatched windows hold the 20 records after it
    committed = {("t", 0): 100, ("t", 1): 100, ("t", 2): 100}
    latest = {("t", 0): 120, ("t", 1): 129, ("t", 2): 150}
    assert group_lag(committed, latest, held=20) == 0 + 9 + 30


def test_the_schedulers_backlog_is_read_from_its_sent_frontier() -> None:
    from smap_bench.api.monitor import scheduler_backlog_offsets
    from smap_bench.config import Settings

    assert scheduler_backlog_offsets(Settings(window_size=30, stride=10)) == ("scheduler.sent", 20)


def test_consumer_lag_reads_the_scheduler_from_its_companion_group() -> None:
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    from smap_bench.api.monitor import consumer_lag
    from smap_bench.config import Settings

    class Done:
        def __init__(self, value: object) -> None:
            self.value = value

        def result(self, timeout: float | None = None) -> object:
            return self.value

    class End:
        offset = 1000

    class FakeAdmin:
        """Offsets as a scheduler leaves them: its own group a context behind its reads,
        the sent frontier at the next window's first record; one partition (sat2) has
        no sent frontier committed."""

        def __init__(self) -> None:
            self.asked: list[str] = []
            self.offsets = {
                "scheduler": {"telemetry.EPS.sat1": 540, "telemetry.EPS.sat2": 700},
                "scheduler.sent": {"telemetry.EPS.sat1": 980},
                "router": {"telemetry-raw": 995},
            }

        def list_consumer_group_offsets(self, requests: list, request_timeout: float) -> dict:
            group = requests[0].group_id
            self.asked.append(group)
            parts = [TopicPartition(t, 0, o) for t, o in self.offsets[group].items()]
            return {group: Done(ConsumerGroupTopicPartitions(group, parts))}

        def list_offsets(self, wanted: dict, request_timeout: float) -> dict:
            return {tp: Done(End()) for tp in wanted}

    admin = FakeAdmin()
    rows = consumer_lag(Settings(window_size=30, stride=10), ["scheduler", "router"], admin)
    assert admin.asked == ["scheduler.sent", "scheduler", "router"]
    # sat1: 1000 - 980 - 20 = 0; sat2, without a frontier: 1000 - 700 from its own offsets
    assert [(r["group"], r["lag"], r["partitions"]) for r in rows] == [
        ("scheduler", 300, 2),
        ("router", 5, 1),
    ]
    assert "sent frontier" in rows[0]["detail"]
    assert "1 partitions without a sent frontier" in rows[0]["detail"]
    assert rows[1]["detail"] == ""
