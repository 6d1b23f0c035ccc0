from __future__ import annotations

from pathlib import Path

import pytest

from smap_bench.inference.repository import read_model_config
from smap_bench.model.repository import (
    list_models,
    model_dir,
    read_metadata,
    render_config,
    write_model,
)


def test_written_model_is_listed_and_read_back(tmp_path: Path) -> None:
    meta = {"channel": "A-1", "window": 30, "n_features": 25, "threshold": 0.5}
    folder = write_model(tmp_path, "A-1", b"onnx-bytes", meta)
    assert folder == tmp_path / "onnx" / "SMAP_A-1"
    assert (folder / "1" / "model.onnx").read_bytes() == b"onnx-bytes"
    assert read_metadata(tmp_path, "A-1") == meta
    assert list_models(tmp_path) == ["A-1"]


def test_incomplete_folders_are_not_listed(tmp_path: Path) -> None:
    (model_dir(tmp_path, "B-1") / "1").mkdir(parents=True)
    assert list_models(tmp_path) == []
    assert list_models(tmp_path / "absent") == []
    with pytest.raises(FileNotFoundError, match="SMAP_B-1"):
        read_metadata(tmp_path, "B-1")


def test_config_parses_as_a_triton_model_config(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text(render_config("P-2", 30, 25, max_batch_size=512))
    config = read_model_config(path)
    assert config.name == "SMAP_P-2"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 512
    assert list(config.input[0].dims) == [30, 25]
    assert [o.name for o in config.output] == ["reconstruction", "score"]
    assert list(config.output[1].dims) == [30]
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert config.instance_group[0].kind == config.instance_group[0].KIND_CPU


def test_gpu_hosts_get_a_gpu_instance_group() -> None:
    assert "kind: KIND_GPU" in render_config("A-1", 30, 25, instance_kind="KIND_GPU")
    with pytest.raises(ValueError, match="instance_kind"):
        render_config("A-1", 30, 25, instance_kind="KIND_TPU")
