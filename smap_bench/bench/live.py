"""Drive the running pipeline: the labeled replay (replay-as-test) and its bookkeeping.

Everything here talks to the live stack: it registers the replay's satellites, creates
their topics, runs the simulator as a subprocess, reads the stages' own counters before
and after, and reads the detections back from VictoriaMetrics. The arithmetic of
packing and scoring lives in :mod:`smap_bench.bench.replay`.

Counting. ``windows_sent`` is the growth of the scheduler's ``produced`` counter over
the run, ``windows_scored`` the number of distinct windows whose decision VictoriaMetrics
holds for the run's satellites, ``results`` and ``duplicates`` what the results topic
holds for them (all messages, and those beyond one per window: :class:`ResultTally`),
and ``lost`` what was sent and neither reached the sink nor was dead-lettered with a
reason (``windows_rejected``). The fleet replay that `make up` starts is paused for the
run so that the counters move for this run alone; results of other satellites seen
meanwhile are reported (``other_traffic_results``) and taken out of the arithmetic.

Scoring. The headline scores the anomaly events PostgreSQL holds; ``window_verdicts``
scores the workers' verdicts (``inference_anomaly_detected``, before the events stage's
confirmation) and ``dashboard_alarms`` the decisions the dashboard shows
(``anomaly_alarm``, written by the events stage), with the windows it lacks counted.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from smap_bench import catalog, db
from smap_bench.bench.replay import (
    ReplayPlan,
    pack_channels,
    record_flags_from_events,
    record_flags_from_live,
    score_events,
    score_streams,
)
from smap_bench.config import PROJECT_ROOT, Settings
from smap_bench.data import load_channel, resolve_data_dir
from smap_bench.data.loader import list_channels
from smap_bench.evaluation import bridge_gaps, segments
from smap_bench.kafka import TopicSpec, ensure_topics
from smap_bench.metrics import VictoriaMetrics
from smap_bench.stage import STAGE_METRICS_PORTS

log = logging.getLogger(__name__)

Progress = Callable[[str, float, float], None]
"""progress(phase, done, total): called while the replay runs."""


class ReplayError(RuntimeError):
    """The replay could not run; the message says what to do."""


# --------------------------------------------------------------------------- counters


def stage_metrics(settings: Settings, stage: str, port: int) -> dict[str, float]:
    """Every metric family a stage serves now, summed over its samples (a counter's
    ``_total`` samples only), and under ``created`` the earliest of its counters'
    ``_created`` timestamps: when the process began counting (a restart changes it)."""
    url = f"http://{settings.host}:{port}/metrics"
    try:
        text = httpx.get(url, timeout=3).text
    except httpx.HTTPError as exc:
        raise ReplayError(
            f"{stage} does not answer at {url} ({exc}): is the pipeline up?"
        ) from None
    totals: dict[str, float] = defaultdict(float)
    created: list[float] = []
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):  # the text format's own family of them
            created += [sample.value for sample in family.samples]
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                created.append(sample.value)
            elif family.type != "counter" or sample.name.endswith("_total"):
                totals[family.name] += sample.value
    if created:
        totals["created"] = min(created)
    return dict(totals)


def stage_counters(settings: Settings, stage: str, port: int) -> dict[str, float]:
    """The received / produced / rejected / retried / lost totals a stage serves now, and
    when it began counting (``created``, :func:`stage_metrics`)."""
    metrics = stage_metrics(settings, stage, port)
    return counters_of(metrics) | ({"created": metrics["created"]} if "created" in metrics else {})


def counters_of(metrics: dict[str, float]) -> dict[str, float]:
    """The ``smap_stage_*`` totals of a stage's metrics (:func:`stage_metrics`), unprefixed."""
    return {
        name.removeprefix("smap_stage_"): value
        for name, value in metrics.items()
        if name.startswith("smap_stage_")
    }


