"""Anomaly events: inference results in, anomaly events and their alarms in PostgreSQL.

Consumes ``settings.topic_results`` (group ``events``), keeps the anomalous windows and
turns each stream's consecutive ones into events (:mod:`smap_bench.anomaly_events`),
written idempotently in one transaction per Kafka batch
(:class:`smap_bench.event_store.EventStore`); offsets are committed after the
transaction, and a redelivered window changes nothing. A new event gets an
``alarm_history`` row ('open'). Bad results go to the dead-letter topic.

Run::

    python -m pipeline.events                              # group "events", metrics on :9105
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from smap_bench.config import Settings, get_settings
from smap_bench.event_store import EventsHandler, EventStore
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
    with EventStore(settings.postgres_dsn, actor=STAGE, gap=settings.event_gap) as store:
        handler = EventsHandler(
            store.apply,
            metrics,
            dead_letter,
            stride=settings.stride,
            should_stop=lambda: stop.stopped,
            sleep=stop.event.wait,
        )
        log.info(
            "%s: group %s, %s -> PostgreSQL, metrics on %s",
            STAGE,
            group,
            settings.topic_results,
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
                consumer_overrides={"max.poll.interval.ms": MAX_POLL_INTERVAL_MS},
            )
        except Stopped as error:
            log.warning(
                "%s: stopped while PostgreSQL was unreachable; the unapplied batch was not"
                " committed and will be read again: %s",
                STAGE,
                error,
            )
        finally:
            totals = handler.totals
            log.info(
                "%s: received %d, rejected %d, retried %d; events created %d, extended %d,"
                " merged %d; windows already applied %d",
                STAGE,
                metrics.counts["received"],
                metrics.counts["rejected"],
                metrics.counts["retried"],
                totals.created,
                totals.extended,
                totals.merged,
                totals.unchanged,
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
    run(
        get_settings(),
        group=args.group,
        batch_size=args.batch_size,
        max_wait_ms=args.max_wait_ms,
        metrics_port=args.metrics_port,
    )


if __name__ == "__main__":
    main()
