"""What every pipeline stage shares: counters, the dead-letter topic, the Kafka loop, shutdown.

A stage is a named step (``router``, ``scheduler``, ``writer`` ...). Its name is its
Kafka consumer group, its logger, and the ``stage`` label on its self-metrics:

- ``smap_stage_received_total``, ``smap_stage_produced_total``,
  ``smap_stage_rejected_total{reason}``, ``smap_stage_retried_total``,
  ``smap_stage_lost_total{reason}``: what it took in, put out, refused (to the
  dead-letter topic), retried and lost (Kafka refused it for good, no dead letter
  possible), so that "sent = scored, lost = 0" is checked by arithmetic;
- ``smap_stage_latency_seconds``: time from the record's production to this stage.

Each stage serves them on its own port (``metrics_port``); the local VictoriaMetrics
scrapes them (see :func:`smap_bench.stack.promscrape_config`).

:func:`run_kafka_stage` is the at-least-once loop: poll a batch, hand it to the stage's
pure-ish ``handle`` function, wait until everything it produced is acknowledged by the
broker, and only then commit the batch's offsets. A message that cannot be handled goes
to the dead-letter topic with its reason; the stage keeps running.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from smap_bench.config import Settings
from smap_bench.kafka import consumer_config, producer_config

log = logging.getLogger(__name__)

#: Self-metrics ports of the pipeline's stages (workers take consecutive ports from 9110).
STAGE_METRICS_PORTS = {
    "simulator": 9101,
    "router": 9102,
    "scheduler": 9103,
    "writer": 9104,
    "events": 9105,
    "api": 9106,
    "worker": 9110,
}

#: How often the router, scheduler and writer commit offsets (asynchronously; see
#: :func:`run_kafka_stage`).
COMMIT_EVERY_S = 1.0

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class StageMetrics:
    """The received / produced / rejected / retried / lost counters of one stage."""

    def __init__(self, stage: str, registry: CollectorRegistry | None = None) -> None:
        self.stage = stage
        self.registry = registry or CollectorRegistry()
        labels = ["stage"]
        self._received = Counter(
            "smap_stage_received", "Messages taken in", labels, registry=self.registry
        ).labels(stage)
        self._produced = Counter(
            "smap_stage_produced", "Messages put out", labels, registry=self.registry
        ).labels(stage)
        self._rejected = Counter(
            "smap_stage_rejected",
            "Messages refused (sent to the dead-letter topic)",
            ["stage", "reason"],
            registry=self.registry,
        )
        self._retried = Counter(
            "smap_stage_retried", "Operations retried", labels, registry=self.registry
        ).labels(stage)
        self._lost = Counter(
            "smap_stage_lost",
            "Messages lost: neither put out nor dead-lettered (Kafka refused them for good)",
            ["stage", "reason"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "smap_stage_latency_seconds",
            "Seconds from a record's production to this stage",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(stage)
        self.counts: dict[str, int] = {
            "received": 0,
            "produced": 0,
            "rejected": 0,
            "retried": 0,
            "lost": 0,
        }

    def received(self, n: int = 1) -> None:
        self._received.inc(n)
        self.counts["received"] += n

    def produced(self, n: int = 1) -> None:
        self._produced.inc(n)
        self.counts["produced"] += n

    def rejected(self, reason: str, n: int = 1) -> None:
        self._rejected.labels(self.stage, reason_label(reason)).inc(n)
        self.counts["rejected"] += n

    def lost(self, reason: str, n: int = 1) -> None:
        self._lost.labels(self.stage, reason_label(reason)).inc(n)
        self.counts["lost"] += n

    def retried(self, n: int = 1) -> None:
        self._retried.inc(n)
        self.counts["retried"] += n

    def latency(self, seconds: float) -> None:
        self._latency.observe(max(seconds, 0.0))

    def serve(self, host: str, port: int) -> None:
        """Expose the counters for scraping (Prometheus text format)."""
        start_http_server(port, addr=host, registry=self.registry)


def reason_label(reason: str) -> str:
    """A bounded label value for a rejection reason: its kind, not its details."""
    head = reason.split(":", 1)[0].strip().lower()
    return "".join(c if c.isalnum() else "_" for c in head)[:40] or "unknown"


class Outgoing(NamedTuple):
    """One message to produce: what :func:`deliver` takes."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, str | bytes | None]] | None = None


class Delivery(NamedTuple):
    """What Kafka answered for a list of messages (:func:`deliver`)."""

    confirmed: frozenset[int]  #: positions of the messages Kafka confirmed
    problem: str | None  #: the first delivery error, or why some got no answer; None if all landed


