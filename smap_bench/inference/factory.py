"""Building the inference backend that the settings (or the caller) ask for."""

from __future__ import annotations

from typing import Literal

from smap_bench.config import Settings
from smap_bench.inference.base import InferenceBackend

BackendKind = Literal["triton-grpc", "triton-http", "onnx"]
BACKEND_KINDS: tuple[BackendKind, ...] = ("triton-grpc", "triton-http", "onnx")


def make_backend(settings: Settings, kind: BackendKind | str | None = None) -> InferenceBackend:
    """The backend ``kind`` (default ``settings.inference_backend``), configured from
    ``settings``: Triton at ``settings.triton_{http,grpc}_url``, or ONNX Runtime on
    ``settings.model_repository``."""
    kind = kind or settings.inference_backend
    if kind == "onnx":
        from smap_bench.inference.onnx_backend import OnnxBackend, providers_for_device

        return OnnxBackend(
            settings.model_repository,
            providers=providers_for_device(settings.onnx_device),
            intra_op_threads=settings.onnx_intra_op_threads,
        )
    if kind in ("triton-http", "triton-grpc"):
        from smap_bench.inference.triton_backend import TritonBackend

        http = kind == "triton-http"
        url = settings.triton_http_url if http else settings.triton_grpc_url
        return TritonBackend(url, "http" if http else "grpc", timeout_s=settings.triton_timeout_s)
    raise ValueError(f"unknown inference backend {kind!r}; expected one of {list(BACKEND_KINDS)}")
