"""Pipeline health for the operations API: lag, queue depth, Triton models, stage rates.

Each reader asks one service one cheap question with a short timeout and returns plain
rows, with the reason in ``detail`` when it could not answer: a health page must report
a service that is down, never fail because of it. The arithmetic (lag from offsets,
rows from query results) is in pure functions.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx

from smap_bench.config import Settings
from smap_bench.metrics import Series, VictoriaMetrics

TIMEOUT_S = 2.0

#: Consumer groups reported by default: the pipeline's Kafka stages (a stage's name is its
#: consumer group).
DEFAULT_GROUPS: tuple[str, ...] = ("router", "scheduler", "writer", "events")

#: The window over which rates and latency quantiles are computed.
RATE_WINDOW = "1m"

#: Stage whose intake is the pipeline's ingestion rate (raw telemetry messages).
INGESTION_STAGE = "router"

TopicPartitionKey = tuple[str, int]


def default_queues() -> tuple[str, ...]:
    """The RabbitMQ queues reported by default: the inference tasks' queue."""
    from smap_bench.scheduling import DEFAULT_QUEUE

    return (DEFAULT_QUEUE,)


# --------------------------------------------------------------------------- Kafka lag


def group_lag(
    committed: Mapping[TopicPartitionKey, int],
    latest: Mapping[TopicPartitionKey, int],
    held: int = 0,
) -> int | None:
    """Messages a group has still to read: end offset minus committed offset, summed over
    the partitions it has committed on, less ``held`` per partition (messages past the
    committed offset that the group has already handled; never below 0). ``None`` if an
    end offset is missing."""
    total = 0
    for key, offset in committed.items():
        if offset < 0:
            continue
        end = latest.get(key)
        if end is None or end < 0:
            return None
        total += max(end - offset - held, 0)
    return total


def scheduler_backlog_offsets(settings: Settings) -> tuple[str, int]:
    """Where the scheduler's backlog is read from: the group whose offsets are its sent
    frontier, and the records past that frontier its dispatched windows already hold.

    The scheduler's own group commits the oldest record a future window's context needs,
    up to a context (460 records with the forecaster) behind what it has read, by design
    (a restart re-reads it); measured against those, an idle stream would read as
    hundreds of records behind for ever. Its companion ``<group>.sent``, committed with
    them, holds the sent frontier: the first record of the next window not yet
    dispatched. The dispatched windows already hold the ``window - stride`` records after
    it, so the backlog is the records on the topic past those: what no dispatched window
    holds yet."""
    from smap_bench.scheduling import STAGE, sent_group

    return sent_group(STAGE), settings.window_size - settings.stride


def consumer_lag(
    settings: Settings, groups: Sequence[str], admin: Any = None
) -> list[dict[str, Any]]:
    """Lag of each consumer group (committed offsets against end offsets; the
    scheduler's is its backlog, :func:`scheduler_backlog_offsets`)."""
    from confluent_kafka.admin import AdminClient

    from smap_bench.scheduling import STAGE as SCHEDULER

    admin = admin or AdminClient(
        {"bootstrap.servers": settings.kafka_bootstrap, "socket.timeout.ms": 2000, "log_level": 0}
    )
    rows = []
    for group in groups:
        try:
            if group == SCHEDULER:
                lag, parts, detail = _scheduler_lag(settings, admin)
            else:
                committed = _committed(admin, group)
                lag = group_lag(committed, _ends(admin, committed)) if committed else None
                parts = len(committed)
                detail = "" if committed else NO_COMMITS
            rows.append({"group": group, "lag": lag, "partitions": parts, "detail": detail})
        except Exception as exc:
            rows.append({"group": group, "lag": None, "partitions": 0, "detail": f"Kafka: {exc}"})
    return rows


NO_COMMITS = "no committed offsets (group unknown or idle)"


def _committed(admin: Any, group: str) -> dict[TopicPartitionKey, int]:
    from confluent_kafka import ConsumerGroupTopicPartitions

    futures = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=TIMEOUT_S
    )
    result = futures[group].result(timeout=TIMEOUT_S + 1)
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in result.topic_partitions or []
        if tp.error is None
    }