def deliver(producer: Producer, messages: Sequence[Outgoing], timeout_s: float) -> Delivery:
    """Produce ``messages`` and wait up to ``timeout_s`` for Kafka's answer to each.

    A message still in the producer's queue when the wait ends was never sent: it is
    purged, so that sending it again later cannot meet a late first copy. A message in
    flight at that moment may still land; give the producer a ``message.timeout.ms``
    below ``timeout_s`` (see :data:`DELIVERY_TIMEOUT_MS`) and every message is answered,
    delivered or failed, within the wait. Not for a producer configured with
    ``delivery.report.only.error`` (its successes are never reported, so every message
    would look unconfirmed). Callbacks run on the calling thread inside the flush; a
    producer shared by several threads would see one caller's purge fail another's
    queued messages (retried, not lost): the worker runs one task at a time.
    """
    answers: dict[int, KafkaError | None] = {}

    def answer(position: int) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            answers[position] = error

        return on_delivery

    for position, message in enumerate(messages):
        producer.produce(
            message.topic,
            value=message.value,
            key=message.key,
            headers=message.headers,
            on_delivery=answer(position),
        )
    remaining = producer.flush(timeout_s)
    if remaining:
        producer.purge(in_queue=True, in_flight=False, blocking=True)
        producer.poll(0)  # the purged messages' callbacks: failed, never sent
    confirmed = frozenset(position for position, error in answers.items() if error is None)
    errors = [str(error) for error in answers.values() if error is not None]
    problem = errors[0] if errors else None
    if problem is None and len(confirmed) < len(messages):
        problem = f"{len(messages) - len(confirmed)} messages unanswered after {timeout_s:g} s"
    return Delivery(confirmed, problem)


#: librdkafka's ``message.timeout.ms`` for producers that wait on :func:`deliver` with 30 s:
#: every message is answered (delivered, or failed for good) before the wait ends.
DELIVERY_TIMEOUT_MS = 25_000


@dataclass
class DeadLetter:
    """Sends refused messages to the dead-letter topic, with the reason in a header."""

    producer: Producer
    topic: str
    stage: str
    metrics: StageMetrics

    def message(self, value: bytes | None, reason: str, source: Message | None = None) -> Outgoing:
        """The dead letter for ``value``, not sent and not counted (see :meth:`send`)."""
        headers: list[tuple[str, str | bytes | None]] = [
            ("reason", reason.encode()),
            ("stage", self.stage.encode()),
        ]
        key = None
        if source is not None:
            key = source.key()
            headers += [
                ("source_topic", str(source.topic()).encode()),
                ("source_partition", str(source.partition()).encode()),
                ("source_offset", str(source.offset()).encode()),
            ]
        return Outgoing(self.topic, value or b"", key, headers)

    def refused(self, reason: str) -> None:
        """Count and log one rejection (its dead letter sent by :meth:`send`, or by the
        caller from :meth:`message`)."""
        self.metrics.rejected(reason)
        log.warning("%s: dead-lettered: %s", self.stage, reason)

    def send(self, value: bytes | None, reason: str, source: Message | None = None) -> None:
        """Produce the dead letter and count the rejection; the caller flushes."""
        letter = self.message(value, reason, source)
        self.producer.produce(
            letter.topic, value=letter.value, key=letter.key, headers=letter.headers
        )
        self.refused(reason)


@dataclass
class StopFlag:
    """Set on SIGTERM/SIGINT so a loop finishes its batch and exits cleanly."""

    event: threading.Event = field(default_factory=threading.Event)

    def install(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.event.set())
        return self

    @property
    def stopped(self) -> bool:
        return self.event.is_set()

    def set(self) -> None:
        self.event.set()


BatchHandler = Callable[[Sequence[Message]], None]


def _handle_refusals(stage: str, refused: Refusals, metrics: StageMetrics | None) -> None:
    """After a batch's flush: outputs Kafka refused for good are counted lost (sending
    them again would meet the same refusal, and stopping would stall every later record
    behind them); a transient refusal stops the stage uncommitted, so that its supervisor
    restarts it and the batch is consumed and its outputs produced again."""
    if refused.permanent:
        reason = f"kafka refused: {refused.first_permanent}"
        if metrics is not None:
            metrics.lost(reason, refused.permanent)
        log.error("%s: %d outputs lost, %s", stage, refused.permanent, reason)
    if refused.transient:
        raise RuntimeError(
            f"{stage}: Kafka refused {refused.transient} messages for now "
            f"({refused.first_transient}); batch not committed"
        )


