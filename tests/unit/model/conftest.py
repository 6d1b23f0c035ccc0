"""Fixtures for the model tests: a tiny synthetic dataset and a quickly trained model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from smap_bench.data import loader
from smap_bench.data.synthetic import generate_channel, write_synthetic_dataset
from smap_bench.model.train import TrainConfig, TrainedChannel, train_channel

#: The smallest settings that still exercise every code path (seconds, not minutes).
TINY = replace(TrainConfig(), epochs=2, train_stride=8)


#: The full read-only copy next to the checkout: <repo>/../shared/smap.
SHARED_SMAP = Path(__file__).resolve().parents[3].parent / "shared" / "smap"


@pytest.fixture(scope="session")
def shared_smap() -> Path:
    """The real dataset (real windows for the export check)."""
    if not loader.is_dataset(SHARED_SMAP):
        pytest.fail(f"the SMAP dataset is missing at {SHARED_SMAP}; copy it there (see README)")
    return SHARED_SMAP


@pytest.fixture(scope="session")
def tiny_trained() -> TrainedChannel:
    """A model trained for two epochs on a synthetic channel."""
    data = generate_channel("A-1", seed=1, train_rows=400, test_rows=200)
    return train_channel("A-1", data.train, TINY)


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """Two synthetic channels in the telemanom layout."""
    return write_synthetic_dataset(
        tmp_path / "smap", ["A-1", "E-1"], seed=2, train_rows=300, test_rows=300
    )
