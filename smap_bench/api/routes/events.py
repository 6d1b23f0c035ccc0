"""Anomaly events and their alarm lifecycle (open -> acknowledged -> shelved -> cleared).

The legal transitions are :mod:`smap_bench.alarms`; an illegal one is a 409 naming the
state and what is allowed from it. Every transition and comment is kept in the event's
history with who and when.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from smap_bench.alarms import AlarmState
from smap_bench.api import crud
from smap_bench.api.deps import DbDep, PoolDep, TokenDep, in_db
from smap_bench.api.models import (
    AlarmTransitionCreate,
    CommentCreate,
    EventDetail,
    EventsPublic,
    Message,
    Responses,
    SatelliteId,
)
from smap_bench.api.queries import as_utc
from smap_bench.catalog import Subsystem

router = APIRouter(prefix="/events", tags=["events"])

EventId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The event's id")]
NOT_FOUND: Responses = {404: {"model": Message, "description": "No such event"}}
CONFLICT: Responses = {409: {"model": Message, "description": "Not allowed from the alarm's state"}}


@router.get("", response_model=EventsPublic)
async def list_events(
    pool: PoolDep,
    state: Annotated[AlarmState | None, Query(description="Alarm state as seen now")] = None,
    satellite_id: SatelliteId | None = None,
    subsystem: Subsystem | None = None,
    since: Annotated[datetime | None, Query(description="Events starting at or after")] = None,
    until: Annotated[datetime | None, Query(description="Events starting before")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    """Events matching the filters, newest first."""
    filters = crud.EventFilter(
        state=state,
        satellite_id=satellite_id,
        subsystem=subsystem.value if subsystem else None,
        since=as_utc(since) if since else None,
        until=as_utc(until) if until else None,
        limit=limit,
        offset=offset,
    )
    rows, total = await in_db(pool, crud.list_events, filters)
    # Validated once and written straight to JSON: handing FastAPI the model would have
    # it dumped, validated again and encoded (three passes over every event's features).
    answer = EventsPublic.model_validate({"data": rows, "count": total})
    return Response(answer.model_dump_json().encode(), media_type="application/json")


@router.get("/{event_id}", response_model=EventDetail, responses=NOT_FOUND)
async def get_event(pool: PoolDep, event_id: EventId) -> crud.Row:
    """One event with its full alarm history, oldest first."""
    return await in_db(pool, crud.get_event, event_id)


@router.post(
    "/{event_id}/transitions", response_model=EventDetail, responses={**NOT_FOUND, **CONFLICT}
)
def transition(
    operator: TokenDep, db: DbDep, event_id: EventId, body: AlarmTransitionCreate
) -> crud.Row:
    """Acknowledge, shelve (until a time), unshelve, clear or reopen the event's alarm."""
    return crud.transition_event(
        db,
        event_id,
        body.action,
        actor=body.operator or operator.name,
        comment=body.comment,
        shelved_until=as_utc(body.shelved_until) if body.shelved_until else None,
    )


@router.post("/{event_id}/comments", response_model=EventDetail, responses=NOT_FOUND)
def comment(operator: TokenDep, db: DbDep, event_id: EventId, body: CommentCreate) -> crud.Row:
    """Add an operator's comment to the event's history (its state does not change)."""
    return crud.comment_event(db, event_id, body.operator or operator.name, body.comment)
