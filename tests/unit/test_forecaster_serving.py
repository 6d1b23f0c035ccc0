"""The linear forecaster in the live path: the buffer's forecast context, the scheduler's
task, the worker's statistic, the events stage's confirmation, and their agreement with
the offline evaluation (no services)."""

from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from smap_bench.confirmation import Confirmer, ForecastLane, ResultConfirmation, ResultRules
from smap_bench.data.loader import load_channel
from smap_bench.inference.onnx_backend import OnnxBackend
from smap_bench.model.forecaster import (
    ChannelForecaster,
    LinearForecasterConfig,
    context_statistic,
    linear_channel_forecaster,
)
from smap_bench.model.repository import read_metadata
from smap_bench.model.runner import _forecaster_record_flags
from smap_bench.model.stream_rule import StreamRule, confirmed_flags
from smap_bench.scheduling import Position, WindowScheduler
from smap_bench.schema import InferenceResult, InferenceTask, deterministic_job_id
from smap_bench.scoring import Forecasters, ScoreThreshold, score_tasks
from smap_bench.windows import (
    WindowBuffer,
    command_masks,
    commands_from_masks,
    record_flags_from_windows,
)
from tests.unit.result_samples import result
from tests.unit.test_confirmation import RULE, TOPIC, regime_statistics

from .test_scheduling import record

REPOSITORY = Path(__file__).resolve().parents[2] / "triton-repository"
T0 = datetime(2025, 11, 12, 10, 0, tzinfo=UTC)
CONFIG = LinearForecasterConfig()
#: A channel whose test split the forecaster flags (520 records, seed-0 models).
CHANNEL = "D-7"
#: The first window whose newest 10 records all have a forecast (records 0..259: 250 lags)
FIRST_FORECAST = 23


def _row(value: float, command: int | None = None) -> np.ndarray:
    row = np.zeros(25, dtype=np.float32)
    row[0] = value
    if command is not None:
        row[1 + command] = 1.0
    return row


# -- the forecast context --------------------------------------------------------------


def test_command_masks_round_trip_and_mark_what_a_mask_cannot_carry() -> None:
    commands = np.zeros((4, 24), dtype=np.float32)
    commands[1, [0, 23]] = 1.0
    commands[2, 5] = 1.0
    commands[3, 2] = 0.5  # not a 0/1 command
    masks = command_masks(commands)
    assert masks.tolist() == [0, 1 + (1 << 23), 1 << 5, -1]
    np.testing.assert_array_equal(commands_from_masks(masks[:3], 24), commands[:3])
    with pytest.raises(ValueError, match="negative"):
        commands_from_masks(masks, 24)


def test_the_buffer_hands_out_the_runs_last_values_and_masks() -> None:
    buffer = WindowBuffer(30, 10, forecast=50)
    rows = {i: _row(float(i), i % 3 if i % 2 else None) for i in range(200)}
    rows[75][4] = 2.0  # a command a mask cannot carry
    handed = {}
    for index in [*range(0, 120), *range(125, 200)]:  # a gap of 5 records after 119
        for window in buffer.push(1, index, rows[index]).windows:
            handed[window.last_record_index] = window
    masks = {i: int(command_masks(rows[i][None, 1:])[0]) for i in rows}
    # the run's records so far while it is shorter than the context, then the last 50
    for last, first in ((29, 0), (49, 0), (59, 10), (119, 70), (159, 125), (199, 150)):
        window = handed[last]
        assert window.forecast_values is not None and window.forecast_masks is not None
        np.testing.assert_array_equal(
            window.forecast_values, np.arange(first, last + 1, dtype=np.float32)
        )
        assert window.forecast_masks.tolist() == [masks[i] for i in range(first, last + 1)]
    assert handed[99].forecast_masks is not None and -1 in handed[99].forecast_masks.tolist()
    assert WindowBuffer(30, 10).push(0, 29, _row(1.0)).windows == ()
    with pytest.raises(ValueError, match="forecast"):
        WindowBuffer(30, 10, forecast=-1)


def test_the_scheduler_sends_the_forecast_context_with_the_task() -> None:
    scheduler = WindowScheduler(30, 10, forecast=60)
    tasks = []
    for offset, index in enumerate(range(80)):
        outcome = scheduler.accept(record(index), Position(TOPIC, 0, offset))
        if outcome.task is not None:
            tasks.append(outcome.task)
    assert [len(t.forecast_values or []) for t in tasks] == [30, 40, 50, 60, 60, 60]
    again = InferenceTask.model_validate_json(tasks[-1].model_dump_json())
    assert again.forecast_values == tasks[-1].forecast_values
    assert again.forecast_masks == tasks[-1].forecast_masks


