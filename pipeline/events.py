"""Anomaly events: inference results in, anomaly events and their alarms in PostgreSQL,
the served decision on every window in VictoriaMetrics.

Consumes ``settings.topic_results`` (group ``events``), keeps the anomalous windows and
turns each stream's consecutive ones into events (:mod:`smap_bench.anomaly_events`),
written idempotently in one transaction per Kafka batch
(:class:`smap_bench.event_store.EventStore`). A new event gets an ``alarm_history`` row
('open'). Every window it decides, normal or not, is then written to VictoriaMetrics as
``anomaly_alarm`` 0/1 at the window's end (what the dashboard's grid and timelines
show). Offsets are committed after both writes (each retried while its service is
unreachable, so while either is away no later batch is decided: the alarm list and the
grid never disagree, and nothing is lost), and a redelivered window changes nothing. Bad
results go to the dead-letter topic.

Under the confirmed decision rule (``SMAP_DECISION_RULE=confirmed``, served), a window
that TranAD's score (or the forecaster) flags joins an event only when the stream rule
confirms it against its stream's recent windows (:mod:`smap_bench.confirmation`), by the
floor and threshold the result carries (TranAD's from the model's metadata, the
forecaster's as the worker fitted it: the stage reads no model repository and no data):
the stage keeps each
stream's recent window statistics, holds a flagged window until its history has
arrived, and commits no offset past a window still waiting. On start it reads back the
results before its committed offsets (history only, nothing written) so that the
windows after them are judged on their whole history.

Run::

    python -m pipeline.events                              # group "events", metrics on :9105
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator, Sequence

from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import ValidationError

from smap_bench.config import Settings, get_settings
from smap_bench.confirmation import (
    Confirmer,
    ForecastLane,
    ResultConfirmation,
    ResultRules,
)
from smap_bench.event_store import EventsHandler, EventStore
from smap_bench.kafka import consumer_config
from smap_bench.metrics import VictoriaMetrics
from smap_bench.model.stream_rule import StreamRuleConfig
from smap_bench.schema import InferenceResult, decode
from smap_bench.stage import (
    STAGE_METRICS_PORTS,
    run_kafka_stage,
    start_stage,
)
from smap_bench.writing import Stopped

STAGE = "events"
log = logging.getLogger(f"smap_bench.{STAGE}")

#: Keep the partitions while PostgreSQL is unreachable and the batch is being retried.
MAX_POLL_INTERVAL_MS = 86_400_000


class ConfirmationMetrics:
    """The confirmation's counts as self-metrics (a collector read at each scrape)."""

    def __init__(self, confirmation: ResultConfirmation) -> None:
        self.confirmation = confirmation

    def collect(self) -> Iterator[Metric]:
        counts = self.confirmation.counts
        judged = CounterMetricFamily(
            "smap_events_confirmation_windows",
            "Flags (TranAD's score's and the forecaster's) judged by the stream rule",
            labels=["outcome"],
        )
        judged.add_metric(["confirmed"], counts.confirmed)
        judged.add_metric(["not_confirmed"], counts.judged - counts.confirmed)
        yield judged
        yield CounterMetricFamily(
            "smap_events_confirmation_incomplete",
            "Windows judged before their whole history had arrived (patience ran out)",
            value=counts.incomplete,
        )
        yield CounterMetricFamily(
            "smap_events_confirmation_late_history",
            "Windows that arrived after a flagged window they are history of was judged"
            " without them (late, not lost)",
            value=counts.late,
        )
        yield CounterMetricFamily(
            "smap_events_unconfirmed",
            "Flags kept as the worker decided: their result carries no stream rule (or a"
            " forecaster flag no statistic)",
            value=self.confirmation.unconfirmed,
        )
        yield GaugeMetricFamily(
            "smap_events_confirmation_waiting",
            "Flagged windows waiting for their history",
            value=self.confirmation.waiting,
        )


def confirmation_for(settings: Settings) -> ResultConfirmation | None:
    """The confirmation the served decision rule asks for (None: the static rule)."""
    if settings.decision_rule != "confirmed":
        return None
    config = StreamRuleConfig()
    return ResultConfirmation(
        ResultRules("model", config),
        settings.stride,
        Confirmer(config.history),
        forecast_lane(settings, config),
    )


def forecast_lane(settings: Settings, config: StreamRuleConfig) -> ForecastLane | None:
    """What confirms the forecaster's flags when it is served (``SMAP_FORECASTER``): the
    rule each result carries (the worker's floor, and the threshold it flagged by), under
    the stream rule's ``config`` (None: not served)."""
    if not settings.forecaster:
        return None
    return ForecastLane(ResultRules("forecaster", config), Confirmer(config.history))


#: Results read back per partition at first; doubled, going further back, while some
#: stream's history is still incomplete, up to :data:`READ_BACK_MAX`.
READ_BACK_FIRST = 2_000
READ_BACK_MAX = 200_000


