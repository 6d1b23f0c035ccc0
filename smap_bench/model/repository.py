"""The Triton model repository: ``<repo>/onnx/SMAP_<channel>/`` with config, model, metadata.

Layout per model::

    onnx/SMAP_<channel>/config.pbtxt    Triton config (onnxruntime_onnx, dynamic batching)
    onnx/SMAP_<channel>/1/model.onnx    the scoring graph (raw window in)
    onnx/SMAP_<channel>/metadata.json   threshold, normalisation, training facts, metrics

The configs ask for ``KIND_CPU``; a GPU host changes the instance group to ``KIND_GPU``
(``write_config(..., instance_kind="KIND_GPU")``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from smap_bench.inference.base import INPUT_NAME, OUTPUT_NAMES  # not export: no torch

MODEL_PREFIX = "SMAP_"
PLATFORM_DIR = "onnx"


def model_name(channel: str) -> str:
    """Triton name of a channel's model (``A-1`` -> ``SMAP_A-1``)."""
    return f"{MODEL_PREFIX}{channel}"


def model_dir(repository: Path, channel: str) -> Path:
    """Folder of a channel's model inside the repository."""
    return Path(repository) / PLATFORM_DIR / model_name(channel)


def render_config(
    channel: str,
    window: int,
    n_features: int,
    max_batch_size: int = 1024,
    max_queue_delay_microseconds: int = 500,
    instance_kind: str = "KIND_CPU",
    instance_count: int = 1,
) -> str:
    """Text of ``config.pbtxt`` (dims exclude the batch axis, as Triton expects)."""
    if instance_kind not in ("KIND_CPU", "KIND_GPU"):
        raise ValueError(f"render_config: instance_kind {instance_kind!r} is not KIND_CPU/KIND_GPU")
    reconstruction, score = OUTPUT_NAMES
    return f"""name: "{model_name(channel)}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ {window}, {n_features} ]
  }}
]
output [
  {{
    name: "{reconstruction}"
    data_type: TYPE_FP32
    dims: [ {window}, {n_features} ]
  }},
  {{
    name: "{score}"
    data_type: TYPE_FP32
    dims: [ {window} ]
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: {max_queue_delay_microseconds}
}}
instance_group [
  {{
    count: {instance_count}
    kind: {instance_kind}
  }}
]
"""


def write_model(
    repository: Path,
    channel: str,
    onnx_bytes: bytes,
    metadata: dict[str, Any],
    instance_kind: str = "KIND_CPU",
) -> Path:
    """Write one channel's config, ONNX model and metadata; returns the model folder.

    ``metadata.json`` is written last, so a folder whose metadata exists is complete
    (resumable training relies on that).
    """
    folder = model_dir(repository, channel)
    (folder / "1").mkdir(parents=True, exist_ok=True)
    meta_path = folder / "metadata.json"
    meta_path.unlink(missing_ok=True)
    (folder / "config.pbtxt").write_text(
        render_config(
            channel,
            int(metadata["window"]),
            int(metadata["n_features"]),
            instance_kind=instance_kind,
        )
    )
    (folder / "1" / "model.onnx").write_bytes(onnx_bytes)
    tmp = meta_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    tmp.replace(meta_path)
    return folder


def read_metadata(repository: Path, channel: str) -> dict[str, Any]:
    """The metadata of a channel's model; ``FileNotFoundError`` naming the model if absent."""
    path = model_dir(repository, channel) / "metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"model {model_name(channel)}: no metadata at {path}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def onnx_path(repository: Path, channel: str) -> Path:
    """Path of a channel's ONNX file (version 1)."""
    return model_dir(repository, channel) / "1" / "model.onnx"


def list_models(repository: Path) -> list[str]:
    """Channels with a complete model (metadata and ONNX file) in the repository, sorted."""
    root = Path(repository) / PLATFORM_DIR
    if not root.is_dir():
        return []
    return sorted(
        folder.name.removeprefix(MODEL_PREFIX)
        for folder in root.iterdir()
        if folder.name.startswith(MODEL_PREFIX)
        and (folder / "metadata.json").is_file()
        and (folder / "1" / "model.onnx").is_file()
    )
