"""Fixtures for the data tests: the shared real dataset and small synthetic ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from smap_bench.data import loader
from smap_bench.data.loader import resolve_data_dir
from smap_bench.data.synthetic import write_synthetic_dataset

#: The full read-only copy next to the checkout: <repo>/../shared/smap.
SHARED_SMAP = Path(__file__).resolve().parents[3].parent / "shared" / "smap"


@pytest.fixture(scope="session")
def shared_smap() -> Path:
    """The real dataset, found through the loader's own resolution."""
    if not loader.is_dataset(SHARED_SMAP):
        pytest.fail(f"the SMAP dataset is missing at {SHARED_SMAP}; copy it there (see README)")
    source = resolve_data_dir(SHARED_SMAP)
    assert source.path is not None
    return source.path


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """A three-channel synthetic dataset in the telemanom layout."""
    return write_synthetic_dataset(
        tmp_path / "smap", ["A-1", "A-2", "E-1"], seed=3, train_rows=200, test_rows=400
    )


@pytest.fixture
def no_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory and checkout with no dataset anywhere near them."""
    work = tmp_path / "nowhere" / "repo"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setattr(loader, "PROJECT_ROOT", work)
    return work
