from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch

from smap_bench.data.loader import load_channel
from smap_bench.data.synthetic import generate_channel
from smap_bench.model.export import export_onnx_bytes
from smap_bench.model.train import sliding_windows
from smap_bench.model.tranad import ScoringModel, TranAD, TranADConfig


def _session(blob: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(blob, providers=["CPUExecutionProvider"])


def test_onnx_matches_pytorch_on_random_and_real_windows(tiny_trained, shared_smap) -> None:
    scoring = tiny_trained.scoring_model.eval()
    session = _session(export_onnx_bytes(scoring))
    rng = np.random.default_rng(0)
    random_windows = rng.uniform(-1, 1, (5, 30, 25)).astype(np.float32)
    test = generate_channel("A-1", seed=1, train_rows=400, test_rows=200).test
    synthetic_windows = sliding_windows(test, 30, 10)
    real_windows = sliding_windows(load_channel("A-5", shared_smap).test, 30, 10)[:300]
    for batch in (random_windows, synthetic_windows, real_windows, real_windows[:1]):
        reconstruction, score = session.run(None, {"input": batch})
        with torch.no_grad():
            ref_reconstruction, ref_score = scoring(torch.from_numpy(batch))
        assert score.shape == (len(batch), 30)
        assert np.abs(reconstruction - ref_reconstruction.numpy()).max() < 1e-4
        assert np.abs(score - ref_score.numpy()).max() < 1e-4


def test_onnx_signature(tiny_trained) -> None:
    model = onnx.load_from_string(export_onnx_bytes(tiny_trained.scoring_model))
    assert model.opset_import[0].version >= 17
    (inp,) = model.graph.input
    assert inp.name == "input"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 30, 25]
    assert [o.name for o in model.graph.output] == ["reconstruction", "score"]


def test_onnx_of_a_horizon_model_matches_pytorch() -> None:
    torch.manual_seed(0)
    model = TranAD(TranADConfig(horizon=10)).eval()
    scoring = ScoringModel(model, torch.zeros(25), torch.ones(25), torch.ones(25)).eval()
    session = _session(export_onnx_bytes(scoring))
    batch = np.random.default_rng(1).uniform(0, 1, (7, 30, 25)).astype(np.float32)
    reconstruction, score = session.run(None, {"input": batch})
    with torch.no_grad():
        ref_reconstruction, ref_score = scoring(torch.from_numpy(batch))
    assert np.abs(reconstruction - ref_reconstruction.numpy()).max() < 1e-4
    assert np.abs(score - ref_score.numpy()).max() < 1e-4
