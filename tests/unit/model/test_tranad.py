from __future__ import annotations

import pytest
import torch

from smap_bench.model.tranad import (
    ScoringModel,
    TranAD,
    TranADConfig,
    hide_newest,
    positional_encoding,
    record_error,
)


def test_positional_encoding_shape_and_first_row() -> None:
    code = positional_encoding(30, 50)
    assert code.shape == (30, 50)
    assert torch.allclose(code[0, 0::2], torch.zeros(25))
    assert torch.allclose(code[0, 1::2], torch.ones(25))


@pytest.mark.parametrize("window", [10, 30])
def test_tranad_outputs_have_the_window_shape(window: int) -> None:
    model = TranAD(TranADConfig(window=window)).eval()
    x = torch.rand(3, window, 25)
    out1, out2, out_hat2 = model(x)
    for out in (out1, out2, out_hat2):
        assert out.shape == x.shape
        assert torch.all((out >= 0) & (out <= 1))


def test_phase_two_depends_on_phase_one_error() -> None:
    torch.manual_seed(0)
    model = TranAD().eval()
    x = torch.rand(2, 30, 25)
    with torch.no_grad():
        a = model.phase2(x, x)  # zero focus
        b = model.phase2(x, torch.zeros_like(x))  # large focus
    assert not torch.allclose(a, b)


def test_heads_must_divide_the_width() -> None:
    with pytest.raises(ValueError, match="n_heads"):
        TranAD(TranADConfig(n_heads=7))


def test_scoring_model_normalises_inside_and_weights_features() -> None:
    torch.manual_seed(0)
    model = TranAD().eval()
    offset = torch.zeros(25)
    offset[0] = -1.0
    scale = torch.ones(25)
    scale[0] = 2.0
    weights = torch.zeros(25)
    weights[0] = 3.0  # normalised to 1
    scoring = ScoringModel(model, offset, scale, weights).eval()
    raw = torch.rand(4, 30, 25) * 2 - 1
    with torch.no_grad():
        reconstruction, score = scoring(raw)
        window = (raw - offset) / scale
        out1, _, out_hat2 = model(window)
    assert score.shape == (4, 30)
    torch.testing.assert_close(score, record_error(window, out1, out_hat2)[..., 0])
    torch.testing.assert_close(reconstruction, out1 * scale + offset)


def test_scoring_model_refuses_bad_normalisation() -> None:
    with pytest.raises(ValueError, match="scale"):
        ScoringModel(TranAD(), torch.zeros(25), torch.zeros(25), torch.ones(25))
    with pytest.raises(ValueError, match="offset"):
        ScoringModel(TranAD(), torch.zeros(3), torch.ones(25), torch.ones(25))


def test_hide_newest_holds_the_last_seen_value_over_the_horizon() -> None:
    x = torch.rand(2, 30, 25)
    hidden = hide_newest(x, 10)
    assert torch.equal(hidden[:, :20], x[:, :20])
    assert torch.equal(hidden[:, 20:, 1:], x[:, 20:, 1:])  # commands stay
    assert torch.equal(hidden[:, 20:, 0], x[:, 19:20, 0].expand(-1, 10))
    assert hide_newest(x, 0) is x


def test_a_horizon_model_does_not_see_the_values_it_forecasts() -> None:
    torch.manual_seed(0)
    model = TranAD(TranADConfig(horizon=10)).eval()
    x = torch.rand(2, 30, 25)
    y = x.clone()
    y[:, 20:, 0] = torch.rand(2, 10)  # only the hidden values differ
    with torch.no_grad():
        for a, b in zip(model(x), model(y), strict=True):
            assert torch.allclose(a, b)
        y[:, 19, 0] += 0.5  # the last value it does see changes the forecast
        assert not torch.allclose(model(x)[0], model(y)[0])


def test_horizon_must_leave_a_record_seen() -> None:
    with pytest.raises(ValueError, match="horizon"):
        TranADConfig(window=10, horizon=10)
    assert "horizon" not in TranADConfig().as_dict()
    assert TranADConfig(horizon=10).as_dict()["horizon"] == 10
