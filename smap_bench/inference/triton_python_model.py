"""Triton Python-backend model that serves one ONNX model with ONNX Runtime.

The tritonserver bundled with nvidia-pytriton has only the Python backend, so the local
stack serves each ``onnx/SMAP_<channel>`` model through this file, copied as
``1/model.py`` by :func:`smap_bench.inference.triton_local.build_local_repository`.
It must stay self-contained (numpy, onnxruntime and the standard library only): it runs
inside Triton's Python stub, not inside the smap_bench package.

Dynamic batching: Triton hands ``execute`` several requests at once; their inputs are
concatenated along the batch axis, run through ONNX Runtime once, and the outputs split
back in request order. If the joint run fails, each request is run alone so that one bad
request cannot fail the others.

Config parameters (string values): ``onnx_file`` (default ``model.onnx``, relative to the
version folder), ``intra_op_thread_count`` and ``inter_op_thread_count`` (as for Triton's
ONNX Runtime backend; 0 lets ONNX Runtime decide), ``allow_spinning`` ("0" or "1").
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

_NUMPY_TYPES = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
}


def concat_requests(
    per_request: Sequence[dict[str, np.ndarray]],
) -> tuple[dict[str, np.ndarray], list[int]]:
    """Join the requests' inputs along axis 0; return the joint feed and each request's
    batch size (to split the outputs again)."""
    sizes = [len(next(iter(inputs.values()))) for inputs in per_request]
    names = per_request[0].keys()
    joint = {name: np.concatenate([inputs[name] for inputs in per_request]) for name in names}
    return joint, sizes


def split_outputs(
    outputs: dict[str, np.ndarray], sizes: Sequence[int]
) -> list[dict[str, np.ndarray]]:
    """Cut joint outputs back into one dict per request, in request order."""
    bounds = np.cumsum([0, *sizes]).tolist()
    return [
        {name: value[start:stop] for name, value in outputs.items()}
        for start, stop in itertools.pairwise(bounds)
    ]


def session_from_config(args: dict[str, Any], config: dict[str, Any]) -> ort.InferenceSession:
    """The ONNX Runtime session for the model that ``args``/``config`` describe."""
    params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    version_dir = os.path.join(args["model_repository"], str(args["model_version"]))
    path = os.path.join(version_dir, params.get("onnx_file") or "model.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(params.get("intra_op_thread_count") or 0)
    options.inter_op_num_threads = int(params.get("inter_op_thread_count") or 0)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if params.get("allow_spinning") in ("0", "1"):
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", params["allow_spinning"]
        )
    providers: list[Any] = ["CPUExecutionProvider"]
    if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in (
        ort.get_available_providers()
    ):
        device = int(args.get("model_instance_device_id") or 0)
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device}))
    return ort.InferenceSession(path, sess_options=options, providers=providers)


class TritonPythonModel:
    """Triton's entry point: ``initialize``, ``execute``, ``finalize``."""

    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils  # only exists inside Triton

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        self.model_name = config.get("name", args.get("model_name", "?"))
        self.batching = int(config.get("max_batch_size", 0)) > 0
        self.input_names = [t["name"] for t in config["input"]]
        self.output_types = {t["name"]: _NUMPY_TYPES[t["data_type"]] for t in config["output"]}
        self.session = session_from_config(args, config)

    def execute(self, requests: list[Any]) -> list[Any]:
        feeds = [
            {n: self.pb.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names}
            for r in requests
        ]
        if self.batching and len(feeds) > 1:
            try:
                joint, sizes = concat_requests(feeds)
                return [self._response(out) for out in split_outputs(self._run(joint), sizes)]
            except Exception:
                pass
        return [self._run_one(feed) for feed in feeds]

    def finalize(self) -> None:
        self.session = None

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(self.output_types)
        values = self.session.run(names, feed)
        return {
            n: np.ascontiguousarray(v, dtype=self.output_types[n])
            for n, v in zip(names, values, strict=True)
        }

    def _run_one(self, feed: dict[str, np.ndarray]) -> Any:
        try:
            return self._response(self._run(feed))
        except Exception as exc:
            error = self.pb.TritonError(f"{self.model_name}: ONNX Runtime failed: {exc}")
            return self.pb.InferenceResponse(output_tensors=[], error=error)

    def _response(self, outputs: dict[str, np.ndarray]) -> Any:
        tensors = [self.pb.Tensor(name, value) for name, value in outputs.items()]
        return self.pb.InferenceResponse(output_tensors=tensors)
