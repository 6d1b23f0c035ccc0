"""The worker's delivery: every result and dead letter waits for Kafka's answer, a retry
carries only what Kafka did not confirm, and each window is counted once per outcome.

Kafka is replaced by a scripted producer (the logic under test is what the worker does
with Kafka's answers); the scoring is the real ONNX Runtime backend on the fixture models.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery.exceptions import Reject
from confluent_kafka import KafkaError

import pipeline.worker as worker
from smap_bench.inference.onnx_backend import OnnxBackend
from smap_bench.scoring import STAGE, MetadataThresholds
from smap_bench.stage import DeadLetter, Outgoing, StageMetrics, deliver
from tests.unit.test_scoring import make_task, repository  # noqa: F401 (a fixture)

#: What the scripted producer does with one message: None delivers it, an error code
#: fails it, HOLD leaves it queued (no answer within the flush).
HOLD = "hold"
Verdict = Callable[[str, bytes], int | str | None]


class ScriptedProducer:
    """Answers each produced message as ``verdict(topic, value)`` says, at flush time."""

    def __init__(self, verdict: Verdict = lambda topic, value: None) -> None:
        self.verdict = verdict
        self.pending: list[tuple[str, bytes, Any]] = []
        self.landed: list[tuple[str, bytes]] = []
        self.purged = 0

    def produce(self, topic: str, value: bytes, on_delivery: Any = None, **_: Any) -> None:
        self.pending.append((topic, value, on_delivery))

    def flush(self, timeout: float = -1) -> int:
        held = []
        for topic, value, callback in self.pending:
            verdict = self.verdict(topic, value)
            if verdict == HOLD:
                held.append((topic, value, callback))
                continue
            if verdict is None:
                self.landed.append((topic, value))
            if callback is not None:
                callback(None if verdict is None else KafkaError(int(verdict)), None)
        self.pending = held
        return len(held)

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        for _topic, _value, callback in self.pending:
            if callback is not None:
                callback(KafkaError(KafkaError._PURGE_QUEUE), None)
        self.purged += len(self.pending)
        self.pending = []

    def poll(self, timeout: float = 0) -> int:
        return 0


def test_deliver_reports_which_messages_kafka_confirmed() -> None:
    producer = ScriptedProducer(lambda t, v: KafkaError._MSG_TIMED_OUT if v == b"b" else None)
    delivery = deliver(producer, [Outgoing("t", b"a"), Outgoing("t", b"b"), Outgoing("t", b"c")], 1)  # type: ignore[arg-type]
    assert delivery.confirmed == {0, 2}
    assert delivery.problem is not None and "timed out" in delivery.problem.lower()
    assert deliver(producer, [], 1).problem is None  # type: ignore[arg-type]


def test_messages_still_queued_after_the_wait_are_purged_so_no_late_copy_lands() -> None:
    producer = ScriptedProducer(lambda t, v: HOLD if v == b"b" else None)
    delivery = deliver(producer, [Outgoing("t", b"a"), Outgoing("t", b"b")], 1)  # type: ignore[arg-type]
    assert delivery.confirmed == {0}
    assert producer.purged == 1 and producer.pending == []
    producer.verdict = lambda t, v: None
    producer.flush()
    assert producer.landed == [("t", b"a")]  # the purged one never lands later


@pytest.fixture
def state(
    repository: Path,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> SimpleNamespace:
    """One worker process's state, on a scripted producer."""
    producer = ScriptedProducer()
    metrics = StageMetrics(STAGE)
    settings = SimpleNamespace(stride=10, topic_results="results", topic_dead_letter="dlq")
    process = SimpleNamespace(
        settings=settings,
        metrics=metrics,
        backend=OnnxBackend(repository),
        thresholds=MetadataThresholds(repository),
        contexts=None,
        forecasters=None,
        pool=ThreadPoolExecutor(2),
        producer=producer,
        dead_letter=DeadLetter(producer, "dlq", STAGE, metrics),  # type: ignore[arg-type]
    )
    monkeypatch.setattr(worker, "process_state", lambda: process)
    return process


def run(tasks: list[Any], **kwargs: Any) -> None:
    """Run the task eagerly: Celery runs each retry at once, inside the first call."""
    result = worker.run_inference_task.apply(args=[json.dumps(tasks, default=str)], kwargs=kwargs)
    assert result.state in {"SUCCESS", "RETRY"}, result.traceback


