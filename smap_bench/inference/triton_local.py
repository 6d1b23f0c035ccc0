"""Serving the ONNX model repository with the tritonserver bundled in nvidia-pytriton.

That tritonserver has only the Python backend. :func:`build_local_repository` therefore
writes, for each ``onnx/SMAP_<channel>``, a Python-backend model of the same name, tensors,
batch limit and batching that runs the same ONNX file with ONNX Runtime
(:mod:`smap_bench.inference.triton_python_model`); a client cannot tell it from the
production Triton with the ONNX Runtime backend. :func:`tritonserver_command` gives the
command line and environment to start it (the stack runs it under supervisord).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

import onnx
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from smap_bench.config import Settings
from smap_bench.inference import triton_python_model
from smap_bench.inference.repository import (
    latest_version_dir,
    onnx_models_dir,
    read_model_config,
)

#: Marks a model folder as written by build_local_repository (safe to replace or remove).
MARKER = ".generated-by-smap-bench"
STUB_NAME = "triton_python_backend_stub"

_ONNX_TO_TRITON: dict[int, int] = {
    onnx.TensorProto.FLOAT: mc.TYPE_FP32,
    onnx.TensorProto.FLOAT16: mc.TYPE_FP16,
    onnx.TensorProto.DOUBLE: mc.TYPE_FP64,
    onnx.TensorProto.INT8: mc.TYPE_INT8,
    onnx.TensorProto.INT16: mc.TYPE_INT16,
    onnx.TensorProto.INT32: mc.TYPE_INT32,
    onnx.TensorProto.INT64: mc.TYPE_INT64,
    onnx.TensorProto.UINT8: mc.TYPE_UINT8,
    onnx.TensorProto.BOOL: mc.TYPE_BOOL,
}


def pytriton_dir() -> Path:
    """The tritonserver distribution inside the installed nvidia-pytriton wheel."""
    import pytriton

    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def tritonserver_binary() -> Path:
    """Path of the bundled ``tritonserver`` executable."""
    return pytriton_dir() / "bin" / "tritonserver"


def python_backend_stub(version: str | None = None) -> Path:
    """The Python-backend stub built for this interpreter's Python version."""
    version = version or f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = pytriton_dir() / "python_backend_stubs" / version / STUB_NAME
    if not stub.is_file():
        raise FileNotFoundError(f"nvidia-pytriton has no Python-backend stub for Python {version}")
    return stub


def prepare_backend_directory(dest: Path) -> Path:
    """Make ``dest/python/`` a Python backend with the stub for this interpreter; return
    ``dest`` (for ``--backend-directory``).

    The wheel keeps its stubs apart, one per Python version, and Triton looks for the stub
    only beside the backend library; links here put them together without modifying the
    installed wheel (pytriton itself copies them into a temporary folder at each start).
    Idempotent; links are replaced so they follow a reinstalled wheel.
    """
    python_dir = Path(dest) / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    bundled = pytriton_dir() / "backends" / "python"
    links = {p.name: p for p in bundled.iterdir() if p.is_file()}
    links[STUB_NAME] = python_backend_stub()
    for name, target in links.items():
        link = python_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return Path(dest)


