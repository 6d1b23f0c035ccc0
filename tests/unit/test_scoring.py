"""Scoring tasks on the tiny ONNX model: the anomaly rule, thresholds, feature errors, errors."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from smap_bench.inference.base import (
    BackendUnavailableError,
    InferenceBackend,
    ModelSignature,
)
from smap_bench.inference.onnx_backend import OnnxBackend
from smap_bench.model.threshold import window_is_anomalous as offline_rule
from smap_bench.model.threshold import window_statistic
from smap_bench.scheduling import encode_tasks
from smap_bench.schema import InferenceResult, InferenceTask, deterministic_job_id
from smap_bench.scoring import (
    MetadataThresholds,
    ScoreThreshold,
    batch_feature_errors,
    feature_errors,
    load_threshold,
    parse_tasks,
    responsible_rows,
    score_tasks,
    score_threshold_from_metadata,
    threshold_from_metadata,
    window_is_anomalous,
    windows_anomalous,
    worker_index,
)
from smap_bench.windows import responsible_range

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "triton-repository"
T0 = datetime(2025, 11, 12, 10, 0, tzinfo=UTC)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A writable copy of the fixture repository (SMAP_T-1, SMAP_T-2, threshold 0.5)."""
    assert (FIXTURE / "onnx" / "SMAP_T-1" / "1" / "model.onnx").is_file(), (
        "fixture models missing: run .venv/bin/python tests/fixtures/make_onnx_repository.py"
    )
    shutil.copytree(FIXTURE, tmp_path / "repo")
    return tmp_path / "repo"


def set_threshold(repository: Path, model: str, value: Any) -> None:
    set_metadata(repository, model, threshold=value)


def set_metadata(repository: Path, model: str, **fields: Any) -> None:
    path = repository / "onnx" / model / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata.update(fields)
    path.write_text(json.dumps(metadata))
    stat = path.stat()  # make the change visible to an mtime cache within one tick
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def make_task(start: int, model: str = "SMAP_T-1", seed: int = 0, rows: int = 30) -> InferenceTask:
    data = np.random.default_rng(seed + start).normal(0, 1, (rows, 25))
    return InferenceTask(
        job_id=deterministic_job_id("sat3", "TCS", 1, start),
        satellite_id="sat3",
        subsystem="TCS",
        model_name=model,
        input_data=data.tolist(),
        window_start=T0 + timedelta(seconds=start),
        window_end=T0 + timedelta(seconds=start + rows - 1),
        loop=1,
        record_index_start=start,
        run_window_start=0,
        channel=model.removeprefix("SMAP_"),
        stages={"simulator": 100.0, "scheduler": 101.0},
    )


# --- the rule ---------------------------------------------------------------------------


def test_a_window_is_anomalous_when_its_statistic_exceeds_the_threshold() -> None:
    scores = np.array([[0.25] * 30, [0.25] * 29 + [7.75], [0.5] * 30])
    # means (exact in binary): 0.25, 0.5, 0.5; one high record lifts the whole window
    assert windows_anomalous(scores, 0.375).tolist() == [False, True, True]
    assert windows_anomalous(scores, 0.5).tolist() == [False, False, False]  # not above
    assert window_is_anomalous(scores[1], 0.375) and not window_is_anomalous(scores[0], 0.375)
    # the statistic the threshold was fitted on, and the offline evaluation's very rule
    np.testing.assert_array_equal(
        windows_anomalous(scores, 0.375), window_statistic(scores) > 0.375
    )
    np.testing.assert_array_equal(windows_anomalous(scores, 0.375), offline_rule(scores, 0.375))
    with pytest.raises(ValueError, match="need \\(window,\\)"):
        window_is_anomalous(scores, 0.1)


def test_responsible_rows_follow_the_windows_module() -> None:
    assert responsible_rows(0, 30, 10) == slice(0, 30)
    for start in (10, 20, 70):
        lo, hi = responsible_range(start, 30, 10)
        assert responsible_rows(start, 30, 10) == slice(lo - start, hi - start) == slice(20, 30)
    assert responsible_rows(None, 30, 10) == slice(0, 30)
    assert responsible_rows(15, 30, 10) == slice(0, 30)  # off the grid: all rows


def test_feature_errors_average_squared_errors_over_the_responsible_rows() -> None:
    window = np.zeros((30, 25))
    reconstruction = np.zeros((30, 25))
    reconstruction[25, 3] = 2.0  # inside rows 20..29
    reconstruction[5, 4] = 9.0  # outside
    errors = feature_errors(window, reconstruction, slice(20, 30))
    assert errors.shape == (25,)
    assert errors[3] == pytest.approx(4.0 / 10) and errors[4] == 0 and errors.sum() == 0.4


