from __future__ import annotations

import numpy as np
import pytest

from smap_bench.model.stream_rule import (
    StreamRule,
    StreamRuleConfig,
    StreamState,
    confirmed_flags,
    dynamic_epsilon,
    kept_by_pruning,
    stream_flags,
    stream_rule_from_metadata,
)


def _noise(n: int, seed: int = 0, level: float = 1.0, spread: float = 0.05) -> np.ndarray:
    return level + spread * np.random.default_rng(seed).standard_normal(n)


def test_a_spike_in_a_quiet_stream_is_flagged_and_the_noise_is_not() -> None:
    stats = _noise(300)
    stats[250] = 3.0
    flags = stream_flags(stats, floor=1.1, static=5.0)
    assert flags[250]
    assert flags.sum() == 1


def test_a_window_at_or_below_the_floor_is_never_flagged() -> None:
    stats = _noise(300, spread=0.001)
    stats[250] = 1.5  # far out for this stream, but no worse than the floor
    assert not stream_flags(stats, floor=1.5, static=5.0).any()
    assert stream_flags(stats, floor=1.49, static=5.0)[250]


def test_the_static_threshold_decides_until_the_history_is_long_enough() -> None:
    config = StreamRuleConfig(history=50, min_history=10)
    stats = np.full(20, 1.0)
    stats[3] = 2.0  # warm-up: above static
    stats[5] = 1.5  # warm-up: below static, though an outlier
    flags = stream_flags(stats, floor=0.5, static=1.8, config=config)
    assert flags[3] and not flags[5]


def test_a_silent_warm_up_raises_no_alarm_until_the_history_is_long_enough() -> None:
    stats = np.full(20, 1.0)
    stats[3] = 2.0  # above static in the warm-up: the static warm-up alarms, silent does not
    stats[15] = 2.0
    static = stream_flags(stats, 0.5, 1.8, StreamRuleConfig(history=50, min_history=10))
    silent = stream_flags(
        stats, 0.5, 1.8, StreamRuleConfig(history=50, min_history=10, warm_up="silent")
    )
    assert static[3] and not silent[3]
    assert silent[15] and static[15]  # after the warm-up both are the stream rule
    assert silent.sum() == 1


def test_a_seeded_rule_judges_a_stream_s_first_window_against_its_seed() -> None:
    config = StreamRuleConfig(history=50, min_history=10)
    seed = _noise(50, seed=4, level=1.0, spread=0.05)
    raised = np.full(12, 1.9)  # a stream that starts above static and stays there
    unseeded = StreamRule(0.5, 1.8, config).flags(raised)
    seeded = StreamRule(0.5, 1.8, config, seed=seed).flags(raised)
    assert unseeded[:9].all()  # the static warm-up alarms on every window
    assert seeded[0]  # against the seed's quiet history the raised start stands out
    # a stream like its seed: nothing stands out, from its first window
    assert not StreamRule(0.5, 1.8, config, seed=seed).flags(_noise(12, seed=5)).any()


def test_a_seed_fills_only_what_the_stream_has_not_and_keeps_its_newest() -> None:
    config = StreamRuleConfig(history=20, min_history=5)
    rule = StreamRule(0.5, 1.8, config, seed=np.arange(100.0))
    assert rule.seed.tolist() == list(range(80, 100))  # at most one history, newest last
    stream = _noise(30, seed=6)
    spike = stream.copy()
    spike[25] = 3.0
    # once the stream holds a whole history, the seed plays no part
    assert (rule.flags(spike)[20:] == StreamRule(0.5, 1.8, config).flags(spike)[20:]).all()


def test_a_short_stream_is_judged_after_the_newest_of_its_seed() -> None:
    config = StreamRuleConfig(history=20, min_history=5)
    # the seed's older half is loud, its newer half quiet
    seed = np.concatenate([_noise(10, seed=7, level=5.0, spread=0.5), _noise(10, seed=8)])
    stream = _noise(10, seed=9)
    stream[-1] = 3.0  # stands out against the quiet half, not against the loud one
    rule = StreamRule(0.5, 1.8, config, seed=seed)
    assert rule.judge(stream)  # judged on seed[-10:] (quiet) followed by the stream
    assert not StreamRule(0.5, 1.8, config, seed=seed[:10]).judge(stream)


def test_a_seed_must_be_finite() -> None:
    with pytest.raises(ValueError, match="seed"):
        StreamRule(0.5, 1.8, seed=[1.0, float("nan")])


def test_a_raised_regime_alarms_at_its_start_but_not_throughout() -> None:
    stats = np.concatenate([_noise(200, seed=1), _noise(400, seed=2, level=2.0)])
    flags = stream_flags(stats, floor=1.2, static=1.5)
    assert flags[200:210].any()  # the shift itself stands out
    assert flags[300:].sum() == 0  # once the history holds the new regime, it is normal
    assert (stats[300:] > 1.5).all()  # where the static rule would alarm on every window


