"""The seed's messages: round trips, extra fields, and a clear error for each bad input."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from smap_bench.catalog import SUBSYSTEMS, Subsystem
from smap_bench.schema import (
    InferenceResult,
    InferenceTask,
    SubsystemReading,
    SubsystemRecord,
    TelemetryMessage,
    decode,
    describe,
    deterministic_job_id,
    encode,
)

T0 = datetime(2025, 11, 12, 10, 0, tzinfo=UTC)
ROW = [0.25] + [0.0] * 23 + [1.0]


def telemetry() -> dict[str, Any]:
    """The seed's example message, with all seven subsystems."""
    return {
        "satellite_id": "sat1",
        "timestamp": "2025-11-12T10:00:00+00:00",
        "loop": 1,
        "record_index": 1080,
        "subsystems": {
            s.value: {"code": s.code, "features": list(ROW), "num_features": 25} for s in SUBSYSTEMS
        },
    }


def record() -> dict[str, Any]:
    return {
        "satellite_id": "sat2",
        "subsystem": "EPS",
        "code": "E",
        "timestamp": T0.isoformat(),
        "loop": 1,
        "record_index": 7,
        "features": list(ROW),
        "num_features": 25,
    }


def task(rows: int = 30) -> dict[str, Any]:
    return {
        "job_id": deterministic_job_id("sat1", "ACS", 1, 0),
        "satellite_id": "sat1",
        "subsystem": "ACS",
        "model_name": "SMAP_A-1",
        "input_data": [list(ROW) for _ in range(rows)],
        "window_start": T0.isoformat(),
        "window_end": (T0 + timedelta(seconds=rows - 1)).isoformat(),
    }


def result(window: int = 30) -> dict[str, Any]:
    return {
        "satellite_id": "sat1",
        "subsystem": "ACS",
        "model_name": "SMAP_A-1",
        "window_size": window,
        "window_start_time": T0.isoformat(),
        "window_end_time": (T0 + timedelta(seconds=window - 1)).isoformat(),
        "mean_anomaly_score": 0.01,
        "max_anomaly_score": 0.05,
        "is_anomaly": False,
        "anomaly_scores": [0.01] * window,
        "reconstructions": [list(ROW) for _ in range(window)],
        "inference_time_ms": 3.5,
        "timestamp": (T0 + timedelta(seconds=window)).isoformat(),
        "service": "inference-worker",
        "status": "success",
        "job_id": deterministic_job_id("sat1", "ACS", 1, 0),
    }


MODELS: list[tuple[type[BaseModel], Any]] = [
    (TelemetryMessage, telemetry),
    (SubsystemRecord, record),
    (InferenceTask, task),
    (InferenceResult, result),
]