#: The events stage's confirmation counters (:mod:`pipeline.events`), by the name a
#: replay reports them under.
CONFIRMATION_COUNTERS = {
    "judged": "smap_events_confirmation_windows",
    "incomplete": "smap_events_confirmation_incomplete",
    "late": "smap_events_confirmation_late_history",
    "unconfirmed": "smap_events_unconfirmed",
}


def pipeline_counters(settings: Settings) -> dict[str, dict[str, float]]:
    """Counters of the scheduler, of every worker (summed as ``worker``), of the events
    stage and of its confirmation (``confirmation``: flagged windows judged, judged on an
    incomplete history, history windows late, and flags left as the worker decided for
    want of a rule in their result)."""
    out = {
        "scheduler": stage_counters(settings, "scheduler", STAGE_METRICS_PORTS["scheduler"]),
    }
    workers: dict[str, float] = defaultdict(float)
    for index in range(settings.workers):
        port = STAGE_METRICS_PORTS["worker"] + index
        for key, value in stage_counters(settings, f"worker{index + 1}", port).items():
            if key != "created":
                workers[key] += value
    out["worker"] = dict(workers)
    events = stage_metrics(settings, "events", STAGE_METRICS_PORTS["events"])
    out["events"] = counters_of(events)
    out["confirmation"] = {  # a counter the stage does not serve is left out: not known
        key: events[name] for key, name in CONFIRMATION_COUNTERS.items() if name in events
    } | ({"created": events["created"]} if "created" in events else {})
    return out


def _delta(
    after: dict[str, dict[str, float]], before: dict[str, dict[str, float]], stage: str, kind: str
) -> int:
    return int(after[stage].get(kind, 0.0) - before[stage].get(kind, 0.0))


def _counted_delta(
    after: dict[str, dict[str, float]], before: dict[str, dict[str, float]], stage: str, kind: str
) -> int | None:
    """:func:`_delta`, or None when the stage's process restarted during the run (it
    began counting at another time, or the counter fell): what it had counted before is
    gone, so the run's count is not known; None too when the stage does not serve the
    counter."""
    if kind not in after[stage]:
        return None
    delta = _delta(after, before, stage, kind)
    restarted = after[stage].get("created") != before[stage].get("created")
    return None if delta < 0 or restarted else delta


# --------------------------------------------------------------------------- detections


@dataclass(frozen=True)
class StreamKey:
    satellite_id: str
    subsystem: str


def read_window_flags(
    vm: VictoriaMetrics,
    prefix: str,
    start_time: datetime,
    window: int,
    metric: str = "inference_anomaly_detected",
) -> dict[StreamKey, dict[int, bool]]:
    """Window decisions of the run's satellites from VictoriaMetrics, keyed by window start:
    the workers' verdicts (``inference_anomaly_detected``, the default) or the served
    decisions the dashboard shows (``anomaly_alarm``, written by the events stage).

    A decision sample sits at its window's end time; with one simulated second per
    record from ``start_time``, the window's first record is ``t - start - (window - 1)``.
    """
    t0 = start_time.timestamp()
    series = vm.export(f'{metric}{{satellite_id=~"{prefix}.*"}}')
    flags: dict[StreamKey, dict[int, bool]] = defaultdict(dict)
    for item in series:
        key = StreamKey(item.labels["satellite_id"], item.labels["subsystem"])
        for t, value in item.samples:
            first = round(t - t0) - (window - 1)
            flags[key][first] = value > 0.5
    return dict(flags)


