"""The router's logic: a raw message split per subsystem, and every kind of bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from smap_bench.catalog import SUBSYSTEMS, Subsystem
from smap_bench.routing import (
    INVALID_MESSAGE,
    MALFORMED_JSON,
    MISSING_SUBSYSTEM,
    NON_FINITE,
    REASON_KINDS,
    UNKNOWN_SATELLITE,
    WRONG_FEATURE_COUNT,
    SequenceTracker,
    TelemetryRouter,
)
from smap_bench.schema import SubsystemRecord, decode
from smap_bench.stage import reason_label
from smap_bench.windows import Rejection

TEMPLATE = "telemetry.{subsystem}.{satellite_id}"
NOW = 1_000_000.25


def topic_for(subsystem: str, satellite_id: str) -> str:
    return TEMPLATE.format(subsystem=subsystem, satellite_id=satellite_id)


def make_router(known: Any = ("sat1", "sat2")) -> TelemetryRouter:
    return TelemetryRouter(topic_for, known, clock=lambda: NOW)


def features(subsystem: Subsystem, record_index: int) -> list[float]:
    """Distinct, recognisable values per (subsystem, record)."""
    base = SUBSYSTEMS.index(subsystem) * 100 + record_index
    return [base + i / 100 for i in range(25)]


def message(
    satellite: str = "sat1", loop: int = 0, record_index: int = 0, **overrides: Any
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "satellite_id": satellite,
        "timestamp": "2025-11-12T10:00:00+00:00",
        "loop": loop,
        "record_index": record_index,
        "subsystems": {
            s.value: {
                "code": s.code,
                "features": features(s, record_index),
                "num_features": 25,
                "channel": f"{s.code}-1",
            }
            for s in SUBSYSTEMS
        },
        "stages": {"simulator": NOW - 0.125},
    }
    msg.update(overrides)
    return msg


def raw(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg).encode()


# --------------------------------------------------------------------------------------
# the good path
# --------------------------------------------------------------------------------------


def test_a_valid_message_becomes_seven_records() -> None:
    result = make_router().route(raw(message(record_index=42, loop=3)))
    assert result.rejection is None and result.kind is None
    assert [o.subsystem for o in result.outputs] == list(SUBSYSTEMS)
    assert result.latency_s == pytest.approx(0.125)
    for out in result.outputs:
        assert out.topic == f"telemetry.{out.subsystem.value}.sat1"
        assert out.key == b"sat1"
        record = decode(SubsystemRecord, out.value)
        assert record.subsystem is out.subsystem
        assert record.code == out.subsystem.code
        assert record.satellite_id == "sat1"
        assert (record.loop, record.record_index) == (3, 42)
        assert record.timestamp.isoformat() == "2025-11-12T10:00:00+00:00"
        assert record.features == features(out.subsystem, 42)
        assert record.num_features == 25
        assert record.channel == f"{out.subsystem.code}-1"
        assert record.stages == {"simulator": NOW - 0.125, "router": NOW}


def test_records_match_the_schema_helper() -> None:
    from smap_bench.schema import TelemetryMessage

    body = raw(message(record_index=7))
    parsed = decode(TelemetryMessage, body)
    for out in make_router().route(body).outputs:
        expected = SubsystemRecord.from_message(parsed, out.subsystem)
        got = decode(SubsystemRecord, out.value)
        assert got.model_dump(exclude={"stages"}) == expected.model_dump(exclude={"stages"})


def test_the_simulators_messages_route_cleanly() -> None:
    import numpy as np

    from smap_bench.simulation import Replay, build_fleet, plan_channels

    mapping = {"sat1": {s.value: f"{s.code}-1" for s in SUBSYSTEMS}}
    arrays = {
        f"{s.code}-1": np.full((3, 25), i, dtype=np.float32) for i, s in enumerate(SUBSYSTEMS)
    }
    replay = Replay(build_fleet(plan_channels(0, [], mapping), arrays), loops=1)
    router = make_router()
    while not replay.finished:
        for _, value in replay.tick(NOW - 1):
            result = router.route(value)
            assert result.rejection is None and len(result.outputs) == 7


def test_a_gap_and_a_new_loop_are_accepted() -> None:
    router = make_router()
    for loop, index in [(0, 0), (0, 1), (0, 5), (1, 0), (1, 1), (4, 3)]:
        assert router.route(raw(message(loop=loop, record_index=index))).rejection is None


def test_satellites_are_sequenced_independently() -> None:
    router = make_router()
    assert router.route(raw(message("sat1", record_index=5))).rejection is None
    assert router.route(raw(message("sat2", record_index=0))).rejection is None


# --------------------------------------------------------------------------------------
# bad input: nothing routed
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (raw(message())[:-10], MALFORMED_JSON),
        (b"", MALFORMED_JSON),
        (None, MALFORMED_JSON),
        (b"\xff\xfe", MALFORMED_JSON),
        (b"[1, 2]", INVALID_MESSAGE),
        (raw({k: v for k, v in message().items() if k != "timestamp"}), INVALID_MESSAGE),
        (raw(message(loop=-1)), INVALID_MESSAGE),
        (raw(message(satellite_id="sat 1")), INVALID_MESSAGE),
        (raw(message(timestamp="2025-11-12T10:00:00")), INVALID_MESSAGE),  # naive time
        (raw(message(subsystems={})), INVALID_MESSAGE),
    ],
)
def test_unusable_messages_are_refused_whole(body: bytes | None, kind: str) -> None:
    result = make_router().route(body)
    assert result.outputs == ()
    assert result.kind == kind, result.rejection


def test_code_not_matching_its_subsystem_is_refused() -> None:
    msg = message()
    msg["subsystems"]["ACS"]["code"] = "D"
    result = make_router().route(raw(msg))
    assert result.outputs == () and result.kind == INVALID_MESSAGE
    assert "code 'D' does not match subsystem ACS" in (result.rejection or "")


def test_unknown_satellite_is_refused() -> None:
    result = make_router().route(raw(message("sat999")))
    assert result.outputs == ()
    assert result.kind == UNKNOWN_SATELLITE and "sat999" in (result.rejection or "")


def test_fleet_may_be_a_predicate_or_open() -> None:
    assert make_router(lambda s: s.startswith("replay")).route(raw(message("replay3"))).outputs
    assert make_router(lambda s: False).route(raw(message("sat1"))).kind == UNKNOWN_SATELLITE
    assert make_router(None).route(raw(message("anything-1"))).rejection is None


def test_duplicate_out_of_order_and_stale_loop() -> None:
    router = make_router()
    for index in (0, 1, 2, 5):
        assert router.route(raw(message(record_index=index))).rejection is None
    duplicate = router.route(raw(message(record_index=5)))
    assert duplicate.kind == Rejection.DUPLICATE.value and duplicate.outputs == ()
    assert router.route(raw(message(record_index=1))).kind == Rejection.DUPLICATE.value
    assert router.route(raw(message(record_index=4))).kind == Rejection.OUT_OF_ORDER.value
    assert router.route(raw(message(loop=1, record_index=0))).rejection is None
    stale = router.route(raw(message(loop=0, record_index=9)))
    assert stale.kind == Rejection.STALE_LOOP.value
    assert "after loop 1 record 0" in (stale.rejection or "")


def test_a_refused_message_does_not_advance_the_sequence() -> None:
    router = make_router()
    assert router.route(raw(message(record_index=0))).rejection is None
    assert router.route(raw(message(record_index=1, timestamp="x"))).kind == INVALID_MESSAGE
    assert router.route(raw(message("sat999", record_index=1))).kind == UNKNOWN_SATELLITE
    assert router.route(raw(message(record_index=1))).rejection is None


# --------------------------------------------------------------------------------------
# bad input in some subsystems: the others are routed, the message dead-lettered once
# --------------------------------------------------------------------------------------


def test_missing_subsystem_routes_the_others() -> None:
    msg = message()
    del msg["subsystems"]["TCS"], msg["subsystems"]["ACS"]
    result = make_router().route(raw(msg))
    assert [o.subsystem.value for o in result.outputs] == ["Data", "EPS", "FSW", "PS", "SS"]
    assert result.kind == MISSING_SUBSYSTEM
    assert result.rejection == "missing subsystem: ACS, TCS"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_values_are_refused_with_their_subsystem(literal: str) -> None:
    msg = message()
    msg["subsystems"]["EPS"]["features"][3] = 12345.5
    body = raw(msg).replace(b"12345.5", literal.encode())
    result = make_router().route(body)
    assert result.kind == NON_FINITE, result.rejection
    assert "subsystem EPS not routed" in (result.rejection or "")
    assert Subsystem.EPS not in {o.subsystem for o in result.outputs}
    assert len(result.outputs) == 6


@pytest.mark.parametrize(
    "change",
    [
        {"features": list(range(24)), "num_features": 24},  # 24 both ways
        {"features": list(range(24))},  # disagrees with num_features
        {"features": list(range(26)), "num_features": 26},
    ],
)
def test_wrong_feature_count_is_refused_with_its_subsystem(change: dict[str, Any]) -> None:
    msg = message()
    msg["subsystems"]["ACS"].update(change)
    result = make_router().route(raw(msg))
    assert result.kind == WRONG_FEATURE_COUNT, result.rejection
    assert "subsystem ACS not routed" in (result.rejection or "")
    assert [o.subsystem for o in result.outputs] == list(SUBSYSTEMS[1:])


def test_faults_of_different_kinds_and_a_missing_subsystem_in_one_message() -> None:
    msg = message()
    msg["subsystems"]["ACS"]["features"] = [1.0] * 3
    msg["subsystems"]["PS"]["features"][0] = "oops"
    del msg["subsystems"]["SS"]
    result = make_router().route(raw(msg))
    assert result.kind == INVALID_MESSAGE  # mixed kinds
    reason = result.rejection or ""
    assert "subsystem ACS, PS not routed" in reason and "missing subsystem SS" in reason
    assert [o.subsystem.value for o in result.outputs] == ["Data", "EPS", "FSW", "TCS"]


def test_an_unknown_subsystem_name_is_dropped_and_reported() -> None:
    msg = message()
    msg["subsystems"]["XYZ"] = dict(msg["subsystems"]["ACS"])
    result = make_router().route(raw(msg))
    assert result.kind == INVALID_MESSAGE and "XYZ" in (result.rejection or "")
    assert len(result.outputs) == 7


def test_nothing_routed_when_every_subsystem_is_bad() -> None:
    msg = message()
    for reading in msg["subsystems"].values():
        reading["features"] = [0.0]
    result = make_router().route(raw(msg))
    assert result.outputs == () and result.kind == WRONG_FEATURE_COUNT


def test_a_partly_routed_message_advances_the_sequence() -> None:
    router = make_router()
    msg = message(record_index=3)
    del msg["subsystems"]["FSW"]
    assert router.route(raw(msg)).kind == MISSING_SUBSYSTEM
    assert router.route(raw(message(record_index=3))).kind == Rejection.DUPLICATE.value


# --------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------


def test_reason_kinds_become_bounded_metric_labels() -> None:
    labels = {reason_label(f"{kind}: some detail 123") for kind in REASON_KINDS}
    assert len(labels) == len(REASON_KINDS)
    assert "missing_subsystem" in labels and "non_finite_value" in labels


def test_sequence_tracker_remembers_a_bounded_number_of_indices() -> None:
    tracker = SequenceTracker(remember=3)
    for index in range(10):
        assert tracker.check("s", 0, index) is None
    assert tracker.check("s", 0, 8) is Rejection.DUPLICATE
    assert tracker.check("s", 0, 2) is Rejection.OUT_OF_ORDER  # too old to tell
    assert tracker.last("s") == (0, 9)
    assert tracker.last("other") is None
