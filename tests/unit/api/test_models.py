"""Request schemas refuse what the database would refuse, so it is a 422, never a 500."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from smap_bench.api.models import (
    AlarmTransitionCreate,
    CommentCreate,
    SatelliteUpdate,
    StreamViewPublic,
)


def test_satellite_update_takes_only_what_is_given() -> None:
    assert SatelliteUpdate().model_dump(exclude_unset=True) == {}
    assert SatelliteUpdate(display_name=None).model_dump(exclude_unset=True) == {
        "display_name": None
    }
    assert SatelliteUpdate(active=False).model_dump(exclude_unset=True) == {"active": False}


def test_active_cannot_be_null_and_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="active must be true or false"):
        SatelliteUpdate(active=None)
    with pytest.raises(ValidationError, match="actve"):
        SatelliteUpdate.model_validate({"actve": True})


@pytest.mark.parametrize("text", ["nul\x00byte", "bell\x07", "esc\x1b[31m"])
def test_control_characters_are_refused_in_free_text(text: str) -> None:
    with pytest.raises(ValidationError, match="control characters"):
        CommentCreate(comment=text)
    with pytest.raises(ValidationError, match="control characters"):
        SatelliteUpdate(display_name=text)


def test_newlines_and_tabs_are_fine_in_comments() -> None:
    assert CommentCreate(comment="line 1\n\tline 2").comment == "line 1\n\tline 2"


@pytest.mark.parametrize("operator", ["", "a" * 65, "x;drop", "tab\there"])
def test_operator_names_are_bounded(operator: str) -> None:
    with pytest.raises(ValidationError):
        AlarmTransitionCreate(action="acknowledge", operator=operator)


def test_a_stream_view_without_verdicts_is_still_valid_and_says_none() -> None:
    # the verdicts came later than the view: an answer built without them has none
    empty: list[object] = []
    view = StreamViewPublic.model_validate(
        {
            "satellite_id": "sat1",
            "subsystem": "ACS",
            "start": "2026-01-01T00:00:00Z",
            "end": "2026-01-01T00:10:00Z",
            "telemetry": empty,
            "scores": empty,
            "thresholds": empty,
            "detections": [
                {"labels": {}, "feature_index": None, "timestamps": [1.0], "values": [0.0]}
            ],
            "record_index": empty,
            "events": empty,
            "heatmap_start": None,
            "heatmap_end": None,
            "heat_input": empty,
            "heat_output": empty,
            "server_ms": 1.0,
        }
    )
    assert view.verdicts == [] and view.detections[0].values == [0.0]
    assert "verdicts" in StreamViewPublic.model_json_schema()["properties"]
