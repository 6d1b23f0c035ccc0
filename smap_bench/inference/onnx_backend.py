"""In-process ONNX Runtime: the models run inside the calling process, no server needed.

Used where no Triton runs (tests, notebooks, a worker started with
``SMAP_INFERENCE_BACKEND=onnx``) and as the reference the Triton backend must match.
Sessions are created on first use of a model and kept.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from smap_bench.inference.base import (
    INPUT_NAME,
    OUTPUT_NAMES,
    InferenceBackend,
    ModelNotReadyError,
    ModelSignature,
    UnknownModelError,
)
from smap_bench.inference.repository import find_onnx_models, is_valid_model_name

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

#: Window shape of the model contract, used when a model leaves its dims symbolic.
DEFAULT_WINDOW = 30
DEFAULT_FEATURES = 25


def resolve_providers(requested: Sequence[str]) -> list[str]:
    """The requested execution providers that this onnxruntime build offers, CPU last.

    Asking for CUDA where onnxruntime has no CUDA provider logs a warning and falls back
    to CPU rather than failing: the same settings then work on GPU and CPU hosts.
    """
    available = set(ort.get_available_providers())
    chosen = [p for p in requested if p in available and p != CPU]
    missing = [p for p in requested if p not in available]
    if missing:
        log.warning(
            "onnxruntime %s lacks %s (has %s); using %s",
            ort.__version__,
            ", ".join(missing),
            ", ".join(sorted(available)),
            ", ".join([*chosen, CPU]),
        )
    return [*chosen, CPU]


def providers_for_device(device: str) -> list[str]:
    """Execution providers to ask for on ``device`` ("cpu" or "cuda")."""
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        return [CUDA, CPU]
    raise ValueError(f"unknown inference device {device!r}; expected 'cpu' or 'cuda'")


def session_options(intra_op_threads: int = 0, spinning: bool = True) -> ort.SessionOptions:
    """ONNX Runtime options: ``intra_op_threads`` threads per call (0: one per core);
    ``spinning`` False stops idle worker threads from busy-waiting, which costs some
    latency but leaves the cores to other processes on a small shared machine."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _dim(value: object, default: int) -> int:
    return value if isinstance(value, int) and value > 0 else default


class OnnxBackend(InferenceBackend):
    """Runs ``<model_repository>/onnx/<model>/<version>/model.onnx`` with ONNX Runtime."""

    name = "onnx"

    def __init__(
        self,
        model_repository: Path,
        providers: Sequence[str] = (CPU,),
        intra_op_threads: int = 0,
        spinning: bool = True,
    ) -> None:
        self.model_repository = Path(model_repository)
        self.providers = resolve_providers(providers)
        self._options = session_options(intra_op_threads, spinning)
        self._sessions: dict[str, tuple[ort.InferenceSession, ModelSignature]] = {}
        self._lock = threading.Lock()

    def models(self) -> list[str]:
        return sorted(find_onnx_models(self.model_repository))

    def session(self, model_name: str) -> ort.InferenceSession:
        """The model's ONNX Runtime session, created on first use."""
        return self._load(model_name)[0]

    def signature(self, model_name: str) -> ModelSignature:
        return self._load(model_name)[1]

    def ready(self, model_name: str) -> bool:
        try:
            self._load(model_name)
        except (UnknownModelError, ModelNotReadyError):
            return False
        return True

    def _infer(self, model_name: str, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        session = self.session(model_name)
        reconstruction, score = session.run(list(OUTPUT_NAMES), {INPUT_NAME: windows})
        return np.asarray(reconstruction), np.asarray(score)

    def close(self) -> None:
        with self._lock:
            self._sessions.clear()

    def _load(self, model_name: str) -> tuple[ort.InferenceSession, ModelSignature]:
        cached = self._sessions.get(model_name)
        if cached is not None:
            return cached
        with self._lock:
            if model_name in self._sessions:
                return self._sessions[model_name]
            path = self._model_path(model_name)
            try:
                session = ort.InferenceSession(
                    str(path), sess_options=self._options, providers=self.providers
                )
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise ModelNotReadyError(model_name, f"cannot load {path}: {exc}") from exc
            got = session.get_providers()
            if got[0] != self.providers[0]:
                log.warning(
                    "%s: asked for %s, ONNX Runtime gave %s", model_name, self.providers, got
                )
            signature = self._check_contract(model_name, session)
            self._sessions[model_name] = (session, signature)
            return session, signature

    def _model_path(self, model_name: str) -> Path:
        if not is_valid_model_name(model_name):
            raise UnknownModelError(model_name, "not a valid model name")
        found = find_onnx_models(self.model_repository)
        if model_name not in found:
            raise UnknownModelError(
                model_name,
                f"no such model in {self.model_repository} ({len(found)} models there)",
            )
        return found[model_name]

    @staticmethod
    def _check_contract(model_name: str, session: ort.InferenceSession) -> ModelSignature:
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        if INPUT_NAME not in inputs or not set(OUTPUT_NAMES) <= outputs:
            raise ModelNotReadyError(
                model_name,
                f"model has inputs {sorted(inputs)} and outputs {sorted(outputs)}, "
                f"expected input {INPUT_NAME!r} and outputs {list(OUTPUT_NAMES)}",
            )
        shape = inputs[INPUT_NAME].shape
        if len(shape) != 3:
            raise ModelNotReadyError(
                model_name, f"model input has shape {shape}, expected [B, window, features]"
            )
        return ModelSignature(_dim(shape[1], DEFAULT_WINDOW), _dim(shape[2], DEFAULT_FEATURES))
