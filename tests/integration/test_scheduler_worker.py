"""Scheduler and worker as real processes on Kafka and RabbitMQ, with the ONNX backend.

One stream of 100 records (with a duplicate) through ``python -m pipeline.scheduler`` and
``celery -A pipeline.worker worker``: the 8 windows of the seed's rule come back as
results on Kafka, the duplicate goes to the dead-letter topic, and a restart of the
scheduler in the middle of the stream loses no window and sends none twice.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from smap_bench.config import PROJECT_ROOT, Settings
from smap_bench.kafka import (
    TopicSpec,
    admin_client,
    consumer_config,
    ensure_topics,
    producer_config,
)
from smap_bench.scheduling import record_fingerprint
from smap_bench.schema import InferenceResult, deterministic_job_id
from smap_bench.scoring import windows_anomalous
from smap_bench.windows import window_starts

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "triton-repository"
T0 = datetime(2025, 11, 12, 10, 0, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def counter(port: int, name: str) -> float:
    """A stage's self-metric (``smap_stage_<name>_total``), 0 before it is served."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"smap_stage_{name}_total{{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class Run:
    """One test's private names: stream, topics, queue, group, model repository."""

    settings: Settings
    repository: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def satellite(self) -> str:
        return f"it{self.tag}"

    @property
    def topic(self) -> str:
        # Not a telemetry.* name: the stack's own scheduler reads every telemetry topic,
        # and deleting a topic a consumer reads crashes it (librdkafka on Tansu).
        return f"it-{self.tag}.TCS.{self.satellite}"

    @property
    def results_topic(self) -> str:
        return f"inference-results-it-{self.tag}"

    @property
    def dead_topic(self) -> str:
        return f"dead-letter-it-{self.tag}"

    @property
    def queue(self) -> str:
        return f"inference-it-{self.tag}"

    @property
    def group(self) -> str:
        return f"scheduler-it-{self.tag}"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "SMAP_INFERENCE_BACKEND": "onnx",
            "SMAP_MODEL_REPOSITORY": str(self.repository),
            "SMAP_TOPIC_RESULTS": self.results_topic,
            "SMAP_TOPIC_DEAD_LETTER": self.dead_topic,
            **extra,
        }

    def start_scheduler(self, metrics_port: int) -> subprocess.Popen[bytes]:
        command = [
            sys.executable, "-m", "pipeline.scheduler",
            "--topics", self.topic,
            "--group", self.group,
            "--queue", self.queue,
            "--metrics-port", str(metrics_port),
        ]  # fmt: skip
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=self.env())
        self.processes.append(process)
        return process

    def start_worker(self, metrics_port: int) -> subprocess.Popen[bytes]:
        command = [
            sys.executable, "-m", "celery", "-A", "pipeline.worker", "worker",
            "--pool=solo", "--concurrency=1", "-n", f"worker1-{self.tag}@%h", "-Q", self.queue,
            "--without-mingle", "--without-gossip", "--loglevel=WARNING",
        ]  # fmt: skip
        env = self.env(SMAP_WORKER_METRICS_PORT=str(metrics_port))
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env)
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def record(run: Run, index: int) -> bytes:
    rng = np.random.default_rng(index)
    features = [float(rng.normal())] + [1.0 if i == index % 24 else 0.0 for i in range(24)]
    return json.dumps(
        {
            "satellite_id": run.satellite,
            "subsystem": "TCS",
            "code": "T",
            "timestamp": (T0 + timedelta(seconds=index)).isoformat(),
            "loop": 1,
            "record_index": index,
            "features": features,
            "num_features": 25,
            "channel": "T-1",
            "stages": {"simulator": time.time()},
        }
    ).encode()


