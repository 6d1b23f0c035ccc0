"""Sliding windows: offline grid, the window-to-record rule, and the streaming buffer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smap_bench.windows import (
    Rejection,
    Window,
    WindowBuffer,
    expected_windows,
    make_windows,
    record_flags,
    record_flags_from_windows,
    record_owner,
    record_scores,
    responsible_range,
    window_starts,
)

# --------------------------------------------------------------------------------------
# window_starts / make_windows
# --------------------------------------------------------------------------------------


def test_window_starts_match_the_seed_document() -> None:
    # The seed's document: 100 records -> [0..29], [10..39], ..., [70..99].
    assert window_starts(100, 30, 10).tolist() == [0, 10, 20, 30, 40, 50, 60, 70]
    assert expected_windows(100, 30, 10) == 8


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, []), (29, []), (30, [0]), (39, [0]), (40, [0, 10]), (109, list(range(0, 80, 10)))],
)
def test_window_starts_edges(n: int, expected: list[int]) -> None:
    starts = window_starts(n, 30, 10)
    assert starts.tolist() == expected
    assert expected_windows(n, 30, 10) == len(expected)


def test_window_geometry_is_checked() -> None:
    with pytest.raises(ValueError, match="stride"):
        window_starts(100, 10, 11)
    with pytest.raises(ValueError, match="stride"):
        window_starts(100, 10, 0)
    with pytest.raises(ValueError, match="negative"):
        window_starts(-1)


def test_make_windows_content_and_layout() -> None:
    array = np.arange(100 * 3, dtype=np.float64).reshape(100, 3)
    windows = make_windows(array, 30, 10)
    assert windows.shape == (8, 30, 3)
    assert windows.dtype == np.float32
    assert windows.flags.c_contiguous
    for i, start in enumerate(window_starts(100, 30, 10)):
        np.testing.assert_array_equal(windows[i], array[start : start + 30])


def test_make_windows_view_shares_memory() -> None:
    array = np.arange(50 * 2, dtype=np.float64).reshape(50, 2)
    view = make_windows(array, 5, 5, copy=False)
    assert view.shape == (10, 5, 2)
    assert np.shares_memory(view, array)
    np.testing.assert_array_equal(view[3], array[15:20])


def test_make_windows_short_and_bad_input() -> None:
    assert make_windows(np.zeros((10, 4)), 30, 10).shape == (0, 30, 4)
    with pytest.raises(ValueError, match="records, features"):
        make_windows(np.zeros(100), 30, 10)


# --------------------------------------------------------------------------------------
# The window-to-record rule
# --------------------------------------------------------------------------------------


def test_responsible_range() -> None:
    assert responsible_range(0, 30, 10) == (0, 30)
    assert responsible_range(10, 30, 10) == (30, 40)
    assert responsible_range(70, 30, 10) == (90, 100)
    with pytest.raises(ValueError, match="grid"):
        responsible_range(5, 30, 10)


def test_responsibility_tiles_the_split_without_overlap() -> None:
    n, window, stride = 107, 30, 10
    starts = window_starts(n, window, stride)
    owner = record_owner(starts, n, window, stride)
    for i, start in enumerate(starts):
        lo, hi = responsible_range(int(start), window, stride)
        assert (owner[lo:hi] == i).all()
        # the responsible window really contains the record
        assert start <= lo and hi <= start + window
    # the 7-record tail after the last window (ends at 100) belongs to no window
    assert (owner[100:] == -1).all()
    assert (owner[:100] >= 0).all()


def test_record_owner_small_hand_made_case() -> None:
    # window 4, stride 2, 9 records: windows at 0, 2, 4; window 0 judges 0..3,
    # window at 2 judges 4..5, window at 4 judges 6..7, record 8 has none.
    owner = record_owner(np.array([0, 2, 4]), 9, 4, 2)
    assert owner.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, -1]


def test_record_owner_with_missing_windows() -> None:
    # the window at 2 was lost: its records are judged by nobody
    owner = record_owner(np.array([0, 4]), 9, 4, 2)
    assert owner.tolist() == [0, 0, 0, 0, -1, -1, 1, 1, -1]


@pytest.mark.parametrize(
    ("starts", "match"),
    [([0, 3], "grid"), ([2, 2], "increasing"), ([0, 6], "past"), ([-2], "grid")],
)
def test_record_owner_refuses_bad_starts(starts: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        record_owner(np.array(starts), 9, 4, 2)


def test_record_scores_take_the_responsible_windows_timesteps() -> None:
    window, stride, n = 4, 2, 9
    starts = window_starts(n, window, stride)
    # score of window i at timestep j = 100 * i + j: identifies both
    scores = 100.0 * np.arange(starts.size)[:, None] + np.arange(window)[None, :]
    out = record_scores(scores, starts, n, window, stride)
    np.testing.assert_array_equal(out[:8], [0, 1, 2, 3, 102, 103, 202, 203])
    assert math.isnan(out[8])


def test_record_scores_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="shape"):
        record_scores(np.zeros((3, 5)), np.array([0, 2, 4]), 9, 4, 2)


def test_stride_one_is_each_windows_last_record() -> None:
    window, n = 3, 6
    starts = window_starts(n, window, 1)
    scores = 10.0 * np.arange(starts.size)[:, None] + np.arange(window)[None, :]
    out = record_scores(scores, starts, n, window, 1)
    # first window judges 0..2, then window at s judges s + 2
    np.testing.assert_array_equal(out, [0, 1, 2, 12, 22, 32])


def test_record_flags_from_windows() -> None:
    starts = np.array([0, 2, 4])
    flags = record_flags_from_windows(np.array([False, True, False]), starts, 9, 4, 2)
    assert flags.tolist() == [False] * 4 + [True, True] + [False] * 3
    flags = record_flags_from_windows(np.array([True, False, True]), starts, 9, 4, 2)
    assert flags.tolist() == [True] * 4 + [False, False, True, True, False]
    with pytest.raises(ValueError, match="one flag per window"):
        record_flags_from_windows(np.array([True]), starts, 9, 4, 2)


def test_record_flags_threshold() -> None:
    scores = np.array([0.1, 0.5, np.nan, 0.9, 0.5])
    assert record_flags(scores, 0.5).tolist() == [False, False, False, True, False]
    dynamic = np.array([0.0, 0.4, 0.0, 1.0, 0.6])
    assert record_flags(scores, dynamic).tolist() == [True, True, False, False, False]


# --------------------------------------------------------------------------------------
# WindowBuffer
# --------------------------------------------------------------------------------------


def _row(i: float, f: int = 3) -> list[float]:
    return [float(i)] * f


def test_buffer_emits_the_offline_windows() -> None:
    buffer = WindowBuffer(30, 10, 3)
    data = np.arange(100 * 3, dtype=np.float32).reshape(100, 3)
    emitted: list[Window] = []
    for i in range(100):
        result = buffer.push(1, i, data[i], timestamp=f"t{i}")
        assert result.accepted
        emitted.extend(result.windows)
    assert [w.first_record_index for w in emitted] == [0, 10, 20, 30, 40, 50, 60, 70]
    assert [w.last_record_index for w in emitted] == [29, 39, 49, 59, 69, 79, 89, 99]
    offline = make_windows(data, 30, 10)
    for window, expected in zip(emitted, offline, strict=True):
        assert window.loop == 1
        assert window.data.dtype == np.float32 and window.data.shape == (30, 3)
        np.testing.assert_array_equal(window.data, expected)
        first = window.first_record_index
        assert window.timestamps == tuple(f"t{i}" for i in range(first, first + 30))


def test_buffer_windows_do_not_alias_the_ring() -> None:
    buffer = WindowBuffer(4, 2, 1)
    windows = [w for i in range(10) for w in buffer.push(0, i, [float(i)]).windows]
    assert [w.data[:, 0].tolist() for w in windows] == [
        [0, 1, 2, 3],
        [2, 3, 4, 5],
        [4, 5, 6, 7],
        [6, 7, 8, 9],
    ]


def test_buffer_grid_is_anchored_at_origin_not_first_record() -> None:
    # a scheduler resuming at record 15 forms the same windows as one that saw record 0
    buffer = WindowBuffer(30, 10, 3)
    firsts = [
        w.first_record_index for i in range(15, 100) for w in buffer.push(1, i, _row(i)).windows
    ]
    assert firsts == [20, 30, 40, 50, 60, 70]
    shifted = WindowBuffer(30, 10, 3, origin=5)
    firsts = [
        w.first_record_index for i in range(5, 60) for w in shifted.push(1, i, _row(i)).windows
    ]
    assert firsts == [5, 15, 25]


def test_buffer_duplicate_and_out_of_order() -> None:
    buffer = WindowBuffer(4, 2, 3)
    for i in range(6):
        assert buffer.push(1, i, _row(i)).accepted
    assert buffer.push(1, 5, _row(5)).rejected is Rejection.DUPLICATE
    assert buffer.push(1, 2, _row(2)).rejected is Rejection.DUPLICATE
    # jump to 9 (gap of 6..8), then 7 arrives late: never seen, so out of order
    assert buffer.push(1, 9, _row(9)).gap == 3
    assert buffer.push(1, 7, _row(7)).rejected is Rejection.OUT_OF_ORDER
    assert buffer.push(1, 3, _row(3)).rejected is Rejection.DUPLICATE
    assert buffer.last_record_index == 9


def test_buffer_rejections_do_not_disturb_the_stream() -> None:
    buffer = WindowBuffer(4, 2, 3)
    windows: list[Window] = []
    for i in range(10):
        windows.extend(buffer.push(1, i, _row(i)).windows)
        buffer.push(1, i, _row(-1))  # duplicate of every record, with other values
    assert [w.first_record_index for w in windows] == [0, 2, 4, 6]
    assert windows[-1].data[:, 0].tolist() == [6, 7, 8, 9]


def test_buffer_gap_resets_and_resumes_on_the_grid() -> None:
    buffer = WindowBuffer(4, 2, 3)
    firsts: list[int] = []
    gaps = []
    for i in [*range(0, 7), *range(9, 20)]:
        result = buffer.push(1, i, _row(i))
        gaps.append(result.gap)
        firsts.extend(w.first_record_index for w in result.windows)
    # before the gap: windows at 0, 2; after: no window may include 7 or 8, and the first
    # full grid window after 9 starts at 10
    assert firsts == [0, 2, 10, 12, 14, 16]
    assert sum(gaps) == 2
    assert buffer.buffered == 4


def test_buffer_new_loop_starts_a_new_segment() -> None:
    buffer = WindowBuffer(4, 2, 3)
    for i in range(7):
        buffer.push(1, i, _row(i))
    result = buffer.push(2, 0, _row(100))
    assert result.accepted and result.new_loop and result.gap == 0
    assert buffer.loop == 2 and buffer.buffered == 1
    windows = [w for i in range(1, 6) for w in buffer.push(2, i, _row(100 + i)).windows]
    assert [(w.loop, w.first_record_index) for w in windows] == [(2, 0), (2, 2)]
    # no record of loop 1 leaks into loop 2's first window
    assert windows[0].data[:, 0].tolist() == [100, 101, 102, 103]
    assert buffer.push(1, 6, _row(6)).rejected is Rejection.STALE_LOOP
    assert buffer.push(2, 0, _row(100)).rejected is Rejection.DUPLICATE


# numpy warns about the float32 overflow of 1e300; the buffer refuses the record all the same
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize(
    ("features", "reason"),
    [
        ([1.0, 2.0], Rejection.WRONG_FEATURE_COUNT),
        (np.zeros((3, 1)), Rejection.WRONG_FEATURE_COUNT),
        ([1.0, "x", 2.0], Rejection.NOT_NUMERIC),
        ([1.0, float("nan"), 2.0], Rejection.NON_FINITE),
        ([1.0, float("-inf"), 2.0], Rejection.NON_FINITE),
        ([1.0, 1e300, 2.0], Rejection.NON_FINITE),  # finite in float64, inf in float32
    ],
)
def test_buffer_refuses_bad_features(features: object, reason: Rejection) -> None:
    buffer = WindowBuffer(4, 2, 3)
    for i in range(5):
        buffer.push(1, i, _row(i))
    result = buffer.push(1, 5, features)  # type: ignore[arg-type]
    assert result.rejected is reason and not result.windows
    # the refused record left no trace: re-sent correctly, the stream continues intact
    result = buffer.push(1, 5, _row(5))
    assert result.accepted and result.gap == 0
    assert [w.data[:, 0].tolist() for w in result.windows] == [[2, 3, 4, 5]]


def test_buffer_refused_record_is_a_gap_for_the_next() -> None:
    buffer = WindowBuffer(4, 2, 3)
    for i in range(5):
        buffer.push(1, i, _row(i))
    assert buffer.push(1, 5, _row(float("nan"))).rejected is Rejection.NON_FINITE
    assert buffer.push(1, 6, _row(6)).gap == 1
