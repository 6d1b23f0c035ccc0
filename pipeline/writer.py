"""Metrics writer: raw telemetry and inference results in, VictoriaMetrics samples out.

Consumes ``settings.topic_raw`` and ``settings.topic_results`` (group ``writer``),
validates each message, formats it with the metric schema of :mod:`smap_bench.metrics`
and writes ``/api/v1/import/prometheus`` once per Kafka batch (at most ``--max-lines``
lines a request). The batch's offsets are committed only after VictoriaMetrics accepted
it; while VictoriaMetrics is down the write is retried with backoff, without limit
(:class:`smap_bench.writing.MetricsWriter`). Bad messages go to the dead-letter topic.

Run::

    python -m pipeline.writer                              # group "writer", metrics on :9104
    python -m pipeline.writer --batch-size 2000 --batch-wait-ms 20

A batch is what has been fetched when its first message arrives (up to
``--batch-size``): under light load each result is written at once, under heavy load the
batches grow by themselves. ``--batch-wait-ms`` waits that much longer for more.

Several writers in one group share the partitions of both topics.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from smap_bench.config import Settings, get_settings
from smap_bench.metrics import VictoriaMetrics
from smap_bench.stage import (
    COMMIT_EVERY_S,
    STAGE_METRICS_PORTS,
    run_kafka_stage,
    start_stage,
)
from smap_bench.writing import MetricsWriter, Stopped

STAGE = "writer"
log = logging.getLogger(f"smap_bench.{STAGE}")

#: A writer blocked on an unreachable VictoriaMetrics keeps its partitions (librdkafka's
#: heartbeats go on); the default 5 minutes would hand them to another member mid-retry.
MAX_POLL_INTERVAL_MS = 86_400_000


def run(
    settings: Settings,
    *,
    group: str = STAGE,
    batch_size: int = 500,
    max_wait_ms: float = 25.0,
    batch_wait_ms: float = 0.0,
    max_lines: int = 20_000,
    metrics_port: int | None = None,
) -> MetricsWriter:
    """Run the writer until SIGTERM/SIGINT; returns its state (counts) at the end."""
    metrics, stop, producer, dead_letter, port = start_stage(settings, STAGE, metrics_port)
    with VictoriaMetrics(settings.victoria_url) as victoria:
        writer = MetricsWriter(
            victoria.import_prometheus,
            metrics,
            dead_letter,
            raw_topic=settings.topic_raw,
            results_topic=settings.topic_results,
            stride=settings.stride,
            max_lines=max_lines,
            max_wait_s=max_wait_ms / 1000.0,
            should_stop=lambda: stop.stopped,
            sleep=stop.event.wait,
        )
        log.info(
            "%s: group %s, %s + %s -> %s, batches of %d messages / +%.0f ms, metrics on %s",
            STAGE,
            group,
            settings.topic_raw,
            settings.topic_results,
            settings.victoria_url,
            batch_size,
            batch_wait_ms,
            port or "-",
        )
        try:
            run_kafka_stage(
                settings,
                group,
                [settings.topic_raw, settings.topic_results],
                writer.handle,
                producer,
                stop,
                metrics=metrics,
                batch_size=batch_size,
                poll_timeout_s=max_wait_ms / 1000.0,
                batch_wait_s=batch_wait_ms / 1000.0,
                on_tick=writer.tick,
                commit_every_s=COMMIT_EVERY_S,
                consumer_overrides={"max.poll.interval.ms": MAX_POLL_INTERVAL_MS},
            )
            writer.flush()  # latency lines still waiting
        except Stopped as error:
            log.warning(
                "%s: stopped while VictoriaMetrics was unreachable; the unwritten batch was"
                " not committed and will be read again: %s",
                STAGE,
                error,
            )
        finally:
            log.info(
                "%s: received %d, written %d (%d lines), rejected %d, retried %d",
                STAGE,
                metrics.counts["received"],
                metrics.counts["produced"],
                writer.lines_written,
                metrics.counts["rejected"],
                metrics.counts["retried"],
            )
    return writer


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.writer", description=__doc__)
    parser.add_argument("--group", default=STAGE, help="Kafka consumer group (default: writer)")
    parser.add_argument("--batch-size", type=int, default=500, help="messages per Kafka batch")
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=25.0,
        help="idle poll period; latency lines wait at most this long for the next write",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=0.0,
        help="wait this long after a batch's first message for more (default: none)",
    )
    parser.add_argument("--max-lines", type=int, default=20_000, help="lines per HTTP request")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help=f"self-metrics port (default {STAGE_METRICS_PORTS[STAGE]}; 0: none)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # httpx logs every request at INFO: a line per VictoriaMetrics write, ~5% of the
    # writer's CPU at 40 satellites (py-spy). Its warnings and errors still show.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    run(
        get_settings(),
        group=args.group,
        batch_size=args.batch_size,
        max_wait_ms=args.max_wait_ms,
        batch_wait_ms=args.batch_wait_ms,
        max_lines=args.max_lines,
        metrics_port=args.metrics_port,
    )


if __name__ == "__main__":
    main()
