"""The metrics writer's logic: Kafka messages in, VictoriaMetrics samples out, at least once.

:class:`MetricsWriter` is the ``handle`` / ``on_tick`` pair that
:func:`smap_bench.stage.run_kafka_stage` drives (``pipeline/writer.py`` wires it up). Each
Kafka batch is validated, turned into Prometheus lines (:mod:`smap_bench.metrics`) and
written *before* ``handle`` returns, so the loop commits the batch's offsets only after
VictoriaMetrics has accepted every sample of it. While VictoriaMetrics is down the write
is retried with exponential backoff, without limit, each retry counted; nothing is
dropped and nothing is reordered, because the batch is held until it is written and no
later batch is read meanwhile. A stop request ends the retries with :class:`Stopped`,
and the uncommitted batch is read again by the next writer.

The one thing written after the commit is ``smap_e2e_latency_seconds{stage="writer"}``
(and the other stage latencies of each result): its value is the time VictoriaMetrics
accepted the result, known only after the write. Those lines join the next write, or
are flushed by :meth:`MetricsWriter.tick` within ``max_wait_s``; a crash can lose them,
never the data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential

from smap_bench.metrics import ORIGIN_STAGE, latency_lines, result_lines, telemetry_lines
from smap_bench.schema import InferenceResult, TelemetryMessage, decode, describe
from smap_bench.stage import StageMetrics

log = logging.getLogger(__name__)

A = TypeVar("A")
R = TypeVar("R")


class KafkaMessage(Protocol):
    """The part of ``confluent_kafka.Message`` the writer uses."""

    def topic(self) -> str | None: ...
    def value(self) -> bytes | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


class DeadLetterSink(Protocol):
    """Where refused messages go (:class:`smap_bench.stage.DeadLetter`)."""

    def send(self, value: bytes | None, reason: str, source: Any = None) -> None: ...


class Stopped(RuntimeError):
    """The stage was asked to stop while a write was still failing; nothing was committed."""


def retryable(error: BaseException) -> bool:
    """Whether a failed write may succeed later: no connection, a timeout, or a 5xx/429.

    A 4xx other than 429 means the request itself is wrong (a bug), which retrying
    cannot fix, so it is raised.
    """
    if isinstance(error, httpx.TransportError):
        return True
    if isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
        return status >= 500 or status == 429
    return False


def call_with_retry(
    fn: Callable[[A], R],
    arg: A,
    *,
    is_retryable: Callable[[BaseException], bool] = retryable,
    on_retry: Callable[[BaseException], None] = lambda error: None,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], object] = time.sleep,
    first_backoff_s: float = 0.1,
    max_backoff_s: float = 5.0,
) -> R:
    """``fn(arg)`` until it succeeds: exponential backoff (0.1 s, 0.2 s ... 5 s) for as
    long as it takes, ``on_retry`` called before each wait. Raises :class:`Stopped` if
    ``should_stop()`` turns true while failing, and a non-retryable error at once.
    """

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if error is not None:
            on_retry(error)

    def wait(seconds: float) -> None:
        sleep(seconds)

    retrying = Retrying(
        retry=retry_if_exception(is_retryable),
        wait=wait_exponential(multiplier=first_backoff_s, max=max_backoff_s),
        stop=lambda state: should_stop(),
        before_sleep=before_sleep,
        sleep=wait,
        reraise=True,
    )
    try:
        return retrying(fn, arg)
    except Exception as error:
        if is_retryable(error) and should_stop():
            raise Stopped(f"stopped while the call kept failing: {error}") from error
        raise


class MetricsWriter:
    """Validates, formats and writes one Kafka batch at a time (see the module docstring).

    ``write`` sends lines to VictoriaMetrics (``VictoriaMetrics.import_prometheus``);
    ``max_lines`` bounds one request; ``max_wait_s`` bounds how long latency lines wait
    for the next batch. Counts: ``received`` per message, ``produced`` per message
    written, ``rejected`` per dead letter, ``retried`` per failed write attempt, and the
    stage latency (record produced -> result written) per result.
    """

    def __init__(
        self,
        write: Callable[[list[str]], object],
        metrics: StageMetrics,
        dead_letter: DeadLetterSink,
        *,
        raw_topic: str,
        results_topic: str,
        stride: int,
        max_lines: int = 20_000,
        max_wait_s: float = 0.1,
        should_stop: Callable[[], bool] = lambda: False,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.time,
        max_backoff_s: float = 5.0,
    ) -> None:
        if max_lines < 1:
            raise ValueError(f"max_lines must be at least 1, got {max_lines}")
        self._write = write
        self.metrics = metrics
        self.dead_letter = dead_letter
        self.raw_topic = raw_topic
        self.results_topic = results_topic
        self.stride = stride
        self.max_lines = max_lines
        self.max_wait_s = max_wait_s
        self._should_stop = should_stop
        self._sleep = sleep
        self._clock = clock
        self._max_backoff_s = max_backoff_s
        self._pending: list[str] = []
        self._pending_since = 0.0
        #: Lines accepted by VictoriaMetrics so far (data and latency).
        self.lines_written = 0

    def format(self, batch: Sequence[KafkaMessage]) -> tuple[list[str], list[InferenceResult]]:
        """The lines of every valid message in ``batch`` and its valid results; invalid
        messages go to the dead-letter topic with their reason."""
        lines: list[str] = []
        results: list[InferenceResult] = []
        for message in batch:
            self.metrics.received()
            value = message.value()
            topic = message.topic()
            try:
                if value is None:
                    raise ValueError("message has no value")
                if topic == self.raw_topic:
                    lines += telemetry_lines(decode(TelemetryMessage, value))
                elif topic == self.results_topic:
                    result = decode(InferenceResult, value)
                    lines += result_lines(result, self.stride)
                    results.append(result)
                else:
                    raise ValueError(f"message from unexpected topic {topic!r}")
            except (ValidationError, ValueError) as error:
                self.dead_letter.send(value, describe(error), message)
        return lines, results

    def handle(self, batch: Sequence[KafkaMessage]) -> None:
        """Write the batch's samples (and any waiting latency lines); returns once written."""
        before = self.metrics.counts["rejected"]
        lines, results = self.format(batch)
        good = len(batch) - (self.metrics.counts["rejected"] - before)
        lines = self._pending + lines
        self._pending = []
        self._write_all(lines)
        written_at = self._clock()
        self.metrics.produced(good)
        for result in results:
            self._pending += latency_lines(result, written_at)
            origin = (result.stages or {}).get(ORIGIN_STAGE)
            if origin is not None:
                self.metrics.latency(written_at - origin)
        if self._pending:
            self._pending_since = written_at

    def tick(self) -> None:
        """Write waiting latency lines once they have waited ``max_wait_s``."""
        if self._pending and self._clock() - self._pending_since >= self.max_wait_s:
            self.flush()

    def flush(self) -> None:
        """Write waiting latency lines now."""
        lines, self._pending = self._pending, []
        self._write_all(lines)

    def _write_all(self, lines: list[str]) -> None:
        for start in range(0, len(lines), self.max_lines):
            chunk = lines[start : start + self.max_lines]
            call_with_retry(
                self._write,
                chunk,
                on_retry=self._on_retry,
                should_stop=self._should_stop,
                sleep=self._sleep,
                max_backoff_s=self._max_backoff_s,
            )
            self.lines_written += len(chunk)

    def _on_retry(self, error: BaseException) -> None:
        self.metrics.retried()
        log.warning("writer: VictoriaMetrics write failed, retrying: %s", error)
