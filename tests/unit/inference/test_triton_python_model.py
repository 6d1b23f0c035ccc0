"""The Python-backend model that serves ONNX models inside the local Triton, run here
against a stand-in for Triton's ``triton_python_backend_utils``."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from smap_bench.inference import triton_python_model as tpm


def test_concat_and_split_round_trip() -> None:
    a = {"input": np.zeros((2, 3)), "other": np.zeros((2, 1))}
    b = {"input": np.ones((3, 3)), "other": np.ones((3, 1))}
    joint, sizes = tpm.concat_requests([a, b])
    assert sizes == [2, 3] and joint["input"].shape == (5, 3)
    back = tpm.split_outputs({"y": joint["input"] * 2}, sizes)
    np.testing.assert_array_equal(back[0]["y"], np.zeros((2, 3)))
    np.testing.assert_array_equal(back[1]["y"], np.full((3, 3), 2.0))


class FakeTensor:
    def __init__(self, name: str, value: np.ndarray) -> None:
        self._name, self._value = name, value

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._value


class FakeResponse:
    def __init__(self, output_tensors: list[FakeTensor], error: Any = None) -> None:
        self.outputs = {t.name(): t.as_numpy() for t in output_tensors}
        self.error = error


class FakeRequest:
    def __init__(self, **inputs: np.ndarray) -> None:
        self.inputs = inputs


@pytest.fixture
def pb_utils(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = FakeTensor  # type: ignore[attr-defined]
    module.InferenceResponse = FakeResponse  # type: ignore[attr-defined]
    module.TritonError = lambda message: message  # type: ignore[attr-defined]
    module.get_input_tensor_by_name = (  # type: ignore[attr-defined]
        lambda request, name: FakeTensor(name, request.inputs[name])
    )
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    yield module


def make_model(fixture_repository: Path, max_batch_size: int = 1024) -> tpm.TritonPythonModel:
    config = {
        "name": "SMAP_T-1",
        "max_batch_size": max_batch_size,
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [30, 25]}],
        "output": [
            {"name": "reconstruction", "data_type": "TYPE_FP32", "dims": [30, 25]},
            {"name": "score", "data_type": "TYPE_FP32", "dims": [30]},
        ],
        "parameters": {"intra_op_thread_count": {"string_value": "1"}},
    }
    model = tpm.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(config),
            "model_repository": str(fixture_repository / "onnx" / "SMAP_T-1"),
            "model_version": "1",
            "model_instance_kind": "CPU",
        }
    )
    return model


def reference(fixture_repository: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(fixture_repository / "onnx/SMAP_T-1/1/model.onnx"))
    return session.run(["reconstruction", "score"], {"input": x})


@pytest.mark.usefixtures("pb_utils")
@pytest.mark.parametrize("max_batch_size", [1024, 0])
def test_requests_are_answered_in_order(fixture_repository: Path, max_batch_size: int) -> None:
    model = make_model(fixture_repository, max_batch_size)
    rng = np.random.default_rng(1)
    batches = [rng.normal(size=(n, 30, 25)).astype(np.float32) for n in (1, 4, 2)]
    responses = model.execute([FakeRequest(input=b) for b in batches])
    assert len(responses) == 3
    for batch, response in zip(batches, responses, strict=True):
        assert response.error is None
        rec, score = reference(fixture_repository, batch)
        np.testing.assert_allclose(response.outputs["reconstruction"], rec, atol=1e-5)
        np.testing.assert_allclose(response.outputs["score"], score, atol=1e-5)
        assert response.outputs["score"].dtype == np.float32


@pytest.mark.usefixtures("pb_utils")
def test_one_bad_request_does_not_fail_the_others(fixture_repository: Path) -> None:
    model = make_model(fixture_repository)
    good = np.zeros((2, 30, 25), np.float32)
    bad = np.zeros((1, 30, 24), np.float32)  # Triton checks dims; this models a slip past it
    responses = model.execute([FakeRequest(input=good), FakeRequest(input=bad)])
    assert responses[0].error is None and responses[0].outputs["score"].shape == (2, 30)
    assert responses[1].error is not None and responses[1].error.startswith("SMAP_T-1: ")