def _ends(admin: Any, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    wanted = {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions}
    if not wanted:
        return {}
    return {
        (tp.topic, tp.partition): future.result(timeout=TIMEOUT_S + 1).offset
        for tp, future in admin.list_offsets(wanted, request_timeout=TIMEOUT_S).items()
    }


def _scheduler_lag(settings: Settings, admin: Any) -> tuple[int | None, int, str]:
    """The scheduler's backlog (:func:`scheduler_backlog_offsets`), with the group's own
    offsets standing in for a partition that has no sent frontier committed (said in the
    detail: there the figure includes the context it holds back)."""
    from smap_bench.scheduling import STAGE as SCHEDULER

    source, held = scheduler_backlog_offsets(settings)
    frontier = _committed(admin, source)
    own = {
        key: offset for key, offset in _committed(admin, SCHEDULER).items() if key not in frontier
    }
    if not frontier and not own:
        return None, 0, NO_COMMITS
    ends = _ends(admin, [*frontier, *own])
    backlog, fallback = group_lag(frontier, ends, held), group_lag(own, ends)
    lag = None if backlog is None or fallback is None else backlog + fallback
    detail = (
        f"records no dispatched window holds yet: from {source}, the sent frontier, less"
        f" the {held} records past it its windows hold (a lower bound before a run's first"
        " window is sent)"
    )
    if own:
        detail += (
            f"; {len(own)} partitions without a sent frontier, read from the group's own"
            " offsets (up to a context behind by design)"
        )
    return lag, len(frontier) + len(own), detail


# --------------------------------------------------------------------------- RabbitMQ


def queue_depths(settings: Settings, queues: Sequence[str]) -> list[dict[str, Any]]:
    """Messages ready and consumers of each queue (a passive declare: nothing is created)."""
    from kombu import Connection

    rows = []
    try:
        with Connection(settings.rabbitmq_url, connect_timeout=TIMEOUT_S) as connection:
            connection.ensure_connection(max_retries=1)
            for queue in queues:
                channel = connection.channel()
                try:
                    declared = channel.queue_declare(queue=queue, passive=True)
                    rows.append(
                        {
                            "queue": queue,
                            "messages": int(declared.message_count),
                            "consumers": int(declared.consumer_count),
                            "detail": "",
                        }
                    )
                except Exception as exc:
                    # A missing queue closes the channel (404 NOT_FOUND); the next gets a new one.
                    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    rows.append(
                        {"queue": queue, "messages": None, "consumers": None, "detail": reason}
                    )
                finally:
                    with contextlib.suppress(Exception):
                        channel.close()
    except Exception as exc:
        reason = f"RabbitMQ: {exc}"
        done = {row["queue"] for row in rows}
        rows += [
            {"queue": q, "messages": None, "consumers": None, "detail": reason}
            for q in queues
            if q not in done
        ]
    return rows


# --------------------------------------------------------------------------- Triton


def triton_models(settings: Settings) -> dict[str, Any]:
    """Server readiness and each model's state from Triton's repository index."""
    base = f"http://{settings.triton_http_url}"
    try:
        ready = httpx.get(f"{base}/v2/health/ready", timeout=TIMEOUT_S).status_code == 200
        index = httpx.post(f"{base}/v2/repository/index", json={}, timeout=TIMEOUT_S)
        index.raise_for_status()
        models = [
            {
                "name": str(item.get("name")),
                "version": str(item["version"]) if item.get("version") is not None else None,
                "state": item.get("state"),
                "reason": item.get("reason") or None,
            }
            for item in index.json()
        ]
    except (httpx.HTTPError, ValueError) as exc:
        return {"ready": False, "models": [], "detail": f"Triton at {base}: {exc}"}
    return {"ready": ready, "models": models, "detail": ""}


# --------------------------------------------------------------------------- stage metrics


def stage_queries(window: str = RATE_WINDOW) -> dict[str, str]:
    """The instant queries behind :func:`stage_stats`, one value per ``stage`` label."""
    rate = "sum by (stage) (rate({name}[{window}]))"
    quantile = (
        "histogram_quantile({q}, sum by (stage, le) "
        "(rate(smap_stage_latency_seconds_bucket[{window}])))"
    )
    return {
        "received_per_s": rate.format(name="smap_stage_received_total", window=window),
        "produced_per_s": rate.format(name="smap_stage_produced_total", window=window),
        "rejected_per_s": rate.format(name="smap_stage_rejected_total", window=window),
        "lost_per_s": rate.format(name="smap_stage_lost_total", window=window),
        "latency_p50_s": quantile.format(q=0.5, window=window),
        "latency_p99_s": quantile.format(q=0.99, window=window),
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def stage_rows(results: Mapping[str, Iterable[Series]]) -> list[dict[str, Any]]:
    """One row per stage from each query's result (missing values are None)."""
    rows: dict[str, dict[str, Any]] = {}
    for field, series_list in results.items():
        for series in series_list:
            stage = series.labels.get("stage")
            if not stage or not series.samples:
                continue
            row = rows.setdefault(stage, {"stage": stage} | dict.fromkeys(results))
            row[field] = _finite(series.samples[-1][1])
    return [rows[name] for name in sorted(rows)]


def stage_stats(victoria: VictoriaMetrics) -> list[dict[str, Any]]:
    """Each stage's received / produced / rejected / lost rates and latency p50 / p99."""
    return stage_rows({field: victoria.query(q) for field, q in stage_queries().items()})


def ingestion_rate(stages: Sequence[Mapping[str, Any]]) -> float | None:
    """Raw telemetry messages per second taken in by the pipeline (the router's intake)."""
    for row in stages:
        if row["stage"] == INGESTION_STAGE:
            value = row.get("received_per_s")
            return float(value) if value is not None else None
    return None
