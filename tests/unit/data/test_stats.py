"""Dataset statistics shared by ``data info`` and the data notebook."""

from __future__ import annotations

from smap_bench.catalog import SMAP_CHANNELS
from smap_bench.data.loader import LabeledRange
from smap_bench.data.stats import (
    NO_SUBSYSTEM,
    anomalies_per_subsystem,
    anomaly_frame,
    anomaly_statistics,
    channels_per_subsystem,
)


def test_channels_per_subsystem_on_the_smap_names() -> None:
    table = channels_per_subsystem(SMAP_CHANNELS).set_index("subsystem")
    assert list(table.index) == ["ACS", "Data", "EPS", "FSW", "PS", "SS", "TCS", NO_SUBSYSTEM]
    assert table["channels"].sum() == len(SMAP_CHANNELS)
    assert table.loc["EPS", "channels"] == 13 and table.loc["SS", "names"] == "S-1"
    assert table.loc[NO_SUBSYSTEM, "code"] == "BGR"
    assert table.loc["Data", "names"].endswith("D-9, D-11, D-12, D-13")


def test_anomaly_statistics_on_hand_made_labels() -> None:
    labels = {
        "G-1": (LabeledRange(0, 9, "point"),),
        "A-1": (LabeledRange(5, 5, "point"), LabeledRange(10, 39, "contextual")),
    }
    frame = anomaly_frame(labels)
    assert list(frame["channel"]) == ["A-1", "A-1", "G-1"]
    assert list(frame["subsystem"]) == ["ACS", "ACS", NO_SUBSYSTEM]
    assert list(frame["length"]) == [1, 30, 10]
    stats = anomaly_statistics(frame)
    assert stats.loc["point", "count"] == 2 and stats.loc["point", "channels"] == 2
    assert stats.loc["point", "length_mean"] == 5.5
    assert stats.loc["contextual", "length_max"] == 30
    assert stats.loc["all", "count"] == 3 and stats.loc["all", "length_median"] == 10


def test_anomaly_statistics_with_a_kind_absent() -> None:
    stats = anomaly_statistics(anomaly_frame({"A-1": (LabeledRange(1, 2, "point"),)}))
    assert stats.loc["contextual", "count"] == 0


def test_anomalies_per_subsystem() -> None:
    labels = {
        "E-1": (LabeledRange(0, 9, "point"), LabeledRange(20, 29, "contextual")),
        "E-2": (LabeledRange(0, 9, "point"),),
        "R-1": (LabeledRange(3, 4, "contextual"),),
    }
    table = anomalies_per_subsystem(anomaly_frame(labels))
    assert list(table.index) == ["ACS", "Data", "EPS", "FSW", "PS", "SS", "TCS", NO_SUBSYSTEM]
    assert table.loc["EPS"].tolist() == [2, 1, 3]
    assert table.loc[NO_SUBSYSTEM].tolist() == [0, 1, 1]
    assert table.loc["ACS", "total"] == 0
