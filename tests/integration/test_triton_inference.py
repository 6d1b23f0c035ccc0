"""The local Triton (bundled tritonserver, Python backend wrapping ONNX Runtime) against
the in-process ONNX Runtime backend: same answers, same errors.

The test builds its own ONNX repository from tests/fixtures and starts its own
tritonserver on free ports, so it does not depend on which models are committed or on
the stack's Triton.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from smap_bench.config import Settings
from smap_bench.inference import (
    InvalidWindowError,
    UnknownModelError,
    make_backend,
)
from smap_bench.inference.onnx_backend import OnnxBackend
from smap_bench.inference.triton_backend import TritonBackend
from smap_bench.inference.triton_local import build_local_repository, tritonserver_command

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "triton-repository"
READY_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class LocalTriton:
    settings: Settings
    onnx_repository: Path
    model_dir: Path


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll /v2/health/ready until it answers 200; fail early if the server exits."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"tritonserver exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            if httpx.get(f"http://{url}/v2/health/ready", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"tritonserver not ready after {READY_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def local_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    root = tmp_path_factory.mktemp("triton")
    onnx_repository = root / "triton-repository"
    shutil.copytree(FIXTURES, onnx_repository)
    model_dir = root / "models"
    assert build_local_repository(onnx_repository, model_dir) == ["SMAP_T-1", "SMAP_T-2"]
    http, grpc, metrics = free_ports(3)
    settings = Settings(
        host="127.0.0.1",
        triton_http_port=http,
        triton_grpc_port=grpc,
        triton_metrics_port=metrics,
        run_dir=root / "run",
        model_repository=onnx_repository,
    )
    argv, env = tritonserver_command(settings, model_dir)
    log = root / "tritonserver.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(settings.triton_http_url, process, log)
        yield LocalTriton(settings, onnx_repository, model_dir)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def reference(local_triton: LocalTriton) -> OnnxBackend:
    return OnnxBackend(local_triton.onnx_repository, intra_op_threads=1)


@pytest.fixture(scope="module", params=["triton-http", "triton-grpc"])
def triton(local_triton: LocalTriton, request: pytest.FixtureRequest) -> Iterator[TritonBackend]:
    backend = make_backend(local_triton.settings, request.param)
    assert isinstance(backend, TritonBackend)
    yield backend
    backend.close()


def windows(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, 30, 25)).astype(np.float32)


@pytest.mark.parametrize("model", ["SMAP_T-1", "SMAP_T-2"])
@pytest.mark.parametrize("batch", [1, 7, 1100])  # 1100 > max_batch_size: sent in chunks
def test_same_answers_as_onnx_runtime(
    triton: TritonBackend, reference: OnnxBackend, model: str, batch: int
) -> None:
    x = windows(batch, seed=batch)
    got = triton.infer(model, x)
    want = reference.infer(model, x)
    assert got.reconstruction.shape == (batch, 30, 25) and got.score.shape == (batch, 30)
    np.testing.assert_allclose(got.reconstruction, want.reconstruction, atol=1e-5)
    np.testing.assert_allclose(got.score, want.score, atol=1e-5)


def test_concurrent_requests_are_batched_and_split_back(
    triton: TritonBackend, local_triton: LocalTriton, reference: OnnxBackend
) -> None:
    """Requests from many clients at once reach the model together (dynamic batching);
    each must get its own rows back."""
    inputs = [windows(1 + i % 5, seed=100 + i) for i in range(48)]
    kind = triton.name

    def call(x: np.ndarray) -> np.ndarray:
        with make_backend(local_triton.settings, kind) as own:  # one client per thread
            return own.infer("SMAP_T-1", x).score

    with ThreadPoolExecutor(max_workers=8) as pool:
        scores = list(pool.map(call, inputs))
    for x, score in zip(inputs, scores, strict=True):
        np.testing.assert_allclose(score, reference.infer("SMAP_T-1", x).score, atol=1e-5)


def test_models_and_readiness(triton: TritonBackend) -> None:
    assert triton.models() == ["SMAP_T-1", "SMAP_T-2"]
    assert triton.ready("SMAP_T-2") and triton.server_ready()
    assert not triton.ready("SMAP_X-9")


def test_unknown_model_is_named(triton: TritonBackend) -> None:
    with pytest.raises(UnknownModelError) as info:
        triton.infer("SMAP_X-9", windows(1, 0))
    assert str(info.value).startswith("SMAP_X-9: Triton at ")


def test_bad_shape_is_named_before_sending(triton: TritonBackend) -> None:
    with pytest.raises(InvalidWindowError, match=r"^SMAP_T-1: window has shape \(2, 29, 25\)"):
        triton.infer("SMAP_T-1", windows(2, 0)[:, :29])


def test_bad_shape_refused_by_the_server_is_named(triton: TritonBackend) -> None:
    """A window that slips past the client (another client, or a stale signature) gets
    Triton's own refusal, still naming the model."""
    with pytest.raises(InvalidWindowError) as info:
        triton._infer("SMAP_T-1", windows(2, 0)[:, :29].copy())
    assert str(info.value).startswith("SMAP_T-1: Triton refused the request")
    assert "unexpected shape" in str(info.value)


def test_non_finite_window_is_named(triton: TritonBackend) -> None:
    x = windows(3, 0)
    x[1, 2, 0] = np.inf
    with pytest.raises(InvalidWindowError, match=r"^SMAP_T-2: window 1 holds infinity"):
        triton.infer("SMAP_T-2", x)


def test_a_new_model_loads_without_restart(
    local_triton: LocalTriton, reference: OnnxBackend
) -> None:
    new = local_triton.onnx_repository / "onnx" / "SMAP_T-3"
    shutil.copytree(local_triton.onnx_repository / "onnx" / "SMAP_T-2", new)
    config = new / "config.pbtxt"
    config.write_text(config.read_text().replace("SMAP_T-2", "SMAP_T-3"))
    try:
        build_local_repository(local_triton.onnx_repository, local_triton.model_dir)
        client = httpclient.InferenceServerClient(local_triton.settings.triton_http_url)
        client.load_model("SMAP_T-3")
        with make_backend(local_triton.settings, "triton-grpc") as backend:
            x = windows(4, 3)
            np.testing.assert_allclose(
                backend.infer("SMAP_T-3", x).score,
                reference.infer("SMAP_T-2", x).score,
                atol=1e-5,
            )
        client.unload_model("SMAP_T-3")
        client.close()
    finally:
        shutil.rmtree(new)
        build_local_repository(local_triton.onnx_repository, local_triton.model_dir)
