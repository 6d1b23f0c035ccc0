"""ONNX export of a channel's scoring graph (raw window in; reconstruction and score out)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch

from smap_bench.model.tranad import ScoringModel

INPUT_NAME = "input"
OUTPUT_NAMES = ("reconstruction", "score")
OPSET = 17


def export_onnx_bytes(scoring: ScoringModel, opset: int = OPSET) -> bytes:
    """The serialised ONNX model: ``input`` [B, K, m] float32 -> ``reconstruction``
    [B, K, m] and ``score`` [B, K], with a dynamic batch axis."""
    if opset < 17:
        raise ValueError(f"export_onnx_bytes: opset {opset} is below 17")
    cfg = scoring.model.config
    scoring.eval()
    example = torch.rand(2, cfg.window, cfg.n_features)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer warns about shape checks inside nn.MultiheadAttention; shapes are fixed
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            scoring,
            (example,),
            buffer,  # type: ignore[arg-type]
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
            opset_version=opset,
            dynamo=False,
        )
    model = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(model)
    return buffer.getvalue()


def export_onnx(scoring: ScoringModel, path: Path, opset: int = OPSET) -> Path:
    """Write the ONNX model to ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(export_onnx_bytes(scoring, opset))
    return path
