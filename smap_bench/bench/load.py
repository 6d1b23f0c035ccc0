"""`smap-bench bench`: sustained load through the live pipeline, measured by the pipeline.

A fleet of N benchmark satellites (ids ``b<tag>-<n>``, registered for the run) replays
the test split at 1 Hz for the run's duration; meanwhile the stages' own counters,
Kafka consumer lag, RabbitMQ queue depth and each supervised process's CPU and memory
are sampled. End-to-end latency is read back from VictoriaMetrics: for every window,
``smap_e2e_latency_seconds{stage="writer"}`` is the time from its newest record's
production to its result being stored (queryable). The fleet replay that `make up`
starts is paused meanwhile so that the counters move for the benchmark alone.

Windows are counted twice over: by the stages' counters (``windows_sent``, ``results``:
messages) and by reading the results topic back for the run's satellites
(``windows_scored``: distinct windows; ``duplicates``: results beyond one per window;
see :func:`_result_counts`).

Afterwards the benchmark satellites are marked inactive in PostgreSQL (``keep=False``);
their topics stay (see :meth:`LoadBenchmark._retire`), and the result reports how many
telemetry partitions the scheduler was reading (``telemetry_partitions``), since each
costs the broker work on every fetch.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil

from smap_bench import catalog, db
from smap_bench.bench.live import (
    count_results,
    fleet_replay_paused,
    pipeline_counters,
    stage_counters,
)
from smap_bench.config import PROJECT_ROOT, Settings
from smap_bench.data import resolve_data_dir
from smap_bench.data.loader import list_channels
from smap_bench.data.synthetic import SYNTHETIC_CHANNELS
from smap_bench.kafka import TopicSpec, admin_client, ensure_topics
from smap_bench.metrics import VictoriaMetrics
from smap_bench.stack import Supervisor
from smap_bench.stage import STAGE_METRICS_PORTS

log = logging.getLogger(__name__)

#: Consumer groups whose lag the benchmark samples.
GROUPS = ("router", "scheduler", "writer", "events")
#: Stages whose counters the benchmark reads (workers are summed).
COUNTED = ("simulator", "router", "scheduler", "writer", "events")


@dataclass
class LoadBenchmark:
    settings: Settings
    satellites: int
    duration_s: float
    drain_s: float = 30.0
    sample_every_s: float = 2.0
    #: Consumer lag is sampled less often: it lists every partition's offsets, which
    #: costs the broker the most of what the benchmark asks of it.
    lag_every_s: float = 10.0
    keep: bool = False
    #: Seconds of the fleet's start left out of the sustained latency (``e2e_latency_ms``),
    #: at most a third of the run; ``e2e_latency_ms_whole_run`` keeps them.
    startup_s: float = 30.0
    #: The fleet out of phase, as a real one (see :mod:`smap_bench.simulation`):
    #: satellite k starts at record k % ``stagger`` (None: the window stride), so that
    #: windows complete on every second rather than all on one in ten; ``phases`` > 1
    #: also spreads each second's records over that many slots. Not by default: on the
    #: local Tansu broker every batch stays a stored object that each fetch with data
    #: lists again, and ten slots a second made ten raw-topic batches per partition per
    #: second instead of one, a listing cost growing 100 times faster over a run.
    #: ``phases=1, stagger=0`` is the synchronised fleet.
    phases: int = 1
    stagger: int | None = None

    @property
    def stagger_records(self) -> int:
        return self.settings.stride if self.stagger is None else self.stagger

    @property
    def startup_cut_s(self) -> float:
        """The start-up actually left out: ``startup_s``, at most a third of the run."""
        return min(self.startup_s, self.duration_s / 3)

    def run(self, report: Callable[[str, float, float], None] | None = None) -> dict[str, Any]:
        settings = self.settings
        say = report or (lambda phase, done, total: None)
        tag = uuid.uuid4().hex[:5]
        prefix = f"b{tag}-"
        mapping = self._fleet(prefix)
        self._register(mapping)
        partitions = _telemetry_partitions(settings)
        with fleet_replay_paused(settings):
            before = self._counters()
            supervised = Supervisor(settings).programs()
            processes = _processes(supervised)
            cpu_before = {name: _cpu_seconds(p) for name, p in processes.items()}
            host_before = _host_busy_seconds()
            started_wall = time.time()
            started = time.monotonic()
            simulator = self._start_simulator(mapping)
            processes["simulator (bench)"] = psutil.Process(simulator.pid)
            cpu_before["simulator (bench)"] = 0.0
            lags: list[dict[str, int]] = []
            lag_at = 0.0
            admin = admin_client(settings)
            depths: list[int] = []
            rss: dict[str, float] = {name: 0.0 for name in processes}
            rss["simulator (bench)"] = 0.0
            try:
                while (elapsed := time.monotonic() - started) < self.duration_s:
                    say("run", elapsed, self.duration_s)
                    if simulator.poll() is not None:
                        raise RuntimeError(
                            f"the benchmark simulator exited ({simulator.returncode})"
                        )
                    if not lags or elapsed - lag_at >= self.lag_every_s:
                        lags.append(_group_lags(settings, admin))
                        lag_at = elapsed
                    depths.append(_queue_depth(settings))
                    for name, process in processes.items():
                        rss[name] = max(rss[name], _rss_mb(process))
                    time.sleep(self.sample_every_s)
                measured_s = time.monotonic() - started
                cpu_after = {name: _cpu_seconds(p) for name, p in processes.items()}
                host_busy = _host_busy_seconds() - host_before
            finally:
                simulator.terminate()
                simulator.wait(timeout=30)
            after_run = self._counters()
            self._drain(before, say)
            after = self._counters()
            say("count", 0, 1)
            on_topic = count_results(settings, started_wall, prefix)
        series = self._latency_series(prefix, started_wall)
        latency = latency_summary(series, self.startup_cut_s)
        whole_run = latency_summary(series)
        if not self.keep:
            self._retire(mapping)
        sent = _delta(after, before, "scheduler", "produced")
        results = _delta(after, before, "worker", "produced")
        rejected = _delta(after, before, "worker", "rejected")
        return {
            "satellites": self.satellites,
            "telemetry_partitions": partitions,
            "duration_s": round(measured_s, 1),
            "subsystem_records_per_s": round(
                _delta(after_run, before, "router", "produced") / measured_s, 1
            ),
            "windows_per_s": round(
                _delta(after_run, before, "scheduler", "produced") / measured_s, 1
            ),
            "results_per_s": round(_delta(after_run, before, "worker", "produced") / measured_s, 1),
            "e2e_latency_ms": latency.get("writer", {}),
            "e2e_latency_ms_whole_run": whole_run.get("writer", {}),
            "startup_s": round(self.startup_cut_s, 1),
            "fleet_phases": self.phases,
            "fleet_stagger": self.stagger_records,
            "stage_latency_ms": latency,
            **_result_counts(sent, results, rejected, on_topic),
            "retried": {stage: _delta(after, before, stage, "retried") for stage in after},
            "worker_received": _delta(after, before, "worker", "received"),
            "rejected": {stage: _delta(after, before, stage, "rejected") for stage in after},
            # outputs Kafka refused for good (smap_stage_lost_total): neither out nor dead-lettered
            "lost_by_stage": {stage: _delta(after, before, stage, "lost") for stage in after},
            "kafka_lag": _lag_summary(lags),
            "rabbitmq_queue_depth": {
                "max": max(depths, default=0),
                "last": depths[-1] if depths else 0,
            },
            # The machine is shared: what else ran during the measurement is part of it.
            "host": _host_report(host_busy, cpu_before, cpu_after, measured_s),
            "stages": {
                name: {
                    # None: the process was restarted during the run (not measured)
                    "cpu_percent": (
                        round(100 * (cpu_after[name] - cpu_before[name]) / measured_s, 1)
                        if cpu_after[name] >= cpu_before[name]
                        else None
                    ),
                    "rss_mb": round(rss[name], 1),
                    "latency_ms": latency.get(_stage_of(name), {}).get("p50"),
                }
                for name in processes
            },
        }

    # -- steps ----------------------------------------------------------------------------

    def _fleet(self, prefix: str) -> dict[str, dict[str, str]]:
        from smap_bench.simulation import plan_channels

        source = resolve_data_dir(self.settings.data_dir)
        channels = list_channels(source.path) if source.path else list(SYNTHETIC_CHANNELS)
        plan = plan_channels(self.satellites, channels)
        return {
            f"{prefix}{catalog.satellite_number(sat)}": {s.value: c for s, c in slots.items()}
            for sat, slots in plan.items()
        }

    def _register(self, mapping: dict[str, dict[str, str]]) -> None:
        rows = [
            (sat, subsystem, channel, catalog.model_name(channel))
            for sat, slots in mapping.items()
            for subsystem, channel in slots.items()
        ]
        db.sync_fleet(self.settings.postgres_dsn, rows)
        ensure_topics(
            self.settings,
            [
                TopicSpec(self.settings.subsystem_topic(subsystem, sat))
                for sat, slots in mapping.items()
                for subsystem in slots
            ],
            timeout_s=300,
        )

    def _retire(self, mapping: dict[str, dict[str, str]]) -> None:
        """Mark the run's satellites inactive, so the router's fleet no longer holds them.

        Their topics stay: deleting a topic that a consumer is reading crashes it (SIGSEGV
        in librdkafka 2.16 on the Tansu broker, reproduced with a bare consumer), and the
        scheduler reads every telemetry topic. Each one left costs the broker work on
        every scheduler fetch, so results of runs after many others are pessimistic.
        """
        import psycopg

        try:
            with psycopg.connect(self.settings.postgres_dsn, connect_timeout=5) as conn:
                conn.execute(
                    "UPDATE satellites SET active = false WHERE satellite_id = ANY(%s)",
                    (list(mapping),),
                )
        except psycopg.Error as error:
            log.warning("could not retire the benchmark satellites: %s", error)

    def _start_simulator(self, mapping: dict[str, dict[str, str]]) -> subprocess.Popen[bytes]:
        import json

        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(mapping, handle)
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.simulator",
                f"--mapping={handle.name}",
                "--speed=1",
                "--loops=0",
                "--first-loop=0",
                f"--simulator-id=bench-{next(iter(mapping)).split('-')[0]}",
                "--metrics-port=0",
                f"--phases={self.phases}",
                f"--stagger={self.stagger_records}",
            ],
            cwd=PROJECT_ROOT,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _counters(self) -> dict[str, dict[str, float]]:
        counters = pipeline_counters(self.settings)
        for stage in ("router", "writer", "events"):
            counters[stage] = stage_counters(self.settings, stage, STAGE_METRICS_PORTS[stage])
        return counters

    def _drain(self, before: dict[str, dict[str, float]], say: Callable[..., None]) -> None:
        """Wait until every window the scheduler sent has a result (or the drain time ends)."""
        deadline = time.monotonic() + self.drain_s
        while time.monotonic() < deadline:
            now = self._counters()
            sent = _delta(now, before, "scheduler", "produced")
            done = _delta(now, before, "worker", "produced") + _delta(
                now, before, "worker", "rejected"
            )
            say("drain", done, sent)
            if done >= sent:
                return
            time.sleep(1.0)

    def _latency_series(
        self, prefix: str, since: float
    ) -> list[tuple[str, list[tuple[float, float]]]]:
        """The run's ``(stage, samples)`` latency series, read once from VictoriaMetrics."""
        with VictoriaMetrics(self.settings.victoria_url) as vm:
            series = vm.export(
                f'smap_e2e_latency_seconds{{satellite_id=~"{prefix}.*"}}', start=since - 120
            )
        return [(item.labels.get("stage", "?"), item.samples) for item in series]


