"""The inference interface shared by every backend, and the input checks they all apply.

A backend scores batches of telemetry windows with one per-channel model and returns the
model's reconstruction and per-record score. Input is checked here, before any backend
sees it, so that a bad window gets the same error (naming the model and the problem)
whether it was meant for Triton or for the in-process ONNX Runtime.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType

import numpy as np

#: Tensor names of the model contract (triton-repository/onnx/SMAP_<channel>/).
INPUT_NAME = "input"
RECONSTRUCTION_NAME = "reconstruction"
SCORE_NAME = "score"
OUTPUT_NAMES = (RECONSTRUCTION_NAME, SCORE_NAME)


class InferenceError(Exception):
    """An inference request failed; ``model_name`` says for which model."""

    def __init__(self, model_name: str, problem: str) -> None:
        super().__init__(f"{model_name}: {problem}")
        self.model_name = model_name
        self.problem = problem


class InvalidWindowError(InferenceError, ValueError):
    """The windows have the wrong shape or dtype, or hold NaN or infinity."""


class UnknownModelError(InferenceError, LookupError):
    """No model of that name in the repository or on the server."""


class ModelNotReadyError(InferenceError):
    """The model exists but cannot serve now (failed to load, still loading)."""


class BackendUnavailableError(InferenceError, ConnectionError):
    """The inference server cannot be reached."""


@dataclass(frozen=True)
class ModelSignature:
    """What a model takes: windows of ``window`` records by ``features``, at most
    ``max_batch_size`` windows per call (0: no limit)."""

    window: int
    features: int
    max_batch_size: int = 0


@dataclass(frozen=True)
class InferenceOutput:
    """A model's answer for a batch of B windows.

    ``reconstruction`` is [B, window, features] float32, ``score`` [B, window] float32 (one
    anomaly score per record), ``elapsed_ms`` the wall time of the call as the caller saw it.
    """

    reconstruction: np.ndarray
    score: np.ndarray
    elapsed_ms: float


def validate_windows(model_name: str, windows: object, signature: ModelSignature) -> np.ndarray:
    """Return ``windows`` as a C-contiguous float32 [B, window, features] array, or raise
    :class:`InvalidWindowError` saying what is wrong.

    Real numbers of any precision are accepted and cast to float32; booleans, complex
    numbers, strings and objects are refused, and so are NaN and infinity (a model would
    turn them into a silent NaN score).
    """
    expected = f"(B, {signature.window}, {signature.features})"
    if not isinstance(windows, np.ndarray):
        raise InvalidWindowError(
            model_name, f"windows must be a numpy array, got {type(windows).__name__}"
        )
    if windows.dtype == np.bool_ or not (
        np.issubdtype(windows.dtype, np.floating) or np.issubdtype(windows.dtype, np.integer)
    ):
        raise InvalidWindowError(
            model_name, f"window has dtype {windows.dtype}, expected real numbers (float32)"
        )
    if windows.ndim != 3:
        hint = " (add a batch axis: windows[None])" if windows.ndim == 2 else ""
        raise InvalidWindowError(
            model_name, f"window has shape {windows.shape}, expected {expected}{hint}"
        )
    batch, length, features = windows.shape
    if batch == 0 or length != signature.window or features != signature.features:
        empty = " with B >= 1" if batch == 0 else ""
        raise InvalidWindowError(
            model_name, f"window has shape {windows.shape}, expected {expected}{empty}"
        )
    with np.errstate(over="ignore"):  # overflow becomes infinity, reported just below
        values = np.ascontiguousarray(windows, dtype=np.float32)
    finite = np.isfinite(values)
    if not finite.all():
        bad_window, bad_record, bad_feature = (int(i) for i in np.argwhere(~finite)[0])
        value = float(values[bad_window, bad_record, bad_feature])
        kind = "NaN" if math.isnan(value) else "infinity"
        if np.issubdtype(windows.dtype, np.floating) and np.isfinite(windows).all():
            kind = "a value too large for float32"
        raise InvalidWindowError(
            model_name,
            f"window {bad_window} holds {kind} at record {bad_record}, feature {bad_feature} "
            f"({int((~finite).sum())} non-finite values in all)",
        )
    return values


def check_outputs(
    model_name: str, reconstruction: np.ndarray, score: np.ndarray, batch: int, sig: ModelSignature
) -> None:
    """Raise :class:`InferenceError` when a model answers with tensors off the contract."""
    want_rec = (batch, sig.window, sig.features)
    want_score = (batch, sig.window)
    if reconstruction.shape != want_rec or score.shape != want_score:
        raise InferenceError(
            model_name,
            f"model returned reconstruction {reconstruction.shape} and score {score.shape}, "
            f"expected {want_rec} and {want_score}",
        )


class InferenceBackend(ABC):
    """One way to run the per-channel models; use :func:`smap_bench.inference.make_backend`.

    Subclasses implement the ``_`` methods; :meth:`infer` checks input and output and
    measures time the same way for all of them.
    """

    #: Short name used in logs, metric labels and benchmark tables.
    name: str = "backend"

    def infer(self, model_name: str, windows: np.ndarray) -> InferenceOutput:
        """Score a batch of windows [B, window, features] with ``model_name``.

        Batches larger than the model's ``max_batch_size`` are sent in chunks.
        """
        signature = self.signature(model_name)
        values = validate_windows(model_name, windows, signature)
        start = time.perf_counter()
        limit = signature.max_batch_size or len(values)
        if len(values) <= limit:
            reconstruction, score = self._infer(model_name, values)
        else:
            parts = [
                self._infer(model_name, values[i : i + limit]) for i in range(0, len(values), limit)
            ]
            reconstruction = np.concatenate([p[0] for p in parts])
            score = np.concatenate([p[1] for p in parts])
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        check_outputs(model_name, reconstruction, score, len(values), signature)
        return InferenceOutput(reconstruction, score, elapsed_ms)

    @abstractmethod
    def signature(self, model_name: str) -> ModelSignature:
        """The model's window shape and batch limit; :class:`UnknownModelError` if none."""

    @abstractmethod
    def _infer(self, model_name: str, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the model on checked float32 windows; return (reconstruction, score)."""

    @abstractmethod
    def ready(self, model_name: str) -> bool:
        """Whether ``model_name`` can serve requests now (False for an unknown model)."""

    @abstractmethod
    def models(self) -> list[str]:
        """Names of the models this backend can serve, sorted."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections and sessions; the backend is unusable afterwards."""

    def __enter__(self) -> InferenceBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