def tensors_from_onnx(
    onnx_path: Path, batched: bool
) -> tuple[list[mc.ModelInput], list[mc.ModelOutput]]:
    """Triton tensor configs read from the ONNX graph (as Triton's ONNX Runtime backend
    auto-completes a config that lists none); the batch axis is dropped when ``batched``."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}

    def describe(value: onnx.ValueInfoProto) -> tuple[str, int, list[int]]:
        tensor = value.type.tensor_type
        if tensor.elem_type not in _ONNX_TO_TRITON:
            raise ValueError(
                f"{onnx_path}: tensor {value.name!r} has unsupported type {tensor.elem_type}"
            )
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        return value.name, _ONNX_TO_TRITON[tensor.elem_type], dims[1:] if batched else dims

    inputs = [
        mc.ModelInput(name=n, data_type=t, dims=d)
        for n, t, d in (describe(v) for v in graph.input if v.name not in initializers)
    ]
    outputs = [
        mc.ModelOutput(name=n, data_type=t, dims=d) for n, t, d in map(describe, graph.output)
    ]
    return inputs, outputs


def python_model_config(
    onnx_config: mc.ModelConfig, name: str, onnx_path: Path, intra_op_threads: int | None = 1
) -> mc.ModelConfig:
    """The Python-backend config that mirrors an ONNX Runtime model config.

    Kept: name, max_batch_size, inputs and outputs (from the ONNX file when the config
    lists none), dynamic batching, instance counts and parameters. Instances become
    KIND_CPU: this Triton has no GPU build, and the stub picks CUDA itself where a GPU
    instance is asked for and onnxruntime-gpu is present. ``intra_op_threads`` becomes the
    ``intra_op_thread_count`` parameter where the ONNX config sets none (None: leave it to
    ONNX Runtime, which starts one thread per core in every model instance).
    """
    config = mc.ModelConfig(
        name=onnx_config.name or name,
        backend="python",
        max_batch_size=onnx_config.max_batch_size,
    )
    if onnx_config.input and onnx_config.output:
        config.input.extend(onnx_config.input)
        config.output.extend(onnx_config.output)
    else:
        inputs, outputs = tensors_from_onnx(onnx_path, batched=onnx_config.max_batch_size > 0)
        config.input.extend(onnx_config.input or inputs)
        config.output.extend(onnx_config.output or outputs)
    if onnx_config.HasField("dynamic_batching"):
        config.dynamic_batching.CopyFrom(onnx_config.dynamic_batching)
    for group in onnx_config.instance_group or [mc.ModelInstanceGroup(count=1)]:
        config.instance_group.add(count=max(group.count, 1), kind=mc.ModelInstanceGroup.KIND_CPU)
    for key, value in onnx_config.parameters.items():
        config.parameters[key].CopyFrom(value)
    config.parameters["onnx_file"].string_value = "model.onnx"
    if intra_op_threads is not None and "intra_op_thread_count" not in config.parameters:
        config.parameters["intra_op_thread_count"].string_value = str(intra_op_threads)
    return config


def build_local_repository(
    onnx_repo: Path, out_dir: Path, intra_op_threads: int | None = 1
) -> list[str]:
    """Write a Python-backend model into ``out_dir`` for every ONNX model; return the names.

    ``onnx_repo`` is the repository root (holding ``onnx/``) or the ``onnx/`` folder. Each
    ``out_dir/<name>/`` gets ``config.pbtxt``, ``1/model.py`` and a copy of the newest
    ``model.onnx``. Folders this function wrote earlier whose model is gone are removed;
    others are left alone.

    ``intra_op_threads`` (see :func:`python_model_config`) defaults to 1: on a small
    machine serving one model per channel, one thread per model instance measured faster
    than ONNX Runtime's one-per-core default, which oversubscribes the cores.
    """
    source = onnx_models_dir(Path(onnx_repo))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_source = Path(triton_python_model.__file__).read_text()
    written: list[str] = []
    for model_dir in sorted(p for p in source.iterdir() if p.is_dir()) if source.is_dir() else []:
        version = latest_version_dir(model_dir)
        config_path = model_dir / "config.pbtxt"
        if version is None or not config_path.is_file():
            continue
        onnx_path = version / "model.onnx"
        config = python_model_config(
            read_model_config(config_path), model_dir.name, onnx_path, intra_op_threads
        )
        if config.name != model_dir.name:
            raise ValueError(
                f"{config_path}: config names model {config.name!r} but its folder is "
                f"{model_dir.name!r}; Triton needs them equal"
            )
        target = out_dir / config.name
        if target.exists():
            if not (target / MARKER).exists():
                raise FileExistsError(f"{target} exists and was not written by smap-bench")
            shutil.rmtree(target)
        (target / "1").mkdir(parents=True)
        shutil.copyfile(onnx_path, target / "1" / "model.onnx")
        (target / "1" / "model.py").write_text(model_source)
        (target / "config.pbtxt").write_text(text_format.MessageToString(config))
        (target / MARKER).write_text(f"{model_dir}\n")
        written.append(config.name)
    for stale in out_dir.iterdir():
        if stale.is_dir() and (stale / MARKER).exists() and stale.name not in written:
            shutil.rmtree(stale)
    return written


def stub_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment in which the Python-backend stub runs this interpreter with this
    virtual environment's packages.

    Two quirks of the bundled stub. It links ``libpython3.X.so`` by name, and the system
    copy is not the interpreter this project runs on (models then fail with
    ``'_thread.RLock' object has no attribute '_recursion_count'``): this interpreter's
    LIBDIR goes first on LD_LIBRARY_PATH. Its embedded Python ignores PYTHONPATH (isolated
    configuration) and finds its prefix by looking up ``python3`` on PATH: with this
    environment's ``bin`` first on PATH it finds the venv's ``pyvenv.cfg`` and uses the
    venv's site-packages (numpy<2, onnxruntime) instead of the base interpreter's.
    """
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR")
    wheel_libs = pytriton_dir().parent.parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = _prepend([str(libdir), str(wheel_libs)], env.get("LD_LIBRARY_PATH"))
    env["PATH"] = _prepend([str(Path(sys.executable).parent)], env.get("PATH"))
    return env


def _prepend(first: list[str], rest: str | None) -> str:
    """A colon-separated search path with ``first`` in front, without duplicates."""
    return ":".join(dict.fromkeys([*first, *filter(None, (rest or "").split(":"))]))


def tritonserver_command(
    settings: Settings,
    model_dir: Path,
    *,
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    log_verbose: int = 0,
    backend_dir: Path | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Command line and environment that start the bundled tritonserver on ``model_dir``
    (written by :func:`build_local_repository`), bound to ``settings.host``.

    Ports default to the settings' Triton ports. The Python backend is prepared in
    ``backend_dir`` (default ``<run_dir>/triton/backends``) by
    :func:`prepare_backend_directory`, the one file-system effect of this function. Model
    control is explicit with every model loaded at start; a model added later is loaded
    without a restart through the repository API (``client.load_model(name)``) after
    rebuilding ``model_dir``.
    """
    backends = prepare_backend_directory(backend_dir or settings.run_dir / "triton" / "backends")
    argv = [
        str(tritonserver_binary()),
        f"--model-repository={Path(model_dir).resolve()}",
        f"--backend-directory={backends}",
        f"--cache-directory={pytriton_dir() / 'caches'}",
        "--model-control-mode=explicit",
        "--load-model=*",
        "--strict-readiness=true",
        "--exit-on-error=false",
        f"--http-address={settings.host}",
        f"--http-port={http_port or settings.triton_http_port}",
        f"--grpc-address={settings.host}",
        f"--grpc-port={grpc_port or settings.triton_grpc_port}",
        "--allow-metrics=true",
        f"--metrics-address={settings.host}",
        f"--metrics-port={metrics_port or settings.triton_metrics_port}",
        f"--log-verbose={log_verbose}",
    ]
    return argv, stub_environment()