def task_dicts(*starts: int, model: str = "SMAP_T-1") -> list[dict[str, Any]]:
    return [make_task(start, model).model_dump(mode="json") for start in starts]


def test_a_refused_result_is_retried_alone_and_every_window_lands_once(
    state: SimpleNamespace,
) -> None:
    refused = {"count": 0}

    def refuse_second_once(topic: str, value: bytes) -> int | None:
        if topic == "results" and json.loads(value)["record_index_start"] == 10:
            refused["count"] += 1
            if refused["count"] == 1:
                return KafkaError._MSG_TIMED_OUT
        return None

    state.producer.verdict = refuse_second_once
    run(task_dicts(0, 10, 20))
    starts = [json.loads(v)["record_index_start"] for t, v in state.producer.landed]
    assert sorted(starts) == [0, 10, 20]  # each window's result once
    counts = state.metrics.counts
    assert counts["received"] == 3 + 1  # the retry received its one window again
    assert counts["produced"] == 3
    assert counts["retried"] == 1
    assert counts["rejected"] == 0


def test_a_refused_dead_letter_is_sent_again_and_counted_rejected_once(
    state: SimpleNamespace,
) -> None:
    refused = {"count": 0}

    def refuse_dead_letter_once(topic: str, value: bytes) -> int | None:
        if topic == "dlq":
            refused["count"] += 1
            if refused["count"] == 1:
                return KafkaError._TRANSPORT
        return None

    state.producer.verdict = refuse_dead_letter_once
    run([*task_dicts(0), *task_dicts(10, model="SMAP_T-3")])  # T-3: no such model
    topics = [t for t, v in state.producer.landed]
    assert topics.count("results") == 1 and topics.count("dlq") == 1
    counts = state.metrics.counts
    assert counts["rejected"] == 1
    assert counts["produced"] == 1
    assert counts["retried"] == 0  # no window was retried: only the dead letter


def test_after_the_last_retry_windows_are_dead_lettered_not_also_counted_retried(
    state: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "MAX_RETRIES", 2)
    state.producer.verdict = lambda t, v: KafkaError._MSG_TIMED_OUT if t == "results" else None
    run(task_dicts(0, 10))
    counts = state.metrics.counts
    assert counts["retried"] == 2 * 2  # two retries of two windows
    assert counts["rejected"] == 2  # then given up: dead-lettered, once each
    assert counts["produced"] == 0
    letters = [json.loads(v) for t, v in state.producer.landed if t == "dlq"]
    assert sorted(letter["record_index_start"] for letter in letters) == [0, 10]


def test_dead_letters_carried_by_a_retry_are_decoded_as_sent(state: SimpleNamespace) -> None:
    carried = [[base64.b64encode(b"\x00not json").decode(), "payload is not JSON: x"]]
    run([], dead_letters=carried)
    assert state.producer.landed == [("dlq", b"\x00not json")]
    assert state.metrics.counts["rejected"] == 0  # counted when first refused


def test_dead_letters_still_refused_after_the_last_retry_are_counted_lost(
    state: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "MAX_RETRIES", 1)
    state.producer.verdict = lambda t, v: KafkaError._TRANSPORT if t == "dlq" else None
    run(task_dicts(0, model="SMAP_T-3"))  # no such model: a dead letter Kafka keeps refusing
    counts = state.metrics.counts
    assert counts["rejected"] == 1  # refused once, when first met
    assert counts["lost"] == 1  # and, never delivered, counted lost rather than hidden
    assert state.producer.landed == []


def test_a_held_result_is_purged_and_retried_and_lands_once(state: SimpleNamespace) -> None:
    held = {"count": 0}

    def hold_first_time(topic: str, value: bytes) -> str | None:
        held["count"] += 1
        return HOLD if held["count"] == 1 else None

    state.producer.verdict = hold_first_time
    run(task_dicts(0))
    assert state.producer.purged == 1
    assert [t for t, v in state.producer.landed] == ["results"]
    assert state.metrics.counts["retried"] == 1


def test_a_retry_rabbitmq_refuses_requeues_the_message_instead_of_dropping_it(
    state: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*_: Any, **__: Any) -> None:
        raise Reject(ConnectionError("broker away"), requeue=False)  # what Celery raises

    monkeypatch.setattr(worker.run_inference_task, "retry", refused)
    state.producer.verdict = lambda t, v: KafkaError._MSG_TIMED_OUT
    with pytest.raises(Reject) as raised:
        worker.run_inference_task(json.dumps(task_dicts(0)))
    assert raised.value.requeue is True
