"""The metrics writer in memory: batches in, lines written once, retries, dead letters."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from smap_bench.schema import encode
from smap_bench.stage import StageMetrics
from smap_bench.writing import MetricsWriter, Stopped, call_with_retry, retryable
from tests.unit.result_samples import FakeDeadLetter, FakeMessage, result, telemetry

RAW, RESULTS = "raw-topic", "results-topic"


class FlakyVictoria:
    """Accepts lines after ``failures`` refused attempts (connection refused)."""

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or httpx.ConnectError("connection refused")
        self.requests: list[list[str]] = []
        self.attempts = 0

    def __call__(self, lines: list[str]) -> int:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        self.requests.append(list(lines))
        return len(lines)

    @property
    def lines(self) -> list[str]:
        return [line for request in self.requests for line in request]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_writer(victoria: FlakyVictoria, **kwargs: Any) -> tuple[MetricsWriter, FakeDeadLetter]:
    metrics = StageMetrics("writer")
    dead = FakeDeadLetter(metrics)
    kwargs.setdefault("sleep", lambda s: None)
    writer = MetricsWriter(
        victoria, metrics, dead, raw_topic=RAW, results_topic=RESULTS, stride=10, **kwargs
    )
    return writer, dead


def raw(record_index: int) -> FakeMessage:
    return FakeMessage(RAW, encode(telemetry("sat3", record_index)))


def res(start: int, **kwargs: Any) -> FakeMessage:
    return FakeMessage(RESULTS, encode(result(start, satellite_id="sat3", **kwargs)))


def test_a_batch_is_written_before_handle_returns_in_order() -> None:
    victoria = FlakyVictoria()
    writer, dead = make_writer(victoria)
    writer.handle([raw(0), raw(1), res(0)])
    assert len(victoria.lines) == 2 * 177 + 5 + 27 * 30
    assert victoria.lines[0].startswith("smap_feature{")
    assert " 1767614401000" in victoria.lines[177]  # record 1 follows record 0
    assert victoria.lines[-1].startswith("inference_reconstruction{")
    assert writer.metrics.counts == {
        "received": 3,
        "produced": 3,
        "rejected": 0,
        "retried": 0,
        "lost": 0,
    }
    assert dead.sent == []


def test_requests_are_bounded_by_max_lines() -> None:
    victoria = FlakyVictoria()
    writer, _ = make_writer(victoria, max_lines=100)
    writer.handle([raw(0), raw(1)])
    assert [len(r) for r in victoria.requests] == [100, 100, 100, 54]
    assert writer.lines_written == 354


def test_an_unreachable_victoria_is_retried_with_backoff_and_nothing_is_lost() -> None:
    victoria = FlakyVictoria(failures=6)
    waits: list[float] = []
    writer, _ = make_writer(victoria, sleep=waits.append, max_backoff_s=1.0)
    writer.handle([raw(5), res(10)])
    assert writer.metrics.counts["retried"] == 6
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert len(victoria.requests) == 1
    assert len(victoria.lines) == 177 + 5 + 27 * 10
    assert len(set(victoria.lines)) == len(victoria.lines)
    assert writer.metrics.counts["produced"] == 2


def test_a_server_error_is_retried_but_a_client_error_is_raised() -> None:
    request = httpx.Request("POST", "http://vm/api/v1/import/prometheus")
    unavailable = httpx.HTTPStatusError(
        "503", request=request, response=httpx.Response(503, request=request)
    )
    bad = httpx.HTTPStatusError(
        "400", request=request, response=httpx.Response(400, request=request)
    )
    assert retryable(unavailable) and not retryable(bad)
    assert retryable(httpx.ReadTimeout("slow"))
    victoria = FlakyVictoria(failures=2, error=unavailable)
    writer, _ = make_writer(victoria)
    writer.handle([raw(0)])
    assert writer.metrics.counts["retried"] == 2 and len(victoria.lines) == 177
    victoria = FlakyVictoria(failures=1, error=bad)
    writer, _ = make_writer(victoria)
    with pytest.raises(httpx.HTTPStatusError):
        writer.handle([raw(0)])
    assert victoria.attempts == 1 and writer.metrics.counts["produced"] == 0


def test_stopping_while_victoria_is_down_raises_without_counting_the_batch_written() -> None:
    victoria = FlakyVictoria(failures=10**9)
    stop = {"flag": False}

    def sleep(seconds: float) -> None:
        if victoria.attempts >= 3:
            stop["flag"] = True

    writer, _ = make_writer(victoria, sleep=sleep, should_stop=lambda: stop["flag"])
    with pytest.raises(Stopped, match="connection refused"):
        writer.handle([raw(0)])
    assert writer.metrics.counts["produced"] == 0
    assert victoria.requests == []


def test_bad_messages_go_to_the_dead_letter_topic_and_the_rest_is_written() -> None:
    victoria = FlakyVictoria()
    writer, dead = make_writer(victoria)
    wrong_count = telemetry("sat3", 7).model_dump(mode="json")
    wrong_count["subsystems"]["EPS"]["features"] = [1.0] * 24
    short_scores = result(0, satellite_id="sat3").model_dump(mode="json")
    short_scores["anomaly_scores"] = short_scores["anomaly_scores"][:29]

    batch = [
        FakeMessage(RAW, b"{not json"),
        FakeMessage(RAW, json.dumps(wrong_count).encode()),
        FakeMessage(
            RAW,
            b'{"satellite_id": "sat3", "timestamp": "2026-01-05T12:00:00+00:00",'
            b' "loop": 0, "record_index": 1, "subsystems": {"EPS": {"code": "E",'
            b' "features": [NaN], "num_features": 1}}}',
        ),
        FakeMessage(RESULTS, None),
        FakeMessage("other-topic", encode(telemetry("sat3", 1))),
        FakeMessage(RESULTS, json.dumps(short_scores).encode()),
        raw(2),
    ]
    writer.handle(batch)
    reasons = [reason for _, reason in dead.sent]
    assert len(reasons) == 6
    assert "features has 24 values" in reasons[1]
    assert "no value" in reasons[3]
    assert "unexpected topic 'other-topic'" in reasons[4]
    assert "anomaly_scores has 29 values" in reasons[5]
    assert len(victoria.lines) == 177
    assert writer.metrics.counts == {
        "received": 7,
        "produced": 1,
        "rejected": 6,
        "retried": 0,
        "lost": 0,
    }


def test_latency_lines_follow_the_write_and_are_flushed_by_the_tick() -> None:
    victoria = FlakyVictoria()
    clock = Clock()
    writer, _ = make_writer(victoria, clock=clock, max_wait_s=0.1)
    stages = {"simulator": 999.0, "router": 999.1, "scheduler": 999.2, "worker": 999.5}
    writer.handle([res(20, stages=stages)])
    assert not any(line.startswith("smap_e2e_latency_seconds") for line in victoria.lines)
    writer.tick()  # not yet due
    assert len(victoria.requests) == 1
    clock.now += 0.2
    writer.tick()
    latency = victoria.requests[-1]
    assert len(latency) == 4
    writer_line = next(line for line in latency if 'stage="writer"' in line)
    assert writer_line.split(" ")[1] == "1.0"  # accepted at 1000.0, produced at 999.0
    writer.tick()
    assert len(victoria.requests) == 2  # nothing left to flush


def test_waiting_latency_lines_join_the_next_batch() -> None:
    victoria = FlakyVictoria()
    writer, _ = make_writer(victoria, clock=Clock())
    writer.handle([res(20, stages={"simulator": 999.0, "worker": 999.5})])
    writer.handle([raw(3)])
    assert len(victoria.requests) == 2
    assert sum("smap_e2e_latency_seconds" in line for line in victoria.requests[1]) == 2


def test_call_with_retry_returns_the_value() -> None:
    calls = []

    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise httpx.ConnectError("down")
        return x * 2

    retries: list[BaseException] = []
    assert call_with_retry(flaky, 21, on_retry=retries.append, sleep=lambda s: None) == 42
    assert len(retries) == 2
