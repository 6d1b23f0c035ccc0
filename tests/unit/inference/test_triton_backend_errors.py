"""Triton backend without a server: error mapping, metadata parsing, unreachable server."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from smap_bench.inference.base import (
    BackendUnavailableError,
    InferenceError,
    InvalidWindowError,
    ModelNotReadyError,
    UnknownModelError,
)
from smap_bench.inference.triton_backend import TritonBackend, _signature_from, map_triton_error


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        ("404", "Request for unknown model: 'SMAP_A-1' is not found", UnknownModelError),
        ("StatusCode.NOT_FOUND", "Request for unknown model", UnknownModelError),
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", BackendUnavailableError),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", BackendUnavailableError),
        ("400", "unexpected shape for input 'input'", InvalidWindowError),
        ("StatusCode.INVALID_ARGUMENT", "batch-size must be <= 1024", InvalidWindowError),
        ("StatusCode.INTERNAL", "model SMAP_A-1 is not ready", ModelNotReadyError),
        ("500", "something else", InferenceError),
    ],
)
def test_triton_errors_map_to_inference_errors(status: str, message: str, kind: type) -> None:
    error = map_triton_error("SMAP_A-1", "h:1", InferenceServerException(message, status=status))
    assert type(error) is kind
    assert str(error).startswith("SMAP_A-1: ") and message in str(error)


def test_socket_errors_mean_unavailable() -> None:
    error = map_triton_error("SMAP_A-1", "h:1", ConnectionRefusedError(111, "Connection refused"))
    assert isinstance(error, BackendUnavailableError)
    assert "cannot reach Triton at h:1" in str(error)


def test_signature_from_metadata() -> None:
    meta = {"inputs": [{"name": "input", "datatype": "FP32", "shape": ["-1", "30", "25"]}]}
    signature = _signature_from(meta, 1024)
    assert signature is not None
    assert (signature.window, signature.features, signature.max_batch_size) == (30, 25, 1024)
    assert _signature_from({"inputs": [{"name": "x", "shape": [-1, 30, 25]}]}, 8) is None
    assert _signature_from({"inputs": [{"name": "input", "shape": [-1, 750]}]}, 8) is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unreachable_server_names_model_and_address(protocol: str) -> None:
    url = f"127.0.0.1:{free_port()}"
    with TritonBackend(url, protocol, timeout_s=2.0) as backend:  # type: ignore[arg-type]
        with pytest.raises(BackendUnavailableError) as info:
            backend.infer("SMAP_A-1", np.zeros((1, 30, 25), np.float32))
        assert str(info.value).startswith(f"SMAP_A-1: cannot reach Triton at {url}")
        assert not backend.ready("SMAP_A-1")
        assert not backend.server_ready()


def test_unknown_protocol() -> None:
    with pytest.raises(ValueError, match="unknown Triton protocol 'tcp'"):
        TritonBackend("h:1", "tcp")  # type: ignore[arg-type]