def read_back_history(
    settings: Settings, group: str, confirmation: ResultConfirmation, timeout_s: float = 60.0
) -> int:
    """Read the results before the group's committed offsets into the confirmation's
    histories (nothing is judged or written); returns how many were read.

    Per partition it reads back :data:`READ_BACK_FIRST` results, then twice as many
    before those, and so on, until every stream it met reaches back as far as its newest
    window's history (or its run's first window, where the results say), the partition's
    start is reached, :data:`READ_BACK_MAX` were read
    (other satellites' traffic can lie between a stream's windows) or ``timeout_s`` passed
    for that partition. A stream whose history is not all read back has its first windows
    judged on what was (counted as incomplete)."""
    topic = settings.topic_results
    consumer = Consumer(consumer_config(settings, group))
    read = 0
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return 0
        partitions = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
        for part in consumer.committed(partitions, timeout=10):
            if part.offset < 0:  # nothing committed yet: nothing was judged before
                continue
            low, _high = consumer.get_watermark_offsets(part, timeout=10)
            end, size, streams = part.offset, READ_BACK_FIRST, set()
            deadline = time.monotonic() + timeout_s
            while end > low:
                begin = max(low, end - size, part.offset - READ_BACK_MAX)
                if begin >= end:
                    break
                for result in _results_between(
                    consumer, topic, part.partition, begin, end, deadline
                ):
                    stream = confirmation.remember(result)
                    if stream is not None:
                        streams.add(stream)
                    read += 1
                if all(confirmation.reaches_back(s) for s in streams):
                    break
                if time.monotonic() > deadline:
                    log.warning(
                        "%s: partition %d: history not all read back in %.0f s",
                        STAGE,
                        part.partition,
                        timeout_s,
                    )
                    break
                end, size = begin, size * 2
    except KafkaException as error:
        log.warning("%s: history not read back (%s); first windows judged on less", STAGE, error)
    finally:
        consumer.close()
    return read


def _results_between(
    consumer: Consumer, topic: str, partition: int, begin: int, end: int, deadline: float
) -> Iterator[InferenceResult]:
    """The valid results at offsets ``[begin, end)`` of one partition."""
    consumer.assign([TopicPartition(topic, partition, begin)])
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error() is not None:
            continue
        offset = int(message.offset() or 0)
        if offset >= end:
            return
        value = message.value()
        try:
            if value is not None:
                yield decode(InferenceResult, value)
        except ValidationError:
            pass  # dead-lettered when it was first read
        if offset + 1 >= end:
            return


def run(
    settings: Settings,
    *,
    group: str = STAGE,
    batch_size: int = 500,
    max_wait_ms: float = 100.0,
    metrics_port: int | None = None,
) -> EventsHandler:
    """Run the events stage until SIGTERM/SIGINT; returns its handler (counts) at the end."""
    metrics, stop, producer, dead_letter, port = start_stage(settings, STAGE, metrics_port)
    confirmation = confirmation_for(settings)
    if confirmation is not None:
        metrics.registry.register(ConfirmationMetrics(confirmation))
        started = time.monotonic()
        read = read_back_history(settings, group, confirmation)
        log.info(
            "%s: decision rule confirmed; %d results read back as history in %.1f s",
            STAGE,
            read,
            time.monotonic() - started,
        )
    with (
        EventStore(settings.postgres_dsn, actor=STAGE, gap=settings.event_gap) as store,
        VictoriaMetrics(settings.victoria_url) as victoria,
    ):
        handler = EventsHandler(
            store.apply,
            metrics,
            dead_letter,
            stride=settings.stride,
            should_stop=lambda: stop.stopped,
            sleep=stop.event.wait,
            confirmation=confirmation,
            write=victoria.import_prometheus,
        )
        log.info(
            "%s: group %s, %s -> PostgreSQL + %s, rule %s, metrics on %s",
            STAGE,
            group,
            settings.topic_results,
            settings.victoria_url,
            settings.decision_rule,
            port or "-",
        )
        try:
            run_kafka_stage(
                settings,
                group,
                [settings.topic_results],
                handler.handle,
                producer,
                stop,
                metrics=metrics,
                batch_size=batch_size,
                poll_timeout_s=max_wait_ms / 1000.0,
                on_tick=handler.tick,
                commit_offsets=handler.commit_offsets if confirmation is not None else None,
                consumer_overrides={"max.poll.interval.ms": MAX_POLL_INTERVAL_MS},
            )
        except Stopped as error:
            log.warning(
                "%s: stopped while PostgreSQL or VictoriaMetrics was unreachable; the"
                " unwritten batch was not committed and will be read again: %s",
                STAGE,
                error,
            )
        finally:
            totals = handler.totals
            log.info(
                "%s: received %d, rejected %d, retried %d; events created %d, extended %d,"
                " merged %d; windows already applied %d; alarm samples written %d",
                STAGE,
                metrics.counts["received"],
                metrics.counts["rejected"],
                metrics.counts["retried"],
                totals.created,
                totals.extended,
                totals.merged,
                totals.unchanged,
                handler.alarms_written,
            )
    return handler


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.events", description=__doc__)
    parser.add_argument("--group", default=STAGE, help="Kafka consumer group (default: events)")
    parser.add_argument("--batch-size", type=int, default=500, help="messages per Kafka batch")
    parser.add_argument(
        "--max-wait-ms", type=float, default=100.0, help="longest wait to fill a batch"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help=f"self-metrics port (default {STAGE_METRICS_PORTS[STAGE]}; 0: none)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # httpx logs every request at INFO: a line per VictoriaMetrics write (one per batch).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    run(
        get_settings(),
        group=args.group,
        batch_size=args.batch_size,
        max_wait_ms=args.max_wait_ms,
        metrics_port=args.metrics_port,
    )


if __name__ == "__main__":
    main()