def read_event_ranges(
    settings: Settings, satellites: Iterable[str], loop: int = 0
) -> dict[StreamKey, list[tuple[int, int]]]:
    """The anomaly events PostgreSQL holds for ``satellites`` in ``loop``: per stream, each
    event's first and last record (inclusive), in record order."""
    import psycopg

    with psycopg.connect(settings.postgres_dsn) as conn:
        rows = conn.execute(
            "SELECT satellite_id, subsystem, start_record_index, end_record_index"
            " FROM anomaly_events WHERE satellite_id = ANY(%s) AND loop = %s"
            " ORDER BY satellite_id, subsystem, start_record_index",
            (list(satellites), loop),
        ).fetchall()
    ranges: dict[StreamKey, list[tuple[int, int]]] = defaultdict(list)
    for satellite_id, subsystem, start, end in rows:
        ranges[StreamKey(satellite_id, subsystem)].append((int(start), int(end)))
    return dict(ranges)


@dataclass
class ResultTally:
    """Results read back from the results topic, counted by window as well as by message.

    A window is identified by its stream, loop and first record index (what its
    deterministic job id is made of; the job id where those are missing), so a result
    published twice for one window counts once in ``windows`` and once in
    ``duplicates``. ``examples`` describes up to ``keep_examples`` duplicated windows:
    each copy's ``scheduler`` and ``worker`` stage stamps tell whether the window was
    formed twice (scheduler stamps differ), scored twice (worker stamps differ) or one
    scored result published twice (both the same).
    """

    prefix: str
    keep_examples: int = 5
    results: int = 0
    other_results: int = 0
    _copies: dict[Any, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, item: dict[str, Any]) -> None:
        """Count one decoded result message."""
        if not str(item.get("satellite_id", "")).startswith(self.prefix):
            self.other_results += 1
            return
        self.results += 1
        key = window_key(item)
        stages = item.get("stages") or {}
        self._copies.setdefault(key, []).append(
            {"scheduler": stages.get("scheduler"), "worker": stages.get("worker")}
        )

    @property
    def windows(self) -> int:
        return len(self._copies)

    @property
    def duplicates(self) -> int:
        return self.results - self.windows

    def examples(self) -> list[dict[str, Any]]:
        out = []
        for key, copies in self._copies.items():
            if len(copies) < 2:
                continue
            out.append({"window": list(key), "copies": len(copies), "stamps": copies})
            if len(out) >= self.keep_examples:
                break
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "results": self.results,
            "windows": self.windows,
            "duplicates": self.duplicates,
            "other_results": self.other_results,
            "duplicate_examples": self.examples(),
        }


def window_key(item: dict[str, Any]) -> tuple[Any, ...]:
    """The window a result is for: (satellite, subsystem, loop, first record index), or
    ``("job", job_id)`` for a result without a record index."""
    start = item.get("record_index_start")
    if start is None:
        return ("job", str(item.get("job_id")))
    return (
        str(item.get("satellite_id")),
        str(item.get("subsystem")),
        item.get("loop"),
        int(start),
    )