def test_a_task_carries_values_and_masks_together() -> None:
    (task,) = _tasks(np.zeros((30, 25), dtype=np.float32), forecast=30)
    body = task.model_dump()
    with pytest.raises(ValidationError, match="together"):
        InferenceTask.model_validate({**body, "forecast_masks": None})
    with pytest.raises(ValidationError, match="together"):
        InferenceTask.model_validate({**body, "forecast_masks": [0] * 29})
    with pytest.raises(ValidationError, match="greater than or equal to -1"):
        InferenceTask.model_validate({**body, "forecast_masks": [-2] * 30})


# -- the worker's statistic ---------------------------------------------------------------


@pytest.fixture(scope="module")
def decided() -> ChannelForecaster:
    data = load_channel(CHANNEL)
    meta = read_metadata(REPOSITORY, CHANNEL)
    return linear_channel_forecaster(CHANNEL, data.train, meta, CONFIG, 10)


def _windows(split: np.ndarray, forecast: int) -> list:
    buffer = WindowBuffer(30, 10, forecast=forecast)
    return [w for i, row in enumerate(split) for w in buffer.push(0, i, row).windows]


def test_the_live_statistic_equals_the_offline_one_on_a_real_channel(
    decided: ChannelForecaster,
) -> None:
    test = load_channel(CHANNEL).test
    offline = decided.window_statistics(test, 30, 10)
    live = np.array(
        [
            np.nan
            if (s := context_statistic(decided, w.forecast_values, w.forecast_masks, 10)) is None
            else s
            for w in _windows(test, CONFIG.context_records(10))
        ]
    )
    assert len(live) == len(offline)
    np.testing.assert_array_equal(np.isfinite(live), np.isfinite(offline))
    assert np.flatnonzero(np.isfinite(live))[0] == FIRST_FORECAST
    judged = np.isfinite(offline)
    # the EWMA's start, 200 forecasts back, weighs (9/11)**200 = 4e-18: rounding only
    np.testing.assert_allclose(live[judged], offline[judged], rtol=1e-12, atol=0)
    window = _windows(test, CONFIG.context_records(10))[100]
    masks = window.forecast_masks.copy()
    masks[-1] = -1
    assert context_statistic(decided, window.forecast_values, masks, 10) is None


def _tasks(split: np.ndarray, forecast: int, channel: str = CHANNEL) -> list[InferenceTask]:
    tasks = []
    for window in _windows(split, forecast):
        start = window.first_record_index
        tasks.append(
            InferenceTask(
                job_id=deterministic_job_id("sat1", "ACS", 0, start),
                satellite_id="sat1",
                subsystem="ACS",
                model_name=f"SMAP_{channel}",
                input_data=window.data.tolist(),
                forecast_values=window.forecast_values.tolist(),
                forecast_masks=window.forecast_masks.tolist(),
                window_start=T0 + timedelta(seconds=start),
                window_end=T0 + timedelta(seconds=start + 29),
                loop=0,
                record_index_start=start,
                run_window_start=0,
                channel=channel,
            )
        )
    return tasks


class _ModelNeverFlags:
    """A threshold out of the model's reach: a window's flags are the forecaster's alone."""

    def __call__(self, model_name: str) -> ScoreThreshold:
        return ScoreThreshold(1e9)


def test_forecasters_fit_as_the_offline_evaluation_and_the_worker_flags_by_them(
    tmp_path: Path, decided: ChannelForecaster
) -> None:
    shutil.copytree(REPOSITORY / "onnx" / f"SMAP_{CHANNEL}", tmp_path / "onnx" / f"SMAP_{CHANNEL}")
    forecasters = Forecasters(tmp_path, None, CONFIG, 10)
    served = forecasters(f"SMAP_{CHANNEL}")
    assert served is not None and served.rule is not None and decided.rule is not None
    assert served.threshold_parameters == decided.threshold_parameters
    assert forecasters("SMAP_A-1") is None  # not in this repository: no forecaster
    tasks = _tasks(load_channel(CHANNEL).test, CONFIG.context_records(10))
    outcome = score_tasks(
        tasks, OnnxBackend(tmp_path), _ModelNeverFlags(), stride=10, forecasters=forecasters
    )
    assert outcome.rejected == [] and len(outcome.results) == len(tasks)
    for r in outcome.results:
        if r.forecast_statistic is None:
            assert r.record_index_start is not None and r.record_index_start < 230
            assert r.forecast_threshold is None and r.forecast_floor is None
            assert not r.is_anomaly
            continue
        assert r.forecast_threshold == decided.rule.static
        assert r.forecast_floor == decided.rule.floor  # the rule the events stage confirms by
        assert r.detected_by == (
            ["forecaster"] if r.forecast_statistic > r.forecast_threshold else []
        )
    assert any(r.detected_by for r in outcome.results)


