"""The live confirmation: per stream, in window order, whatever order results come in."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from smap_bench.anomaly_events import InMemoryEvents, span_of
from smap_bench.confirmation import (
    Arrival,
    Confirmer,
    Judgement,
    ResultConfirmation,
    ResultRules,
    judged_result,
)
from smap_bench.event_store import EventsHandler
from smap_bench.model.stream_rule import StreamRule, StreamRuleConfig, confirmed_flags
from smap_bench.schema import InferenceResult, encode
from smap_bench.stage import StageMetrics
from tests.unit.result_samples import FakeDeadLetter, FakeMessage, result
from tests.unit.test_event_store import MemoryStore

RULE = StreamRule(floor=1.2, static=1.5)
TOPIC = "inference-results"


def regime_statistics(seed: int = 0) -> np.ndarray:
    """A quiet stream, then a raised regime with excursions: many static alarms, few kept."""
    rng = np.random.default_rng(seed)
    stats = 1.0 + 0.05 * rng.standard_normal(600)
    stats[300:] += 1.0
    stats[[120, 450, 520]] += 1.5
    return stats


def arrival(
    index: int,
    stats: np.ndarray,
    loop: int = 0,
    offset: int | None = None,
    run_first: int | None = None,
) -> Arrival:
    flagged = bool(stats[index] > RULE.static)
    return Arrival(
        ("sat1", "EPS", loop),
        index,
        float(stats[index]),
        flagged,
        RULE if flagged else None,
        item=index,
        partition=(TOPIC, 0),
        offset=index if offset is None else offset,
        run_first=run_first,
    )


def run(
    confirmer: Confirmer,
    order: list[int],
    stats: np.ndarray,
    run_first: Any = None,
) -> dict[int, Any]:
    """Add the windows in ``order``; ``run_first`` (a value, or a function of the index)
    says where each one's run began."""
    decided = {}
    for index in order:
        first = run_first(index) if callable(run_first) else run_first
        for judgement in confirmer.add(arrival(index, stats, run_first=first)):
            decided[judgement.item] = judgement
    return decided


def test_in_order_the_decisions_are_the_offline_confirmed_rule() -> None:
    stats = regime_statistics()
    decided = run(Confirmer(210), list(range(len(stats))), stats)
    flagged = np.flatnonzero(stats > RULE.static)
    assert sorted(decided) == flagged.tolist()
    confirmed = [i for i, j in decided.items() if j.confirmed]
    assert confirmed == np.flatnonzero(confirmed_flags(stats, RULE)).tolist()
    assert 0 < len(confirmed) < len(flagged) / 5  # the raised regime is mostly not confirmed
    assert all(j.complete for j in decided.values())


@pytest.mark.parametrize("seed", range(5))
def test_out_of_order_arrivals_give_the_same_decisions(seed: int) -> None:
    stats = regime_statistics(seed)
    order = list(range(len(stats)))
    rng = random.Random(seed)
    for start in range(0, len(order), 12):  # results overtake each other within 12 windows
        block = order[start : start + 12]
        rng.shuffle(block)
        order[start : start + 12] = block
    confirmer: Confirmer[int] = Confirmer(210)
    decided = run(confirmer, order, stats)
    expected = confirmed_flags(stats, RULE)
    assert {i: j.confirmed for i, j in decided.items()} == {
        int(i): bool(expected[i]) for i in np.flatnonzero(stats > RULE.static)
    }
    assert confirmer.waiting == 0
    assert confirmer.counts.incomplete == 0


def test_a_flagged_window_waits_for_its_history_and_holds_back_the_commit() -> None:
    stats = regime_statistics()
    confirmer: Confirmer[int] = Confirmer(210)
    for index in range(120):
        confirmer.seen((TOPIC, 0), index)
        if index != 100:  # window 100 is late
            assert confirmer.add(arrival(index, stats)) == []
    confirmer.seen((TOPIC, 0), 120)
    assert confirmer.add(arrival(120, stats)) == []  # flagged: waits for window 100
    assert confirmer.waiting == 1
    assert confirmer.commit_positions() == {(TOPIC, 0): 120}  # a restart reads it again
    confirmer.seen((TOPIC, 0), 121)
    judged = confirmer.add(arrival(100, stats, offset=121))
    assert [(j.item, j.confirmed, j.complete) for j in judged] == [(120, True, True)]
    assert confirmer.commit_positions() == {(TOPIC, 0): 122}