def count_results(
    settings: Settings, since_wall: float, prefix: str, quiet_s: float = 3.0
) -> dict[str, Any]:
    """Results on the results topic produced since ``since_wall``: the run's (messages,
    distinct windows, duplicates) and other satellites' (traffic that shared the run's
    counters); see :class:`ResultTally`.

    Reads every partition from the offset of ``since_wall`` until nothing new has come
    for ``quiet_s`` seconds (end offsets are not trusted: Tansu's point into a batch).
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"replay-count-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    tally = ResultTally(prefix)
    try:
        topic = settings.topic_results
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        wanted = [TopicPartition(topic, p, int(since_wall * 1000)) for p in partitions]
        consumer.assign(consumer.offsets_for_times(wanted, timeout=10))
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is not None:
                    continue
                last = time.monotonic()
                if message.timestamp()[1] < since_wall * 1000:
                    continue
                tally.add(json.loads(message.value() or b"{}"))
    finally:
        consumer.close()
    return tally.summary()


# --------------------------------------------------------------------------- the run


@dataclass
class LabeledReplay:
    """One labeled replay through the running pipeline."""

    settings: Settings
    channels: list[str]
    speed: str = "max"
    timeout_s: float = 900.0
    stall_s: float = 60.0

    def run(self, progress: Progress | None = None) -> dict[str, Any]:
        settings = self.settings
        report = progress or (lambda phase, done, total: None)
        source = resolve_data_dir(settings.data_dir)
        if source.path is None:
            raise ReplayError(
                "no labeled dataset found: set SMAP_DATA_DIR or run `smap-bench data fetch`"
            )
        data = {c: load_channel(c, source.path) for c in self.channels}
        lengths = {c: len(d.test) for c, d in data.items()}
        labels = {c: list(d.anomalies) for c, d in data.items()}
        tag = uuid.uuid4().hex[:6]
        prefix = f"rp{tag}-"
        plan = pack_channels(lengths, prefix=prefix)
        longest = max(sat.loop_length for sat in plan.satellites)
        # The simulated clock ends now: every sample lies in the past, where the
        # time-series store and the dashboards expect it.
        start_time = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=longest + 60)

        self._register(plan)
        with fleet_replay_paused(settings):
            # Other traffic would be counted as this run's: measure it over a quiet moment.
            probe = pipeline_counters(settings)
            time.sleep(3.0)
            before = pipeline_counters(settings)
            background = _delta(before, probe, "scheduler", "produced")
            if background:
                log.warning(
                    "the scheduler sent %d windows in 3 s before the replay: another "
                    "simulator is running, and the counts below include its windows",
                    background,
                )
            began = time.monotonic()
            began_wall = time.time()
            produced = self._simulate(plan, start_time, report)
            simulate_s = time.monotonic() - began
            expected = plan.expected_windows(settings.window_size, settings.stride)
            with VictoriaMetrics(settings.victoria_url) as vm:
                live = self._wait_for_flags(vm, prefix, start_time, expected, report)
                scored = sum(len(flags) for flags in live.values())
                self._wait_for_events(before, scored, report)
                elapsed = time.monotonic() - began
                # the events stage writes its decisions after PostgreSQL: wait for them too
                shown = self._wait_for_flags(
                    vm, prefix, start_time, scored, report, metric="anomaly_alarm"
                )
            after = pipeline_counters(settings)
            results = count_results(settings, began_wall, prefix)
            stored = read_event_ranges(settings, [sat.satellite_id for sat in plan.satellites])

        by_channel = {}
        shown_by_channel = {}
        events_by_channel = {}
        streams = []
        for satellite in plan.satellites:
            for subsystem in sorted(satellite.evaluated):
                key = StreamKey(satellite.satellite_id, subsystem)
                channel = satellite.channels[subsystem]
                by_channel[channel] = live.get(key, {})
                shown_by_channel[channel] = shown.get(key, {})
                events_by_channel[channel] = stored.get(key, [])
                flags, _ = record_flags_from_live(
                    by_channel[channel], lengths[channel], settings.window_size, settings.stride
                )
                flags = bridge_gaps(flags, settings.event_gap)
                event_flags = record_flags_from_events(
                    events_by_channel[channel],
                    lengths[channel],
                    settings.window_size,
                    settings.stride,
                )
                streams.append(
                    {
                        "satellite_id": satellite.satellite_id,
                        "subsystem": subsystem,
                        "channel": channel,
                        "segments": [list(seg) for seg in segments(flags)],
                        "events": [list(seg) for seg in segments(event_flags)],
                    }
                )
        verdicts, missing = score_streams(
            by_channel, labels, lengths, settings.window_size, settings.stride, settings.event_gap
        )
        # what the dashboard's grid and timelines show: the events stage's decisions
        alarms, alarms_missing = score_streams(
            shown_by_channel,
            labels,
            lengths,
            settings.window_size,
            settings.stride,
            settings.event_gap,
        )
        # the headline: the events operators get (after the events stage's confirmation);
        # beside it, the workers' window verdicts before it
        pooled = score_events(
            events_by_channel,
            labels,
            lengths,
            settings.window_size,
            settings.stride,
            settings.event_gap,
        )
        scored = sum(len(flags) for flags in live.values())
        # None: the scheduler restarted during the run (its counter began again)
        sent = _counted_delta(after, before, "scheduler", "produced")
        if results["other_results"]:
            log.warning(
                "%d results of other satellites arrived during the replay: the stage "
                "counters (windows_sent) include that traffic",
                results["other_results"],
            )
        return {
            **pooled,
            "decision_rule": settings.decision_rule,
            "window_verdicts": {
                "event": verdicts["event"],
                "per_channel": verdicts["per_channel"],
            },
            # flagged windows the events stage judged during the run, how many of them
            # before their whole history had arrived (patience ran out), late history
            # windows, and flags whose result carried no rule; None when the stage
            # restarted meanwhile (its counters began again from 0)
            "confirmation": {
                key: _counted_delta(after, before, "confirmation", key)
                for key in CONFIRMATION_COUNTERS
            },
            "dashboard_alarms": {
                "event": alarms["event"],
                "per_channel": alarms["per_channel"],
                "windows_missing": alarms_missing,
            },
            "channels": len(lengths),
            "channel_names": sorted(lengths, key=catalog.channel_sort_key),
            "seeds": 1,
            "records": sum(lengths.values()),
            "records_replayed": produced,
            "windows_expected": expected,
            "windows_sent": sent,
            "windows_scored": scored,
            # sent by the scheduler, less what other satellites' windows account for (None:
            # not known from the counters; split_windows_missing still says what has no
            # result)
            "lost": None
            if sent is None
            else max(
                sent
                - results["other_results"]
                - scored
                - _delta(after, before, "worker", "rejected"),
                0,
            ),
            "results": results["results"],
            "duplicates": results["duplicates"],
            "duplicate_examples": results["duplicate_examples"],
            "other_traffic_results": results["other_results"],
            "windows_rejected": _delta(after, before, "worker", "rejected"),
            "split_windows_missing": missing,
            "background_windows_before_start": background,
            "satellites": [sat.satellite_id for sat in plan.satellites],
            "streams": streams,
            "simulate_seconds": round(simulate_s, 1),
            "seconds": round(elapsed, 1),
            "start_time": start_time.isoformat(),
        }

    # -- steps ----------------------------------------------------------------------------

    def _register(self, plan: ReplayPlan) -> None:
        rows = [
            (sat.satellite_id, subsystem, channel, catalog.model_name(channel))
            for sat in plan.satellites
            for subsystem, channel in sat.channels.items()
        ]
        db.sync_fleet(self.settings.postgres_dsn, rows)
        topics = [
            TopicSpec(self.settings.subsystem_topic(subsystem, sat.satellite_id))
            for sat in plan.satellites
            for subsystem in sat.channels
        ]
        # The scheduler's regex subscription finds these topics at its next metadata
        # refresh; records produced before then wait in Kafka, nothing is lost.
        ensure_topics(self.settings, topics)

    def _simulate(self, plan: ReplayPlan, start_time: datetime, report: Progress) -> int:
        mapping = {sat.satellite_id: sat.channels for sat in plan.satellites}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(mapping, handle)
            mapping_path = handle.name
        total = sum(sat.loop_length for sat in plan.satellites)
        command = [
            sys.executable,
            "-m",
            "pipeline.simulator",
            f"--mapping={mapping_path}",
            f"--speed={self.speed}",
            "--loops=1",
            "--first-loop=0",
            "--align=longest",
            "--split=test",
            f"--start-time={start_time.isoformat()}",
            f"--simulator-id=replay-{plan.satellites[0].satellite_id.split('-')[0]}",
            "--metrics-port=0",
        ]
        report("simulate", 0, total)
        try:
            process = subprocess.run(
                command,
                cwd=PROJECT_ROOT,
                env=os.environ.copy(),
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
            )
        finally:
            Path(mapping_path).unlink(missing_ok=True)
        if process.returncode != 0:
            tail = (process.stderr or process.stdout).strip().splitlines()[-3:]
            raise ReplayError("the simulator failed: " + " | ".join(tail))
        report("simulate", total, total)
        return total

    def _wait_for_events(
        self, before: dict[str, dict[str, float]], windows: int, report: Progress
    ) -> None:
        """Until the events stage has taken in the run's ``windows`` results (it confirms
        flagged windows as their history arrives) and a moment more for its last batch."""
        deadline = time.monotonic() + min(self.timeout_s, 120.0)
        port = STAGE_METRICS_PORTS["events"]
        while True:
            now = stage_metrics(self.settings, "events", port)
            received = int(
                now.get("smap_stage_received", 0.0) - before["events"].get("received", 0)
            )
            report("events", min(received, windows), windows)
            if received >= windows and not now.get("smap_events_confirmation_waiting", 0.0):
                break
            if time.monotonic() > deadline:
                log.warning("the events stage took in %d of %d results", received, windows)
                break
            time.sleep(1.0)
        time.sleep(2.0)

    def _wait_for_flags(
        self,
        vm: VictoriaMetrics,
        prefix: str,
        start_time: datetime,
        expected: int,
        report: Progress,
        metric: str = "inference_anomaly_detected",
    ) -> dict[StreamKey, dict[int, bool]]:
        """The run's window flags of ``metric`` (:func:`read_window_flags`), read until
        ``expected`` windows have one, the timeout passes or none came for ``stall_s``;
        progress is reported under the metric's name."""
        deadline = time.monotonic() + self.timeout_s
        last_count, last_change = -1, time.monotonic()
        live: dict[StreamKey, dict[int, bool]] = {}
        while True:
            live = read_window_flags(vm, prefix, start_time, self.settings.window_size, metric)
            count = sum(len(flags) for flags in live.values())
            report(metric, count, expected)
            now = time.monotonic()
            if count >= expected or now > deadline:
                return live
            if count != last_count:
                last_count, last_change = count, now
            elif now - last_change > self.stall_s:
                log.warning(
                    "no new %s for %.0f s: %d of %d windows", metric, self.stall_s, count, expected
                )
                return live
            time.sleep(1.0)


