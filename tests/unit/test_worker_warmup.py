"""The inference worker's warm-up: one window per model before the first task."""

from __future__ import annotations

import numpy as np

from pipeline.worker import warm_up
from smap_bench.inference.base import (
    BackendUnavailableError,
    InferenceBackend,
    ModelSignature,
    UnknownModelError,
)


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