def test_a_window_that_never_comes_costs_patience_then_an_incomplete_judgement() -> None:
    stats = regime_statistics()
    confirmer: Confirmer[int] = Confirmer(210, patience=5, grace_s=0.0)
    decided = run(confirmer, [i for i in range(125) if i != 100], stats)
    assert decided == {}  # 120 waits for 100
    decided = run(confirmer, [125], stats)  # five windows later
    assert [(i, j.complete) for i, j in decided.items()] == [(120, False)]
    assert confirmer.counts.incomplete == 1


def test_a_burst_out_of_order_is_waited_for_by_the_grace_not_judged_by_count() -> None:
    """A backlog caught up forms a stream's windows in a burst: two workers put window 125
    on the topic before window 100, a fraction of a second apart. Within ``grace_s`` the
    count does not judge window 120; its history comes, and it is judged complete."""
    now = [0.0]
    stats = regime_statistics()
    confirmer: Confirmer[int] = Confirmer(210, patience=5, clock=lambda: now[0])
    assert run(confirmer, [i for i in range(126) if i != 100], stats) == {}
    now[0] = 0.3
    decided = run(confirmer, [100], stats)
    assert [(i, j.complete) for i, j in decided.items()] == [(120, True)]
    assert (confirmer.counts.incomplete, confirmer.counts.late) == (0, 0)
    # a window that does not come: the count judges once the grace has passed
    stats[200] = RULE.static * 2
    run(confirmer, [i for i in range(126, 206) if i != 150], stats)
    now[0] = 3.0
    decided = run(confirmer, [206], stats)
    assert [(i, j.complete) for i, j in decided.items()] == [(200, False)]


def test_a_history_window_that_comes_after_its_flag_was_judged_is_counted_late() -> None:
    stats = regime_statistics()
    confirmer: Confirmer[int] = Confirmer(210, patience=5, grace_s=0.0)
    run(confirmer, [i for i in range(126) if i != 100], stats)  # 120 judged without 100
    assert (confirmer.counts.incomplete, confirmer.counts.late) == (1, 0)
    run(confirmer, [124], stats)  # a redelivery of a window that was there: not late
    assert confirmer.counts.late == 0
    run(confirmer, [100], stats)  # late, not lost
    assert confirmer.counts.late == 1
    run(confirmer, [130], stats)  # after the flag: no history of a window given up on
    assert confirmer.counts.late == 1


def test_a_waiting_window_is_judged_once_its_patience_in_seconds_runs_out() -> None:
    now = [0.0]
    stats = regime_statistics()
    confirmer: Confirmer[int] = Confirmer(210, patience_s=10.0, clock=lambda: now[0])
    run(confirmer, [i for i in range(121) if i != 100], stats)
    now[0] = 9.0
    assert confirmer.expire() == []
    now[0] = 10.0
    assert [(j.item, j.complete) for j in confirmer.expire()] == [(120, False)]
    assert confirmer.waiting == 0


def test_patience_runs_out_as_of_a_time() -> None:
    now = [0.0]
    stats = regime_statistics()
    confirmer: Confirmer[int] = Confirmer(210, patience_s=10.0, clock=lambda: now[0])
    now[0] = 5.0
    run(confirmer, [i for i in range(121) if i != 100], stats)  # window 120 waits from 5 s
    now[0] = 30.0
    assert confirmer.expire(as_of=4.0) == []  # as of a time before it came: no wait at all
    assert confirmer.expire(as_of=14.0) == []
    (judged,) = confirmer.expire(as_of=15.0)
    assert (judged.item, judged.complete) == (120, False)


