"""Inference scheduler: subsystem topics in, ``run_inference_task`` messages out.

Consumes every ``telemetry.{subsystem}.{satellite_id}`` topic (a regex subscription, so
new satellites are picked up within seconds), forms windows per (satellite, subsystem)
with :class:`smap_bench.scheduling.WindowScheduler`, and sends them to the Celery workers
over RabbitMQ, several windows per message. Kafka offsets are committed after the
messages are confirmed by RabbitMQ, and only up to the oldest record a future window
(or its context) still needs, so a restart loses no window; the sent frontier, committed
for the companion group ``<group>.sent`` (with the record expected where it resumes, in
``<group>.check``), tells a restarted scheduler which of the windows it re-forms were sent
already (:mod:`smap_bench.scheduling`), so after a clean stop it sends none twice and its
first windows carry the context they would have carried without the restart.

Run::

    python -m pipeline.scheduler                      # all subsystem topics, group "scheduler"
    python -m pipeline.scheduler --max-windows 32 --batch-wait-ms 10

Micro-batching: a batch is the records already fetched when its first one arrives (up to
``--batch-size``, ``--batch-wait-ms`` more when asked); its windows go out in messages of
up to ``--max-windows``, spread over at least ``SMAP_WORKERS`` messages so that every
worker takes a share of a burst (all streams complete a window on the same second).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from prometheus_client import Counter
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from pipeline.router import Fleet
from smap_bench.config import Settings, get_settings
from smap_bench.inference.repository import find_onnx_models
from smap_bench.kafka import consumer_config
from smap_bench.scheduling import (
    DEFAULT_QUEUE,
    STAGE,
    TASK_NAME,
    CommitPlan,
    PartitionKey,
    Position,
    WindowScheduler,
    batch_tasks,
    check_group,
    encode_tasks,
    sent_group,
)
from smap_bench.schema import InferenceTask
from smap_bench.scoring import elapsed_since
from smap_bench.stage import (
    COMMIT_EVERY_S,
    StageMetrics,
    run_kafka_stage,
    start_stage,
)

log = logging.getLogger(f"smap_bench.{STAGE}")

DEFAULT_TOPICS = r"^telemetry\..*"
#: How long a send to RabbitMQ is retried before the scheduler gives up (and restarts).
DISPATCH_RETRY_S = 60.0


class ModelIndex:
    """Which models the repository holds, re-read at most every ``refresh_s`` seconds.

    An empty or missing repository checks nothing (the worker then refuses unknown
    models), so a scheduler deployed without the repository still runs.
    """

    def __init__(self, settings: Settings, refresh_s: float = 30.0) -> None:
        self.root = settings.model_repository
        self.refresh_s = refresh_s
        self._names: set[str] = set()
        self._read_at = -float("inf")

    def __call__(self, name: str) -> bool:
        now = time.monotonic()
        age = now - self._read_at
        if age > self.refresh_s or (name not in self._names and age > 1.0):
            self._names = set(find_onnx_models(self.root))
            self._read_at = now
        return not self._names or name in self._names


class SentFrontier:
    """The scheduler's committed positions across restarts (:mod:`smap_bench.scheduling`):
    where each partition resumes (its consumer group's committed offset), its sent
    frontier (the companion group ``<group>.sent``) and the record expected where it
    resumes (``<group>.check``), read once per partition and committed with the group's
    offsets, the companions first.

    Consumers that never subscribe serve only to read and write committed offsets; a broker
    that cannot answer costs the frontier (windows re-sent after a restart, as without
    one), never a window."""

    def __init__(self, settings: Settings, group: str) -> None:
        self._main = Consumer(consumer_config(settings, group))
        self._sent = Consumer(consumer_config(settings, sent_group(group)))
        self._check = Consumer(consumer_config(settings, check_group(group)))
        self._looked_up: set[PartitionKey] = set()

    def lookup(self, keys: set[PartitionKey]) -> dict[PartitionKey, tuple[int, int, int | None]]:
        """The committed (read, sent, check) of partitions not looked up before that a
        restart resumes (a committed read position), and (-1, -1, None) for all of them
        when the broker cannot say."""
        wanted = sorted(keys - self._looked_up)
        if not wanted:
            return {}
        self._looked_up.update(wanted)
        parts = [TopicPartition(topic, partition) for topic, partition in wanted]
        try:
            found = [c.committed(parts, timeout=10) for c in (self._main, self._sent, self._check)]
        except KafkaException as error:
            log.warning("%s: sent frontiers not read (%s): windows may be re-sent", STAGE, error)
            # taken as resumed: their runs' beginnings are not known (nothing is dropped)
            return {key: (-1, -1, None) for key in wanted}
        out: dict[PartitionKey, tuple[int, int, int | None]] = {}
        for read, sent, check in zip(*found, strict=True):
            if read.offset >= 0:  # resumed; without a sent frontier, nothing is dropped
                frontier = sent.offset if sent.offset >= 0 else read.offset
                fingerprint = check.offset if check.offset >= 0 else None
                out[(read.topic, read.partition)] = (read.offset, frontier, fingerprint)
        return out

    def commit(self, plan: CommitPlan) -> None:
        """Commit the sent frontiers and the checks (before the group's own offsets; a
        crash between them costs re-sent windows, never a lost one)."""
        for consumer, offsets in ((self._check, plan.check), (self._sent, plan.sent)):
            if not offsets:
                continue
            try:
                consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    asynchronous=False,
                )
            except KafkaException as error:
                log.warning("%s: sent frontiers not committed (%s)", STAGE, error)

    def close(self) -> None:
        for consumer in (self._main, self._sent, self._check):
            consumer.close()


def make_dispatch(queue: str, metrics: StageMetrics) -> Callable[[list[InferenceTask]], None]:
    """A function that sends one Celery message of windows, retrying while RabbitMQ is away.

    Every retry is counted (``retried``): a publish whose confirmation was lost may reach
    the queue twice, and the worker's count then exceeds the scheduler's by its windows."""
    from pipeline.worker import app

    def dispatch(tasks: list[InferenceTask]) -> None:
        payload = encode_tasks(tasks)
        for attempt in Retrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            stop=stop_after_delay(DISPATCH_RETRY_S),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    metrics.retried()
                # retry=False: Celery's own publish retries are not counted; this loop's are
                app.send_task(TASK_NAME, args=[payload], queue=queue, retry=False)

    return dispatch


def run(
    settings: Settings,
    *,
    topics: Sequence[str] = (DEFAULT_TOPICS,),
    group: str = STAGE,
    queue: str = DEFAULT_QUEUE,
    max_windows: int = 32,
    poll_ms: float = 25.0,
    batch_wait_ms: float = 0.0,
    min_messages: int | None = None,
    batch_size: int = 5000,
    fetch_wait_ms: int = 250,
    fetch_min_bytes: int = 1,
    active_only: bool = False,
    metrics_port: int | None = None,
) -> WindowScheduler:
    """Run the scheduler until SIGTERM/SIGINT; returns its state (counts) at the end."""
    metrics, stop, producer, dead_letter, port = start_stage(settings, STAGE, metrics_port)
    core = WindowScheduler(
        settings.window_size,
        settings.stride,
        known_models=ModelIndex(settings),
        context=settings.context_length,
        forecast=settings.forecast_context,
    )
    dispatch = make_dispatch(queue, metrics)
    spread = settings.workers if min_messages is None else min_messages
    frontier = SentFrontier(settings, group)
    # Windows re-formed after a restart that were sent before it: neither produced nor
    # rejected, counted here so that every window a run forms is accounted for.
    already_sent = Counter(
        "smap_scheduler_already_sent",
        "Windows re-formed after a restart and not sent again (sent before it)",
        registry=metrics.registry,
    )

    def handle(batch: Sequence[Message]) -> None:
        tasks = []
        partitions = {(str(m.topic()), int(m.partition() or 0)) for m in batch}
        new = {key for key in partitions if not core.knows_partition(key)}
        if new:
            core.resume(frontier.lookup(new))
        for message in batch:
            position = Position(
                str(message.topic()), int(message.partition() or 0), int(message.offset() or 0)
            )
            outcome = core.accept(message.value(), position)
            if outcome.redelivered:
                continue
            metrics.received()
            if outcome.rejected is not None:
                dead_letter.send(message.value(), outcome.rejected, message)
            elif outcome.task is not None:
                tasks.append(outcome.task)
            elif outcome.already_sent:
                already_sent.inc()
        for chunk in batch_tasks(tasks, max_windows, spread):
            dispatch(chunk)
            metrics.produced(len(chunk))
        for task in tasks:
            seconds = elapsed_since(task.stages)
            if seconds is not None:
                metrics.latency(seconds)

    # --active-only: a satellite's topics are held while the router's fleet holds it
    # (an unknown id re-reads PostgreSQL at most once a second: once per discovery pass)
    fleet = Fleet(settings) if active_only else None

    def keep_topic(topic: str) -> bool:
        satellite = settings.satellite_of_topic(topic)
        return fleet is None or satellite is None or fleet(satellite)

    def commit_offsets() -> list[TopicPartition]:
        plan = core.commit_plan()
        frontier.commit(plan)
        return [TopicPartition(t, p, o) for (t, p), o in plan.read.items()]

    log.info(
        "%s: group %s, queue %s, windows %d/%d, up to %d windows per task over at least %d"
        " tasks, metrics on %d",
        STAGE,
        group,
        queue,
        settings.window_size,
        settings.stride,
        max_windows,
        spread,
        port,
    )
    run_kafka_stage(
        settings,
        STAGE,
        list(topics),
        handle,
        producer,
        stop,
        metrics=metrics,
        batch_size=batch_size,
        poll_timeout_s=poll_ms / 1000.0,
        batch_wait_s=batch_wait_ms / 1000.0,
        commit_offsets=commit_offsets,
        commit_every_s=COMMIT_EVERY_S,
        # Each fetch costs the local Tansu broker work for every assigned partition (seven
        # per satellite), with or without data, and it answers a fetch early when data
        # comes: a longer wait cuts the idle fetches, not the latency.
        consumer_overrides={
            "group.id": group,
            "fetch.wait.max.ms": fetch_wait_ms,
            "fetch.min.bytes": fetch_min_bytes,
        },
        # One scheduler per group: it assigns itself every telemetry partition and finds a
        # new satellite's topics within five seconds, with no group rebalance to wait on.
        discover_every_s=5.0,
        # An inactive satellite's partitions are released once drained and quiet: after a
        # benchmark the broker no longer answers fetches for its fleet's idle topics.
        keep_topic=keep_topic if fleet is not None else None,
        on_tick=fleet.tick if fleet is not None else None,
    )
    frontier.close()
    counts = core.counts
    log.info(
        "%s: received %d records, sent %d windows, rejected %d, redelivered %d, "
        "duplicate windows %d, already sent before a restart %d (frontiers dropped %d)",
        STAGE,
        counts.received,
        counts.windows,
        counts.rejected,
        counts.redelivered,
        counts.duplicate_windows,
        counts.already_sent,
        counts.frontiers_dropped,
    )
    return core


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.scheduler", description=__doc__)
    parser.add_argument("--topics", nargs="+", default=[DEFAULT_TOPICS], help="topics or ^regex")
    parser.add_argument("--group", default=STAGE, help="Kafka consumer group")
    parser.add_argument("--queue", default=DEFAULT_QUEUE, help="RabbitMQ queue of the tasks")
    parser.add_argument("--max-windows", type=int, default=32, help="windows per Celery message")
    parser.add_argument("--poll-ms", type=float, default=25.0, help="idle poll period")
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=0.0,
        help="wait this long after a batch's first record for more (default: none)",
    )
    parser.add_argument(
        "--min-messages",
        type=int,
        default=None,
        help="spread a batch's windows over at least this many tasks (default SMAP_WORKERS)",
    )
    parser.add_argument("--batch-size", type=int, default=5000, help="records per poll at most")
    parser.add_argument(
        "--fetch-wait-ms", type=int, default=250, help="Kafka fetch.wait.max.ms of the consumer"
    )
    parser.add_argument(
        "--fetch-min-bytes", type=int, default=1, help="Kafka fetch.min.bytes of the consumer"
    )
    parser.add_argument(
        "--active-only",
        action="store_true",
        help="consume only the topics of satellites in the fleet (configured, or active in "
        "PostgreSQL); an inactive satellite's partitions are released once drained and quiet",
    )
    parser.add_argument("--metrics-port", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run(
        get_settings(),
        topics=args.topics,
        group=args.group,
        queue=args.queue,
        max_windows=args.max_windows,
        poll_ms=args.poll_ms,
        batch_wait_ms=args.batch_wait_ms,
        min_messages=args.min_messages,
        batch_size=args.batch_size,
        fetch_wait_ms=args.fetch_wait_ms,
        fetch_min_bytes=args.fetch_min_bytes,
        active_only=args.active_only,
        metrics_port=args.metrics_port,
    )


if __name__ == "__main__":
    main()
