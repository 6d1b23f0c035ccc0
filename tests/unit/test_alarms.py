"""The alarm lifecycle state machine, on hand-made cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from smap_bench.alarms import (
    MAX_SHELF,
    TRANSITIONS,
    AlarmAction,
    AlarmState,
    IllegalTransition,
    InvalidShelf,
    allowed_actions,
    apply_action,
    effective_state,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=2)

OPEN, A, S, C = AlarmState.OPEN, AlarmState.ACKNOWLEDGED, AlarmState.SHELVED, AlarmState.CLEARED


def test_the_documented_path_open_acknowledged_shelved_cleared() -> None:
    state = OPEN
    state = apply_action(state, AlarmAction.ACKNOWLEDGE, NOW).to_state
    assert state is A
    shelved = apply_action(state, AlarmAction.SHELVE, NOW, shelved_until=LATER)
    assert (shelved.from_state, shelved.to_state, shelved.shelved_until) == (A, S, LATER)
    assert apply_action(S, AlarmAction.CLEAR, NOW).to_state is C


@pytest.mark.parametrize(
    ("state", "action", "target"),
    [
        (OPEN, AlarmAction.ACKNOWLEDGE, A),
        (OPEN, AlarmAction.SHELVE, S),
        (S, AlarmAction.SHELVE, S),
        (S, AlarmAction.UNSHELVE, OPEN),
        (A, AlarmAction.CLEAR, C),
        (C, AlarmAction.REOPEN, OPEN),
    ],
)
def test_legal_transitions(state: AlarmState, action: AlarmAction, target: AlarmState) -> None:
    until = LATER if action is AlarmAction.SHELVE else None
    transition = apply_action(state, action, NOW, shelved_until=until)
    assert transition.from_state is state
    assert transition.to_state is target
    assert transition.action is action


def test_every_pair_not_in_the_table_is_refused_with_the_allowed_actions() -> None:
    refused = 0
    for state in AlarmState:
        for action in AlarmAction:
            if (state, action) in TRANSITIONS:
                continue
            until = LATER if action is AlarmAction.SHELVE else None
            with pytest.raises(IllegalTransition) as info:
                apply_action(state, action, NOW, shelved_until=until)
            message = str(info.value)
            assert f"cannot {action.value} an alarm that is {state.value}" in message
            for allowed in allowed_actions(state):
                assert allowed.value in message
            refused += 1
    assert refused == len(AlarmState) * len(AlarmAction) - len(TRANSITIONS)


def test_clearing_an_open_alarm_says_to_acknowledge_first() -> None:
    with pytest.raises(IllegalTransition, match="acknowledge it first"):
        apply_action(OPEN, AlarmAction.CLEAR, NOW)


def test_cleared_allows_only_reopen() -> None:
    assert allowed_actions(C) == [AlarmAction.REOPEN]
    assert allowed_actions(OPEN) == [AlarmAction.ACKNOWLEDGE, AlarmAction.SHELVE]


@pytest.mark.parametrize(
    ("until", "problem"),
    [
        (None, "needs shelved_until"),
        (NOW, "not after now"),
        (NOW - timedelta(seconds=1), "not after now"),
        (NOW + MAX_SHELF + timedelta(seconds=1), "days ahead"),
    ],
)
def test_bad_shelf_ends_are_refused(until: datetime | None, problem: str) -> None:
    with pytest.raises(InvalidShelf, match=problem):
        apply_action(A, AlarmAction.SHELVE, NOW, shelved_until=until)


def test_a_shelf_of_exactly_the_maximum_is_accepted() -> None:
    longest = NOW + MAX_SHELF
    assert apply_action(OPEN, AlarmAction.SHELVE, NOW, longest).shelved_until == longest


def test_shelved_until_with_another_action_is_refused() -> None:
    with pytest.raises(InvalidShelf, match="only goes with shelve"):
        apply_action(OPEN, AlarmAction.ACKNOWLEDGE, NOW, shelved_until=LATER)


def test_an_expired_shelf_is_open_again() -> None:
    assert effective_state(S, LATER, NOW) is S
    assert effective_state(S, NOW, NOW) is OPEN
    assert effective_state(S, NOW - timedelta(minutes=1), NOW) is OPEN
    assert effective_state(S, None, NOW) is OPEN
    for state in (OPEN, A, C):
        assert effective_state(state, NOW - timedelta(days=1), NOW) is state


def test_states_match_the_database_check_constraint() -> None:
    # compose/sql/001_schema.sql: CHECK (state IN ('open', 'acknowledged', 'shelved', 'cleared'))
    from smap_bench.db import MIGRATIONS_DIR

    schema = (MIGRATIONS_DIR / "001_schema.sql").read_text()
    allowed = ", ".join(f"'{s.value}'" for s in AlarmState)
    assert f"CHECK (state IN ({allowed}))" in schema