def test_a_new_loop_judges_and_forgets_the_loops_before_the_one_it_follows() -> None:
    stats = regime_statistics()
    confirmer: Confirmer[int] = Confirmer(210)
    run(confirmer, [i for i in range(121) if i != 100], stats)
    assert confirmer.waiting == 1
    later = Arrival(("sat1", "EPS", 1), 0, 1.0, False, None, item=-1)
    assert confirmer.add(later) == []  # loop 1 follows loop 0: loop 0 is still wanted
    latest = Arrival(("sat1", "EPS", 2), 0, 1.0, False, None, item=-2)
    assert [(j.item, j.complete) for j in confirmer.add(latest)] == [(120, False)]
    assert confirmer.streams == 2


def test_history_read_back_on_start_makes_the_judgements_complete() -> None:
    now = [1_000.0]
    stats = regime_statistics()
    confirmer: Confirmer[int] = Confirmer(210, idle_s=600.0, clock=lambda: now[0])
    for index in range(120):
        confirmer.remember(("sat1", "EPS", 0), index, float(stats[index]))
    now[0] += 599.0
    assert confirmer.expire() == []  # read back now: not an idle stream
    assert confirmer.streams == 1
    decided = run(confirmer, [120], stats)
    assert [(i, j.confirmed, j.complete) for i, j in decided.items()] == [(120, True, True)]


def test_a_read_back_reaches_far_enough_at_its_run_s_first_window() -> None:
    """A stream that joined at window 40 reaches back far enough once window 40 is read
    back; one whose results do not say where their run began needs window 0."""
    stats = regime_statistics()
    told: Confirmer[int] = Confirmer(210)
    untold: Confirmer[int] = Confirmer(210)
    stream = ("sat1", "EPS", 0)
    for index in range(150, 40, -1):  # read back from the newest window down to 41
        told.remember(stream, index, float(stats[index]), run_first=40)
        untold.remember(stream, index, float(stats[index]))
    assert not told.reaches_back(stream)
    told.remember(stream, 40, float(stats[40]), run_first=40)
    untold.remember(stream, 40, float(stats[40]))
    assert told.reaches_back(stream) and not untold.reaches_back(stream)


def test_a_stream_that_joins_mid_loop_waits_for_no_window_before_its_run() -> None:
    """Windows 40.. only, saying their run begins at 40: every flagged window is judged as
    it comes, on a complete history, exactly as the offline rule judges the stream from
    window 40 on. Without saying so, each waits until its patience runs out."""
    stats = regime_statistics()
    confirmer: Confirmer[int] = Confirmer(210, patience=5, grace_s=0.0)
    joined = list(range(40, len(stats)))
    decided = run(confirmer, joined, stats, run_first=40)
    expected = confirmed_flags(stats[40:], RULE)
    flagged = [i for i in joined if stats[i] > RULE.static]
    assert {i: j.confirmed for i, j in decided.items()} == {
        i: bool(expected[i - 40]) for i in flagged
    }
    assert confirmer.counts.incomplete == 0 and confirmer.waiting == 0

    unknown: Confirmer[int] = Confirmer(210, patience=5, grace_s=0.0)
    assert run(unknown, list(range(40, 125)), stats) == {}  # 120 waits for windows 0..39
    assert [(i, j.complete) for i, j in run(unknown, [125], stats).items()] == [(120, False)]


@pytest.mark.parametrize("before_first", [True, False])
def test_after_a_gap_a_run_is_judged_on_its_own_windows_whatever_the_order(
    before_first: bool,
) -> None:
    """Windows 200..209 were never formed (a gap in the records): the run after it begins
    at 210. Its flagged windows wait for and are judged on the windows of their own run
    only, out of order too, whether the windows before the gap came first or last."""
    stats = regime_statistics()
    before, after = list(range(200)), list(range(210, 360))
    order, first = after[:], after[:40]
    random.Random(1).shuffle(first)  # the new run's first results out of order
    order[:40] = first
    confirmer: Confirmer[int] = Confirmer(210, patience=50)
    runs = [(before, 0), (order, 210)] if before_first else [(order, 210), (before, 0)]
    decided = {}
    for indices, run_first in runs:
        decided |= run(confirmer, indices, stats, run_first=run_first)
    assert confirmer.counts.incomplete == 0 and confirmer.waiting == 0
    expected = confirmed_flags(stats[210:360], RULE)
    flagged = [i for i in after if stats[i] > RULE.static]
    assert flagged and {i: decided[i].confirmed for i in flagged} == {
        i: bool(expected[i - 210]) for i in flagged
    }