def run_kafka_stage(
    settings: Settings,
    stage: str,
    topics: Sequence[str],
    handle: BatchHandler,
    producer: Producer,
    stop: StopFlag,
    *,
    metrics: StageMetrics | None = None,
    batch_size: int = 500,
    poll_timeout_s: float = 0.1,
    on_tick: Callable[[], None] | None = None,
    commit_offsets: Callable[[], list[TopicPartition]] | None = None,
    consumer_overrides: dict[str, Any] | None = None,
    discover_every_s: float | None = None,
    keep_topic: Callable[[str], bool] | None = None,
    batch_wait_s: float = 0.0,
    commit_every_s: float | None = None,
) -> None:
    """Consume ``topics`` as group ``stage`` until stopped, at least once.

    ``handle`` gets each batch of good messages and produces its outputs on ``producer``
    (dead letters included). Offsets are committed only after the producer has flushed
    and Kafka answered every output, so a crash between the two re-delivers the batch
    rather than losing it. With a :class:`StageProducer`, Kafka's refusals are looked at
    too: a transient one (broker away) stops the stage uncommitted, a permanent one (the
    message itself refused) is counted in ``metrics`` as lost and the stage goes on. ``on_tick``
    runs after every poll, batch or not (timers, periodic flushes).

    Batches (:func:`next_batch`): a batch is handed on as soon as its first message is
    there, with whatever else has already been fetched (up to ``batch_size``), waiting
    ``batch_wait_s`` more for stragglers only when asked; ``poll_timeout_s`` bounds the
    wait for a first message, so it is also the period of ``on_tick`` when idle.

    Commits: by default each batch's offsets are committed synchronously after its flush.
    With ``commit_every_s`` they are committed asynchronously, at most that often, and
    synchronously when the loop stops: still only offsets whose output was flushed, but
    the loop no longer waits on the broker once per batch (a commit to the local Tansu
    broker queues behind the consumer's pending fetch, up to its ``fetch.wait.max.ms``).
    A crash then re-delivers up to ``commit_every_s`` more, which the sinks' idempotence
    and the job ids absorb.

    A stage that holds consumed records in memory beyond the batch (the scheduler's
    window buffers) passes ``commit_offsets``: it returns, per partition, the offset of
    the oldest record still needed, and only that much is committed, so a restart
    re-reads what the lost memory held.

    With ``discover_every_s`` the stage assigns itself every partition of the matching
    topics (names, or ``^regex``), found again at that period, and resumes each from its
    group's committed offset: no group membership, so no rebalance pause when a
    satellite's topics appear, at the price of one instance per group. ``keep_topic``
    then narrows the matching topics to those it holds (the scheduler's active
    satellites); a partition no longer kept is released once drained and quiet for a
    minute.
    """
    consumer = Consumer(consumer_config(settings, stage, **(consumer_overrides or {})))
    assigner = None
    if discover_every_s is None:
        consumer.subscribe(list(topics))  # a name starting with ^ is a regex subscription
    else:
        assigner = TopicAssigner(consumer, topics, discover_every_s, keep_topic)
    log.info("%s: consuming %s", stage, ", ".join(topics))
    committer = Committer(consumer, commit_offsets, commit_every_s)
    try:
        while not stop.stopped:
            if assigner is not None:
                assigner.refresh()
            batch = next_batch(consumer, batch_size, poll_timeout_s, batch_wait_s)
            good = []
            for message in batch:
                error = message.error()
                if error is None:
                    good.append(message)
                elif error.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: consumer error: %s", stage, error)
            if good:
                handle(good)
            if on_tick is not None:
                on_tick()
            if batch:
                remaining = producer.flush(30)
                if remaining:
                    raise RuntimeError(f"{stage}: {remaining} messages not delivered in 30 s")
                refused = delivery_failures(producer)
                if refused is not None:
                    _handle_refusals(stage, refused, metrics)
                committer.flushed()
            else:
                producer.poll(0)
                committer.idle()
        committer.final()
    finally:
        producer.flush(30)
        consumer.close()
        log.info("%s: stopped", stage)


