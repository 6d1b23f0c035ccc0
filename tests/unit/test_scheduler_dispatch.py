from __future__ import annotations

from typing import Any

import pytest

import pipeline.scheduler as scheduler
from smap_bench.stage import StageMetrics


class FlakyBroker:
    """Stands in for Celery's send_task: refuses the first ``failures`` publishes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[dict[str, Any]] = []

    def __call__(self, name: str, **kwargs: Any) -> None:
        self.calls.append({"name": name, **kwargs})
        if len(self.calls) <= self.failures:
            raise ConnectionError("broker away")


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FlakyBroker:
    from pipeline.worker import app

    flaky = FlakyBroker(failures=2)
    monkeypatch.setattr(app, "send_task", flaky)
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda s: None)
    return flaky


def test_dispatch_counts_each_retry_and_leaves_none_to_celery(broker: FlakyBroker) -> None:
    metrics = StageMetrics("scheduler")
    dispatch = scheduler.make_dispatch("inference", metrics)
    dispatch([])
    assert len(broker.calls) == 3
    assert metrics.counts["retried"] == 2
    assert all(call["retry"] is False and call["queue"] == "inference" for call in broker.calls)
    assert {call["name"] for call in broker.calls} == {scheduler.TASK_NAME}