# -- the events stage's confirmation -------------------------------------------------------


def _lane(rule: StreamRule | None = RULE, history: int = 210) -> ForecastLane:
    return ForecastLane(lambda _: rule, Confirmer(history))


def _forecast(index: int, statistic: float | None, model: float = 1.0, **kw) -> InferenceResult:
    """The result of window ``index`` of a stream whose run began at record 0."""
    flagged = statistic is not None and statistic > RULE.static
    detected = (["model"] if model > RULE.static else []) + (["forecaster"] if flagged else [])
    base = result(index * 10, anomalous=bool(detected), scores=[model] * 30, detected_by=detected)
    threshold = None if statistic is None else RULE.static
    return base.model_copy(
        update={
            "forecast_statistic": statistic,
            "forecast_threshold": threshold,
            "forecast_floor": None if statistic is None else RULE.floor,
            "run_window_start": 0,
            **kw,
        }
    )


@pytest.mark.parametrize("run_start", [0, None], ids=["run-known", "after-a-restart"])
def test_the_forecasters_flags_are_confirmed_on_its_own_statistics_in_any_order(
    run_start: int | None,
) -> None:
    """Results out of order, with the run's start known or not (a scheduler resumed
    mid-run): the windows without a forecast arrive too, so none waits out its patience."""
    stats = regime_statistics()
    first = FIRST_FORECAST
    confirmation = ResultConfirmation(lambda _: RULE, 10, Confirmer(210), _lane())
    order = list(range(600))
    rng = random.Random(3)
    for block in range(0, 600, 40):  # results overtake each other within 40 windows
        part = order[block : block + 40]
        rng.shuffle(part)
        order[block : block + 40] = part
    out = []
    for offset, index in enumerate(order):
        confirmation.seen((TOPIC, 0), offset)
        statistic = None if index < first else float(stats[index])
        body = _forecast(index, statistic, run_window_start=run_start)
        out += confirmation.offer(body, (TOPIC, 0), offset)
    assert len(out) == 600 and confirmation.waiting == 0
    assert confirmation.counts.incomplete == 0
    kept = sorted(r.record_index_start // 10 for r in out if r.is_anomaly)
    expected = first + np.flatnonzero(confirmed_flags(stats[first:], RULE))
    assert kept == expected.tolist()
    assert all(r.detected_by == ["forecaster"] for r in out if r.is_anomaly)
    assert len(kept) < int((stats[first:] > RULE.static).sum())  # the rule dropped some


def test_a_window_flagged_by_both_is_decided_once_both_are_judged() -> None:
    # histories of 3 windows (under min_history): a flag is kept when above its static
    confirmation = ResultConfirmation(lambda _: RULE, 10, Confirmer(3), _lane(history=3))
    for i in range(2):
        confirmation.offer(_forecast(i, 1.0), None, None)
    both = _forecast(3, 2.0, model=2.0)
    assert confirmation.offer(both, None, None) == []  # both wait for window 2
    assert confirmation.waiting == 2
    normal, decided = confirmation.offer(_forecast(2, 1.0), None, None)
    assert normal.record_index_start == 20 and not normal.is_anomaly
    assert decided.detected_by == ["model", "forecaster"] and decided.is_anomaly
    assert confirmation.waiting == 0
    # the forecaster's flag dropped by its own rule (a higher static): the model's stands
    dropped = ResultConfirmation(
        lambda _: RULE,
        10,
        Confirmer(3),
        _lane(StreamRule(floor=1.2, static=3.0), history=3),
    )
    for i in range(3):
        dropped.offer(_forecast(i, 1.0), None, None)
    (decided,) = dropped.offer(_forecast(3, 2.0, model=2.0), None, None)
    assert decided.detected_by == ["model"] and decided.is_anomaly
    (decided,) = dropped.offer(_forecast(4, 2.0), None, None)
    assert decided.detected_by == [] and not decided.is_anomaly


def test_a_forecaster_flag_without_a_rule_stands_and_is_counted() -> None:
    confirmation = ResultConfirmation(lambda _: RULE, 10, Confirmer(210), _lane(None))
    flagged = _forecast(30, 2.0)
    assert confirmation.offer(flagged, None, None) == [flagged]
    assert confirmation.unconfirmed == 1


def test_the_served_lane_confirms_by_the_rule_each_result_carries() -> None:
    rules = ResultRules("forecaster")
    flagged = _forecast(30, 2.0)
    rule = rules(flagged)
    assert rule is not None and (rule.floor, rule.static) == (RULE.floor, RULE.static)
    assert rules(_forecast(31, 2.5)) is rule  # built once per model and pair
    other = rules(_forecast(32, 2.0, forecast_floor=0.5))
    assert other is not None and other is not rule and other.floor == 0.5
    # a result that does not carry the rule (an older worker): its flag stands, counted
    confirmation = ResultConfirmation(
        lambda _: RULE, 10, Confirmer(210), ForecastLane(rules, Confirmer(210))
    )
    bare = _forecast(30, 2.0, forecast_floor=None)
    assert confirmation.offer(bare, None, None) == [bare]
    assert confirmation.unconfirmed == 1


def test_a_forecast_floor_without_its_threshold_is_refused() -> None:
    body = _forecast(30, 2.0).model_dump(mode="json")
    body["forecast_threshold"] = None
    with pytest.raises(ValidationError, match="forecast_floor"):
        InferenceResult.model_validate(body)


def test_read_back_fills_the_forecasters_history_too() -> None:
    confirmation = ResultConfirmation(lambda _: RULE, 10, Confirmer(210), _lane())
    stream = ("sat1", "EPS", 0)
    for index in range(30, 40):
        confirmation.remember(_forecast(index, 1.0))
    assert not confirmation.reaches_back(stream)  # the run's first windows are not read
    for index in range(0, 30):
        confirmation.remember(_forecast(index, None if index < FIRST_FORECAST else 1.0))
    assert confirmation.reaches_back(stream)
    # window 40, flagged, is judged at once on what was read back: windows 23..39
    (decided,) = confirmation.offer(_forecast(40, 2.0), None, None)
    assert decided.detected_by == ["forecaster"]
    assert confirmation.counts.incomplete == 0


# -- end to end on a real channel ----------------------------------------------------------


def test_served_forecaster_decisions_equal_the_offline_evaluations_on_a_real_channel(
    tmp_path: Path,
) -> None:
    """D-7's test split through the scheduler's buffer, the worker's scoring with the
    forecaster and the events stage's confirmation (results out of order), against the
    offline evaluation's record flags for the forecaster."""
    data = load_channel(CHANNEL)
    meta = read_metadata(REPOSITORY, CHANNEL)
    offline, _ = _forecaster_record_flags(data, meta, CONFIG, 30, 10)
    forecasters = Forecasters(REPOSITORY, None, CONFIG, 10)
    tasks = _tasks(data.test, CONFIG.context_records(10))
    outcome = score_tasks(
        tasks, OnnxBackend(REPOSITORY), _ModelNeverFlags(), stride=10, forecasters=forecasters
    )
    assert outcome.rejected == [] and len(outcome.results) == len(tasks)

    # the events stage's lane as served: each result's own rule, no forecaster fitted
    confirmation = ResultConfirmation(
        lambda _: None, 10, Confirmer(210), ForecastLane(ResultRules("forecaster"), Confirmer(210))
    )
    results = list(outcome.results)
    rng = random.Random(7)
    for block in range(0, len(results), 25):
        part = results[block : block + 25]
        rng.shuffle(part)
        results[block : block + 25] = part
    decided = [d for r in results for d in confirmation.offer(r, None, None)]
    assert len(decided) == len(tasks) and confirmation.counts.incomplete == 0
    decided.sort(key=lambda r: r.record_index_start or 0)
    starts = np.array([r.record_index_start for r in decided])
    live = record_flags_from_windows(
        np.array([r.is_anomaly for r in decided]), starts, len(data.test)
    )
    assert offline.any()
    np.testing.assert_array_equal(live, offline)
