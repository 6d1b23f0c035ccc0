"""Satellite simulator: replays SMAP splits as telemetry messages onto the raw topic.

N satellites x 7 subsystems, each on its catalog channel; one record per second per
satellite by default; commands (pause, resume, seek, speed, stop, status) from the
control topic; its state on the status topic every second. The logic is in
:mod:`smap_bench.simulation`; this module binds it to Kafka, the clocks and signals.

Run::

    python -m pipeline.simulator                         # settings.satellites, 1 Hz, forever
    python -m pipeline.simulator --satellites 5 --speed 1 --loops 0 --split test
    python -m pipeline.simulator --satellites 1000 --speed max --loops 1
    python -m pipeline.simulator --delay-ms 200          # the seed's field: 5 ticks per second
    python -m pipeline.simulator --phases 10 --stagger 10  # out of phase, as a real fleet
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from confluent_kafka import KafkaError, Message, Producer

from smap_bench.config import Settings, get_settings
from smap_bench.kafka import TopicSpec, ensure_topics
from smap_bench.simulation import (
    DEFAULT_SIMULATOR_ID,
    Align,
    CommandListener,
    Replay,
    SimulationError,
    SimulatorControl,
    SimulatorCore,
    SimulatorIO,
    SimulatorState,
    Split,
    continue_loop,
    find_last_state,
    load_fleet,
    parse_speed,
    run_simulator,
    tick_period,
)
from smap_bench.stage import STAGE_METRICS_PORTS, DeadLetter, StageMetrics, StopFlag, make_producer

STAGE = "simulator"
log = logging.getLogger(f"smap_bench.{STAGE}")


def produce(producer: Producer, topic: str, key: bytes | None, value: bytes) -> int:
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
    satellites: int,
    split: Split = "test",
    speed: float | None = 1.0,
    rate_hz: float = 1.0,
    delay_ms: float | None = None,
    loops: int = 0,
    limit: int = 0,
    align: Align = "shortest",
    mapping: dict[str, dict[str, str]] | None = None,
    first_loop: int | None = None,
    start_time: datetime | None = None,
    simulator_id: str = DEFAULT_SIMULATOR_ID,
    metrics_port: int | None = None,
    phases: int = 1,
    stagger: int = 0,
) -> SimulatorCore:
    """Replay until finished, stopped by command, or SIGTERM/SIGINT; returns the core."""
    metrics = StageMetrics(STAGE)
    port = STAGE_METRICS_PORTS[STAGE] if metrics_port is None else metrics_port
    if port:
        metrics.serve(settings.bind_host, port)
    stop = StopFlag().install()
    started_at = time.time()
    ensure_topics(settings, [TopicSpec(settings.topic_control), TopicSpec(settings.topic_status)])

    fleet, source = load_fleet(
        satellites,
        split=split,
        data_dir=settings.data_dir,
        mapping=mapping,
        align=align,
        limit=limit,
    )
    control = SimulatorControl(settings, simulator_id)
    if first_loop is None:
        first_loop = continue_loop(find_last_state(control))
    replay = Replay(
        fleet,
        loops=loops,
        first_loop=first_loop,
        start_time=start_time,
        phases=phases,
        stagger=stagger,
    )
    core = SimulatorCore(
        replay,
        period_s=tick_period(rate_hz, delay_ms),
        speed=speed,
        simulator_id=simulator_id,
        split=split,
        started_at=started_at,
        now=time.monotonic(),
    )

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            core.rejected += 1
            metrics.rejected(f"delivery failed: {error}")

    producer = make_producer(
        settings, STAGE, on_delivery=delivered, **{"delivery.report.only.error": True}
    )
    dead_letter = DeadLetter(producer, settings.topic_dead_letter, STAGE, metrics)
    listener = CommandListener(settings, since=started_at)

    def send(key: bytes, value: bytes) -> None:
        waits = produce(producer, settings.topic_raw, key, value)
        if waits:
            metrics.retried(waits)

    def publish_state(state: SimulatorState) -> None:
        value = state.model_dump_json().encode()
        produce(producer, settings.topic_status, simulator_id.encode(), value)
        producer.poll(0)

    def poll_commands() -> list[bytes]:
        raws = listener.poll()
        if raws:
            metrics.received(len(raws))
        return raws

    produced_before = 0

    def after_tick() -> None:
        nonlocal produced_before
        metrics.produced(core.produced - produced_before)
        produced_before = core.produced
        producer.poll(0)

    log.info(
        "%s %s: %d satellites from %s (%s split, align %s, loop length %d..%d), "
        "first loop %d, loops %s, speed %s, tick every %.3f s in %d phases, stagger %d, "
        "metrics on %s",
        STAGE,
        simulator_id,
        len(fleet),
        source.describe(),
        split,
        align,
        min(s.loop_length for s in fleet),
        max(s.loop_length for s in fleet),
        first_loop,
        loops or "forever",
        "max" if speed is None else speed,
        core.period_s,
        replay.phases,
        stagger,
        port or "no port",
    )
    io = SimulatorIO(
        send=send,
        poll_commands=poll_commands,
        publish_state=publish_state,
        reject=lambda raw, reason: dead_letter.send(raw, reason),
        sleep=stop.event.wait,
        after_tick=after_tick,
    )
    try:
        why = run_simulator(core, io, lambda: stop.stopped)
    finally:
        remaining = producer.flush(30)
        listener.close()
        control.close()
    if remaining:
        log.error("%s: %d messages not delivered in 30 s", STAGE, remaining)
    log.info("%s %s: %s after %d messages", STAGE, simulator_id, why, core.produced)
    return core


def main(argv: Sequence[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m pipeline.simulator", description=__doc__)
    parser.add_argument("--satellites", type=int, default=settings.satellites)
    parser.add_argument("--split", choices=["test", "train"], default="test")
    parser.add_argument("--speed", default="1", help="speed factor, or 'max'")
    parser.add_argument("--rate-hz", type=float, default=1.0, help="records/s per satellite")
    parser.add_argument("--delay-ms", type=float, default=None, help="pause between records")
    parser.add_argument("--loops", type=int, default=0, help="passes over the split; 0: forever")
    parser.add_argument("--limit", type=int, default=0, help="records per loop at most; 0: all")
    parser.add_argument("--align", choices=["shortest", "longest"], default="shortest")
    parser.add_argument(
        "--mapping", type=Path, default=None, help='JSON file {"sat1": {"ACS": "A-1", ...}}'
    )
    parser.add_argument(
        "--first-loop", type=int, default=None, help="default: one past the last published"
    )
    parser.add_argument(
        "--start-time",
        type=datetime.fromisoformat,
        default=None,
        help="simulated clock of record 0 (ISO 8601 with offset); default: now",
    )
    parser.add_argument(
        "--phases",
        type=int,
        default=1,
        help="spread each tick's records over this many slots (satellite k in slot k %% N)",
    )
    parser.add_argument(
        "--stagger",
        type=int,
        default=0,
        help="satellite k starts at record k %% S (S = the stride: windows complete evenly)",
    )
    parser.add_argument("--simulator-id", default=DEFAULT_SIMULATOR_ID)
    parser.add_argument("--metrics-port", type=int, default=None, help="0: no metrics server")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        mapping = json.loads(args.mapping.read_text()) if args.mapping else None
        run(
            settings,
            satellites=args.satellites,
            split=args.split,
            speed=parse_speed(args.speed),
            rate_hz=args.rate_hz,
            delay_ms=args.delay_ms,
            loops=args.loops,
            limit=args.limit,
            align=args.align,
            mapping=mapping,
            first_loop=args.first_loop,
            start_time=args.start_time,
            simulator_id=args.simulator_id,
            metrics_port=args.metrics_port,
            phases=args.phases,
            stagger=args.stagger,
        )
    except (SimulationError, OSError, json.JSONDecodeError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    main()
