"""One inference interface, two backends: Triton (tritonclient, HTTP or gRPC) and
in-process ONNX Runtime. Build one with :func:`make_backend`; both check input the same
way and raise :class:`InferenceError` subclasses that name the model and the problem."""

from smap_bench.inference.base import (
    BackendUnavailableError,
    InferenceBackend,
    InferenceError,
    InferenceOutput,
    InvalidWindowError,
    ModelNotReadyError,
    ModelSignature,
    UnknownModelError,
    validate_windows,
)
from smap_bench.inference.factory import BACKEND_KINDS, make_backend

__all__ = [
    "BACKEND_KINDS",
    "BackendUnavailableError",
    "InferenceBackend",
    "InferenceError",
    "InferenceOutput",
    "InvalidWindowError",
    "ModelNotReadyError",
    "ModelSignature",
    "UnknownModelError",
    "make_backend",
    "validate_windows",
]