def test_batch_feature_errors_equal_the_one_window_form() -> None:
    rng = np.random.default_rng(3)
    windows, reconstruction = rng.normal(size=(3, 30, 25)), rng.normal(size=(3, 30, 25))
    rows = [slice(0, 30), slice(20, 30), slice(5, 7)]
    batch = batch_feature_errors(windows, reconstruction, rows)
    for i, selected in enumerate(rows):
        np.testing.assert_allclose(
            batch[i], feature_errors(windows[i], reconstruction[i], selected)
        )


# --- thresholds ---------------------------------------------------------------------------


def test_threshold_from_metadata_forms_and_errors() -> None:
    assert threshold_from_metadata("M", {"threshold": 0.25}) == 0.25
    assert threshold_from_metadata("M", {"threshold": {"value": 2, "method": "pot"}}) == 2.0
    for bad in (
        {},
        {"threshold": None},
        {"threshold": "0.3"},
        {"threshold": float("nan")},
        {"threshold": True},
        {"threshold": {"method": "pot"}},
    ):
        with pytest.raises(ValueError, match=r"M: metadata\.json has no finite threshold"):
            threshold_from_metadata("M", bad)


def test_the_floor_beside_the_threshold_is_none_when_metadata_has_no_usable_one() -> None:
    with_floor = {"threshold": 0.25, "threshold_parameters": {"pot_initial": 0.2}}
    assert score_threshold_from_metadata("M", with_floor) == ScoreThreshold(0.25, 0.2)
    for parameters in (
        None,
        {},
        {"pot_initial": None},
        {"pot_initial": True},
        {"pot_initial": float("nan")},
        {"pot_initial": "0.2"},
    ):
        metadata = {"threshold": 0.25, "threshold_parameters": parameters}
        assert score_threshold_from_metadata("M", metadata) == ScoreThreshold(0.25, None)
    with pytest.raises(ValueError, match="no finite threshold"):
        score_threshold_from_metadata("M", {"threshold_parameters": {"pot_initial": 0.2}})


def test_thresholds_are_read_cached_and_refreshed(repository: Path) -> None:
    thresholds = MetadataThresholds(repository)
    assert thresholds("SMAP_T-1") == load_threshold(repository, "SMAP_T-1") == ScoreThreshold(0.5)
    set_threshold(repository, "SMAP_T-1", {"value": 0.75})
    assert thresholds("SMAP_T-1") == ScoreThreshold(0.75)
    set_metadata(repository, "SMAP_T-1", threshold_parameters={"pot_initial": 0.6})
    assert thresholds("SMAP_T-1") == ScoreThreshold(0.75, floor=0.6)  # the stream rule's floor
    with pytest.raises(ValueError, match=r"SMAP_T-9: no metadata\.json"):
        thresholds("SMAP_T-9")


# --- scoring with the ONNX backend ----------------------------------------------------------


def test_score_tasks_gives_one_full_result_per_window(repository: Path) -> None:
    backend = OnnxBackend(repository)
    tasks = [make_task(s) for s in (0, 10, 20, 30)] + [make_task(0, "SMAP_T-2")]
    direct = backend.infer("SMAP_T-1", np.stack([t.input_array() for t in tasks[:4]]))
    stats = window_statistic(direct.score)
    threshold = float(np.median(stats))  # two windows above, two not
    set_metadata(
        repository,
        "SMAP_T-1",
        threshold=threshold,
        threshold_parameters={"pot_initial": threshold / 2},
    )

    outcome = score_tasks(tasks, backend, MetadataThresholds(repository), stride=10)
    assert outcome.rejected == [] and outcome.deferred == []
    assert [r.job_id for r in outcome.results] == [t.job_id for t in tasks]
    results = outcome.results[:4]
    assert [r.is_anomaly for r in results] == (stats > threshold).tolist()
    assert sum(r.is_anomaly for r in results) == 2
    for i, (result, task) in enumerate(zip(results, tasks, strict=False)):
        InferenceResult.model_validate_json(result.model_dump_json())  # a valid message
        np.testing.assert_allclose(result.anomaly_scores, direct.score[i], rtol=1e-6)
        # reconstructions are rounded to RECONSTRUCTION_DECIMALS (6)
        np.testing.assert_allclose(result.reconstructions, direct.reconstruction[i], atol=5e-7)
        assert result.mean_anomaly_score == pytest.approx(float(direct.score[i].mean()))
        assert result.max_anomaly_score == pytest.approx(float(direct.score[i].max()))
        assert result.threshold == threshold and result.window_size == 30
        assert result.stream_floor == threshold / 2  # the rule the events stage confirms by
        assert (result.loop, result.record_index_start, result.channel) == (
            1,
            task.record_index_start,
            "T-1",
        )
        assert result.run_window_start == task.run_window_start == 0
        assert result.window_start_time == task.window_start
        assert result.window_end_time == task.window_end
        assert result.service == "inference-worker" and result.status == "success"
        assert result.stages is not None and result.stages["simulator"] == 100.0
        assert result.stages["worker"] >= result.stages["scheduler"]
        rows = slice(0, 30) if task.record_index_start == 0 else slice(20, 30)
        expected = ((task.input_array()[rows] - direct.reconstruction[i][rows]) ** 2).mean(axis=0)
        np.testing.assert_allclose(result.feature_errors, expected, rtol=1e-5, atol=1e-9)
    assert outcome.results[4].model_name == "SMAP_T-2" and outcome.results[4].threshold == 0.5
    assert outcome.results[4].stream_floor is None  # its metadata has no floor


