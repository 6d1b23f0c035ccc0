"""Inference worker: the Celery app and its one task, ``run_inference_task``.

Run one process per core (the default deployment)::

    celery -A pipeline.worker worker --pool=solo --concurrency=1 -n worker1@%h

(``-n worker2@%h`` for the second, and so on; ``-Q <queue>`` to consume another queue
than ``inference``). Each process keeps one inference backend
(``SMAP_INFERENCE_BACKEND``: Triton gRPC by default, or in-process ONNX Runtime) and one
Kafka producer, and serves its self-metrics on port 9110 + index, the index coming from
``SMAP_WORKER_INDEX`` or the node name (``worker1`` -> 9110, ``worker2`` -> 9111).

Delivery: late acks, so a message is acknowledged only after the task returned, and the
task returns only after the Kafka producer flushed its results: a worker killed before
that leaves the message to RabbitMQ, which re-delivers it (``task_reject_on_worker_lost``).
Windows whose model is unavailable for now are retried with backoff; windows that can
never be scored go to the dead-letter topic with their reason. When Kafka does not
confirm some results, the retry carries only those windows: a result already published
is not published again (a window counted once by ``produced``, as the scheduler counts
it once by ``produced``).

Warm-up: a model's first inference costs 50 to 250 ms (Triton's model instance, ONNX
Runtime's first run) against 4 ms after, so each process scores one window of zeros
with every model of the repository before it takes tasks (:func:`warm_up`); the first
burst of windows after a start then meets warm models. ``SMAP_WORKER_WARMUP=false``
(setting ``worker_warmup``) skips it.

Concurrency: a task's windows are scored one backend call per model, and those calls
run on ``SMAP_WORKER_BACKEND_THREADS`` threads (setting, default 4), so that the process
waits on Triton for several models at once rather than one after the other: every stream
completes a window on the same second, and at small fleets each window has its own
model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_process_shutdown
from confluent_kafka import KafkaError, Message, Producer

from smap_bench.config import Settings, get_settings
from smap_bench.inference import InferenceBackend, make_backend
from smap_bench.inference.repository import find_onnx_models
from smap_bench.scheduling import DEFAULT_QUEUE, TASK_NAME, encode_tasks
from smap_bench.schema import encode
from smap_bench.scoring import (
    STAGE,
    MetadataThresholds,
    elapsed_since,
    parse_tasks,
    score_concurrently,
    undelivered_tasks,
    warm_up,
    worker_index,
)
from smap_bench.stage import STAGE_METRICS_PORTS, DeadLetter, StageMetrics, make_producer

log = logging.getLogger(f"smap_bench.{STAGE}")

#: Retries of windows whose model or server is unavailable: backoff doubles up to the cap.
MAX_RETRIES = 60
RETRY_BACKOFF_S = (0.5, 10.0)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by the worker and the scheduler that sends to it."""
    return {
        "broker_url": settings.rabbitmq_url,
        "task_default_queue": DEFAULT_QUEUE,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Each message carries up to a few dozen windows: 4 in hand keeps the worker busy
        # while the next arrives without hoarding work another worker could do.
        "worker_prefetch_multiplier": 4,
        # Publisher confirms: send_task returns once RabbitMQ has the message, so the
        # scheduler commits Kafka offsets only for windows the broker really holds.
        "broker_transport_options": {"confirm_publish": True},
        "broker_connection_retry_on_startup": True,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }


app = Celery("smap_bench")
app.conf.update(celery_config(get_settings()))


