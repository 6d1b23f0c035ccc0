"""Triton Inference Server through tritonclient, over HTTP or gRPC (KServe v2 protocol).

One client (one connection pool) per backend object, reused for every call. A model's
window shape and batch limit are read from the server once and kept; batches above the
limit are sent in chunks. Triton's errors become :class:`InferenceError` subclasses that
name the model, so callers handle the same errors as with the in-process backend.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from smap_bench.inference.base import (
    INPUT_NAME,
    OUTPUT_NAMES,
    RECONSTRUCTION_NAME,
    SCORE_NAME,
    BackendUnavailableError,
    InferenceBackend,
    InferenceError,
    InvalidWindowError,
    ModelNotReadyError,
    ModelSignature,
    UnknownModelError,
)

Protocol = Literal["http", "grpc"]


def map_triton_error(model_name: str, url: str, exc: BaseException) -> InferenceError:
    """The :class:`InferenceError` that says what a tritonclient failure means."""
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        message = exc.message() or str(exc)
    else:  # the HTTP client lets socket errors through
        status, message = "", f"{type(exc).__name__}: {exc}"
    lowered = message.lower()
    if status in ("404", "StatusCode.NOT_FOUND") or "unknown model" in lowered:
        return UnknownModelError(model_name, f"Triton at {url} has no such model ({message})")
    if (
        isinstance(exc, OSError)
        or status == "StatusCode.UNAVAILABLE"
        or "failed to connect" in lowered
    ):
        return BackendUnavailableError(model_name, f"cannot reach Triton at {url}: {message}")
    if status in ("StatusCode.DEADLINE_EXCEEDED",) or "timed out" in lowered:
        return BackendUnavailableError(model_name, f"Triton at {url} timed out: {message}")
    if status in ("400", "StatusCode.INVALID_ARGUMENT"):
        return InvalidWindowError(model_name, f"Triton refused the request: {message}")
    if "not ready" in lowered or "unavailable" in lowered:
        return ModelNotReadyError(model_name, f"Triton at {url}: {message}")
    return InferenceError(model_name, f"Triton at {url}: {message}")


def _signature_from(metadata: dict[str, Any], max_batch_size: int) -> ModelSignature | None:
    """Window shape from Triton's model metadata: the input is [batch, window, features]
    (batch -1 when the model batches, a fixed size otherwise)."""
    tensors = {t["name"]: t for t in metadata.get("inputs", [])}
    shape = [int(d) for d in tensors.get(INPUT_NAME, {}).get("shape", [])]
    if len(shape) != 3 or min(shape[1:]) <= 0:
        return None
    return ModelSignature(shape[1], shape[2], max_batch_size)


class TritonBackend(InferenceBackend):
    """Sends windows to a Triton server; ``url`` is ``host:port`` of its HTTP or gRPC port."""

    def __init__(self, url: str, protocol: Protocol = "grpc", timeout_s: float = 10.0) -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"unknown Triton protocol {protocol!r}; expected 'http' or 'grpc'")
        self.url = url
        self.protocol = protocol
        self.timeout_s = timeout_s
        self.name = f"triton-{protocol}"
        self._client: Any
        if protocol == "http":
            self._client = httpclient.InferenceServerClient(
                url, connection_timeout=timeout_s, network_timeout=timeout_s
            )
            self._module: Any = httpclient
        else:
            self._client = grpcclient.InferenceServerClient(url)
            self._module = grpcclient
        # The HTTP client (geventhttpclient) must not be used by two threads at once;
        # the gRPC client may, but one lock keeps both simple and correct.
        self._lock = threading.Lock() if protocol == "http" else None
        self._signatures: dict[str, ModelSignature] = {}

    # --- the interface ---------------------------------------------------------------
    def signature(self, model_name: str) -> ModelSignature:
        cached = self._signatures.get(model_name)
        if cached is not None:
            return cached
        metadata = self._call(model_name, "get_model_metadata", model_name)
        config = self._call(model_name, "get_model_config", model_name)
        if self.protocol == "grpc":
            metadata = _grpc_json(metadata)
            config = _grpc_json(config).get("config", {})
        signature = _signature_from(metadata, int(config.get("max_batch_size", 0)))
        if signature is None:
            raise ModelNotReadyError(
                model_name,
                f"Triton at {self.url} describes no usable input {INPUT_NAME!r}: {metadata}",
            )
        self._signatures[model_name] = signature
        return signature

    def ready(self, model_name: str) -> bool:
        try:
            return bool(self._call(model_name, "is_model_ready", model_name))
        except InferenceError:
            return False

    def models(self) -> list[str]:
        index = self._call("(repository)", "get_model_repository_index")
        if self.protocol == "grpc":
            index = _grpc_json(index).get("models", [])
        return sorted(m["name"] for m in index if m.get("state") == "READY")

    def server_ready(self) -> bool:
        """Whether the server answers and all its loaded models are ready."""
        try:
            return bool(self._call("(server)", "is_server_ready"))
        except InferenceError:
            return False

    def close(self) -> None:
        self._client.close()

    def _infer(self, model_name: str, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tensor = self._module.InferInput(INPUT_NAME, list(windows.shape), "FP32")
        if self.protocol == "http":
            tensor.set_data_from_numpy(windows, binary_data=True)
            outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in OUTPUT_NAMES]
            kwargs: dict[str, Any] = {}
        else:
            tensor.set_data_from_numpy(windows)
            outputs = [grpcclient.InferRequestedOutput(n) for n in OUTPUT_NAMES]
            kwargs = {"client_timeout": self.timeout_s}
        result = self._call(model_name, "infer", model_name, [tensor], outputs=outputs, **kwargs)
        reconstruction = result.as_numpy(RECONSTRUCTION_NAME)
        score = result.as_numpy(SCORE_NAME)
        if reconstruction is None or score is None:
            raise InferenceError(
                model_name, f"Triton at {self.url} returned no {list(OUTPUT_NAMES)}"
            )
        return reconstruction, score

    # --- plumbing ----------------------------------------------------------------------
    def _call(self, model_name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            if self._lock is None:
                return getattr(self._client, method)(*args, **kwargs)
            with self._lock:
                return getattr(self._client, method)(*args, **kwargs)
        except (InferenceServerException, OSError) as exc:
            raise map_triton_error(model_name, self.url, exc) from exc


def _grpc_json(message: Any) -> dict[str, Any]:
    """A gRPC protobuf answer as the same dict the HTTP client returns."""
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)
