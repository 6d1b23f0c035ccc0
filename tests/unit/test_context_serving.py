"""The context detector in the live path: the buffer's context, the scheduler's task, the
worker's decision, and their agreement with the offline evaluation (no services)."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from smap_bench.data.loader import load_channel
from smap_bench.inference.onnx_backend import OnnxBackend
from smap_bench.model.context import ContextConfig, ContextDetector, fit_context_detector
from smap_bench.model.repository import read_metadata
from smap_bench.model.runner import _context_record_flags
from smap_bench.scheduling import Position, WindowScheduler
from smap_bench.schema import InferenceTask, deterministic_job_id
from smap_bench.scoring import ContextDetectors, MetadataThresholds, ScoreThreshold, score_tasks
from smap_bench.windows import WindowBuffer, record_flags_from_windows, window_starts

from .test_scheduling import TOPIC, features, record

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "triton-repository"
T0 = datetime(2025, 11, 12, 10, 0, tzinfo=UTC)


def _row(value: float) -> np.ndarray:
    row = np.zeros(25, dtype=np.float32)
    row[0] = value
    return row


def test_the_buffer_hands_out_the_last_context_values_of_the_run() -> None:
    buffer = WindowBuffer(30, 10, context=50)
    contexts = {}
    for index in [*range(0, 120), *range(125, 200)]:  # a gap of 5 records after 119
        result = buffer.push(1, index, _row(float(index)))
        for window in result.windows:
            contexts[window.last_record_index] = window.context
    assert contexts[39] is None  # 40 records behind it: fewer than 50
    np.testing.assert_array_equal(contexts[49], np.arange(0, 50, dtype=np.float32))
    np.testing.assert_array_equal(contexts[119], np.arange(70, 120, dtype=np.float32))
    # after the gap the run starts again: no context until 50 consecutive records
    assert contexts[159] is None and contexts[169] is None
    np.testing.assert_array_equal(contexts[179], np.arange(130, 180, dtype=np.float32))
    np.testing.assert_array_equal(contexts[199], np.arange(150, 200, dtype=np.float32))


def test_a_new_loop_starts_the_context_again() -> None:
    buffer = WindowBuffer(30, 10, context=40)
    for index in range(60):
        buffer.push(1, index, _row(1.0))
    windows = [w for i in range(40) for w in buffer.push(2, i, _row(2.0)).windows]
    assert [w.context is None for w in windows] == [True, False]
    assert windows[1].context is not None and set(windows[1].context.tolist()) == {2.0}


def test_a_buffer_without_context_hands_none() -> None:
    buffer = WindowBuffer(30, 10)
    windows = [w for i in range(100) for w in buffer.push(1, i, _row(float(i))).windows]
    assert windows and all(w.context is None for w in windows)
    with pytest.raises(ValueError, match="context"):
        WindowBuffer(30, 10, context=-1)


def test_the_scheduler_sends_the_context_with_the_task() -> None:
    scheduler = WindowScheduler(30, 10, context=40)
    tasks = []
    for offset, index in enumerate(range(70)):
        outcome = scheduler.accept(record(index), Position(TOPIC, 0, offset))
        if outcome.task is not None:
            tasks.append(outcome.task)
    assert [t.record_index_start for t in tasks] == [0, 10, 20, 30, 40]
    assert [t.context is None for t in tasks] == [True, False, False, False, False]
    expected = [np.float32(features(i)[0]) for i in range(30, 70)]
    assert tasks[-1].context == pytest.approx(expected)
    # the task survives the trip through JSON and validation
    again = InferenceTask.model_validate_json(tasks[-1].model_dump_json())
    assert again.context == tasks[-1].context


def _periodic(n: int) -> np.ndarray:
    return 0.5 + 0.4 * np.sin(2 * np.pi * np.arange(n) / 20)


@pytest.fixture
def detector() -> ContextDetector:
    return fit_context_detector(_periodic(400), 0.0, 1.0, ContextConfig(40, 3.0))


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "repo")
    return tmp_path / "repo"


def _task(start: int, context: list[float] | None) -> InferenceTask:
    data = np.random.default_rng(start).normal(0, 1, (30, 25))
    return InferenceTask(
        job_id=deterministic_job_id("sat3", "TCS", 1, start),
        satellite_id="sat3",
        subsystem="TCS",
        model_name="SMAP_T-1",
        input_data=data.tolist(),
        context=context,
        window_start=T0 + timedelta(seconds=start),
        window_end=T0 + timedelta(seconds=start + 29),
        loop=1,
        record_index_start=start,
        channel="T-1",
    )


def test_the_worker_flags_a_window_by_its_context(
    repository: Path, detector: ContextDetector
) -> None:
    metadata = repository / "onnx" / "SMAP_T-1" / "metadata.json"
    metadata.write_text(json.dumps({**json.loads(metadata.read_text()), "threshold": 1e9}))
    like_training = _periodic(40).tolist()
    stopped = [0.5] * 40  # the oscillation stopped
    tasks = [_task(0, None), _task(10, like_training), _task(20, stopped), _task(30, [0.5] * 10)]
    outcome = score_tasks(
        tasks,
        OnnxBackend(repository),
        MetadataThresholds(repository),
        stride=10,
        contexts=lambda model: detector,
    )
    assert outcome.rejected == []
    by_start = {r.record_index_start: r for r in outcome.results}
    assert sorted(by_start) == [0, 10, 20, 30]
    # no context: judged by the model alone (whose threshold nothing reaches here)
    assert by_start[0].context_distance is None and by_start[0].context_threshold is None
    assert not by_start[0].is_anomaly
    assert by_start[10].context_distance == pytest.approx(0.0, abs=1e-6)
    assert not by_start[10].is_anomaly
    assert by_start[20].context_distance > detector.threshold
    assert by_start[20].context_threshold == detector.threshold
    assert by_start[20].is_anomaly
    # a context of another length (scheduler and worker settings differ): the model's
    # decision stands and the window is scored, not lost
    assert by_start[30].context_distance is None and not by_start[30].is_anomaly
    assert by_start[30].context_hold is None and by_start[30].context_hold_threshold is None
    # every judged window carries its hold: 40 records held (the stopped oscillation)
    # against the minimum of 30 (the periodic train split never holds a value)
    assert by_start[10].context_hold == 1 and by_start[20].context_hold == 40
    assert by_start[20].context_hold_threshold == 30.0
    assert by_start[10].detected_by == [] and by_start[20].detected_by == ["context", "hold"]


def test_the_worker_flags_a_window_by_its_hold(repository: Path) -> None:
    metadata = repository / "onnx" / "SMAP_T-1" / "metadata.json"
    metadata.write_text(json.dumps({**json.loads(metadata.read_text()), "threshold": 1e9}))
    # the distance cannot flag (its threshold at least 10): only the hold can
    detector = fit_context_detector(
        _periodic(400), 0.0, 1.0, ContextConfig(40, 1e6, min_distance=10.0)
    )
    held = _periodic(40).tolist()
    held[-31:] = [held[-31]] * 31  # held 31 records, one more than the minimum of 30
    short = _periodic(40).tolist()
    short[-30:] = [short[-30]] * 30
    outcome = score_tasks(
        [_task(0, held), _task(10, short)],
        OnnxBackend(repository),
        MetadataThresholds(repository),
        stride=10,
        contexts=lambda model: detector,
    )
    by_start = {r.record_index_start: r for r in outcome.results}
    assert by_start[0].context_hold == 31 and by_start[0].is_anomaly
    assert by_start[0].detected_by == ["hold"]
    assert by_start[10].context_hold == 30 and not by_start[10].is_anomaly
    assert by_start[0].context_distance < detector.threshold


def test_live_context_decisions_equal_the_offline_ones(detector: ContextDetector) -> None:
    test = _periodic(400)
    test[250:330] = 0.5
    test[360:370] = 0.95
    offline = detector.window_flags(test, window_starts(len(test), 30, 10), 30)
    buffer = WindowBuffer(30, 10, context=40)
    live = []
    for index, value in enumerate(test.astype(np.float32)):
        for window in buffer.push(1, index, _row(float(value))).windows:
            context = window.context
            live.append(
                context is not None
                and bool(
                    detector.flags_of(
                        detector.distances_of(context[None]), detector.holds_of(context[None], 30)
                    )[0]
                )
            )
    assert offline.any() and not offline.all()
    assert live == offline.tolist()


def test_context_detectors_need_the_normalisation_and_retry_a_failed_fit(
    repository: Path, tmp_path: Path
) -> None:
    now = [0.0]
    detectors = ContextDetectors(repository, None, ContextConfig(40, 3.0), clock=lambda: now[0])
    # the fixture model's metadata has no normalisation: no detector, the model alone
    assert detectors("SMAP_T-1") is None
    assert detectors("SMAP_NO-SUCH") is None
    metadata = repository / "onnx" / "SMAP_T-1" / "metadata.json"
    before = metadata.stat()
    meta = json.loads(metadata.read_text())
    meta["normalisation"] = {"offset": [0.0] * 25, "scale": [1.0] * 25}
    metadata.write_text(json.dumps(meta))
    os.utime(metadata, ns=(before.st_atime_ns, before.st_mtime_ns))  # a change unseen
    now[0] = 30.0
    assert detectors("SMAP_T-1") is None  # the failure is kept for a while
    now[0] = 61.0
    fitted = detectors("SMAP_T-1")  # then tried again
    assert fitted is not None and np.isfinite(fitted.threshold)
    assert detectors("SMAP_T-1") is fitted


def test_a_detector_whose_distance_cannot_be_fitted_judges_the_hold_alone(
    repository: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metadata = repository / "onnx" / "SMAP_T-1" / "metadata.json"
    meta = json.loads(metadata.read_text())
    meta["normalisation"] = {"offset": [0.0] * 25, "scale": [1.0] * 25}
    meta["threshold"] = 1e9
    metadata.write_text(json.dumps(meta))
    # 60 train records: contexts of 40, but no two of them 40 records apart
    data_dir = tmp_path / "data"
    (data_dir / "train").mkdir(parents=True)
    (data_dir / "test").mkdir()
    train = np.zeros((60, 25), dtype=np.float32)
    train[:, 0] = _periodic(60)
    np.save(data_dir / "train" / "T-1.npy", train)
    np.save(data_dir / "test" / "T-1.npy", train)
    (data_dir / "labeled_anomalies.csv").write_text(
        'chan_id,spacecraft,anomaly_sequences,class,num_values\nT-1,SMAP,"[[10, 20]]",[point],60\n'
    )
    with caplog.at_level("WARNING"):
        detector = ContextDetectors(repository, data_dir, ContextConfig(40, 3.0))("SMAP_T-1")
    assert detector is not None
    assert detector.threshold == np.inf and detector.hold_threshold == 30.0
    assert "judged by its hold alone" in caplog.text
    held = [0.25] * 40
    outcome = score_tasks(
        [_task(0, held), _task(10, _periodic(40).tolist())],
        OnnxBackend(repository),
        MetadataThresholds(repository),
        stride=10,
        contexts=lambda model: detector,
    )
    by_start = {r.record_index_start: r for r in outcome.results}
    # an infinite threshold is never sent: the distance is reported, the threshold not
    assert by_start[0].context_threshold is None and by_start[0].context_distance is not None
    assert by_start[0].is_anomaly and by_start[0].context_hold == 40
    assert not by_start[10].is_anomaly


def test_context_detectors_without_the_channels_data_give_none(
    repository: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    assert ContextDetectors(repository, tmp_path / "empty", ContextConfig(40))("SMAP_T-1") is None


class _ModelNeverFlags:
    """The served threshold for every model: out of the model's reach, so a window's
    decision is the context's alone."""

    def __call__(self, model_name: str) -> ScoreThreshold:
        return ScoreThreshold(1e9)


