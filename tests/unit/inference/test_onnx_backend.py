"""The in-process ONNX Runtime backend on the fixture models."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from smap_bench.inference import onnx_backend
from smap_bench.inference.base import InvalidWindowError, ModelNotReadyError, UnknownModelError
from smap_bench.inference.onnx_backend import CPU, CUDA, OnnxBackend, resolve_providers


@pytest.fixture
def backend(fixture_repository: Path) -> OnnxBackend:
    return OnnxBackend(fixture_repository, intra_op_threads=1)


def test_lists_models(backend: OnnxBackend) -> None:
    assert backend.models() == ["SMAP_T-1", "SMAP_T-2"]


def test_infer_matches_a_plain_session(
    backend: OnnxBackend, fixture_repository: Path, windows: np.ndarray
) -> None:
    out = backend.infer("SMAP_T-1", windows)
    assert out.reconstruction.shape == (5, 30, 25) and out.reconstruction.dtype == np.float32
    assert out.score.shape == (5, 30) and out.score.dtype == np.float32
    assert out.elapsed_ms > 0
    plain = ort.InferenceSession(str(fixture_repository / "onnx/SMAP_T-1/1/model.onnx"))
    rec, score = plain.run(["reconstruction", "score"], {"input": windows})
    np.testing.assert_allclose(out.reconstruction, rec, atol=1e-6)
    np.testing.assert_allclose(out.score, score, atol=1e-6)
    # the score is the model's mean squared reconstruction error per record
    np.testing.assert_allclose(out.score, ((windows - rec) ** 2).mean(-1), rtol=1e-5)


def test_models_differ_and_batches_are_independent(
    backend: OnnxBackend, windows: np.ndarray
) -> None:
    one = backend.infer("SMAP_T-1", windows)
    two = backend.infer("SMAP_T-2", windows)
    assert not np.allclose(one.score, two.score)
    singles = np.concatenate([backend.infer("SMAP_T-1", w[None]).score for w in windows])
    np.testing.assert_allclose(singles, one.score, atol=1e-5)


def test_float64_input_gives_the_float32_answer(backend: OnnxBackend, windows: np.ndarray) -> None:
    np.testing.assert_array_equal(
        backend.infer("SMAP_T-1", windows.astype(np.float64)).score,
        backend.infer("SMAP_T-1", windows).score,
    )


def test_signature_comes_from_the_model(backend: OnnxBackend) -> None:
    signature = backend.signature("SMAP_T-2")
    assert (signature.window, signature.features) == (30, 25)


def test_sessions_are_created_once(backend: OnnxBackend) -> None:
    assert backend.session("SMAP_T-1") is backend.session("SMAP_T-1")


@pytest.mark.parametrize("name", ["SMAP_X-9", "../onnx/SMAP_T-1", "", "SMAP_T-1/1"])
def test_unknown_model(backend: OnnxBackend, windows: np.ndarray, name: str) -> None:
    with pytest.raises(UnknownModelError) as info:
        backend.infer(name, windows)
    assert str(info.value).startswith(f"{name}: ")
    assert not backend.ready(name)


def test_bad_input_names_the_model(backend: OnnxBackend, windows: np.ndarray) -> None:
    with pytest.raises(InvalidWindowError, match=r"^SMAP_T-2: window has shape \(5, 29, 25\)"):
        backend.infer("SMAP_T-2", windows[:, :29])
    windows[0, 0, 0] = np.nan
    with pytest.raises(InvalidWindowError, match=r"^SMAP_T-2: window 0 holds NaN"):
        backend.infer("SMAP_T-2", windows)


def test_ready(backend: OnnxBackend) -> None:
    assert backend.ready("SMAP_T-1")


def test_broken_model_file_is_not_ready(tmp_path: Path, windows: np.ndarray) -> None:
    (tmp_path / "onnx" / "SMAP_B-1" / "1").mkdir(parents=True)
    (tmp_path / "onnx" / "SMAP_B-1" / "1" / "model.onnx").write_bytes(b"not onnx")
    backend = OnnxBackend(tmp_path)
    assert backend.models() == ["SMAP_B-1"]
    assert not backend.ready("SMAP_B-1")
    with pytest.raises(ModelNotReadyError, match=r"^SMAP_B-1: cannot load"):
        backend.infer("SMAP_B-1", windows)


def test_newest_version_is_used(tmp_path: Path, fixture_repository: Path) -> None:
    for version, source in (("1", "SMAP_T-1"), ("3", "SMAP_T-2")):
        target = tmp_path / "onnx" / "SMAP_V-1" / version
        target.mkdir(parents=True)
        (target / "model.onnx").write_bytes(
            (fixture_repository / "onnx" / source / "1" / "model.onnx").read_bytes()
        )
    x = np.ones((1, 30, 25), np.float32)
    expected = OnnxBackend(fixture_repository).infer("SMAP_T-2", x).score
    np.testing.assert_array_equal(OnnxBackend(tmp_path).infer("SMAP_V-1", x).score, expected)


def test_cuda_falls_back_to_cpu_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(onnx_backend.ort, "get_available_providers", lambda: [CPU])
    with caplog.at_level(logging.WARNING):
        assert resolve_providers([CUDA, CPU]) == [CPU]
    assert "CUDAExecutionProvider" in caplog.text


def test_cuda_is_kept_where_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_backend.ort, "get_available_providers", lambda: [CUDA, CPU])
    assert resolve_providers([CUDA]) == [CUDA, CPU]


def test_unknown_device_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown inference device 'tpu'"):
        onnx_backend.providers_for_device("tpu")
