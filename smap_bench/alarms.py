"""The alarm lifecycle of an anomaly event, as a pure state machine.

An event is raised ``open``. An operator acknowledges it (``acknowledged``), may shelve
it until a time (``shelved``: hidden from attention for a while) and clears it when it is
dealt with (``cleared``). The rules:

- ``acknowledge``: open -> acknowledged.
- ``shelve`` (until a future time, at most :data:`MAX_SHELF` ahead): open, acknowledged
  -> shelved; shelving a shelved alarm moves its end.
- ``unshelve``: shelved -> open. A shelf that runs out does the same on its own (see
  :func:`effective_state`): the alarm comes back and needs attention again.
- ``clear``: acknowledged, shelved -> cleared. An open alarm must be acknowledged first,
  so nothing is cleared unseen.
- ``reopen``: cleared -> open, for an alarm cleared by mistake or that came back.

Comments change no state; every transition and comment is one history row. Storage
(PostgreSQL ``anomaly_events.state`` / ``alarm_history``) lives in ``smap_bench.api.crud``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class AlarmState(StrEnum):
    """Where an alarm is in its lifecycle (the values stored in PostgreSQL)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    SHELVED = "shelved"
    CLEARED = "cleared"


class AlarmAction(StrEnum):
    """What an operator does to an alarm."""

    ACKNOWLEDGE = "acknowledge"
    SHELVE = "shelve"
    UNSHELVE = "unshelve"
    CLEAR = "clear"
    REOPEN = "reopen"


#: The longest an alarm may stay shelved in one go.
MAX_SHELF = timedelta(days=30)

#: (state, action) -> the state it leads to; any pair not listed is illegal.
TRANSITIONS: dict[tuple[AlarmState, AlarmAction], AlarmState] = {
    (AlarmState.OPEN, AlarmAction.ACKNOWLEDGE): AlarmState.ACKNOWLEDGED,
    (AlarmState.OPEN, AlarmAction.SHELVE): AlarmState.SHELVED,
    (AlarmState.ACKNOWLEDGED, AlarmAction.SHELVE): AlarmState.SHELVED,
    (AlarmState.SHELVED, AlarmAction.SHELVE): AlarmState.SHELVED,
    (AlarmState.SHELVED, AlarmAction.UNSHELVE): AlarmState.OPEN,
    (AlarmState.ACKNOWLEDGED, AlarmAction.CLEAR): AlarmState.CLEARED,
    (AlarmState.SHELVED, AlarmAction.CLEAR): AlarmState.CLEARED,
    (AlarmState.CLEARED, AlarmAction.REOPEN): AlarmState.OPEN,
}


class AlarmError(ValueError):
    """An alarm action that cannot be applied; the message says why."""


class IllegalTransition(AlarmError):
    """The action is not allowed from the alarm's current state."""


class InvalidShelf(AlarmError):
    """A shelve without an end time, with one in the past, or one too far ahead."""


@dataclass(frozen=True)
class Transition:
    """One applied action: the state before and after, and the shelf end if shelved."""

    action: AlarmAction
    from_state: AlarmState
    to_state: AlarmState
    shelved_until: datetime | None


def allowed_actions(state: AlarmState) -> list[AlarmAction]:
    """The actions legal from ``state``, in the order of :class:`AlarmAction`."""
    return [action for action in AlarmAction if (state, action) in TRANSITIONS]


def effective_state(state: AlarmState, shelved_until: datetime | None, now: datetime) -> AlarmState:
    """The state as an operator sees it at ``now``: a shelf that has run out is open again."""
    if state is AlarmState.SHELVED and (shelved_until is None or shelved_until <= now):
        return AlarmState.OPEN
    return state


def apply_action(
    state: AlarmState,
    action: AlarmAction,
    now: datetime,
    shelved_until: datetime | None = None,
) -> Transition:
    """The transition ``action`` makes from ``state`` at ``now``.

    ``state`` is the effective state (see :func:`effective_state`). ``shelved_until`` is
    required for ``shelve`` and refused for every other action. Raises
    :class:`IllegalTransition` or :class:`InvalidShelf` with the reason.
    """
    target = TRANSITIONS.get((state, action))
    if target is None:
        allowed = ", ".join(allowed_actions(state)) or "nothing"
        hint = " (acknowledge it first)" if action is AlarmAction.CLEAR else ""
        raise IllegalTransition(
            f"cannot {action.value} an alarm that is {state.value}{hint}; "
            f"allowed from {state.value}: {allowed}"
        )
    if action is AlarmAction.SHELVE:
        if shelved_until is None:
            raise InvalidShelf("shelve needs shelved_until: the time the shelf ends")
        if shelved_until <= now:
            raise InvalidShelf(
                f"shelved_until {shelved_until.isoformat()} is not after now ({now.isoformat()})"
            )
        if shelved_until - now > MAX_SHELF:
            raise InvalidShelf(
                f"shelved_until {shelved_until.isoformat()} is more than "
                f"{MAX_SHELF.days} days ahead"
            )
        return Transition(action, state, target, shelved_until)
    if shelved_until is not None:
        raise InvalidShelf(f"shelved_until only goes with shelve, not with {action.value}")
    return Transition(action, state, target, None)
