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
never be scored go to the dead-letter topic with their reason. Every result and dead
letter waits for Kafka's own answer (:func:`smap_bench.stage.deliver`; the producer's
message timeout, 25 s, is shorter than the 30 s wait, so each is answered, delivered or
failed). When Kafka does not confirm some, the retry carries only those windows and dead
letters: a result already published is not published again (a window counted once by
``produced``, as the scheduler counts it once by ``produced``; a retried window once by
``retried`` per retry, a refused one once by ``rejected``). The one case that can still
give a window two results: a result Kafka reports failed after it reached the broker
(a lost acknowledgement); the benchmark's ``duplicates`` count shows it. When RabbitMQ
refuses the retry itself, the message is requeued whole rather than dropped (its
published results then come twice, counted so). Dead letters Kafka still refuses after
the last retry are counted by ``lost``.

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

import base64
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject
from celery.signals import worker_process_init, worker_process_shutdown
from confluent_kafka import Producer

from smap_bench.config import Settings, get_settings
from smap_bench.inference import InferenceBackend, make_backend
from smap_bench.inference.repository import find_onnx_models
from smap_bench.scheduling import DEFAULT_QUEUE, TASK_NAME, encode_tasks
from smap_bench.schema import InferenceTask, encode
from smap_bench.scoring import (
    STAGE,
    ContextDetectors,
    Forecasters,
    MetadataThresholds,
    elapsed_since,
    parse_tasks,
    score_concurrently,
    undelivered_tasks,
    warm_up,
    worker_index,
)
from smap_bench.stage import (
    DELIVERY_TIMEOUT_MS,
    STAGE_METRICS_PORTS,
    DeadLetter,
    Outgoing,
    StageMetrics,
    deliver,
    make_producer,
)

log = logging.getLogger(f"smap_bench.{STAGE}")

