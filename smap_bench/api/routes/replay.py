"""Replay control: start a replay of a data split, pause, resume, seek, change speed, stop.

Commands travel to the simulator over the Kafka control topic
(:class:`smap_bench.simulation.SimulatorControl`); its state comes back on the status
topic each second. Commands answer 202 once Kafka holds them; with ``wait=true`` the
answer also waits (up to 5 s) for the simulator to report the new state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field

from smap_bench.api.deps import ReplayDep, TokenDep
from smap_bench.api.models import Message, Responses, Strict
from smap_bench.api.replay_service import ReplayRequest
from smap_bench.simulation import (
    DEFAULT_SIMULATOR_ID,
    PauseCommand,
    PositiveSpeed,
    ResumeCommand,
    SeekCommand,
    SimulatorState,
    SpeedCommand,
    StopCommand,
)

router = APIRouter(prefix="/replay", tags=["replay"])

SIMULATOR_ID_PATTERN = r"^[A-Za-z0-9._\-]{1,64}$"
SimulatorId = Annotated[
    str, Query(pattern=SIMULATOR_ID_PATTERN, description="Which simulator (default: the stack's)")
]
Wait = Annotated[bool, Query(description="Wait up to 5 s for the simulator to confirm")]
WAIT_S = 5.0
SEND_TIMEOUT_S = 3.0
CONFLICT: Responses = {
    409: {"model": Message, "description": "No live simulator, or one already running"}
}


class ReplayPublic(BaseModel):
    simulator_id: str
    live: bool = Field(description="The simulator published its state in the last 10 s")
    state: SimulatorState | None
    detail: str = ""


class ReplayCommandPublic(BaseModel):
    command: str
    simulator_id: str
    sent_at: float
    confirmed: bool = Field(description="The simulator reported the new state (wait=true)")
    state: SimulatorState | None
    detail: str = ""


class ReplayStartCreate(Strict):
    split: Literal["test", "train"] = "test"
    satellites: int = Field(default=5, ge=1, le=1000)
    speed: PositiveSpeed | Literal["max"] = Field(default=1.0, description="Factor, or 'max'")
    loops: int = Field(default=0, ge=0, le=1000, description="Passes over the split; 0: forever")
    limit: int = Field(default=0, ge=0, le=10_000_000, description="Records per loop; 0: all")


class SeekCreate(Strict):
    record_index: int = Field(ge=0, le=10_000_000)
    satellite_id: str | None = Field(default=None, pattern=SIMULATOR_ID_PATTERN)


class SpeedCreate(Strict):
    factor: Annotated[float, Field(gt=0, le=10_000, allow_inf_nan=False)] | Literal["max"]


def _live_or_409(replay: ReplayDep, simulator_id: str) -> SimulatorState:
    state = replay.monitor.latest(simulator_id)
    if state is None or state.state in ("stopped", "finished"):
        why = "has published no state lately" if state is None else f"is {state.state}"
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"simulator {simulator_id!r} {why}: start a replay first (POST /api/replay/start)",
        )
    return state


def _answer(
    replay: ReplayDep,
    name: str,
    simulator_id: str,
    sent_at: float,
    wait: bool,
    expect: Callable[[SimulatorState], bool],
) -> ReplayCommandPublic:
    state = None
    if wait:
        state = replay.monitor.wait_for(simulator_id, expect, since=sent_at, timeout_s=WAIT_S)
    detail = "" if not wait or state else f"no confirmation within {WAIT_S:g} s"
    return ReplayCommandPublic(
        command=name,
        simulator_id=simulator_id,
        sent_at=sent_at,
        confirmed=state is not None,
        state=state or replay.monitor.latest(simulator_id),
        detail=detail,
    )


@router.get("", response_model=ReplayPublic)
async def get_replay(
    replay: ReplayDep, simulator_id: SimulatorId = DEFAULT_SIMULATOR_ID
) -> ReplayPublic:
    """The simulator's latest state: running or paused, speed, split, position (a lookup
    of what the background follower of the status topic last saw, no Kafka round trip)."""
    state = replay.monitor.latest(simulator_id)
    detail = "" if state else (replay.monitor.error or "no state published in the last 10 s")
    return ReplayPublic(
        simulator_id=simulator_id, live=state is not None, state=state, detail=detail
    )


@router.post(
    "/start",
    response_model=ReplayCommandPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses=CONFLICT,
)
def start(
    _: TokenDep,
    replay: ReplayDep,
    body: ReplayStartCreate,
    simulator_id: SimulatorId = DEFAULT_SIMULATOR_ID,
    wait: Wait = False,
) -> ReplayCommandPublic:
    """Start a simulator replaying ``split`` (409 if one with this id is already live)."""
    current = replay.monitor.latest(simulator_id)
    if current is not None and current.state in ("running", "paused"):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"simulator {simulator_id!r} is already {current.state}: stop it first, or use "
            "pause / resume / seek / speed",
        )
    sent_at = time.time()
    log_path = replay.launcher.start(
        ReplayRequest(
            simulator_id=simulator_id,
            split=body.split,
            satellites=body.satellites,
            speed=body.speed,
            loops=body.loops,
            limit=body.limit,
        )
    )
    answer = _answer(replay, "start", simulator_id, sent_at, wait, lambda s: True)
    answer.detail = "; ".join(d for d in (answer.detail, f"log: {log_path}") if d)
    return answer


def _command(path: str) -> Callable[[Callable[..., ReplayCommandPublic]], Any]:
    """The decorator of a command route: POST, 202 once Kafka holds the command."""
    return router.post(
        path,
        response_model=ReplayCommandPublic,
        status_code=status.HTTP_202_ACCEPTED,
        responses=CONFLICT,
    )


@_command("/pause")
def pause(
    _: TokenDep,
    replay: ReplayDep,
    simulator_id: SimulatorId = DEFAULT_SIMULATOR_ID,
    wait: Wait = False,
) -> ReplayCommandPublic:
    """Hold the replay where it is."""
    command = PauseCommand(target=simulator_id)
    return _send(replay, "pause", command, wait, lambda before, s: s.state == "paused")


@_command("/resume")
def resume(
    _: TokenDep,
    replay: ReplayDep,
    simulator_id: SimulatorId = DEFAULT_SIMULATOR_ID,
    wait: Wait = False,
) -> ReplayCommandPublic:
    """Carry on from where the replay was paused."""
    command = ResumeCommand(target=simulator_id)
    return _send(replay, "resume", command, wait, lambda before, s: s.state == "running")


@_command("/seek")
def seek(
    _: TokenDep,
    replay: ReplayDep,
    body: SeekCreate,
    simulator_id: SimulatorId = DEFAULT_SIMULATOR_ID,
    wait: Wait = False,
) -> ReplayCommandPublic:
    """Continue at ``record_index`` (all satellites, or one) in a new loop."""
    command = SeekCommand(
        target=simulator_id, record_index=body.record_index, satellite_id=body.satellite_id
    )
    return _send(replay, "seek", command, wait, lambda before, s: s.loop_max > before.loop_max)


@_command("/speed")
def speed(
    _: TokenDep,
    replay: ReplayDep,
    body: SpeedCreate,
    simulator_id: SimulatorId = DEFAULT_SIMULATOR_ID,
    wait: Wait = False,
) -> ReplayCommandPublic:
    """Set the speed factor (1: one record per second per satellite; "max": flat out)."""
    command = SpeedCommand(target=simulator_id, factor=body.factor)
    return _send(replay, "speed", command, wait, lambda before, s: s.speed == body.factor)


@_command("/stop")
def stop(
    _: TokenDep,
    replay: ReplayDep,
    simulator_id: SimulatorId = DEFAULT_SIMULATOR_ID,
    wait: Wait = False,
) -> ReplayCommandPublic:
    """End the replay: the simulator publishes its last state and exits."""
    command = StopCommand(target=simulator_id)
    return _send(replay, "stop", command, wait, lambda before, s: s.state == "stopped")


def _send(
    replay: ReplayDep,
    name: str,
    command: Any,
    wait: bool,
    done: Callable[[SimulatorState, SimulatorState], bool],
) -> ReplayCommandPublic:
    """Send one command to a live simulator (409 otherwise) and answer for it.

    ``done(before, state)`` says whether a state published afterwards shows the effect.
    """
    simulator_id = command.target
    before = _live_or_409(replay, simulator_id)
    sent_at = time.time()
    replay.control.send(command, timeout_s=SEND_TIMEOUT_S)
    return _answer(replay, name, simulator_id, sent_at, wait, lambda s: done(before, s))