class Collector:
    """Reads a topic from the start into a list, a little more on every call."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = Consumer(consumer_config(settings, f"reader-{uuid.uuid4().hex[:8]}"))
        self.consumer.subscribe([topic])
        self.messages: list[tuple[bytes, dict[str, bytes]]] = []

    def pump(self) -> None:
        for message in self.consumer.consume(500, timeout=0.2):
            if message.error() is None:
                headers = {k: v for k, v in (message.headers() or [])}
                self.messages.append((message.value(), headers))

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def run(live_stack: Settings, tmp_path: Path) -> Iterator[Run]:
    repository = tmp_path / "repository"
    shutil.copytree(FIXTURE, repository)
    this = Run(live_stack, repository)
    ensure_topics(
        live_stack,
        [TopicSpec(this.topic), TopicSpec(this.results_topic), TopicSpec(this.dead_topic)],
    )
    try:
        yield this
    finally:
        this.stop_all()
        from pipeline.worker import app

        with app.connection_for_write() as connection:  # the test's queue, empty by now
            connection.default_channel.queue_delete(this.queue)
        # the test's topics are its own (no other consumer reads them): safe to delete
        topics = [this.topic, this.results_topic, this.dead_topic]
        admin = admin_client(live_stack)  # kept alive until the futures are done
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            future.result(timeout=30)


def test_windows_are_scored_once_across_a_scheduler_restart(run: Run) -> None:
    settings = run.settings
    expected = {
        deterministic_job_id(run.satellite, "TCS", 1, int(start)): int(start)
        for start in window_starts(100, settings.window_size, settings.stride)
    }
    assert len(expected) == 8
    producer = Producer(producer_config(settings, "it-scheduler-worker"))
    results = Collector(settings, run.results_topic)
    dead = Collector(settings, run.dead_topic)

    def produce(indices: range | list[int]) -> None:
        for index in indices:
            producer.produce(run.topic, value=record(run, index), key=run.satellite.encode())
        assert producer.flush(10) == 0

    def job_ids() -> Counter[str]:
        results.pump()
        return Counter(InferenceResult.model_validate_json(v).job_id for v, _ in results.messages)

    worker_port, first_port, second_port = free_port(), free_port(), free_port()
    run.start_worker(worker_port)
    first = run.start_scheduler(first_port)
    try:
        # --- first half, with a duplicate record at the end ---------------------------------
        produce([*range(50), 45])
        first_windows = {j for j, s in expected.items() if s + settings.window_size <= 50}
        wait_for(lambda: set(job_ids()) >= first_windows, 60, "the first half's 3 results")
        wait_for(lambda: counter(first_port, "rejected") == 1, 10, "the duplicate's rejection")
        assert counter(first_port, "received") == 51
        sent_before = counter(first_port, "produced")
        assert sent_before == 3

        # --- restart: offsets were committed up to the next window's context --------------
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0
        committed = {}
        for group in (run.group, f"{run.group}.sent", f"{run.group}.check"):
            reader = Consumer(consumer_config(settings, group))
            committed[group] = reader.committed([TopicPartition(run.topic, 0)], timeout=10)
            reader.close()
        # record 30 is the first the next window needs (the sent frontier); its context of
        # 100 records reaches back to the stream's first (where the restart reads from)
        assert settings.context_length == 100
        assert committed[run.group][0].offset == 0
        assert committed[f"{run.group}.sent"][0].offset == 30
        # the record the restart must find there: loop 1, record 0
        assert committed[f"{run.group}.check"][0].offset == record_fingerprint(1, 0)

        run.start_scheduler(second_port)
        produce(range(50, 100))
        wait_for(lambda: set(job_ids()) == set(expected), 60, "all 8 results")
        wait_for(lambda: counter(worker_port, "produced") >= 8, 10, "the worker's count")
    finally:
        producer.flush(5)

    # --- nothing lost, nothing sent twice (by job id and by every stage's counters) ----------
    assert counter(second_port, "produced") + sent_before == 8
    # the restart re-read the context and re-formed the 3 windows sent before it
    text = httpx.get(f"http://127.0.0.1:{second_port}/metrics", timeout=2).text
    assert "smap_scheduler_already_sent_total 3.0" in text.splitlines()
    # the duplicate (offset 50) lies after the committed offset: re-read and refused again
    assert counter(second_port, "rejected") == 1
    assert counter(worker_port, "produced") == 8 and counter(worker_port, "rejected") == 0
    counts = job_ids()
    assert counts == Counter(dict.fromkeys(expected, 1)), counts

    # --- the results are complete messages, decided by the shared rule ------------------------
    for value, _ in results.messages:
        result = InferenceResult.model_validate_json(value)
        assert result.record_index_start == expected[result.job_id]
        # the first scheduler saw the run begin; the restarted one resumed it mid-run
        assert result.run_window_start == (0 if result.job_id in first_windows else None)
        assert result.model_name == "SMAP_T-1" and result.threshold == 0.5
        assert result.window_start_time == T0 + timedelta(seconds=expected[result.job_id])
        assert len(result.feature_errors) == 25 and len(result.reconstructions) == 30
        assert {"simulator", "scheduler", "worker"} <= set(result.stages or {})
        flag = windows_anomalous(np.array([result.anomaly_scores]), result.threshold)[0]
        assert result.is_anomaly == bool(flag)

    wait_for(lambda: (dead.pump(), len(dead.messages) == 2)[1], 10, "the two dead letters")
    for value, headers in dead.messages:
        assert json.loads(value)["record_index"] == 45
        assert headers["reason"].decode().startswith("duplicate record_index")
        assert headers["stage"] == b"scheduler"
    results.close()
    dead.close()
