"""make_backend builds what the settings name."""

from __future__ import annotations

from pathlib import Path

import pytest

from smap_bench.config import Settings
from smap_bench.inference import make_backend
from smap_bench.inference.onnx_backend import OnnxBackend
from smap_bench.inference.triton_backend import TritonBackend


def test_default_kind_comes_from_settings(fixture_repository: Path) -> None:
    settings = Settings(inference_backend="onnx", model_repository=fixture_repository)
    backend = make_backend(settings)
    assert isinstance(backend, OnnxBackend) and backend.models() == ["SMAP_T-1", "SMAP_T-2"]


@pytest.mark.parametrize(
    ("kind", "protocol", "url"),
    [
        ("triton-http", "http", "triton.example:18000"),
        ("triton-grpc", "grpc", "triton.example:18001"),
    ],
)
def test_triton_kinds(kind: str, protocol: str, url: str) -> None:
    settings = Settings(
        triton_host="triton.example", triton_http_port=18000, triton_grpc_port=18001
    )
    with make_backend(settings, kind) as backend:
        assert isinstance(backend, TritonBackend)
        assert (backend.protocol, backend.url, backend.name) == (protocol, url, kind)


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown inference backend 'torch'"):
        make_backend(Settings(), "torch")