#: Retries of windows whose model or server is unavailable: backoff doubles up to the cap.
MAX_RETRIES = 60
RETRY_BACKOFF_S = (0.5, 10.0)
#: How long a task waits for Kafka's answers; the producer's message timeout is shorter,
#: so every result is answered, delivered or failed, within it.
FLUSH_TIMEOUT_S = 30.0


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
            settings,
            f"{STAGE}-{self.index}",
            **{"linger.ms": 1, "message.timeout.ms": DELIVERY_TIMEOUT_MS},
        )
        self.dead_letter = DeadLetter(
            self.producer, settings.topic_dead_letter, STAGE, self.metrics
        )
        self.thresholds = MetadataThresholds(settings.model_repository)
        config = settings.context_detector
        self.contexts = (
            None
            if config is None
            else ContextDetectors(settings.model_repository, settings.data_dir, config)
        )
        forecaster = settings.linear_forecaster
        self.forecasters = (
            None
            if forecaster is None
            else Forecasters(
                settings.model_repository, settings.data_dir, forecaster, settings.stride
            )
        )
        self.pool = ThreadPoolExecutor(
            settings.worker_backend_threads, thread_name_prefix="backend"
        )
        if settings.worker_warmup:
            warmed, seconds = warm_up(self.backend, find_onnx_models(settings.model_repository))
            log.info("%s %d: %d models warmed up in %.1f s", STAGE, self.index, warmed, seconds)
            for what, fitter in (
                ("context detectors", self.contexts),
                ("forecasters", self.forecasters),
            ):
                if fitter is None:
                    continue
                started = time.monotonic()
                fitted = sum(
                    fitter(name) is not None for name in find_onnx_models(settings.model_repository)
                )
                log.info(
                    "%s %d: %d %s fitted in %.1f s",
                    STAGE,
                    self.index,
                    fitted,
                    what,
                    time.monotonic() - started,
                )
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
def run_inference_task(
    self: Task, payload: Any, dead_letters: list[list[str]] | None = None
) -> int:
    """Score a list of windows (the seed's one task dict is accepted too) and publish one
    result per window; returns how many results were published.

    ``dead_letters`` is what a retry carries besides windows: dead letters of an earlier
    attempt that Kafka did not confirm (base64 value, reason), already counted as
    rejected, sent again here.
    """
    state = process_state()
    tasks, rejected = parse_tasks(payload)
    state.metrics.received(len(tasks) + len(rejected))
    outcome = score_concurrently(
        tasks,
        state.backend,
        state.thresholds,
        state.settings.stride,
        state.pool,
        state.contexts,
        state.forecasters,
    )
    letters = [(base64.b64decode(value), reason) for value, reason in dead_letters or []]
    for item in [*rejected, *outcome.rejected]:
        state.dead_letter.refused(item.reason)
        letters.append((item.payload(), item.reason))
    topic = state.settings.topic_results
    messages = [
        Outgoing(topic, encode(result), result.satellite_id.encode()) for result in outcome.results
    ]
    messages += [state.dead_letter.message(value, reason) for value, reason in letters]
    delivery = deliver(state.producer, messages, FLUSH_TIMEOUT_S)
    delivered = {
        result.job_id
        for position, result in enumerate(outcome.results)
        if position in delivery.confirmed
    }
    published = [r for r in outcome.results if r.job_id in delivered]
    state.metrics.produced(len(published))
    for result in published:
        seconds = elapsed_since(result.stages)
        if seconds is not None:
            state.metrics.latency(seconds)
    first_letter = len(outcome.results)
    unsent = [
        letter
        for offset, letter in enumerate(letters)
        if first_letter + offset not in delivery.confirmed
    ]
    # Only the windows whose result Kafka did not confirm are tried again: a result on the
    # results topic is not published a second time (nor its window counted twice).
    undelivered = undelivered_tasks(tasks, outcome.results, delivered)
    reasons = []
    if undelivered or unsent:
        reasons.append(f"Kafka delivery failed ({delivery.problem})")
        log.warning(
            "%s: %d of %d results and %d of %d dead letters not delivered (%s); retrying those",
            STAGE,
            len(undelivered),
            len(outcome.results),
            len(unsent),
            len(letters),
            delivery.problem,
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
    if not again and not unsent:
        return len(published)
    if self.request.retries >= MAX_RETRIES:
        _give_up(state, again, unsent, "; ".join(reasons))
        return len(published)
    state.metrics.retried(len(again))
    try:
        raise self.retry(
            args=[encode_tasks(again)],
            kwargs={"dead_letters": [[base64.b64encode(v).decode(), r] for v, r in unsent]},
            countdown=_backoff(self.request.retries),
        )
    except Reject as refused:
        # RabbitMQ would not take the retry (Celery then drops the message, losing what
        # the retry carried): the message goes back to its queue instead, and is scored
        # again whole; results already published this time come twice, and are counted so.
        log.warning("%s: retry not published (%s); message requeued", STAGE, refused.reason)
        raise Reject(refused.reason, requeue=True) from None


def _give_up(
    state: _Process, windows: list[InferenceTask], unsent: list[tuple[bytes, str]], why: str
) -> None:
    """Past the last retry: the windows go to the dead-letter topic (counted as rejected),
    with the dead letters still owed; whatever Kafka still refuses is counted lost."""
    reason = f"gave up after {MAX_RETRIES} retries: {why}"
    letters = [*unsent, *((task.model_dump_json().encode(), reason) for task in windows)]
    if windows:
        state.metrics.rejected(reason, len(windows))
    delivery = deliver(
        state.producer,
        [state.dead_letter.message(value, letter_reason) for value, letter_reason in letters],
        FLUSH_TIMEOUT_S,
    )
    lost = len(letters) - len(delivery.confirmed)
    if lost:
        state.metrics.lost(f"dead letter undelivered: {delivery.problem}", lost)
        log.error(
            "%s: %d dead letters lost, Kafka still refusing them (%s)",
            STAGE,
            lost,
            delivery.problem,
        )


def _backoff(retries: int) -> float:
    first, cap = RETRY_BACKOFF_S
    return float(min(first * 2**retries, cap))