class Committer:
    """Commits what was consumed and flushed: every batch synchronously (``every_s``
    None), or asynchronously at most every ``every_s`` seconds and once more at the end.
    """

    def __init__(
        self,
        consumer: Consumer,
        offsets: Callable[[], list[TopicPartition]] | None,
        every_s: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.offsets = offsets
        self.every_s = every_s
        self.clock = clock
        self.pending = False
        self._last = clock()

    def flushed(self) -> None:
        """A batch's output was flushed: its offsets may be committed."""
        self.pending = True
        if self.every_s is None:
            self._commit(asynchronous=False)
        elif self.clock() - self._last >= self.every_s:
            self._commit(asynchronous=True)

    def idle(self) -> None:
        """Nothing came: commit what is pending once its time has come."""
        if self.pending and self.every_s is not None and self.clock() - self._last >= self.every_s:
            self._commit(asynchronous=True)

    def final(self) -> None:
        """The loop ended cleanly: commit what is pending, and wait for it."""
        if self.pending:
            self._commit(asynchronous=False)

    def _commit(self, asynchronous: bool) -> None:
        self._last = self.clock()
        self.pending = False
        offsets = None if self.offsets is None else self.offsets()
        if offsets == []:
            return
        if asynchronous:
            if offsets is None:
                self.consumer.commit(asynchronous=True)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=True)
        elif offsets is None:
            self.consumer.commit(asynchronous=False)
        else:
            self.consumer.commit(offsets=offsets, asynchronous=False)


def next_batch(
    consumer: Consumer, batch_size: int, poll_timeout_s: float, batch_wait_s: float = 0.0
) -> list[Message]:
    """The next batch: at most ``poll_timeout_s`` waiting for a first message, then what
    has already been fetched, up to ``batch_size`` (``batch_wait_s`` more for the rest).

    ``Consumer.consume(n, timeout)`` returns only when ``n`` messages are there or the
    timeout has passed, so under light load every batch waited the full timeout, and that
    wait was each stage's latency. Under load the drain still makes large batches: what
    arrived while the last batch was handled is taken at once.
    """
    first = consumer.poll(poll_timeout_s)
    if first is None:
        return []
    if batch_size <= 1:
        return [first]
    return [first, *consumer.consume(batch_size - 1, timeout=batch_wait_s)]


class TopicAssigner:
    """Keeps a consumer assigned to every partition of the topics matching its patterns."""

    def __init__(
        self,
        consumer: Consumer,
        patterns: Sequence[str],
        every_s: float,
        keep: Callable[[str], bool] | None = None,
        release_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.exact = {p for p in patterns if not p.startswith("^")}
        self.regexes = [re.compile(p) for p in patterns if p.startswith("^")]
        self.every_s = every_s
        #: which matching topics to hold (None: all); a topic no longer kept is let go
        #: once everything in it was consumed
        self.keep = keep
        #: how long a partition no longer kept must stay drained, its end unmoved, before it
        #: is released: longer than any stage may still be routing to it (the router
        #: re-reads the fleet every 30 s)
        self.release_after_s = release_after_s
        self.clock = clock
        self.assigned: set[tuple[str, int]] = set()
        self._started_at: dict[tuple[str, int], int] = {}  #: offset each was assigned from
        self._quiet: dict[tuple[str, int], tuple[int, float]] = {}  #: (end, drained since)
        self._next = 0.0

    def matches(self, topic: str) -> bool:
        return topic in self.exact or any(r.match(topic) for r in self.regexes)

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self.every_s
        metadata = self.consumer.list_topics(timeout=10)
        present = {
            (name, partition)
            for name, topic in metadata.topics.items()
            if topic.error is None and self.matches(name)
            for partition in topic.partitions
        }
        if self.keep is not None:
            kept = {tp for tp in present if self.keep(tp[0])}
            leaving = (self.assigned & present) - kept
            present = kept | {tp for tp in leaving if not self._releasable(tp)}
            for tp in set(self._quiet) - leaving:
                del self._quiet[tp]
        gone = self.assigned - present
        if gone:
            self.consumer.incremental_unassign([TopicPartition(t, p) for t, p in gone])
            for tp in gone:
                self._started_at.pop(tp, None)
                self._quiet.pop(tp, None)
            log.info("released %d partitions (%d in all)", len(gone), len(present))
        new = sorted(present - self.assigned)
        if new:
            committed = self.consumer.committed([TopicPartition(t, p) for t, p in new], timeout=10)
            start = [
                TopicPartition(
                    tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                )
                for tp in committed
            ]
            self.consumer.incremental_assign(start)
            self._started_at.update({(tp.topic, tp.partition): tp.offset for tp in start})
            log.info("assigned %d new partitions (%d in all)", len(new), len(present))
        self.assigned = present

    def _releasable(self, tp: tuple[str, int]) -> bool:
        """Whether a partition no longer kept has been drained, its end unmoved, for
        ``release_after_s``: everything it held consumed, and nothing new arriving."""
        where = TopicPartition(*tp)
        position = self.consumer.position([where])[0].offset
        low, high = self.consumer.get_watermark_offsets(where, cached=True)
        if position < 0:  # nothing consumed this run: where it was assigned from
            position = self._started_at.get(tp, -1)
            if position == OFFSET_BEGINNING:
                position = low
        if not (0 <= high <= position):
            self._quiet.pop(tp, None)
            return False
        now = self.clock()
        end, since = self._quiet.setdefault(tp, (high, now))
        if end != high:
            self._quiet[tp] = (high, now)
            return False
        return now - since >= self.release_after_s


class StageContext(NamedTuple):
    """What a Kafka stage's service sets up before its loop: counters (served for
    scraping on ``port``, 0 when not served), the SIGTERM flag, its producer and its
    dead-letter sender."""

    metrics: StageMetrics
    stop: StopFlag
    producer: Producer
    dead_letter: DeadLetter
    port: int


def start_stage(
    settings: Settings,
    stage: str,
    metrics_port: int | None = None,
    producer_overrides: dict[str, Any] | None = None,
) -> StageContext:
    """Set up a stage: ``metrics_port`` None serves on the stage's default port, 0 serves not;
    ``producer_overrides`` change its producer's configuration."""
    metrics = StageMetrics(stage)
    port = STAGE_METRICS_PORTS[stage] if metrics_port is None else metrics_port
    if port:
        metrics.serve(settings.bind_host, port)
    producer = make_producer(settings, stage, **(producer_overrides or {}))
    dead_letter = DeadLetter(producer, settings.topic_dead_letter, stage, metrics)
    return StageContext(metrics, StopFlag().install(), producer, dead_letter, port)


#: Refusals a later attempt may not meet again: the broker or the network was away.
TRANSIENT_DELIVERY_ERRORS = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._PURGE_QUEUE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    }
)


