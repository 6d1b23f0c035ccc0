"""The metric schema: telemetry, result and latency samples as Prometheus lines."""

from __future__ import annotations

import re

import numpy as np
import pytest

from smap_bench.catalog import SUBSYSTEMS, Subsystem
from smap_bench.metrics import (
    alarm_lines,
    latency_lines,
    prometheus_line,
    responsible_offsets,
    result_lines,
    series_per_satellite,
    telemetry_lines,
    timestep_times_ms,
)
from smap_bench.schema import NUM_FEATURES
from smap_bench.windows import record_scores, window_starts
from tests.unit.result_samples import T0, record_time, result, score_of, telemetry

LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+) (-?\d+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(line: str) -> tuple[str, dict[str, str], float, int]:
    """An independent reader of the lines (name, labels, value, timestamp ms)."""
    match = LINE.match(line)
    assert match, f"not a Prometheus sample line: {line!r}"
    name, body, value, ts = match.groups()
    labels = dict(LABEL.findall(body))
    assert ",".join(f'{k}="{v}"' for k, v in labels.items()) == body, body
    return name, labels, float(value), int(ts)


def series_key(line: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    name, labels, _, _ = parse(line)
    return name, tuple(sorted(labels.items()))


def ms(record_index: int) -> int:
    return int(record_time(record_index).timestamp() * 1000)


# --- telemetry ----------------------------------------------------------------------------


def test_telemetry_lines_hold_every_feature_at_the_record_timestamp() -> None:
    message = telemetry("sat7", record_index=42, loop=3)
    samples = [parse(line) for line in telemetry_lines(message)]
    assert len(samples) == 7 * NUM_FEATURES + 2
    assert {ts for *_, ts in samples} == {ms(42)}
    features = {
        (labels["subsystem"], int(labels["feature_index"])): value
        for name, labels, value, _ in samples
        if name == "smap_feature"
    }
    for k, sub in enumerate(SUBSYSTEMS):
        for j in range(NUM_FEATURES):
            assert features[(sub.value, j)] == pytest.approx(42 + k / 10 + j / 1000, abs=1e-12)
    by_name = {name: (labels, value) for name, labels, value, _ in samples}
    assert by_name["loop"] == ({"satellite_id": "sat7"}, 3.0)
    assert by_name["record_index"] == ({"satellite_id": "sat7"}, 42.0)


def test_telemetry_series_are_the_seeds_and_do_not_grow_with_records() -> None:
    first = {series_key(line) for line in telemetry_lines(telemetry("sat1", 0))}
    later = {series_key(line) for line in telemetry_lines(telemetry("sat1", 977, loop=2))}
    assert first == later
    assert len(first) == series_per_satellite()["telemetry"] == 177
    labels = {k for _, items in first for k, _ in items}
    assert labels == {"satellite_id", "subsystem", "feature_index"}


# --- results ------------------------------------------------------------------------------


def test_first_window_writes_every_record_and_later_ones_their_newest_stride() -> None:
    first = [parse(line) for line in result_lines(result(0), stride=10)]
    later = [parse(line) for line in result_lines(result(40), stride=10)]
    score_ts = lambda samples: sorted(  # noqa: E731
        ts for name, _, _, ts in samples if name == "inference_anomaly_score"
    )
    assert score_ts(first) == [ms(r) for r in range(0, 30)]
    assert score_ts(later) == [ms(r) for r in range(60, 70)]
    for name, _, value, ts in later:
        if name == "inference_anomaly_score":
            record = 60 + (ts - ms(60)) // 1000
            assert value == pytest.approx(score_of(record))
    assert len(later) == 5 + 27 * 10


def test_result_per_window_samples_sit_at_the_window_end() -> None:
    samples = [parse(line) for line in result_lines(result(10, anomalous=True), stride=10)]
    per_window = {name: (value, ts) for name, _, value, ts in samples}
    assert per_window["inference_anomaly_detected"] == (1.0, ms(39))
    assert per_window["inference_threshold"] == (1.0, ms(39))
    assert per_window["inference_time_ms"] == (12.5, ms(39))
    assert per_window["inference_anomaly_score_max"][0] == pytest.approx(score_of(39) + 10)
    normal = [parse(line) for line in result_lines(result(10, threshold=None), stride=10)]
    names = {name for name, *_ in normal}
    assert "inference_threshold" not in names
    assert {v for n, _, v, _ in normal if n == "inference_anomaly_detected"} == {0.0}


def test_the_context_detectors_numbers_sit_at_the_window_end_when_judged() -> None:
    judged = [parse(line) for line in result_lines(result(10, context_distance=0.75), 10)]
    per_window = {name: (value, ts) for name, _, value, ts in judged}
    assert per_window["inference_context_distance"] == (0.75, ms(39))
    assert per_window["inference_context_threshold"] == (0.5, ms(39))
    assert per_window["inference_context_hold"] == (7.0, ms(39))
    assert per_window["inference_context_hold_threshold"] == (30.0, ms(39))
    unjudged = {name for name, *_ in (parse(line) for line in result_lines(result(10), 10))}
    assert not {n for n in unjudged if n.startswith("inference_context")}


def test_reconstruction_samples_per_feature_and_their_mean() -> None:
    samples = [parse(line) for line in result_lines(result(20), stride=10)]
    at_45 = [(n, lab, v) for n, lab, v, ts in samples if ts == ms(45)]
    recon = {int(lab["feature_index"]): v for n, lab, v in at_45 if n == "inference_reconstruction"}
    assert recon == {j: pytest.approx(score_of(45) + j) for j in range(NUM_FEATURES)}
    (mean,) = [v for n, _, v in at_45 if n == "inference_reconstruction_mean"]
    assert mean == pytest.approx(score_of(45) + (NUM_FEATURES - 1) / 2)


def test_a_stream_of_windows_gives_each_record_one_score_as_the_evaluation_does() -> None:
    n_records = 95
    starts = window_starts(n_records, 30, 10)
    # Each window scores its records differently, so a record written twice would show.
    window_scores = np.array([[s * 100.0 + i for i in range(30)] for s in starts])
    timeline: dict[int, list[float]] = {}
    for s, scores in zip(starts, window_scores, strict=True):
        for line in result_lines(result(int(s), scores=scores.tolist()), stride=10):
            name, _, value, ts = parse(line)
            if name == "inference_anomaly_score":
                timeline.setdefault(ts, []).append(value)
    assert all(len(values) == 1 for values in timeline.values())
    expected = record_scores(window_scores, starts, n_records, 30, 10)
    covered = np.flatnonzero(~np.isnan(expected))
    assert sorted(timeline) == [ms(int(r)) for r in covered]
    for r in covered:
        assert timeline[ms(int(r))][0] == expected[r]


def test_inference_series_per_satellite_do_not_depend_on_the_window() -> None:
    keys: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for sub in SUBSYSTEMS:
        for start in (0, 10, 20, 500):
            judged = result(start, subsystem=sub, context_distance=0.25)
            keys |= {series_key(line) for line in result_lines(judged, 10)}
    assert len(keys) == series_per_satellite()["inference"] == 7 * 36
    labels = {k for _, items in keys for k, _ in items}
    assert labels == {"satellite_id", "subsystem", "model_name", "feature_index"}
    assert "job_id" not in labels and "timestep" not in labels


def test_results_without_a_grid_position_are_written_whole() -> None:
    assert responsible_offsets(None, 30, 10) == range(30)
    assert responsible_offsets(15, 30, 10) == range(30)  # off the stride grid
    assert responsible_offsets(0, 30, 10) == range(30)
    assert responsible_offsets(30, 30, 10) == range(20, 30)
    assert responsible_offsets(30, 30, 1) == range(29, 30)
    lines = result_lines(result(40, with_position=False), stride=10)
    assert sum(parse(line)[0] == "inference_anomaly_score" for line in lines) == 30


def test_model_name_is_escaped() -> None:
    (line, *_) = result_lines(result(0, model_name='odd"name\\x'), stride=10)
    assert 'model_name="odd\\"name\\\\x"' in line
    assert parse(line)[1]["model_name"] == 'odd\\"name\\\\x'


def test_timestep_times_spread_evenly_and_refuse_reversed_windows() -> None:
    assert timestep_times_ms(T0, record_time(29), 30) == [ms(r) for r in range(30)]
    assert timestep_times_ms(T0, T0, 1) == [ms(0)]
    with pytest.raises(ValueError, match="before window_start_time"):
        timestep_times_ms(record_time(5), T0, 30)
    bad = result(0).model_copy(update={"window_end_time": record_time(-5)})
    with pytest.raises(ValueError, match="before window_start_time"):
        result_lines(bad, stride=10)


# --- alarms -------------------------------------------------------------------------------


def test_alarm_lines_give_each_decided_window_its_verdict_on_the_workers_series() -> None:
    flagged = result(10, anomalous=True, subsystem=Subsystem.TCS, model_name="SMAP_T-1")
    # the worker flagged it, the events stage did not confirm it
    overruled = result(20, anomalous=True).model_copy(
        update={"is_anomaly": False, "detected_by": []}
    )
    decided = [flagged, result(0), overruled]
    samples = [parse(line) for line in alarm_lines(decided)]
    assert [(name, value, ts) for name, _, value, ts in samples] == [
        ("anomaly_alarm", 1.0, ms(39)),
        ("anomaly_alarm", 0.0, ms(29)),
        ("anomaly_alarm", 0.0, ms(49)),
    ]
    assert samples[0][1] == {"satellite_id": "sat1", "subsystem": "TCS", "model_name": "SMAP_T-1"}
    for item, (_, labels, _, ts) in zip(decided, samples, strict=True):
        (worker,) = [
            parse(line) for line in result_lines(item, 10) if "inference_anomaly_detected" in line
        ]
        assert (labels, ts) == (worker[1], worker[3])  # same stream labels, same timestamp
    assert alarm_lines([]) == []


def test_alarm_series_are_one_per_stream() -> None:
    keys = {
        series_key(line)
        for sub in SUBSYSTEMS
        for start in (0, 10, 500)
        for line in alarm_lines([result(start, subsystem=sub, anomalous=start == 10)])
    }
    assert len(keys) == series_per_satellite()["alarm"] == 7


def test_alarm_lines_refuse_reversed_windows() -> None:
    bad = result(0).model_copy(update={"window_end_time": record_time(-5)})
    with pytest.raises(ValueError, match="before window_start_time"):
        alarm_lines([bad])


# --- latency ------------------------------------------------------------------------------


def test_latency_lines_measure_each_known_stage_from_the_simulator() -> None:
    stages = {"simulator": 100.0, "router": 100.01, "scheduler": 100.05, "worker": 100.2}
    stages["made-up stage"] = 150.0
    lines = latency_lines(result(10, stages=stages, subsystem=Subsystem.TCS), written_at=100.3)
    samples = {parse(line)[1]["stage"]: parse(line) for line in lines}
    assert set(samples) == {"router", "scheduler", "worker", "writer"}
    assert samples["worker"][2] == pytest.approx(0.2)
    assert samples["writer"][2] == pytest.approx(0.3)
    name, labels, _, ts = samples["writer"]
    assert name == "smap_e2e_latency_seconds"
    assert labels == {"satellite_id": "sat1", "subsystem": "TCS", "stage": "writer"}
    assert ts == ms(39)
    assert latency_lines(result(10), written_at=1.0) == []
    assert latency_lines(result(10, stages={"router": 1.0}), written_at=2.0) == []


def test_series_count_per_satellite() -> None:
    counts = series_per_satellite()
    assert counts == {
        "telemetry": 177,
        "inference": 252,
        "latency": 28,
        "alarm": 7,
        "total": 464,
    }


def test_prometheus_line_still_refuses_non_finite_values() -> None:
    assert prometheus_line("m", {"a": 1}, 2.5, 1000) == 'm{a="1"} 2.5 1000'
    with pytest.raises(ValueError, match="not finite"):
        prometheus_line("m", {}, float("nan"), 0)
