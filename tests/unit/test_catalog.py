"""Subsystems, channel prefixes, the round-robin fleet assignment and model names."""

from __future__ import annotations

import random

import pytest

from smap_bench.catalog import (
    SMAP_CHANNELS,
    SUBSYSTEMS,
    CatalogError,
    Subsystem,
    channel_for,
    channel_of_model,
    channels_of,
    fleet_assignment,
    model_name,
    satellite_ids,
    satellite_number,
    sort_channels,
    subsystem_for_code,
    subsystem_of,
)


def test_subsystems_in_the_design_order_with_their_codes() -> None:
    assert [s.value for s in SUBSYSTEMS] == ["ACS", "Data", "EPS", "FSW", "PS", "SS", "TCS"]
    assert [s.code for s in SUBSYSTEMS] == ["A", "D", "E", "F", "P", "S", "T"]
    for subsystem in SUBSYSTEMS:
        assert subsystem_for_code(subsystem.code) is subsystem
        assert Subsystem.parse(subsystem.value.lower()) is subsystem
    assert Subsystem.Data == "Data"  # usable as the plain string of messages and topics


def test_unknown_subsystem_and_code() -> None:
    with pytest.raises(CatalogError, match=r"unknown subsystem 'GNC'; known subsystems: ACS, "):
        Subsystem.parse("GNC")
    with pytest.raises(CatalogError, match=r"no subsystem has code 'G'"):
        subsystem_for_code("G")


def test_subsystem_of_channels() -> None:
    assert subsystem_of("A-7") is Subsystem.ACS
    assert subsystem_of("D-13") is Subsystem.Data
    assert subsystem_of("T-3") is Subsystem.TCS
    for orphan in ("B-1", "G-6", "R-1"):
        assert subsystem_of(orphan) is None
    for bad in ("A1", "a-1", "AB-1", "A-", "A-x"):
        with pytest.raises(CatalogError, match="bad channel name"):
            subsystem_of(bad)


def test_natural_order() -> None:
    shuffled = list(SMAP_CHANNELS)
    random.Random(1).shuffle(shuffled)
    assert sort_channels([*shuffled, "A-1"]) == list(SMAP_CHANNELS)
    assert sort_channels(["D-11", "D-2", "D-1"]) == ["D-1", "D-2", "D-11"]


def test_satellite_ids() -> None:
    assert satellite_ids(3) == ["sat1", "sat2", "sat3"]
    assert satellite_ids(0) == []
    assert satellite_number("sat12") == 12
    with pytest.raises(CatalogError):
        satellite_ids(-1)
    for bad in ("sat0", "sat", "satellite1", "SAT1"):
        with pytest.raises(CatalogError, match="bad satellite id"):
            satellite_number(bad)


def test_channels_of_a_subsystem() -> None:
    assert channels_of(Subsystem.ACS, SMAP_CHANNELS) == [f"A-{i}" for i in range(1, 10)]
    assert channels_of("SS", SMAP_CHANNELS) == ["S-1"]
    assert channels_of(Subsystem.PS, ["P-7", "P-1", "G-1"]) == ["P-1", "P-7"]


def test_channel_for_is_round_robin() -> None:
    shuffled = list(SMAP_CHANNELS)
    random.Random(2).shuffle(shuffled)
    acs = [channel_for(f"sat{i}", Subsystem.ACS, shuffled) for i in range(1, 12)]
    assert acs == [f"A-{i}" for i in range(1, 10)] + ["A-1", "A-2"]
    tcs = [channel_for(f"sat{i}", "TCS", SMAP_CHANNELS) for i in range(1, 5)]
    assert tcs == ["T-1", "T-2", "T-3", "T-1"]
    assert {channel_for(f"sat{i}", Subsystem.SS, SMAP_CHANNELS) for i in range(1, 8)} == {"S-1"}


def test_channel_for_without_a_channel_of_that_subsystem() -> None:
    with pytest.raises(CatalogError, match=r"no channel with prefix 'T' for subsystem TCS"):
        channel_for("sat1", Subsystem.TCS, ["A-1", "B-1"])


@pytest.mark.parametrize("n", [1, 5, 17])
def test_fleet_assignment_matches_channel_for(n: int) -> None:
    assignment = fleet_assignment(n, SMAP_CHANNELS)
    assert len(assignment) == 7 * n
    for (satellite, subsystem), channel in assignment.items():
        assert channel == channel_for(satellite, subsystem, SMAP_CHANNELS)
        assert subsystem_of(channel) is subsystem
    assert not {c[0] for c in assignment.values()} & {"B", "G", "R"}


def test_fleet_assignment_leaves_out_subsystems_without_channels() -> None:
    assignment = fleet_assignment(2, ["A-1", "E-1", "E-2", "G-1"])
    assert assignment == {
        ("sat1", Subsystem.ACS): "A-1",
        ("sat2", Subsystem.ACS): "A-1",
        ("sat1", Subsystem.EPS): "E-1",
        ("sat2", Subsystem.EPS): "E-2",
    }


def test_model_names() -> None:
    assert model_name("A-1") == "SMAP_A-1"
    for channel in SMAP_CHANNELS:
        assert channel_of_model(model_name(channel)) == channel
    with pytest.raises(CatalogError):
        model_name("A_1")
    for bad in ("MSL_A-1", "SMAP_", "SMAP_a-1", "A-1"):
        with pytest.raises(CatalogError):
            channel_of_model(bad)