def _error(model: type[BaseModel], data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    line = describe(caught.value)
    assert "\n" not in line and line.startswith(model.__name__)
    return line


# --- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "make"), MODELS)
def test_round_trip_keeps_every_field(model: type[BaseModel], make: Any) -> None:
    data = make()
    message = model.model_validate(data)
    raw = encode(message)
    again = decode(model, raw)
    assert again == message
    assert json.loads(raw) == json.loads(encode(again))
    assert set(data) <= set(json.loads(raw))  # none of the seed's fields dropped or renamed


def test_timestamps_are_written_as_in_the_seed() -> None:
    raw = json.loads(encode(TelemetryMessage.model_validate(telemetry())))
    assert raw["timestamp"] == "2025-11-12T10:00:00+00:00"
    assert list(raw["subsystems"]) == [s.value for s in SUBSYSTEMS]
    assert raw["subsystems"]["Data"] == {"code": "D", "features": ROW, "num_features": 25}


def test_z_suffix_and_other_offsets_are_read() -> None:
    data = telemetry() | {"timestamp": "2025-11-12T19:00:00+09:00"}
    assert TelemetryMessage.model_validate(data).timestamp == T0
    data = telemetry() | {"timestamp": "2025-11-12T10:00:00Z"}
    assert TelemetryMessage.model_validate(data).timestamp == T0


@pytest.mark.parametrize(("model", "make"), MODELS)
def test_extra_fields_are_kept(model: type[BaseModel], make: Any) -> None:
    message = decode(model, json.dumps(make() | {"trace": {"hop": 3}}))
    assert json.loads(encode(message))["trace"] == {"hop": 3}


def test_optional_stage_fields() -> None:
    stages = {"simulator": 1.0, "router": 1.5}
    message = TelemetryMessage.model_validate(telemetry() | {"stages": stages})
    rec = SubsystemRecord.from_message(message, Subsystem.PS)
    assert rec.subsystem is Subsystem.PS and rec.code == "P" and rec.stages == stages
    assert (rec.record_index, rec.loop, rec.timestamp) == (1080, 1, T0)
    full = task() | {"loop": 2, "record_index_start": 40, "channel": "A-1", "stages": stages}
    parsed = InferenceTask.model_validate(full)
    assert parsed.record_index_start == 40 and parsed.window_size == 30
    assert parsed.input_array().shape == (30, 25) and parsed.input_array().dtype == np.float32
    scored = InferenceResult.model_validate(result() | {"threshold": 0.2, "stages": stages})
    assert scored.threshold == 0.2 and scored.stages == stages


def test_reading_from_an_array() -> None:
    reading = SubsystemReading.from_values(Subsystem.TCS, np.arange(25, dtype=np.float32))
    assert reading.code == "T" and reading.num_features == 25 and reading.features[24] == 24.0


def test_detected_by_must_fit_the_decision() -> None:
    flagged = result() | {"is_anomaly": True}
    assert InferenceResult.model_validate(flagged | {"detected_by": ["model", "hold"]})
    assert InferenceResult.model_validate(result() | {"detected_by": []}).detected_by == []
    assert InferenceResult.model_validate(flagged).detected_by is None  # does not say
    assert "does not fit is_anomaly" in _error(InferenceResult, flagged | {"detected_by": []})
    assert "does not fit" in _error(InferenceResult, result() | {"detected_by": ["context"]})
    newer = InferenceResult.model_validate(flagged | {"detected_by": ["model", "spectrum"]})
    assert newer.detected_by == ["model", "spectrum"]  # a newer worker's detector is kept
    assert "detected_by.0" in _error(InferenceResult, flagged | {"detected_by": ["Bad Name"]})


@pytest.mark.parametrize("model, make", [(InferenceTask, task), (InferenceResult, result)])
def test_a_run_begins_at_or_before_its_window(model: type[BaseModel], make: Any) -> None:
    placed = make() | {"loop": 1, "record_index_start": 40}
    assert model.model_validate(placed | {"run_window_start": 40}).run_window_start == 40
    assert model.model_validate(placed).run_window_start is None  # not known
    assert "is after record_index_start 40" in _error(model, placed | {"run_window_start": 50})
    assert "needs record_index_start" in _error(model, make() | {"run_window_start": 0})


def test_window_size_is_not_fixed_at_30() -> None:
    assert InferenceTask.model_validate(task(rows=10)).window_size == 10
    assert InferenceResult.model_validate(result(window=10)).window_size == 10


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "make"), MODELS)
def test_each_missing_field(model: type[BaseModel], make: Any) -> None:
    for field in make():
        data = make()
        del data[field]
        assert _error(model, data) == f"{model.__name__}: {field}: Field required"


@pytest.mark.parametrize("count", [24, 26, 0])
def test_wrong_feature_count(count: int) -> None:
    data = telemetry()
    data["subsystems"]["EPS"]["features"] = [0.0] * count
    assert _error(TelemetryMessage, data) == (
        f"TelemetryMessage: subsystems.EPS: features has {count} values but num_features is 25"
    )
    data["subsystems"]["EPS"]["num_features"] = count
    assert f"subsystems.EPS: num_features is {count}, expected 25" in _error(TelemetryMessage, data)
    rec = record() | {"features": [0.0] * count}
    assert f"features has {count} values but num_features is 25" in _error(SubsystemRecord, rec)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_rejected_everywhere(bad: float) -> None:
    data = telemetry()
    data["subsystems"]["ACS"]["features"][3] = bad
    assert "subsystems.ACS.features.3: Input should be a finite number" in _error(
        TelemetryMessage, data
    )
    data = record()
    data["features"][0] = bad
    assert "features.0: Input should be a finite number" in _error(SubsystemRecord, data)
    data = task()
    data["input_data"][29][24] = bad
    assert "input_data.29.24" in _error(InferenceTask, data)
    data = result()
    data["anomaly_scores"][5] = bad
    assert "anomaly_scores.5" in _error(InferenceResult, data)
    data = result()
    data["reconstructions"][1][2] = bad
    assert "reconstructions.1.2" in _error(InferenceResult, data)
    assert "mean_anomaly_score" in _error(InferenceResult, result() | {"mean_anomaly_score": bad})