class _Process:
    """What one worker process keeps: backend, producer, thresholds, metrics."""

    def __init__(self, settings: Settings, node_name: str | None) -> None:
        self.settings = settings
        self.index = worker_index(node_name, os.environ.get("SMAP_WORKER_INDEX"))
        self.metrics = StageMetrics(STAGE)
        port = int(os.environ.get("SMAP_WORKER_METRICS_PORT") or 0) or (
            STAGE_METRICS_PORTS[STAGE] + self.index
        )
        try:
            self.metrics.serve(settings.bind_host, port)
        except OSError as error:  # a second process on the same index: keep working
            log.warning("%s: metrics port %d unavailable (%s); not served", STAGE, port, error)
        self.backend: InferenceBackend = make_backend(settings)
        self.producer: Producer = make_producer(
            settings, f"{STAGE}-{self.index}", **{"linger.ms": 1}
        )
        self.dead_letter = DeadLetter(
            self.producer, settings.topic_dead_letter, STAGE, self.metrics
        )
        self.thresholds = MetadataThresholds(settings.model_repository)
        self.pool = ThreadPoolExecutor(
            settings.worker_backend_threads, thread_name_prefix="backend"
        )
        if settings.worker_warmup:
            warmed, seconds = warm_up(self.backend, find_onnx_models(settings.model_repository))
            log.info("%s %d: %d models warmed up in %.1f s", STAGE, self.index, warmed, seconds)
        log.info(
            "%s %d: backend %s, results to %s, metrics on %d",
            STAGE,
            self.index,
            self.backend.name,
            settings.topic_results,
            port,
        )

    def close(self) -> None:
        self.producer.flush(30)
        self.pool.shutdown()
        self.backend.close()


_process: _Process | None = None


def process_state() -> _Process:
    """This process's backend, producer and metrics (created on first use)."""
    global _process
    if _process is None:
        _process = _Process(get_settings(), None)
    return _process


@worker_process_init.connect
def _start_process(sender: Any = None, **_: Any) -> None:
    global _process
    if _process is None:
        _process = _Process(get_settings(), str(sender) if sender else None)


@worker_process_shutdown.connect
def _stop_process(**_: Any) -> None:
    if _process is not None:
        _process.close()


@app.task(name=TASK_NAME, bind=True, max_retries=MAX_RETRIES)
def run_inference_task(self: Task, payload: Any) -> int:
    """Score a list of windows (the seed's one task dict is accepted too) and publish one
    result per window; returns how many results were published."""
    state = process_state()
    tasks, rejected = parse_tasks(payload)
    state.metrics.received(len(tasks) + len(rejected))
    outcome = score_concurrently(
        tasks, state.backend, state.thresholds, state.settings.stride, state.pool
    )
    topic = state.settings.topic_results
    delivered: set[str] = set()
    errors: list[str] = []

    def confirm(job_id: str) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                delivered.add(job_id)
            else:
                errors.append(str(error))

        return on_delivery

    for result in outcome.results:
        state.producer.produce(
            topic,
            value=encode(result),
            key=result.satellite_id.encode(),
            on_delivery=confirm(result.job_id),
        )
    for item in [*rejected, *outcome.rejected]:
        state.dead_letter.send(item.payload(), item.reason)
    remaining = state.producer.flush(30)
    published = [r for r in outcome.results if r.job_id in delivered]
    state.metrics.produced(len(published))
    for result in published:
        seconds = elapsed_since(result.stages)
        if seconds is not None:
            state.metrics.latency(seconds)
    # Only the windows whose result Kafka did not confirm are tried again: a result on the
    # results topic is not published a second time (nor its window counted twice).
    undelivered = undelivered_tasks(tasks, outcome.results, delivered)
    reasons = []
    if undelivered:
        problem = errors[:1] or [f"{remaining} messages undelivered after 30 s"]
        reasons.append(f"Kafka delivery failed ({problem[0]})")
        log.warning(
            "%s: %d of %d results not delivered (%s); retrying those windows",
            STAGE,
            len(undelivered),
            len(outcome.results),
            problem[0],
        )
    if outcome.deferred:
        reasons.append(str(outcome.deferred_reason))
        log.warning(
            "%s: %d windows deferred (%s); retry %d",
            STAGE,
            len(outcome.deferred),
            outcome.deferred_reason,
            self.request.retries + 1,
        )
    again = [*undelivered, *outcome.deferred]
    if not again:
        return len(published)
    state.metrics.retried(len(again))
    if self.request.retries >= MAX_RETRIES:
        for task in again:
            reason = f"gave up after {MAX_RETRIES} retries: {'; '.join(reasons)}"
            state.dead_letter.send(task.model_dump_json().encode(), reason)
        state.producer.flush(30)
        return len(published)
    raise self.retry(args=[encode_tasks(again)], countdown=_backoff(self.request.retries))


def _backoff(retries: int) -> float:
    first, cap = RETRY_BACKOFF_S
    return float(min(first * 2**retries, cap))