def latency_summary(
    series: list[tuple[str, list[tuple[float, float]]]], startup_s: float = 0.0
) -> dict[str, dict[str, float]]:
    """p50/p99 in ms per stage from ``(stage, [(record time s, latency s), ...])`` series,
    leaving out samples whose record came in the fleet's first ``startup_s`` seconds (its
    records' times: the earliest sample of all the series starts the clock).

    A new satellite's first windows wait for the scheduler to discover its topics and for
    its streams' first fetches: a one-time cost that a sustained figure should not carry,
    and which the whole-run figure (``startup_s`` 0) shows.
    """
    times = [t for _, samples in series for t, _ in samples]
    if not times:
        return {}
    cut = min(times) + startup_s
    by_stage: dict[str, list[float]] = {}
    for stage, samples in series:
        by_stage.setdefault(stage, []).extend(v for t, v in samples if t >= cut)
    return {
        stage: {
            "p50": round(float(np.percentile(values, 50)) * 1000, 1),
            "p99": round(float(np.percentile(values, 99)) * 1000, 1),
            "samples": len(values),
        }
        for stage, values in by_stage.items()
        if values
    }


def _delta(
    after: dict[str, dict[str, float]], before: dict[str, dict[str, float]], stage: str, kind: str
) -> int:
    return int(after.get(stage, {}).get(kind, 0.0) - before.get(stage, {}).get(kind, 0.0))


