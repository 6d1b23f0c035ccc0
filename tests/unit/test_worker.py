"""The inference worker: warm-up before the first task, one thread per model's call."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from smap_bench.inference.base import (
    BackendUnavailableError,
    InferenceBackend,
    ModelSignature,
    UnknownModelError,
)
from smap_bench.inference.onnx_backend import OnnxBackend
from smap_bench.scoring import (
    MetadataThresholds,
    score_concurrently,
    score_tasks,
    undelivered_tasks,
    warm_up,
)
from tests.unit.test_scoring import make_task, repository  # noqa: F401 (a fixture)


class FakeBackend(InferenceBackend):
    name = "fake"

    def __init__(self, broken: set[str] = frozenset(), down_after: int | None = None) -> None:
        self.calls: list[tuple[str, tuple[int, ...]]] = []
        self.broken = broken
        self.down_after = down_after

    def signature(self, model_name: str) -> ModelSignature:
        if model_name in self.broken:
            raise UnknownModelError(model_name, "no such model")
        return ModelSignature(window=30, features=25)

    def _infer(self, model_name: str, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.down_after is not None and len(self.calls) >= self.down_after:
            raise BackendUnavailableError(model_name, "connection refused")
        self.calls.append((model_name, windows.shape))
        return windows.copy(), np.zeros(windows.shape[:2], np.float32)

    def ready(self, model_name: str) -> bool:
        return True

    def models(self) -> list[str]:
        return []


def test_every_model_scores_one_window_of_its_shape() -> None:
    backend = FakeBackend()
    assert warm_up(backend, ["SMAP_A-1", "SMAP_T-1"])[0] == 2
    assert backend.calls == [("SMAP_A-1", (1, 30, 25)), ("SMAP_T-1", (1, 30, 25))]


def test_a_broken_model_is_skipped_and_an_unreachable_server_ends_the_warm_up() -> None:
    backend = FakeBackend(broken={"SMAP_A-2"})
    assert warm_up(backend, ["SMAP_A-1", "SMAP_A-2", "SMAP_A-3"])[0] == 2
    assert [model for model, _ in backend.calls] == ["SMAP_A-1", "SMAP_A-3"]
    down = FakeBackend(down_after=1)
    assert warm_up(down, ["SMAP_A-1", "SMAP_A-2", "SMAP_A-3"])[0] == 1
    assert [model for model, _ in down.calls] == ["SMAP_A-1"]


def test_past_the_budget_the_rest_warm_on_first_use() -> None:
    backend = FakeBackend()
    assert warm_up(backend, ["SMAP_A-1", "SMAP_A-2"], budget_s=-1.0)[0] == 0
    assert backend.calls == []


def test_scoring_one_thread_per_model_gives_what_scoring_in_turn_gives(
    repository: Path,  # noqa: F811 (the fixture)
) -> None:
    backend = OnnxBackend(repository)
    thresholds = MetadataThresholds(repository)
    tasks = [make_task(0, "SMAP_T-2"), make_task(0), make_task(10), make_task(10, "SMAP_T-2")]
    tasks.append(make_task(20, "SMAP_T-3"))  # no such model: rejected with its reason
    in_turn = score_tasks(tasks, backend, thresholds, stride=10)
    with ThreadPoolExecutor(4) as pool:
        threaded = score_concurrently(tasks, backend, thresholds, 10, pool)
    assert [r.job_id for r in threaded.results] == [r.job_id for r in in_turn.results]
    models = [r.model_name for r in threaded.results]
    assert models == ["SMAP_T-2", "SMAP_T-2", "SMAP_T-1", "SMAP_T-1"]
    for a, b in zip(threaded.results, in_turn.results, strict=True):
        assert a.anomaly_scores == b.anomaly_scores and a.is_anomaly == b.is_anomaly
    assert [(r.job_id, r.reason) for r in threaded.rejected] == [
        (r.job_id, r.reason) for r in in_turn.rejected
    ]
    assert len(threaded.rejected) == 1


def test_a_retry_after_a_failed_delivery_carries_only_the_undelivered_windows(
    repository: Path,  # noqa: F811 (the fixture)
) -> None:
    tasks = [make_task(s) for s in (0, 10, 20)]
    outcome = score_tasks(tasks, OnnxBackend(repository), MetadataThresholds(repository), stride=10)
    assert len(outcome.results) == 3
    first, second, third = (t.job_id for t in tasks)
    # Kafka confirmed the first and third results: only the second window is tried again
    assert undelivered_tasks(tasks, outcome.results, {first, third}) == [tasks[1]]
    assert undelivered_tasks(tasks, outcome.results, {first, second, third}) == []
    assert undelivered_tasks(tasks, outcome.results, set()) == tasks


def test_windows_without_a_result_are_not_retried_as_undelivered() -> None:
    # a deferred or rejected window has no result: it is handled apart, not re-published
    tasks = [make_task(s) for s in (0, 10)]
    assert undelivered_tasks(tasks, [], set()) == []
