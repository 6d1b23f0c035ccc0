"""Input checks shared by every inference backend."""

from __future__ import annotations

import numpy as np
import pytest

from smap_bench.inference.base import (
    InferenceError,
    InvalidWindowError,
    ModelSignature,
    check_outputs,
    validate_windows,
)

SIG = ModelSignature(window=30, features=25)


def test_accepts_float32_as_is(windows: np.ndarray) -> None:
    out = validate_windows("SMAP_A-1", windows, SIG)
    assert out.dtype == np.float32 and out.shape == (5, 30, 25)
    np.testing.assert_array_equal(out, windows)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int64, np.int32])
def test_casts_real_numbers_to_float32(dtype: type) -> None:
    values = np.arange(2 * 30 * 25).reshape(2, 30, 25).astype(dtype) % 7
    out = validate_windows("SMAP_A-1", values, SIG)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, values.astype(np.float32))


def test_non_contiguous_input_becomes_contiguous(windows: np.ndarray) -> None:
    strided = np.concatenate([windows, windows], axis=2)[:, :, ::2]
    assert not strided.flags.c_contiguous
    assert validate_windows("SMAP_A-1", strided, SIG).flags.c_contiguous


@pytest.mark.parametrize(
    ("shape", "expected_text"),
    [
        ((1, 29, 25), "SMAP_A-1: window has shape (1, 29, 25), expected (B, 30, 25)"),
        ((1, 30, 24), "window has shape (1, 30, 24)"),
        ((30, 25), "add a batch axis"),
        ((2, 1, 30, 25), "window has shape (2, 1, 30, 25)"),
        ((0, 30, 25), "with B >= 1"),
    ],
)
def test_wrong_shape_names_model_and_shape(shape: tuple[int, ...], expected_text: str) -> None:
    with pytest.raises(InvalidWindowError) as info:
        validate_windows("SMAP_A-1", np.zeros(shape, np.float32), SIG)
    assert expected_text in str(info.value)
    assert info.value.model_name == "SMAP_A-1"


def test_shape_follows_the_models_signature() -> None:
    short = ModelSignature(window=10, features=25)
    assert validate_windows("SMAP_A-1", np.zeros((3, 10, 25)), short).shape == (3, 10, 25)
    with pytest.raises(InvalidWindowError, match=r"expected \(B, 10, 25\)"):
        validate_windows("SMAP_A-1", np.zeros((3, 30, 25)), short)


@pytest.mark.parametrize(
    "values",
    [
        np.zeros((1, 30, 25), dtype=bool),
        np.zeros((1, 30, 25), dtype=np.complex64),
        np.full((1, 30, 25), "x"),
        np.empty((1, 30, 25), dtype=object),
    ],
)
def test_wrong_dtype_is_refused(values: np.ndarray) -> None:
    with pytest.raises(InvalidWindowError, match=rf"SMAP_E-2: window has dtype {values.dtype}"):
        validate_windows("SMAP_E-2", values, SIG)


def test_not_an_array_is_refused() -> None:
    with pytest.raises(
        InvalidWindowError, match="SMAP_E-2: windows must be a numpy array, got list"
    ):
        validate_windows("SMAP_E-2", [[0.0] * 25] * 30, SIG)


@pytest.mark.parametrize(
    ("bad", "kind"), [(np.nan, "NaN"), (np.inf, "infinity"), (-np.inf, "infinity")]
)
def test_non_finite_values_are_located(windows: np.ndarray, bad: float, kind: str) -> None:
    windows[3, 12, 4] = bad
    with pytest.raises(InvalidWindowError) as info:
        validate_windows("SMAP_P-1", windows, SIG)
    message = str(info.value)
    assert message.startswith("SMAP_P-1: window 3 holds " + kind)
    assert "record 12, feature 4" in message and "1 non-finite values" in message


def test_float64_too_large_for_float32_is_called_so() -> None:
    values = np.zeros((1, 30, 25))
    values[0, 0, 0] = 1e300
    with pytest.raises(InvalidWindowError, match="a value too large for float32"):
        validate_windows("SMAP_P-1", values, SIG)


def test_invalid_window_error_is_a_value_error() -> None:
    assert issubclass(InvalidWindowError, ValueError)
    assert issubclass(InvalidWindowError, InferenceError)


def test_check_outputs_refuses_shapes_off_the_contract() -> None:
    check_outputs("SMAP_A-1", np.zeros((2, 30, 25)), np.zeros((2, 30)), 2, SIG)
    with pytest.raises(
        InferenceError, match=r"SMAP_A-1: model returned reconstruction \(2, 30, 25\)"
    ):
        check_outputs("SMAP_A-1", np.zeros((2, 30, 25)), np.zeros((2,)), 2, SIG)
