from __future__ import annotations

import numpy as np
import pytest

from smap_bench import windows
from smap_bench.model import selection
from smap_bench.model.context import ContextConfig, held_out_context_flags
from smap_bench.model.rethreshold import refit_metadata, train_config_from
from smap_bench.model.threshold import ThresholdConfig, fit_threshold, window_statistic
from smap_bench.model.train import TrainConfig, array_sha256


def test_block_statistics_split_the_window_in_thirds() -> None:
    scores = np.array([[1.0] * 10 + [2.0] * 10 + [6.0] * 10])
    assert selection.stat_block_max(scores)[0] == pytest.approx(6.0)
    assert selection.stat_block_min(scores)[0] == pytest.approx(1.0)
    assert selection.stat_last_block(scores)[0] == pytest.approx(6.0)
    assert selection.stat_mean(scores)[0] == pytest.approx(3.0)
    assert selection.stat_median(scores)[0] == pytest.approx(2.0)
    assert selection.stat_max(scores)[0] == pytest.approx(6.0)


def test_a_statistic_refuses_a_flat_array() -> None:
    with pytest.raises(ValueError, match="window"):
        selection.stat_max(np.zeros(30))


def _segment(n: int = 200) -> np.ndarray:
    segment = np.zeros((n, 25), dtype=np.float32)
    segment[:, 0] = 0.5 * np.sin(np.arange(n) / 7.0)
    return segment


@pytest.mark.parametrize("kind", selection.ALL_KINDS)
def test_injection_changes_only_its_range_of_the_value(kind: str) -> None:
    segment = _segment()
    out, anomaly = selection.inject(segment, kind, np.random.default_rng(3), -0.5, 0.5)
    assert anomaly.kind == kind
    assert 0 <= anomaly.start <= anomaly.end < len(segment)
    changed = np.flatnonzero(out[:, 0] != segment[:, 0])
    assert changed.size > 0
    assert changed.min() >= anomaly.start and changed.max() <= anomaly.end
    np.testing.assert_array_equal(out[:, 1:], segment[:, 1:])
    assert np.all(np.abs(out[:, 0]) <= 1.0)


def test_injection_is_repeatable_per_channel_and_fold() -> None:
    a = selection.inject(_segment(), "spike", selection.injection_rng("A-1", 0, 1), -0.5, 0.5)
    b = selection.inject(_segment(), "spike", selection.injection_rng("A-1", 0, 1), -0.5, 0.5)
    c = selection.inject(_segment(), "spike", selection.injection_rng("A-1", 0, 0), -0.5, 0.5)
    assert a[1] == b[1]
    np.testing.assert_array_equal(a[0], b[0])
    assert (a[1].start, a[1].end) != (c[1].start, c[1].end) or not np.array_equal(a[0], c[0])


def test_injection_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        selection.inject(_segment(), "drift", np.random.default_rng(0), -0.5, 0.5)


@pytest.mark.parametrize("kind", selection.CONTEXTUAL_KINDS)
def test_contextual_injections_stay_inside_the_train_range(kind: str) -> None:
    segment = _segment()
    out, anomaly = selection.inject(segment, kind, np.random.default_rng(5), -0.5, 0.5)
    part = out[anomaly.start : anomaly.end + 1, 0]
    assert part.min() >= -0.5 - 1e-6 and part.max() <= 0.5 + 1e-6


def test_contextual_kinds_leave_the_first_kinds_copies_unchanged() -> None:
    """Injected after the first four, from the same generator: what the harness drew
    for the first four kinds does not move when the contextual ones are added."""
    rng_a, rng_b = (selection.injection_rng("E-5", 0, 1) for _ in range(2))
    first = [selection.inject(_segment(), k, rng_a, -0.5, 0.5)[1] for k in selection.KINDS]
    every = [selection.inject(_segment(), k, rng_b, -0.5, 0.5)[1] for k in selection.ALL_KINDS]
    assert every[: len(selection.KINDS)] == first


def test_reverse_plays_the_stretch_backwards_and_damped_keeps_its_mean() -> None:
    segment = _segment()
    out, anomaly = selection.inject(segment, "reverse", np.random.default_rng(1), -0.5, 0.5)
    part = slice(anomaly.start, anomaly.end + 1)
    np.testing.assert_allclose(out[part, 0], segment[part, 0][::-1])
    out, anomaly = selection.inject(segment, "damped", np.random.default_rng(1), -0.5, 0.5)
    part = slice(anomaly.start, anomaly.end + 1)
    assert out[part, 0].mean() == pytest.approx(segment[part, 0].mean(), abs=1e-6)
    assert out[part, 0].std() < 0.5 * segment[part, 0].std()


def _deviation_scorer(raw: np.ndarray) -> np.ndarray:
    """A stand-in model: per record, the squared distance of the value from the train
    sinusoid's range (0 inside [-0.5, 0.5]) plus a little noise."""
    value = raw[:, :, 0].astype(np.float64)
    outside = np.clip(np.abs(value) - 0.5, 0.0, None) ** 2
    noise = 1e-4 * (1 + np.abs(np.sin(value * 31.0)))
    return outside + noise


def test_judge_counts_injected_spikes_and_clean_false_alarms() -> None:
    train = _segment(2000)
    material = [
        selection.channel_material("X-1", train, _deviation_scorer, kinds=("spike", "level_shift"))
    ]
    loose, strict = selection.candidate_grid(["max"], qs=[1e-4], floor_factors=[1.0, 50.0])
    out_loose = selection.judge(loose, material)
    out_strict = selection.judge(strict, material)
    assert out_loose.injected == 4  # two folds, two kinds
    assert out_loose.clean_records == 400
    # spikes leave the train range, so the loose rule finds them; the strict one finds fewer
    assert out_loose.detected_by_kind["spike"] == 2
    assert out_strict.detected <= out_loose.detected
    assert out_strict.false_positives <= out_loose.false_positives


