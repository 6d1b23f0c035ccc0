"""Fixtures for the inference tests: the tiny ONNX repository in tests/fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FIXTURE_REPOSITORY = Path(__file__).resolve().parents[2] / "fixtures" / "triton-repository"


@pytest.fixture
def fixture_repository() -> Path:
    """Root of the fixture repository (holds onnx/SMAP_T-1 and onnx/SMAP_T-2)."""
    assert (FIXTURE_REPOSITORY / "onnx" / "SMAP_T-1" / "1" / "model.onnx").is_file(), (
        "fixture models missing: run .venv/bin/python tests/fixtures/make_onnx_repository.py"
    )
    return FIXTURE_REPOSITORY


@pytest.fixture
def windows() -> np.ndarray:
    """Five random float32 windows of the contract's shape [5, 30, 25]."""
    return np.random.default_rng(7).normal(size=(5, 30, 25)).astype(np.float32)
