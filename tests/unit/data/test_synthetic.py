"""The offline synthetic source: SMAP-shaped, deterministic, labeled anomalies of both kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smap_bench.catalog import SMAP_CHANNELS
from smap_bench.data.loader import list_channels, load_all
from smap_bench.data.synthetic import (
    NORMAL_LIMIT,
    POINT_FLOOR,
    generate_channel,
    generate_dataset,
    write_synthetic_dataset,
)


@pytest.fixture(scope="module")
def dataset() -> list:
    return generate_dataset(seed=0)


def test_same_seed_same_arrays_other_seed_other_arrays() -> None:
    first, again = generate_channel("A-1", seed=7), generate_channel("A-1", seed=7)
    np.testing.assert_array_equal(first.train, again.train)
    np.testing.assert_array_equal(first.test, again.test)
    assert first.anomalies == again.anomalies
    assert not np.array_equal(first.test, generate_channel("A-1", seed=8).test)
    assert not np.array_equal(first.test, generate_channel("A-2", seed=7).test)


def test_shapes_and_dtypes() -> None:
    data = generate_channel("T-2", train_rows=300, test_rows=700)
    assert data.channel == "T-2"
    assert data.train.shape == (300, 25) and data.test.shape == (700, 25)
    assert data.train.dtype == np.float32 and data.test.dtype == np.float32
    assert np.isfinite(data.train).all() and np.isfinite(data.test).all()


def test_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="test_rows >= 50"):
        generate_channel("A-1", test_rows=10)


def test_default_channels_are_the_smap_names(dataset: list) -> None:
    assert [c.channel for c in dataset] == list(SMAP_CHANNELS)


def test_commands_are_sparse_one_hot(dataset: list) -> None:
    for data in dataset:
        commands = np.vstack([data.train, data.test])[:, 1:]
        assert set(np.unique(commands)) <= {0.0, 1.0}
        assert commands.sum(axis=1).max() <= 1.0
        assert 0 < commands.sum() < 0.05 * len(commands)


def test_train_and_unlabeled_test_rows_stay_in_the_normal_range(dataset: list) -> None:
    for data in dataset:
        assert np.abs(data.train[:, 0]).max() <= NORMAL_LIMIT + 1e-6
        normal = data.test[~data.test_labels(), 0]
        assert np.abs(normal).max() <= NORMAL_LIMIT + 1e-6
        assert data.train[:, 0].std() > 0.1  # a moving signal, not a constant


def test_labeled_ranges_are_inside_and_disjoint(dataset: list) -> None:
    for data in dataset:
        assert 1 <= len(data.anomalies) <= 3
        ends = [-1]
        for anomaly in data.anomalies:
            assert anomaly.kind in ("point", "contextual")
            assert ends[-1] < anomaly.start <= anomaly.end < len(data.test)
            ends.append(anomaly.end)


def test_both_kinds_occur(dataset: list) -> None:
    kinds = {a.kind for data in dataset for a in data.anomalies}
    assert kinds == {"point", "contextual"}


def test_point_anomalies_leave_the_normal_range(dataset: list) -> None:
    for data in dataset:
        for a in (a for a in data.anomalies if a.kind == "point"):
            values = np.abs(data.test[a.start : a.end + 1, 0])
            assert values.min() > POINT_FLOOR
            assert values.max() <= 1.0


def test_contextual_anomalies_stay_in_range_with_the_wrong_shape(dataset: list) -> None:
    """Frozen (much smoother) or oscillating (much rougher) compared with the train split."""
    for data in dataset:
        roughness = np.abs(np.diff(data.train[:, 0])).mean()
        for a in (a for a in data.anomalies if a.kind == "contextual"):
            values = data.test[a.start : a.end + 1, 0]
            assert np.abs(values).max() <= NORMAL_LIMIT + 1e-6
            ratio = np.abs(np.diff(values)).mean() / roughness
            assert ratio < 0.5 or ratio > 2.0, (data.channel, a, ratio)


def test_written_dataset_loads_like_the_real_one(tmp_path: Path) -> None:
    names = ["A-1", "G-2", "P-7"]
    path = write_synthetic_dataset(tmp_path / "syn", names, seed=5, train_rows=120, test_rows=300)
    assert list_channels(path) == names
    loaded, missing = load_all(path)
    assert missing == []
    for data, expected in zip(
        loaded, generate_dataset(names, seed=5, train_rows=120, test_rows=300), strict=True
    ):
        assert data.channel == expected.channel
        np.testing.assert_array_equal(data.train, expected.train)
        np.testing.assert_array_equal(data.test, expected.test)
        assert data.anomalies == expected.anomalies
