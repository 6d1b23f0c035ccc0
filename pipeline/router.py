"""Telemetry router: the raw topic in, one record per subsystem topic out.

Consumes ``satellite-telemetry-raw`` (group ``router``), validates each message and
publishes each subsystem's record to ``telemetry.{subsystem}.{satellite_id}``, keyed by
satellite id; bad input goes to the dead-letter topic with its reason (see
:mod:`smap_bench.routing`). Offsets are committed after the records are acknowledged.

The fleet: ``sat1 .. sat<SMAP_SATELLITES>`` plus the active satellites registered in
PostgreSQL (table ``satellites``), re-read every ``--fleet-refresh-s`` seconds; when
PostgreSQL cannot be reached the last known fleet stays in use.

Run::

    python -m pipeline.router
    python -m pipeline.router --group router --metrics-port 9102
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence

from confluent_kafka import Message, Producer

from smap_bench.catalog import satellite_ids
from smap_bench.config import Settings, get_settings
from smap_bench.routing import STAGE, TelemetryRouter
from smap_bench.stage import (
    COMMIT_EVERY_S,
    StageMetrics,
    run_kafka_stage,
    start_stage,
)

log = logging.getLogger(f"smap_bench.{STAGE}")


#: Shortest pause between two re-reads of the fleet prompted by unknown satellites.
UNKNOWN_REFRESH_S = 1.0

#: The router's producer: acknowledged by the broker (acks=all, retried), but not
#: idempotent. It writes one batch per subsystem topic per second (seven per satellite),
#: and the local Tansu broker pays for every idempotent batch with a copy and a JSON
#: rewrite of its whole producer-sequence table (every producer x partition it has
#: seen): measured on a private broker, 175 topics x 5 batches/s cost 0.57 ms of broker
#: CPU per idempotent batch (produce alone). Without idempotence a retried batch may be
#: written twice; the scheduler refuses the copy as a duplicate record_index (dead
#: letter, counted), so nothing is lost and no window is formed twice. Each batch is
#: flushed before the next is consumed, so in steady state one request per partition is
#: in flight and a retry has no later record to overtake (under a backlog it could: the
#: scheduler then refuses the late one as out of order, also a counted dead letter).
#: One request in flight per connection would rule that out, but measured at 45
#: satellites it raised the end-to-end p99 from 0.69 s to 2.5 s (the router's own p50
#: from 50 to 481 ms): docs/benchmarks/pipeline_45sat_150s_router_inflight1.json.
PRODUCER_OVERRIDES = {"enable.idempotence": False, "acks": "all"}


class Fleet:
    """The satellites the router accepts: the configured fleet and PostgreSQL's ``satellites``."""

    def __init__(self, settings: Settings, refresh_s: float = 30.0, use_db: bool = True) -> None:
        self.dsn = settings.postgres_dsn
        self.configured = frozenset(satellite_ids(settings.satellites))
        self.refresh_s = refresh_s
        self.use_db = use_db
        self.registered: frozenset[str] = frozenset()
        self._read_at = -float("inf")
        self.refresh()

    def refresh(self) -> None:
        """Re-read the active satellites; the read is timed from its end, so a slow or
        unreachable database costs one attempt per period, not one per caller."""
        if not self.use_db:
            self._read_at = time.monotonic()
            return
        try:
            import psycopg

            with psycopg.connect(self.dsn, connect_timeout=3) as conn:
                rows = conn.execute("SELECT satellite_id FROM satellites WHERE active").fetchall()
        except Exception as error:  # any database trouble: keep the last known fleet
            log.warning("%s: could not read satellites from PostgreSQL: %s", STAGE, error)
            return
        finally:
            self._read_at = time.monotonic()
        registered = frozenset(row[0] for row in rows)
        if registered != self.registered:
            log.info("%s: %d satellites registered in PostgreSQL", STAGE, len(registered))
        self.registered = registered

    def tick(self) -> None:
        if time.monotonic() - self._read_at > self.refresh_s:
            self.refresh()

    def __call__(self, satellite_id: str) -> bool:
        if satellite_id in self.configured or satellite_id in self.registered:
            return True
        # A satellite registered since the last read (a replay's) is accepted at once;
        # unknown ids re-read the table at most once a second, however many arrive.
        if self.use_db and time.monotonic() - self._read_at > UNKNOWN_REFRESH_S:
            self.refresh()
            return satellite_id in self.registered
        return False


def produce(producer: Producer, topic: str, key: bytes, value: bytes) -> int:
    """Produce one message, waiting while the local queue is full; returns waits."""
    waits = 0
    while True:
        try:
            producer.produce(topic, value=value, key=key)
            return waits
        except BufferError:
            waits += 1
            producer.poll(0.05)


def run(
    settings: Settings,
    *,
    group: str = STAGE,
    metrics_port: int | None = None,
    fleet_refresh_s: float = 30.0,
    use_db: bool = True,
    batch_size: int = 1000,
) -> StageMetrics:
    """Route until SIGTERM/SIGINT; returns the stage's counters."""
    metrics, stop, producer, dead_letter, port = start_stage(
        settings, STAGE, metrics_port, producer_overrides=PRODUCER_OVERRIDES
    )
    fleet = Fleet(settings, fleet_refresh_s, use_db)
    router = TelemetryRouter(settings.subsystem_topic, fleet)

    def handle(batch: Sequence[Message]) -> None:
        metrics.received(len(batch))
        produced = waits = 0
        for message in batch:
            result = router.route(message.value())
            for out in result.outputs:
                waits += produce(producer, out.topic, out.key, out.value)
            produced += len(result.outputs)
            if result.rejection is not None:
                dead_letter.send(message.value(), result.rejection, message)
            if result.latency_s is not None:
                metrics.latency(result.latency_s)
        metrics.produced(produced)
        if waits:
            metrics.retried(waits)

    log.info(
        "%s: group %s, %s -> %s, fleet of %d configured + %d registered, metrics on %s",
        STAGE,
        group,
        settings.topic_raw,
        settings.topic_subsystem_template,
        len(fleet.configured),
        len(fleet.registered),
        port or "no port",
    )
    run_kafka_stage(
        settings,
        STAGE,
        [settings.topic_raw],
        handle,
        producer,
        stop,
        metrics=metrics,
        batch_size=batch_size,
        poll_timeout_s=0.05,
        on_tick=fleet.tick,
        commit_every_s=COMMIT_EVERY_S,
        consumer_overrides={"group.id": group},
    )
    counts = metrics.counts
    log.info(
        "%s: received %d, produced %d, rejected %d",
        STAGE,
        counts["received"],
        counts["produced"],
        counts["rejected"],
    )
    return metrics


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.router", description=__doc__)
    parser.add_argument("--group", default=STAGE, help="Kafka consumer group")
    parser.add_argument("--metrics-port", type=int, default=None, help="0: no metrics server")
    parser.add_argument("--fleet-refresh-s", type=float, default=30.0)
    parser.add_argument(
        "--no-db", action="store_true", help="accept only the configured fleet (no PostgreSQL)"
    )
    parser.add_argument("--batch-size", type=int, default=1000, help="messages per poll at most")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run(
        get_settings(),
        group=args.group,
        metrics_port=args.metrics_port,
        fleet_refresh_s=args.fleet_refresh_s,
        use_db=not args.no_db,
        batch_size=args.batch_size,
    )


if __name__ == "__main__":
    main()