def test_nan_literal_in_json_is_rejected() -> None:
    raw = json.dumps(telemetry()).replace("0.25", "NaN", 1)
    assert "NaN" in raw
    with pytest.raises(ValidationError) as caught:
        decode(TelemetryMessage, raw)
    assert "finite number" in describe(caught.value)


def test_unknown_subsystem_name() -> None:
    data = telemetry()
    data["subsystems"]["GNC"] = data["subsystems"].pop("ACS")
    assert "subsystems.GNC.[key]: Input should be 'ACS', 'Data'" in _error(TelemetryMessage, data)
    for model, make in MODELS[1:]:
        assert "subsystem: Input should be 'ACS'" in _error(model, make() | {"subsystem": "acs2"})


def test_code_must_match_the_subsystem() -> None:
    data = telemetry()
    data["subsystems"]["FSW"]["code"] = "S"
    line = _error(TelemetryMessage, data)
    assert line == (
        "TelemetryMessage: subsystems.FSW: code 'S' does not match subsystem FSW (expected 'F')"
    )
    assert "code 'A' does not match subsystem EPS" in _error(
        SubsystemRecord, record() | {"code": "A"}
    )


def test_empty_subsystems_and_bad_ids() -> None:
    assert "subsystems" in _error(TelemetryMessage, telemetry() | {"subsystems": {}})
    assert "satellite_id" in _error(TelemetryMessage, telemetry() | {"satellite_id": "sat 1/x"})
    assert "record_index" in _error(TelemetryMessage, telemetry() | {"record_index": -1})


def test_naive_timestamps_are_rejected() -> None:
    line = _error(TelemetryMessage, telemetry() | {"timestamp": "2025-11-12T10:00:00"})
    assert line == "TelemetryMessage: timestamp: Input should have timezone info"


def test_bad_windows() -> None:
    ragged = task()
    ragged["input_data"][4] = ragged["input_data"][4][:20]
    assert "input_data row 4 has 20 values, expected 25" in _error(InferenceTask, ragged)
    assert "input_data is empty" in _error(InferenceTask, task() | {"input_data": []})
    backwards = task() | {"window_end": (T0 - timedelta(seconds=1)).isoformat()}
    assert "window_end" in _error(InferenceTask, backwards)
    short = result()
    short["anomaly_scores"] = short["anomaly_scores"][:29]
    assert "anomaly_scores has 29 values, expected window_size 30" in _error(InferenceResult, short)
    wide = result()
    wide["reconstructions"][0] = [*wide["reconstructions"][0], 0.0]
    assert "reconstructions row 0 has 26 values" in _error(InferenceResult, wide)
    tall = result()
    tall["reconstructions"].append(list(ROW))
    assert "reconstructions has 31 rows, expected 30" in _error(InferenceResult, tall)


def test_assignment_is_validated() -> None:
    message = SubsystemRecord.model_validate(record())
    with pytest.raises(ValidationError):
        message.features = [float("nan")] * 25


def test_describe_other_errors_and_long_ones() -> None:
    assert describe(KeyError("x")) == "KeyError: 'x'"
    assert len(describe(ValueError("y" * 1000), limit=80)) == 80
    with pytest.raises(ValidationError) as caught:
        decode(TelemetryMessage, b"{not json")
    assert describe(caught.value).startswith("TelemetryMessage: Invalid JSON")
    data = telemetry()
    del data["loop"], data["record_index"]
    with pytest.raises(ValidationError) as caught:
        TelemetryMessage.model_validate(data)
    assert describe(caught.value).endswith("(+1 more)")


# --- job ids ----------------------------------------------------------------------------


def test_deterministic_job_id() -> None:
    job = deterministic_job_id("sat1", Subsystem.ACS, 1, 30)
    assert uuid.UUID(job).version == 5
    assert (
        job
        == deterministic_job_id("sat1", "ACS", 1, 30)
        == deterministic_job_id("sat1", "acs", 1, 30)
    )
    others = {
        deterministic_job_id("sat2", "ACS", 1, 30),
        deterministic_job_id("sat1", "EPS", 1, 30),
        deterministic_job_id("sat1", "ACS", 2, 30),
        deterministic_job_id("sat1", "ACS", 1, 40),
    }
    assert len(others) == 4 and job not in others