@pytest.mark.parametrize("channel", ["T-1", "P-1"])
def test_served_decisions_equal_the_offline_evaluations_on_a_real_channel(channel: str) -> None:
    """T-1 (whose test split the context's distance flags) and P-1 (whose test split its
    hold flags) through the scheduler's buffer and the worker's scoring with its context
    detectors, against the offline evaluation's record flags."""
    repository = Path(__file__).resolve().parents[2] / "triton-repository"
    data = load_channel(channel)
    config = ContextConfig()
    meta = read_metadata(repository, channel)
    offline, fitted = _context_record_flags(data, meta, config, 30, 10)
    detectors = ContextDetectors(repository, None, config)
    detector = detectors(f"SMAP_{channel}")
    assert detector is not None
    assert (detector.threshold, detector.hold_threshold) == (
        fitted.threshold,
        fitted.hold_threshold,
    )
    buffer = WindowBuffer(30, 10, context=config.length)
    tasks = []
    for index, row in enumerate(data.test):
        for window in buffer.push(0, index, row).windows:
            start = window.first_record_index
            tasks.append(
                InferenceTask(
                    job_id=deterministic_job_id("sat1", "ACS", 0, start),
                    satellite_id="sat1",
                    subsystem="ACS",
                    model_name=f"SMAP_{channel}",
                    input_data=window.data.tolist(),
                    context=None if window.context is None else window.context.tolist(),
                    window_start=T0 + timedelta(seconds=start),
                    window_end=T0 + timedelta(seconds=start + 29),
                    loop=0,
                    record_index_start=start,
                    channel=channel,
                )
            )
    outcome = score_tasks(
        tasks, OnnxBackend(repository), _ModelNeverFlags(), stride=10, contexts=detectors
    )
    assert outcome.rejected == [] and len(outcome.results) == len(tasks)
    results = sorted(outcome.results, key=lambda r: r.record_index_start or 0)
    starts = np.array([r.record_index_start for r in results])
    decisions = np.array([r.is_anomaly for r in results])
    live = record_flags_from_windows(decisions, starts, len(data.test))
    assert offline.any()
    np.testing.assert_array_equal(live, offline)


def test_the_worker_refuses_the_level_check_it_does_not_judge(repository: Path) -> None:
    # offline, ContextDetector.window_flags judges the level check; the worker's
    # judgements do not, so serving it would part live from offline: refused
    with pytest.raises(ValueError, match="level check is not served"):
        ContextDetectors(repository, None, ContextConfig(40, 3.0, level_margin=1.0))