def test_judge_forms_segments_by_the_event_rule() -> None:
    # A clean half of 9 windows (records 0..109) whose windows 2, 4 and 6 score high: three
    # false-alarm segments 10 records apart, one event under a gap of 10.
    starts = windows.window_starts(110, 30, 10)
    scores = np.full((starts.size, 30), 1e-3)
    scores[[2, 4, 6]] = 1.0
    clean = selection.Judged(scores, starts, 110)
    fold = selection.Fold(threshold_scores=np.full((50, 30), 1e-3), clean=clean)
    material = [selection.ChannelMaterial("X-1", np.full((200, 30), 1e-3), [fold])]
    (candidate,) = selection.candidate_grid(["mean"], qs=[1e-4], floor_factors=[2.0])
    assert selection.judge(candidate, material).false_positives == 3
    assert selection.judge(candidate, material, event_gap=9).false_positives == 3
    assert selection.judge(candidate, material, event_gap=10).false_positives == 1


def test_expected_f1_follows_the_assumed_rarity() -> None:
    candidate = selection.candidate_grid(["mean"], qs=[1e-4], floor_factors=[1.0])[0]
    outcome = selection.Outcome(candidate, 5, 10, 2, 10_000, {})
    # recall 0.5; 2 false alarms per 10k records -> 0.2 per anomaly at R = 1000
    precision = 0.5 / (0.5 + 0.2)
    assert outcome.f1_at(1000) == pytest.approx(2 * precision * 0.5 / (precision + 0.5))
    assert outcome.f1_at(100_000) < outcome.f1_at(1000)
    assert outcome.false_alarms_per_10k == pytest.approx(2.0)


def test_select_prefers_higher_expected_f1_then_fewer_false_alarms() -> None:
    a, b, c = selection.candidate_grid(["mean"], qs=[1e-4], floor_factors=[1.0, 2.0, 3.0])
    many = selection.Outcome(a, 8, 10, 20, 10_000, {})
    few = selection.Outcome(b, 6, 10, 1, 10_000, {})
    same_but_more = selection.Outcome(c, 6, 10, 1, 10_000, {})
    assert selection.select([many, few, same_but_more], 2880).candidate == b
    # at a very high anomaly rate false alarms barely matter
    assert selection.select([many, few], 10).candidate == a
    with pytest.raises(ValueError, match="no candidate"):
        selection.select([])


def test_refit_metadata_fits_as_training_does_and_updates_the_hash() -> None:
    train = _segment(1000)
    old = TrainConfig()
    meta = {"threshold": 1.0, "settings": old.as_dict(), "metrics": {"x": 1}}
    config = ThresholdConfig(floor_factor=3.0)
    new = refit_metadata(meta, train, _deviation_scorer, config, {"chosen": "test"})
    n_val = round(len(train) * old.validation_fraction)
    fit = windows.make_windows(train[:-n_val], old.window, old.train_stride)
    val = windows.make_windows(train[-n_val:], old.window, 1)
    expected = fit_threshold(
        window_statistic(_deviation_scorer(fit)), window_statistic(_deviation_scorer(val)), config
    )
    assert new["threshold"] == pytest.approx(expected.value)
    assert new["settings"]["threshold"]["floor_factor"] == 3.0
    rebuilt = train_config_from(new["settings"])
    assert new["settings_hash"] == rebuilt.settings_hash(array_sha256(train))
    assert new["settings_hash"] != old.settings_hash(array_sha256(train))
    assert new["rule_selection"] == {"chosen": "test"}
    assert new["metrics"]["x"] == 1
    assert meta["threshold"] == 1.0  # the input is not changed


def test_the_context_detector_finds_what_the_window_score_cannot() -> None:
    # The stand-in model sees only values outside the train range; a frozen value stays
    # inside it. The context detector (100 records behind each window) sees the stopped
    # oscillation, and the clean halves, like the rest of training, raise no alarm.
    train = _segment(2000)
    context = ContextConfig(length=100, factor=3.0)
    material = [
        selection.channel_material(
            "X-1", train, _deviation_scorer, kinds=("frozen",), contexts=[context]
        )
    ]
    (candidate,) = selection.candidate_grid(["mean"], qs=[1e-4], floor_factors=[2.0])
    alone = selection.judge(candidate, material)
    with_context = selection.judge(candidate, material, context=context)
    assert alone.detected == 0
    assert with_context.detected == with_context.injected == 2
    assert with_context.false_positives == alone.false_positives == 0


def test_held_out_context_flags_never_match_the_stretch_itself() -> None:
    # A pulse that occurs once in training, inside the held-out stretch: were the stretch
    # among the references, its clean copy would match itself and raise nothing.
    values = 0.5 * np.sin(np.arange(1200) / 7.0)
    values[1050:1080] = 0.9
    starts = windows.window_starts(200, 30, 10)
    (flags,) = held_out_context_flags(
        values,
        -0.5,
        1.4,
        slice(1000, 1200),
        [values[1000:1200]],
        starts,
        30,
        ContextConfig(length=100, factor=3.0),
    )
    ends = 1000 + starts + 29
    assert flags[(ends >= 1050) & (ends < 1150)].all()
    assert not flags[ends < 1050].any()