@contextmanager
def fleet_replay_paused(settings: Settings) -> Iterator[bool]:
    """Pause the fleet replay that `make up` runs (if it runs) and resume it afterwards.

    Yields whether it was running. Windows of records already in flight finish during
    the few seconds after the pause.
    """
    from smap_bench.simulation import DEFAULT_SIMULATOR_ID, SimulatorControl

    control = SimulatorControl(settings, DEFAULT_SIMULATOR_ID)
    try:
        state = control.latest_state()
        running = state is not None and not state.paused
        if running:
            control.pause()
            time.sleep(3.0)
        yield running
    finally:
        if running:
            control.resume()
        control.close()


def resolve_channels(settings: Settings, wanted: str) -> list[str]:
    """``all`` or a comma-separated list, checked against the dataset."""
    source = resolve_data_dir(settings.data_dir)
    if source.path is None:
        raise ReplayError(
            "no labeled dataset found: set SMAP_DATA_DIR or run `smap-bench data fetch`"
        )
    available = list_channels(source.path)
    if wanted.strip().lower() == "all":
        return available
    chosen = [c.strip() for c in wanted.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise ReplayError(
            f"unknown channel(s) {', '.join(unknown)}; the dataset has {len(available)}"
        )
    return chosen


def events_of(settings: Settings, satellites: Iterable[str]) -> int:
    """How many anomaly events PostgreSQL holds for the given satellites."""
    import psycopg

    with psycopg.connect(settings.postgres_dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM anomaly_events WHERE satellite_id = ANY(%s)", (list(satellites),)
        ).fetchone()
    return int(row[0]) if row else 0