def is_transient(error: KafkaError) -> bool:
    """Whether sending the same message again may succeed (see
    :data:`TRANSIENT_DELIVERY_ERRORS`); a refusal of the message itself (too large,
    invalid, not authorised, no such topic) is not."""
    return bool(error.retriable()) or error.code() in TRANSIENT_DELIVERY_ERRORS


class Refusals(NamedTuple):
    """Kafka's refusals since the last look, parted by whether a retry may succeed."""

    transient: int
    permanent: int
    first_transient: str | None
    first_permanent: str | None


class DeliveryFailures:
    """Kafka's refusals of messages produced without a callback of their own (a stage's
    outputs and dead letters): counted until :meth:`take`."""

    def __init__(self, then: Callable[[KafkaError | None, Message], None] | None = None) -> None:
        self.then = then  #: the producer's own default callback, still called
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.transient = 0
        self.permanent = 0
        self.first_transient: str | None = None
        self.first_permanent: str | None = None

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            with self._lock:
                if is_transient(error):
                    self.transient += 1
                    self.first_transient = self.first_transient or str(error)
                else:
                    self.permanent += 1
                    self.first_permanent = self.first_permanent or str(error)
        if self.then is not None:
            self.then(error, message)

    def take(self) -> Refusals:
        """The refusals since the last call."""
        with self._lock:
            taken = Refusals(
                self.transient, self.permanent, self.first_transient, self.first_permanent
            )
            self._reset()
        return taken


class StageProducer(Producer):
    """A producer whose every delivery without its own callback reports to ``failures``:
    :func:`flush` returning 0 says every message was answered, not that each landed.
    A default callback given as ``on_delivery`` in the configuration is still called."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.failures = DeliveryFailures(then=config.get("on_delivery"))
        super().__init__({**config, "on_delivery": self.failures})


def delivery_failures(producer: Producer) -> Refusals | None:
    """What Kafka refused since the last call (a :class:`StageProducer`), None if nothing."""
    if not isinstance(producer, StageProducer):
        return None
    refusals = producer.failures.take()
    return refusals if refusals.transient or refusals.permanent else None


def make_producer(settings: Settings, stage: str, **overrides: Any) -> Producer:
    return StageProducer(producer_config(settings, stage, **overrides))


def stamp(stages: dict[str, float] | None, stage: str) -> dict[str, float]:
    """The message's stage timestamps with this stage's wall-clock time added."""
    out = dict(stages or {})
    out[stage] = time.time()
    return out