def _result_counts(
    sent: int, results: int, rejected: int, on_topic: dict[str, Any]
) -> dict[str, Any]:
    """The run's window accounting, by message and by window.

    ``sent`` and ``results`` are the scheduler's and the workers' counters (windows
    dispatched, results published: messages, so a window published twice counts twice);
    ``on_topic`` is :func:`smap_bench.bench.live.count_results` of the run's satellites.
    ``windows_scored`` counts each window once, ``duplicates`` the results beyond one per
    window, ``other_traffic_results`` results of other satellites published during the
    run (windows the counters may include). ``lost``: windows sent that neither reached
    the results topic nor were dead-lettered (with a reason: ``rejected``).
    """
    scored = int(on_topic["windows"])
    other = int(on_topic["other_results"])
    return {
        "windows_sent": sent,
        "results": results,
        "results_on_topic": int(on_topic["results"]),
        "windows_scored": scored,
        "duplicates": int(on_topic["duplicates"]),
        "duplicate_examples": on_topic.get("duplicate_examples", []),
        "other_traffic_results": other,
        "lost": max(sent - other - scored - rejected, 0),
        # the counters alone, as earlier runs reported it
        "lost_by_counters": max(sent - results - rejected, 0),
    }


def _stage_of(program: str) -> str:
    return "worker" if program.startswith("worker") else program