def test_a_run_barely_above_the_normal_statistics_is_pruned() -> None:
    history = _noise(200, seed=3, spread=0.01)
    normal_max = history.max()
    history[50] = 10.0
    history[-1] = normal_max * 1.05  # 5 % over the largest normal statistic: pruned
    eps = normal_max + 0.001
    assert not kept_by_pruning(history, eps, prune=0.13)
    history[-1] = normal_max * 1.5  # a clear step down from the large run, and up from normal
    assert kept_by_pruning(history, eps, prune=0.13)
    history[50] = normal_max * 1.55  # a peer of its size: both kept together
    assert kept_by_pruning(history, eps, prune=0.13)


def test_pruning_keeps_nothing_when_the_newest_is_not_above_eps() -> None:
    history = _noise(100)
    history[-1] = 0.0
    assert not kept_by_pruning(history, eps=2.0, prune=0.13)


def test_dynamic_epsilon_sits_between_the_noise_and_a_clear_outlier() -> None:
    history = _noise(200, seed=4)
    history[100:103] = 4.0
    eps = dynamic_epsilon(history, StreamRuleConfig())
    assert history[history < 2].max() < eps < 4.0


def test_dynamic_epsilon_of_a_flat_history_is_its_value() -> None:
    assert dynamic_epsilon(np.full(50, 0.3), StreamRuleConfig()) == pytest.approx(0.3)


def test_deciding_window_by_window_resumes_like_one_pass() -> None:
    stats = _noise(500, seed=5)
    stats[[120, 300, 301, 450]] = [2.0, 3.0, 3.1, 1.6]
    rule = StreamRule(floor=1.1, static=5.0)
    whole = rule.flags(stats)
    state = StreamState.empty(rule.config)
    halves = [rule.decide(state, s) for s in stats[:260]] + [
        rule.decide(state, s) for s in stats[260:]
    ]
    np.testing.assert_array_equal(whole, halves)
    assert whole[[120, 300]].all()


def test_a_non_finite_statistic_is_refused() -> None:
    rule = StreamRule(floor=1.0, static=2.0)
    with pytest.raises(ValueError, match="not finite"):
        rule.decide(StreamState.empty(rule.config), float("nan"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"history": 1},
        {"min_history": 300},
        {"z_min": 0.0},
        {"z_step": 0.0},
        {"prune": 1.0},
        {"warm_up": "none"},
    ],
)
def test_config_refuses_impossible_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="stream rule"):
        StreamRuleConfig(**kwargs)  # type: ignore[arg-type]


def test_rule_from_metadata_takes_the_pot_initial_floor_and_the_threshold() -> None:
    meta = {"threshold": 0.8, "threshold_parameters": {"pot_initial": 0.3}}
    rule = stream_rule_from_metadata("SMAP_X-1", meta)
    assert (rule.floor, rule.static) == (0.3, 0.8)
    with pytest.raises(ValueError, match=r"SMAP_X-1.*pot_initial"):
        stream_rule_from_metadata("SMAP_X-1", {"threshold": 0.8})


def test_confirmed_flags_are_the_static_alarms_the_stream_rule_keeps() -> None:
    # a raised regime: the static threshold alarms on every window of it, the confirmed
    # rule only where the shift stands out against the stream's recent windows
    stats = np.concatenate([_noise(200, seed=1), _noise(400, seed=2, level=2.0)])
    rule = StreamRule(floor=1.2, static=1.5)
    static = stats > 1.5
    confirmed = confirmed_flags(stats, rule)
    assert np.array_equal(confirmed, static & rule.flags(stats))
    assert confirmed[200:210].any()
    assert confirmed.sum() < static.sum() / 10


def test_a_stream_rule_alarm_under_the_static_threshold_is_not_confirmed() -> None:
    stats = _noise(300)
    stats[250] = 3.0  # stands out in its stream, but no worse than training allows
    rule = StreamRule(floor=1.1, static=5.0)
    assert rule.flags(stats)[250]
    assert not confirmed_flags(stats, rule).any()


def test_judging_a_history_is_deciding_the_stream_window_by_window() -> None:
    stats = np.concatenate([_noise(240, seed=4), [2.5], _noise(60, seed=5)])
    rule = StreamRule(floor=1.1, static=1.2)
    flags = rule.flags(stats)
    history = rule.config.history
    judged = [rule.judge(stats[max(0, k - history + 1) : k + 1]) for k in range(len(stats))]
    assert judged == flags.tolist()
    assert [rule.confirms(stats[max(0, k - history + 1) : k + 1]) for k in range(len(stats))] == (
        confirmed_flags(stats, rule).tolist()
    )


@pytest.mark.parametrize("history", [np.array([]), np.ones((2, 2)), np.ones(211)])
def test_judge_refuses_a_history_of_the_wrong_shape(history: np.ndarray) -> None:
    with pytest.raises(ValueError, match="history"):
        StreamRule(floor=1.0, static=2.0).judge(history)
