from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from smap_bench.data.synthetic import generate_channel
from smap_bench.model.train import (
    MIN_SPAN,
    TrainConfig,
    adversarial_weight,
    array_sha256,
    fit_normalisation,
    sliding_windows,
    train_channel,
)
from tests.unit.model.conftest import TINY


def test_normalisation_maps_the_train_range_to_unit_interval() -> None:
    train = np.zeros((10, 25), dtype=np.float32)
    train[:, 0] = np.linspace(-0.5, 0.5, 10)
    train[3, 4] = 1.0
    norm = fit_normalisation(train)
    x = (train - np.array(norm.offset)) / np.array(norm.scale)
    assert x[:, 0].min() == pytest.approx(0.0) and x[:, 0].max() == pytest.approx(1.0)
    np.testing.assert_array_equal(x[:, 1:], train[:, 1:])  # one-hots untouched


def test_normalisation_of_a_constant_channel_uses_the_floor() -> None:
    train = np.ones((10, 25), dtype=np.float32)
    norm = fit_normalisation(train)
    assert norm.scale[0] == pytest.approx(MIN_SPAN)
    assert (1.0 - norm.offset[0]) / norm.scale[0] == pytest.approx(0.5)


def test_sliding_windows_cover_the_split() -> None:
    values = np.arange(40 * 2, dtype=np.float32).reshape(40, 2)
    w = sliding_windows(values, 30, 5)
    assert w.shape == (3, 30, 2)
    np.testing.assert_array_equal(w[1], values[5:35])
    with pytest.raises(ValueError, match="fewer than window"):
        sliding_windows(values[:10], 30)


def test_adversarial_weight_decreases_with_epochs() -> None:
    weights = [adversarial_weight(n, 1.05) for n in range(1, 6)]
    assert all(a > b for a, b in itertools.pairwise(weights))
    assert adversarial_weight(1, 1.0) == 1.0
    with pytest.raises(ValueError, match="epsilon"):
        adversarial_weight(1, 0.5)


def test_settings_hash_changes_with_settings_and_data() -> None:
    base = TrainConfig()
    assert base.settings_hash("a") == TrainConfig().settings_hash("a")
    assert base.settings_hash("a") != base.settings_hash("b")
    assert base.settings_hash("a") != replace(base, seed=1).settings_hash("a")
    assert array_sha256(np.zeros((2, 2))) != array_sha256(np.zeros((2, 3)))
    horizon = replace(base, network=replace(base.network, horizon=10))
    assert base.settings_hash("a") != horizon.settings_hash("a")
    # a horizon of 0 leaves the hash as it was before the setting existed
    assert "horizon" not in base.as_dict()["network"]


def test_training_is_repeatable_for_a_seed() -> None:
    data = generate_channel("E-1", seed=4, train_rows=300, test_rows=100)
    a = train_channel("E-1", data.train, TINY)
    b = train_channel("E-1", data.train, TINY)
    c = train_channel("E-1", data.train, replace(TINY, seed=1))
    assert a.threshold == b.threshold
    assert a.threshold != c.threshold
    assert a.metadata["settings_hash"] == b.metadata["settings_hash"]


def test_metadata_describes_the_model(tiny_trained) -> None:
    meta = tiny_trained.metadata
    assert meta["model_name"] == "SMAP_A-1"
    assert meta["threshold"] == tiny_trained.threshold > 0
    assert meta["metrics"]["validation_windows_over_threshold"] == 0
    assert meta["score"]["feature_weights"][0] == 1.0
    assert sum(meta["score"]["feature_weights"][1:]) == 0.0
    assert len(meta["metrics"]["train_loss_by_epoch"]) == TINY.epochs
    assert meta["fit_records"] + meta["validation_records"] == meta["train_records"]


def test_training_refuses_wrong_shapes_and_short_splits() -> None:
    with pytest.raises(ValueError, match="shape"):
        train_channel("X-1", np.zeros((100, 3)), TINY)
    with pytest.raises(ValueError, match="too short"):
        train_channel("X-1", np.zeros((50, 25)), TINY)


def test_the_committed_models_are_up_to_date_with_the_default_settings() -> None:
    repository = Path(__file__).resolve().parents[3] / "triton-repository" / "onnx"
    for name in ("SMAP_A-1", "SMAP_P-1"):
        meta = json.loads((repository / name / "metadata.json").read_text())
        assert TrainConfig().settings_hash(meta["training_data_sha256"]) == meta["settings_hash"]
