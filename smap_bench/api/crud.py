"""The API's data layer over PostgreSQL: fleet, model registry, anomaly events and alarms.

Functions take an open psycopg connection (the API's pool hands one per request) and
return plain dicts shaped like the ``*Public`` schemas. Alarm transitions lock the event
row, apply :mod:`smap_bench.alarms` and write ``alarm_history`` in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from smap_bench import alarms
from smap_bench.alarms import AlarmAction, AlarmState
from smap_bench.catalog import CatalogError, channel_of_model

Row = dict[str, Any]

#: The state an operator sees: a shelf that has run out reads open (alarms.effective_state).
_EFFECTIVE_STATE = (
    "CASE WHEN e.state = 'shelved' AND (e.shelved_until IS NULL OR e.shelved_until <= now())"
    " THEN 'open' ELSE e.state END"
)
_EVENT_COLUMNS = (
    "e.event_id, e.satellite_id, e.subsystem, e.model_name, e.loop, e.start_record_index,"
    " e.end_record_index, e.start_time, e.end_time, e.peak_score, e.threshold, e.top_features,"
    " e.detected_by,"
    f" {_EFFECTIVE_STATE} AS state, e.state AS stored_state,"
    " CASE WHEN e.state = 'shelved' AND e.shelved_until > now() THEN e.shelved_until END"
    " AS shelved_until,"
    " e.created_at, e.updated_at"
)

#: Actor of history rows the API writes on its own (an expired shelf).
SYSTEM_ACTOR = "system"


class NotFound(LookupError):
    """No row with that key; the message names what was looked for."""


def _rows(conn: psycopg.Connection[Any], query: str | sql.Composed, params: Any = ()) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return list(cur.fetchall())


# --------------------------------------------------------------------------- fleet


def list_subsystems(conn: psycopg.Connection[Any]) -> list[Row]:
    return _rows(
        conn,
        "SELECT name, code, description FROM subsystems"
        " ORDER BY array_position(ARRAY['ACS','Data','EPS','FSW','PS','SS','TCS'], name), name",
    )


def list_assignments(conn: psycopg.Connection[Any], satellite_id: str | None = None) -> list[Row]:
    where = "WHERE satellite_id = %s" if satellite_id is not None else ""
    return _rows(
        conn,
        "SELECT satellite_id, subsystem, channel, model_name, assigned_at"
        f" FROM channel_assignment {where}"
        " ORDER BY length(satellite_id), satellite_id, subsystem",
        (satellite_id,) if satellite_id is not None else (),
    )


def list_satellites(conn: psycopg.Connection[Any], active: bool | None = None) -> list[Row]:
    """Satellites in natural order (sat2 before sat10), each with its streams."""
    where = "WHERE active = %s" if active is not None else ""
    satellites = _rows(
        conn,
        "SELECT satellite_id, display_name, active, created_at FROM satellites"
        f" {where} ORDER BY length(satellite_id), satellite_id",
        (active,) if active is not None else (),
    )
    streams: dict[str, list[Row]] = {}
    for row in list_assignments(conn):
        streams.setdefault(row["satellite_id"], []).append(row)
    for satellite in satellites:
        satellite["streams"] = streams.get(satellite["satellite_id"], [])
    return satellites


def get_satellite(conn: psycopg.Connection[Any], satellite_id: str) -> Row:
    rows = _rows(
        conn,
        "SELECT satellite_id, display_name, active, created_at FROM satellites"
        " WHERE satellite_id = %s",
        (satellite_id,),
    )
    if not rows:
        raise NotFound(f"no satellite {satellite_id!r}")
    satellite = rows[0]
    satellite["streams"] = list_assignments(conn, satellite_id)
    return satellite


def update_satellite(
    conn: psycopg.Connection[Any], satellite_id: str, changes: dict[str, Any]
) -> Row:
    """Set the given columns (display_name, active) of a satellite and commit."""
    allowed = {"display_name", "active"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"cannot update satellite column(s) {sorted(unknown)}")
    if changes:
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in changes
        )
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("UPDATE satellites SET {} WHERE satellite_id = {}").format(
                    assignments, sql.Placeholder("satellite_id")
                ),
                {**changes, "satellite_id": satellite_id},
            )
            if cur.rowcount == 0:
                conn.rollback()
                raise NotFound(f"no satellite {satellite_id!r}")
        conn.commit()
    return get_satellite(conn, satellite_id)


# --------------------------------------------------------------------------- models


def list_models(conn: psycopg.Connection[Any], model_repository: Path) -> list[Row]:
    """The registry's models (newest version of each); the repository's when it is empty."""
    rows = _rows(
        conn,
        "SELECT DISTINCT ON (model_name) model_name, version, channel, threshold, onnx_sha256,"
        " metadata, registered_at, 'database' AS source FROM models"
        " ORDER BY model_name, version DESC",
    )
    return rows if rows else repository_models(model_repository)


def get_model(conn: psycopg.Connection[Any], model_repository: Path, model_name: str) -> Row:
    for row in list_models(conn, model_repository):
        if row["model_name"] == model_name:
            return row
    raise NotFound(f"no model {model_name!r}")


def repository_models(model_repository: Path) -> list[Row]:
    """Models described by ``<repository>/onnx/*/metadata.json`` (newest version each)."""
    from smap_bench.inference.repository import (
        is_valid_model_name,
        onnx_models_dir,
        read_metadata,
    )

    base = onnx_models_dir(model_repository)
    if not base.is_dir():
        return []
    found = []
    for model_dir in sorted(base.iterdir()):
        if not model_dir.is_dir() or not is_valid_model_name(model_dir.name):
            continue
        try:
            metadata = read_metadata(model_dir)
        except ValueError:
            continue
        if not metadata:
            continue
        versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        threshold = metadata.get("threshold")
        found.append(
            {
                "model_name": model_dir.name,
                "version": max(versions, default=1),
                "channel": metadata.get("channel") or _channel_or_none(model_dir.name),
                "threshold": float(threshold) if isinstance(threshold, int | float) else None,
                "onnx_sha256": None,
                "metadata": metadata,
                "registered_at": None,
                "source": "repository",
            }
        )
    return found


def _channel_or_none(model_name: str) -> str | None:
    try:
        return channel_of_model(model_name)
    except CatalogError:
        return None


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class EventFilter:
    """Which events to list: by alarm state (as seen now), stream, and start time."""

    state: AlarmState | None = None
    satellite_id: str | None = None
    subsystem: str | None = None
    since: datetime | None = None  #: start_time >= since
    until: datetime | None = None  #: start_time < until
    limit: int = 100
    offset: int = 0

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.state is not None:
            clauses.append(f"{_EFFECTIVE_STATE} = %s")
            params.append(self.state.value)
        for column, value in (("satellite_id", self.satellite_id), ("subsystem", self.subsystem)):
            if value is not None:
                clauses.append(f"e.{column} = %s")
                params.append(value)
        if self.since is not None:
            clauses.append("e.start_time >= %s")
            params.append(self.since)
        if self.until is not None:
            clauses.append("e.start_time < %s")
            params.append(self.until)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


def _public_event(row: Row) -> Row:
    row.pop("stored_state", None)
    row["allowed_actions"] = alarms.allowed_actions(AlarmState(row["state"]))
    return row


def list_events(conn: psycopg.Connection[Any], filters: EventFilter) -> tuple[list[Row], int]:
    """Events matching ``filters``, newest first, and how many match in all."""
    where, params = filters.where()
    rows = _rows(
        conn,
        f"SELECT {_EVENT_COLUMNS}, count(*) OVER () AS total FROM anomaly_events e {where}"
        " ORDER BY e.start_time DESC, e.event_id DESC LIMIT %s OFFSET %s",
        [*params, filters.limit, filters.offset],
    )
    if rows:
        total = int(rows[0]["total"])
    elif filters.offset:
        count = _rows(conn, f"SELECT count(*) AS n FROM anomaly_events e {where}", params)
        total = int(count[0]["n"])
    else:
        total = 0
    for row in rows:
        row.pop("total")
    return [_public_event(row) for row in rows], total


def _event_row(conn: psycopg.Connection[Any], event_id: int, lock: bool = False) -> Row:
    rows = _rows(
        conn,
        f"SELECT {_EVENT_COLUMNS}, e.shelved_until AS stored_shelved_until"
        f" FROM anomaly_events e WHERE e.event_id = %s{' FOR UPDATE' if lock else ''}",
        (event_id,),
    )
    if not rows:
        raise NotFound(f"no anomaly event {event_id}")
    return rows[0]


def event_history(conn: psycopg.Connection[Any], event_id: int) -> list[Row]:
    return _rows(
        conn,
        "SELECT id, event_id, from_state, to_state, actor, comment, shelved_until, at"
        " FROM alarm_history WHERE event_id = %s ORDER BY at, id",
        (event_id,),
    )


def get_event(conn: psycopg.Connection[Any], event_id: int) -> Row:
    """One event with its full alarm history, oldest first."""
    row = _event_row(conn, event_id)
    row.pop("stored_shelved_until")
    event = _public_event(row)
    event["history"] = event_history(conn, event_id)
    return event


def _history(
    conn: psycopg.Connection[Any],
    event_id: int,
    from_state: AlarmState | None,
    to_state: AlarmState,
    actor: str,
    comment: str | None,
    shelved_until: datetime | None,
) -> None:
    conn.execute(
        "INSERT INTO alarm_history (event_id, from_state, to_state, actor, comment, shelved_until)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (
            event_id,
            from_state.value if from_state else None,
            to_state.value,
            actor,
            comment,
            shelved_until,
        ),
    )


def _now(conn: psycopg.Connection[Any]) -> datetime:
    # The database's clock, the one _EFFECTIVE_STATE uses, so both agree on expiry.
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    value: datetime = row[0]
    return value


def _expire_shelf(conn: psycopg.Connection[Any], row: Row, now: datetime) -> AlarmState:
    """Record a run-out shelf as its own history row; returns the state to act from."""
    stored = AlarmState(row["stored_state"])
    state = alarms.effective_state(stored, row["stored_shelved_until"], now)
    if state is not stored:
        until = row["stored_shelved_until"]
        note = f"shelf ended at {until.isoformat()}" if until else "shelf without an end"
        _history(conn, row["event_id"], stored, state, SYSTEM_ACTOR, note, None)
    return state


def transition_event(
    conn: psycopg.Connection[Any],
    event_id: int,
    action: AlarmAction,
    actor: str,
    comment: str | None = None,
    shelved_until: datetime | None = None,
) -> Row:
    """Apply an operator's action to an event's alarm, record it, commit; the event after.

    Raises :class:`NotFound`, or :class:`smap_bench.alarms.AlarmError` (nothing written).
    """
    try:
        row = _event_row(conn, event_id, lock=True)
        now = _now(conn)
        state = _expire_shelf(conn, row, now)
        step = alarms.apply_action(state, action, now, shelved_until)
        conn.execute(
            "UPDATE anomaly_events SET state = %s, shelved_until = %s, updated_at = now()"
            " WHERE event_id = %s",
            (step.to_state.value, step.shelved_until, event_id),
        )
        _history(conn, event_id, step.from_state, step.to_state, actor, comment, step.shelved_until)
    except Exception:
        conn.rollback()
        raise
    conn.commit()
    return get_event(conn, event_id)


def comment_event(conn: psycopg.Connection[Any], event_id: int, actor: str, comment: str) -> Row:
    """Add an operator's comment to an event's history (state unchanged), commit."""
    try:
        row = _event_row(conn, event_id, lock=True)
        state = _expire_shelf(conn, row, _now(conn))
        if state is not AlarmState(row["stored_state"]):
            conn.execute(
                "UPDATE anomaly_events SET state = %s, shelved_until = NULL, updated_at = now()"
                " WHERE event_id = %s",
                (state.value, event_id),
            )
        _history(conn, event_id, state, state, actor, comment, None)
    except Exception:
        conn.rollback()
        raise
    conn.commit()
    return get_event(conn, event_id)
