"""Reading the ONNX model repository: which models it holds and what their configs say.

Layout (Triton's): ``<root>/onnx/SMAP_<channel>/config.pbtxt``, ``<version>/model.onnx``
and ``metadata.json``. Functions here accept either the repository root (the folder
holding ``onnx/``) or the ``onnx/`` folder itself.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

#: Model names double as folder names; nothing else may reach the file system.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def onnx_models_dir(root: Path) -> Path:
    """The folder whose sub-folders are the ONNX models: ``root/onnx`` if it exists, else
    ``root``."""
    root = Path(root)
    return root / "onnx" if (root / "onnx").is_dir() else root


def is_valid_model_name(name: str) -> bool:
    """Whether ``name`` can be a model folder (no path separators, no ``..``)."""
    return bool(_MODEL_NAME.match(name)) and ".." not in name


def latest_version_dir(model_dir: Path, filename: str = "model.onnx") -> Path | None:
    """The highest numbered version folder holding ``filename`` (Triton's default policy)."""
    versions = [
        p
        for p in model_dir.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / filename).is_file()
    ]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def find_onnx_models(root: Path) -> dict[str, Path]:
    """Model name -> path of its newest ``model.onnx``, for every model in the repository."""
    base = onnx_models_dir(root)
    if not base.is_dir():
        return {}
    found: dict[str, Path] = {}
    for model_dir in sorted(base.iterdir()):
        if not model_dir.is_dir() or not is_valid_model_name(model_dir.name):
            continue
        version = latest_version_dir(model_dir)
        if version is not None:
            found[model_dir.name] = version / "model.onnx"
    return found


def read_model_config(config_path: Path) -> model_config_pb2.ModelConfig:
    """Parse a Triton ``config.pbtxt``; ``ValueError`` naming the file when it is malformed."""
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(Path(config_path).read_text(), config)
    except text_format.ParseError as exc:
        raise ValueError(f"{config_path}: not a valid Triton model config: {exc}") from exc
    return config


def read_metadata(model_dir: Path) -> dict[str, Any]:
    """The model's ``metadata.json`` (threshold, window, features, ...), or {} if absent."""
    path = Path(model_dir) / "metadata.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