def test_bad_tasks_are_rejected_with_reasons(repository: Path) -> None:
    good = make_task(10).model_dump(mode="json")
    broken = {**good, "input_data": [[1.0] * 24] * 30}
    tasks, rejected = parse_tasks([good, broken, "nonsense"])
    assert [t.job_id for t in tasks] == [good["job_id"]]
    assert rejected[0].job_id == good["job_id"] and "row 0 has 24 values" in rejected[0].reason
    assert rejected[1].reason.startswith("InferenceTask: ")
    assert json.loads(rejected[1].payload()) == "nonsense"
    assert parse_tasks(good)[0][0].job_id == good["job_id"]  # the seed's single task
    # the scheduler's form: one JSON string; a bad item is found and the others kept
    sent = [make_task(s) for s in (0, 10)]
    assert parse_tasks(encode_tasks(sent)) == (sent, [])
    text = json.dumps([json.loads(encode_tasks(sent))[0], broken])
    tasks, rejected = parse_tasks(text)
    assert tasks == sent[:1] and "row 0 has 24 values" in rejected[0].reason
    assert parse_tasks("x")[1][0].reason.startswith("payload is not JSON")
    assert "payload is a int" in parse_tasks(42)[1][0].reason

    set_threshold(repository, "SMAP_T-2", None)
    (repository / "onnx" / "SMAP_T-9").mkdir()
    (repository / "onnx" / "SMAP_T-9" / "metadata.json").write_text('{"threshold": 1}')
    batch = [
        make_task(0),
        make_task(10, rows=29),  # the wrong size among good windows
        make_task(20, "SMAP_T-2"),  # no threshold
        make_task(30, "SMAP_T-9"),  # threshold but no model
        make_task(40, "SMAP_T-1", seed=1),
    ]
    outcome = score_tasks(batch, OnnxBackend(repository), MetadataThresholds(repository), stride=10)
    assert [r.record_index_start for r in outcome.results] == [0, 40]
    reasons = {r.job_id: r.reason for r in outcome.rejected}
    assert "window has 29 rows" in reasons[batch[1].job_id]
    assert "SMAP_T-2: metadata.json has no finite threshold" in reasons[batch[2].job_id]
    assert "SMAP_T-9" in reasons[batch[3].job_id] and "no such model" in reasons[batch[3].job_id]
    assert json.loads(outcome.rejected[0].payload())["job_id"] == outcome.rejected[0].job_id


def test_windows_the_model_refuses_are_isolated(repository: Path) -> None:
    short = [make_task(s, rows=29) for s in (0, 10)]  # all of one size, the model's is 30
    outcome = score_tasks(short, OnnxBackend(repository), MetadataThresholds(repository), stride=10)
    assert outcome.results == [] and len(outcome.rejected) == 2
    assert all("expected (B, 30, 25)" in r.reason for r in outcome.rejected)


class DownBackend(InferenceBackend):
    """A backend whose server cannot be reached."""

    name = "down"

    def signature(self, model_name: str) -> ModelSignature:
        return ModelSignature(30, 25)

    def _infer(self, model_name: str, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise BackendUnavailableError(model_name, "cannot reach Triton at 127.0.0.1:1")

    def ready(self, model_name: str) -> bool:
        return False

    def models(self) -> list[str]:
        return []


def test_an_unavailable_backend_defers_the_windows(repository: Path) -> None:
    tasks = [make_task(0), make_task(10)]
    outcome = score_tasks(tasks, DownBackend(), MetadataThresholds(repository), stride=10)
    assert outcome.results == [] and outcome.rejected == []
    assert outcome.deferred == tasks
    assert outcome.deferred_reason is not None and "cannot reach Triton" in outcome.deferred_reason


def test_worker_index() -> None:
    assert worker_index("worker1@host") == 0
    assert worker_index("worker2@host.example") == 1
    assert worker_index("celery@host") == 0
    assert worker_index(None) == 0
    assert worker_index("worker1@host", "5") == 5
    with pytest.raises(ValueError):
        worker_index(None, "-1")