def _processes(programs: dict[str, dict[str, Any]]) -> dict[str, psutil.Process]:
    found = {}
    for name, info in programs.items():
        pid = info.get("pid")
        if pid:
            try:
                found[name] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                continue
    return found


def _cpu_seconds(process: psutil.Process) -> float:
    """CPU seconds of a process and its children (Triton's model stubs, for one)."""
    try:
        total = sum(process.cpu_times()[:2])
        for child in process.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.NoSuchProcess:
                continue
        return total
    except psutil.NoSuchProcess:
        return 0.0


def _rss_mb(process: psutil.Process) -> float:
    try:
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total / 2**20
    except psutil.NoSuchProcess:
        return 0.0


def _host_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, all processes)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _host_report(
    busy_s: float, before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, Any]:
    """Cores, load average, and CPU% of the pipeline's processes and of everything else."""
    pipeline = sum(max(after[name] - before[name], 0.0) for name in after)
    return {
        "cores": psutil.cpu_count() or 1,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpu_percent": round(100 * busy_s / seconds, 1),
        "pipeline_cpu_percent": round(100 * pipeline / seconds, 1),
        "other_cpu_percent": round(100 * max(busy_s - pipeline, 0.0) / seconds, 1),
    }


def _telemetry_partitions(settings: Settings) -> int:
    """Partitions of the subsystem topics (all of which the scheduler reads)."""
    prefix = settings.subsystem_topic("ACS", "x").split(".", 1)[0] + "."
    topics = admin_client(settings).list_topics(timeout=30).topics
    return sum(len(t.partitions) for name, t in topics.items() if name.startswith(prefix))


def _group_lags(settings: Settings, admin: Any = None) -> dict[str, int]:
    from smap_bench.api.monitor import consumer_lag

    return {row["group"]: int(row["lag"] or 0) for row in consumer_lag(settings, GROUPS, admin)}


def _lag_summary(samples: list[dict[str, int]]) -> dict[str, Any]:
    """Total lag (max and last sample) and each group's maximum (a group whose lag could
    not be read counts 0 in a sample).

    Every group's lag is backlog; the scheduler's is the records no dispatched window
    holds yet (:func:`smap_bench.api.monitor.scheduler_backlog_offsets`; JSON files from
    before session 15 measured it from the group's own offsets, which sit up to a context
    behind on purpose, so their scheduler lag is not comparable).
    """
    totals = [sum(sample.values()) for sample in samples]
    groups = sorted({group for sample in samples for group in sample})
    return {
        "max": max(totals, default=0),
        "last": totals[-1] if totals else 0,
        "max_by_group": {g: max(sample.get(g, 0) for sample in samples) for g in groups},
    }


def _queue_depth(settings: Settings) -> int:
    from smap_bench.api.monitor import default_queues, queue_depths

    return sum(int(row.get("messages") or 0) for row in queue_depths(settings, default_queues()))


def run_sweep(settings: Settings, satellites: list[int], duration_s: float) -> list[dict[str, Any]]:
    """One load benchmark per fleet size, smallest first."""
    return [LoadBenchmark(settings, n, duration_s).run() for n in sorted(satellites)]
