"""Replay packing and live scoring: pure logic, hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from smap_bench.bench.replay import pack_channels, record_flags_from_live, score_streams
from smap_bench.windows import window_starts


def test_every_channel_gets_exactly_one_evaluated_stream() -> None:
    lengths = {f"A-{i}": 1000 + i for i in range(1, 10)} | {"B-1": 500, "G-2": 700, "P-1": 900}
    plan = pack_channels(lengths, prefix="r")
    streams = plan.streams()
    assert sorted(ch for _, _, ch in streams) == sorted(lengths)
    assert len({(sat, sub) for sat, sub, _ in streams}) == len(streams)
    assert [s.satellite_id for s in plan.satellites] == ["r1", "r2"]
    for sat in plan.satellites:
        assert len(sat.channels) == 7
        assert sat.loop_length == max(lengths[sat.channels[s]] for s in sat.evaluated)


def test_channel_takes_its_own_subsystem_when_free() -> None:
    plan = pack_channels({"E-1": 100, "T-1": 100, "A-1": 100})
    (sat,) = plan.satellites
    assert sat.channels["EPS"] == "E-1" and sat.channels["TCS"] == "T-1"
    assert sat.channels["ACS"] == "A-1"
    assert sat.evaluated == {"EPS", "TCS", "ACS"}


def test_expected_windows_counts_fillers_over_the_loop() -> None:
    plan = pack_channels({"A-1": 100, "A-2": 60})
    # one satellite, loop 100 records -> 8 windows per stream, 7 streams
    assert plan.expected_windows(30, 10) == 8 * 7


def test_live_flags_use_the_offline_rule_and_count_missing_windows() -> None:
    n = 100
    starts = window_starts(n)
    live = {int(s): False for s in starts}
    live[40] = True  # judges records 60..69
    del live[70]  # missing window: its records stay unflagged
    flags, missing = record_flags_from_live(live, n)
    assert missing == 1
    assert np.flatnonzero(flags).tolist() == list(range(60, 70))


def test_windows_past_the_split_are_ignored() -> None:
    n = 45  # windows at 0 and 10 only
    live = {0: False, 10: True, 20: True}  # 20 ran past the split in the live stream
    flags, missing = record_flags_from_live(live, n)
    assert missing == 0
    assert np.flatnonzero(flags).tolist() == list(range(30, 40))


def test_score_streams_pools_over_channels() -> None:
    lengths = {"A-1": 100, "A-2": 100}
    live = {"A-1": {int(s): s == 40 for s in window_starts(100)}, "A-2": {}}
    pooled, missing = score_streams(live, {"A-1": [(60, 65)], "A-2": [(10, 20)]}, lengths)
    assert missing == len(window_starts(100))
    assert pooled["event"]["tp"] == 1 and pooled["event"]["fn"] == 1
    assert pooled["event"]["recall"] == pytest.approx(0.5)