def test_a_flagged_window_needs_its_rule_and_a_finite_statistic() -> None:
    confirmer: Confirmer[int] = Confirmer(210)
    with pytest.raises(ValueError, match="rule"):
        confirmer.add(Arrival(("s", "EPS", 0), 0, 2.0, True, None, item=0))
    with pytest.raises(ValueError, match="finite"):
        confirmer.add(Arrival(("s", "EPS", 0), 0, float("nan"), True, RULE, item=0))
    with pytest.raises(ValueError, match="finite"):
        confirmer.add(Arrival(("s", "EPS", 0), 0, float("inf"), False, None, item=0))
    # a window without a statistic (NaN, unflagged) has arrived and is no part of a history
    assert confirmer.add(Arrival(("s", "EPS", 0), 0, float("nan"), False, None, item=0)) == []
    with pytest.raises(ValueError, match="negative"):
        confirmer.add(Arrival(("s", "EPS", 0), -1, 1.0, False, None, item=0))
    with pytest.raises(ValueError, match="precede"):
        confirmer.add(Arrival(("s", "EPS", 0), 3, 1.0, False, None, item=0, run_first=4))


# -- inference results ----------------------------------------------------------------


def flat_scores(value: float) -> list[float]:
    return [value] * 30


def test_results_keep_only_the_detectors_that_stand() -> None:
    confirmation = ResultConfirmation(lambda _: RULE, 10, Confirmer(210))
    stats = regime_statistics()
    out = []
    for index in range(301):  # window 300 starts the raised regime: confirmed
        value = float(stats[index])
        flagged = value > RULE.static
        detected = (["model"] if flagged else []) + (["hold"] if index == 350 else [])
        out += confirmation.offer(
            result(
                index * 10,
                anomalous=bool(detected),
                scores=flat_scores(value),
                detected_by=detected,
            ),
            (TOPIC, 0),
            index,
        )
    assert len(out) == 301
    kept = [r.record_index_start // 10 for r in out if r.is_anomaly]
    assert kept == np.flatnonzero(confirmed_flags(stats[:301], RULE)).tolist()
    # a raised window that is also held: the hold stands, the model's alarm does not
    raised = float(stats[350])
    both = result(3500, anomalous=True, scores=flat_scores(raised), detected_by=["model", "hold"])
    for index in range(301, 350):
        confirmation.offer(result(index * 10, scores=flat_scores(float(stats[index]))), None, None)
    (decided,) = confirmation.offer(both, None, None)
    assert decided.detected_by == ["hold"] and decided.is_anomaly


def test_results_of_models_without_a_rule_and_without_a_position_pass_through() -> None:
    confirmation = ResultConfirmation(lambda _: None, 10, Confirmer(210))
    flagged = result(0, anomalous=True, detected_by=["model"])
    assert confirmation.offer(flagged, None, None) == [flagged]
    assert confirmation.unconfirmed == 1
    unplaced = result(0, anomalous=True, detected_by=["model"], with_position=False)
    assert confirmation.offer(unplaced, None, None) == [unplaced]


def test_a_producer_that_does_not_say_what_flagged_is_judged_as_the_model() -> None:
    confirmation = ResultConfirmation(lambda _: RULE, 10, Confirmer(210))
    (decided,) = confirmation.offer(result(0, anomalous=True, scores=flat_scores(2.0)), None, None)
    assert decided.detected_by == ["model"]  # window 0: the static rule decides
    judged = judged_result(Judgement(result(0, anomalous=True), confirmed=False, complete=True))
    assert judged.detected_by == [] and not judged.is_anomaly


def test_the_served_rules_are_the_ones_each_result_carries() -> None:
    """TranAD's rule from the result's ``stream_floor`` and ``threshold``: built once
    per model and pair, a retrained model's new pair a new rule, a result without a floor
    none (its flag stands, counted)."""
    rules = ResultRules("model", StreamRuleConfig())
    carried = result(0, anomalous=True, threshold=1.5, stream_floor=1.2)
    rule = rules(carried)
    assert rule is not None and (rule.static, rule.floor) == (1.5, 1.2)
    assert rules(result(10, threshold=1.5, stream_floor=1.2)) is rule
    retrained = rules(result(20, threshold=1.8, stream_floor=1.2))
    assert retrained is not None and retrained is not rule and retrained.static == 1.8
    assert rules(result(0, model_name="SMAP_E-2", threshold=1.5, stream_floor=1.2)) is not rule
    assert rules(result(0, threshold=1.5)) is None
    # the forecaster's fields are another detector's: not TranAD's rule
    assert ResultRules("forecaster")(carried) is None
    with pytest.raises(ValueError, match="no rule fields for detector 'context'"):
        ResultRules("context")
    confirmation = ResultConfirmation(rules, 10, Confirmer(210))
    bare = result(0, anomalous=True, detected_by=["model"], threshold=1.5)
    assert confirmation.offer(bare, None, None) == [bare]
    assert confirmation.unconfirmed == 1
    # judged by the carried threshold (under min_history the static one decides): 1.6
    # stands against 1.5, not against 1.8
    for start, threshold, kept in ((10, 1.5, True), (20, 1.8, False)):
        flagged = result(
            start,
            anomalous=True,
            detected_by=["model"],
            scores=flat_scores(1.6),
            threshold=threshold,
            stream_floor=1.2,
        )
        (judged,) = confirmation.offer(flagged, None, None)
        assert judged.is_anomaly is kept


def test_a_stream_floor_without_its_threshold_is_refused() -> None:
    body = result(0, threshold=1.5, stream_floor=1.2).model_dump(mode="json")
    body["threshold"] = None
    with pytest.raises(ValidationError, match="stream_floor"):
        InferenceResult.model_validate(body)


def test_the_events_handler_stores_only_confirmed_windows_and_commits_behind_waiting() -> None:
    store = MemoryStore()
    metrics = StageMetrics("events")
    confirmation = ResultConfirmation(lambda _: RULE, 10, Confirmer(210))
    handler = EventsHandler(
        store.apply,
        metrics,
        FakeDeadLetter(metrics),
        stride=10,
        sleep=lambda s: None,
        confirmation=confirmation,
    )
    stats = regime_statistics()

    def message(index: int, offset: int) -> FakeMessage:
        value = float(stats[index])
        flagged = value > RULE.static
        body = result(
            index * 10,
            anomalous=flagged,
            scores=flat_scores(value),
            detected_by=["model"] if flagged else [],
        )
        return FakeMessage(TOPIC, encode(body), 0, offset)

    order = [i for i in range(400) if i != 299]
    handler.handle([message(i, offset) for offset, i in enumerate(order)])
    assert confirmation.confirmer.waiting > 0  # every flagged window after 299 waits
    (position,) = handler.commit_offsets()
    assert position.offset == order.index(300)
    handler.handle([message(299, len(order))])
    assert confirmation.confirmer.waiting == 0
    assert handler.commit_offsets()[0].offset == len(order) + 1
    expected = confirmed_flags(stats[:400], RULE)
    book = InMemoryEvents()
    for index in np.flatnonzero(expected):
        span = span_of(result(10 * int(index), anomalous=True), 10)
        assert span is not None
        book.apply(span)
    want = [(e.start_record_index, e.end_record_index) for e in book.stream_events("sat1", "EPS")]
    stored = store.book.stream_events("sat1", "EPS")
    assert want and [(e.start_record_index, e.end_record_index) for e in stored] == want


@pytest.mark.parametrize("forecaster", [True, False])
def test_the_events_stage_confirms_each_detector_by_its_own_fields(forecaster: bool) -> None:
    from pipeline.events import confirmation_for
    from smap_bench.config import Settings

    settings = Settings(decision_rule="confirmed", forecaster=forecaster)
    confirmation = confirmation_for(settings)
    assert confirmation is not None
    assert isinstance(confirmation.rules, ResultRules) and confirmation.rules.detector == "model"
    if forecaster:
        assert confirmation.forecaster is not None
        rules = confirmation.forecaster.rules
        assert isinstance(rules, ResultRules) and rules.detector == "forecaster"
    else:
        assert confirmation.forecaster is None
    assert confirmation_for(Settings(decision_rule="static")) is None
