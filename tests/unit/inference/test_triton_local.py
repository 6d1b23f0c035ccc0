"""Building the local Python-backend repository and the tritonserver command line."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from smap_bench.config import Settings
from smap_bench.inference import triton_local, triton_python_model
from smap_bench.inference.repository import read_model_config


@pytest.fixture
def built(tmp_path: Path, fixture_repository: Path) -> Path:
    out = tmp_path / "models"
    assert triton_local.build_local_repository(fixture_repository / "onnx", out) == [
        "SMAP_T-1",
        "SMAP_T-2",
    ]
    return out


@pytest.mark.parametrize("name", ["SMAP_T-1", "SMAP_T-2"])
def test_config_mirrors_the_onnx_config(built: Path, fixture_repository: Path, name: str) -> None:
    onnx_config = read_model_config(fixture_repository / "onnx" / name / "config.pbtxt")
    config = read_model_config(built / name / "config.pbtxt")
    assert config.name == name and config.backend == "python" and not config.platform
    assert config.max_batch_size == onnx_config.max_batch_size == 1024
    assert config.dynamic_batching == onnx_config.dynamic_batching
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (1, mc.ModelInstanceGroup.KIND_CPU)
    ]
    # SMAP_T-2's config lists no tensors: they come from the ONNX graph, batch axis dropped
    tensors = {t.name: (t.data_type, list(t.dims)) for t in [*config.input, *config.output]}
    assert tensors == {
        "input": (mc.TYPE_FP32, [30, 25]),
        "reconstruction": (mc.TYPE_FP32, [30, 25]),
        "score": (mc.TYPE_FP32, [30]),
    }
    assert config.parameters["onnx_file"].string_value == "model.onnx"


def test_model_files_are_copied(built: Path, fixture_repository: Path) -> None:
    version = built / "SMAP_T-1" / "1"
    assert (version / "model.onnx").read_bytes() == (
        fixture_repository / "onnx" / "SMAP_T-1" / "1" / "model.onnx"
    ).read_bytes()
    assert (version / "model.py").read_text() == Path(triton_python_model.__file__).read_text()


def test_repository_root_is_accepted_too(tmp_path: Path, fixture_repository: Path) -> None:
    assert triton_local.build_local_repository(fixture_repository, tmp_path) == [
        "SMAP_T-1",
        "SMAP_T-2",
    ]


def test_rebuild_removes_models_that_are_gone(
    built: Path, tmp_path: Path, fixture_repository: Path
) -> None:
    source = tmp_path / "onnx"
    (source / "SMAP_T-1").mkdir(parents=True)
    for rel in ("config.pbtxt", "1/model.onnx"):
        (source / "SMAP_T-1" / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / "SMAP_T-1" / rel).write_bytes(
            (fixture_repository / "onnx/SMAP_T-1" / rel).read_bytes()
        )
    (built / "hand-made").mkdir()
    assert triton_local.build_local_repository(source, built) == ["SMAP_T-1"]
    assert sorted(p.name for p in built.iterdir()) == ["SMAP_T-1", "hand-made"]


def test_refuses_to_overwrite_a_folder_it_did_not_write(
    tmp_path: Path, fixture_repository: Path
) -> None:
    (tmp_path / "SMAP_T-1").mkdir()
    with pytest.raises(FileExistsError, match="SMAP_T-1 exists and was not written by smap-bench"):
        triton_local.build_local_repository(fixture_repository, tmp_path)


def test_config_name_must_match_folder(tmp_path: Path, fixture_repository: Path) -> None:
    model = tmp_path / "onnx" / "SMAP_Z-1"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.onnx").write_bytes(
        (fixture_repository / "onnx/SMAP_T-1/1/model.onnx").read_bytes()
    )
    (model / "config.pbtxt").write_text('name: "SMAP_T-1"\nplatform: "onnxruntime_onnx"\n')
    with pytest.raises(
        ValueError, match="config names model 'SMAP_T-1' but its folder is 'SMAP_Z-1'"
    ):
        triton_local.build_local_repository(tmp_path, tmp_path / "out")


def test_malformed_config_names_the_file(tmp_path: Path) -> None:
    model = tmp_path / "onnx" / "SMAP_Z-1"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.onnx").write_bytes(b"")
    (model / "config.pbtxt").write_text("name: SMAP_Z-1 {{")
    with pytest.raises(ValueError, match=r"SMAP_Z-1/config.pbtxt: not a valid Triton model config"):
        triton_local.build_local_repository(tmp_path, tmp_path / "out")


def test_missing_source_gives_no_models(tmp_path: Path) -> None:
    assert triton_local.build_local_repository(tmp_path / "nothing", tmp_path / "out") == []


def test_tritonserver_command(tmp_path: Path) -> None:
    settings = Settings(host="127.0.0.2", triton_http_port=18100, run_dir=tmp_path / "run")
    argv, env = triton_local.tritonserver_command(settings, tmp_path / "models", grpc_port=18101)
    assert Path(argv[0]) == triton_local.tritonserver_binary() and os.access(argv[0], os.X_OK)
    options = dict(a.removeprefix("--").split("=", 1) for a in argv[1:])
    assert (
        options["http-address"]
        == options["grpc-address"]
        == options["metrics-address"]
        == "127.0.0.2"
    )
    assert (options["http-port"], options["grpc-port"]) == ("18100", "18101")
    assert options["metrics-port"] == str(settings.triton_metrics_port)
    assert options["model-repository"] == str((tmp_path / "models").resolve())
    assert options["model-control-mode"] == "explicit" and options["load-model"] == "*"
    backend = Path(options["backend-directory"]) / "python"
    assert backend == tmp_path / "run" / "triton" / "backends" / "python"
    for name in (
        "libtriton_python.so",
        "triton_python_backend_stub",
        "triton_python_backend_utils.py",
    ):
        assert (backend / name).resolve().is_file()
    assert env["LD_LIBRARY_PATH"].split(":")[0] == sysconfig.get_config_var("LIBDIR")
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert (Path(sys.executable).parent / "python3").exists()


def test_backend_directory_is_idempotent(tmp_path: Path) -> None:
    first = triton_local.prepare_backend_directory(tmp_path)
    second = triton_local.prepare_backend_directory(tmp_path)
    assert first == second == tmp_path
    assert len(list((tmp_path / "python").iterdir())) == 3


def test_one_onnx_runtime_thread_per_instance_by_default(
    tmp_path: Path, fixture_repository: Path
) -> None:
    def threads(out: Path, **kwargs: int | None) -> str | None:
        triton_local.build_local_repository(fixture_repository, out, **kwargs)
        params = read_model_config(out / "SMAP_T-1" / "config.pbtxt").parameters
        return (
            params["intra_op_thread_count"].string_value
            if "intra_op_thread_count" in params
            else None
        )

    assert threads(tmp_path / "a") == "1"
    assert threads(tmp_path / "b", intra_op_threads=4) == "4"
    assert threads(tmp_path / "c", intra_op_threads=None) is None


def test_onnx_config_thread_count_wins(tmp_path: Path, fixture_repository: Path) -> None:
    source = tmp_path / "onnx" / "SMAP_T-1"
    shutil.copytree(fixture_repository / "onnx" / "SMAP_T-1", source)
    with (source / "config.pbtxt").open("a") as f:
        f.write('parameters { key: "intra_op_thread_count" value { string_value: "2" } }\n')
    triton_local.build_local_repository(tmp_path, tmp_path / "out", intra_op_threads=1)
    params = read_model_config(tmp_path / "out" / "SMAP_T-1" / "config.pbtxt").parameters
    assert params["intra_op_thread_count"].string_value == "2"
