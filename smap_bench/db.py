"""PostgreSQL: the database itself, its migrations, and the fleet configuration rows.

Migrations are plain SQL files in ``compose/sql/`` (``NNN_name.sql``), applied in order
and recorded in ``schema_migrations``; the production compose mounts the same folder
into the PostgreSQL image's init directory, so both paths build the same schema. Each
file is idempotent, so re-applying one is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from smap_bench.config import PROJECT_ROOT

log = logging.getLogger(__name__)

MIGRATIONS_DIR = PROJECT_ROOT / "compose" / "sql"


def admin_dsn(dsn: str) -> str:
    """The same server and user, connected to the ``postgres`` maintenance database."""
    return make_conninfo(dsn, dbname="postgres")


def ensure_database(dsn: str) -> bool:
    """Create the database named in ``dsn`` if it does not exist; True if it was created."""
    name = conninfo_to_dict(dsn).get("dbname")
    if not name:
        raise ValueError(f"SMAP_POSTGRES_DSN names no database: {dsn!r}")
    with psycopg.connect(admin_dsn(dsn), autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))
        log.info("created database %s", name)
        return True


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    """The migration files in the order they apply."""
    return sorted(directory.glob("[0-9][0-9][0-9]_*.sql"))


def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not yet recorded; returns the versions applied now."""
    applied_now: list[str] = []
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        # One migrator at a time: two `up`s racing must not both apply a file.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('smap_bench.migrate'))")
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for path in migration_files(directory):
            version = path.stem
            if version in done:
                continue
            conn.execute(path.read_text().encode())
            conn.execute(
                "INSERT INTO schema_migrations (version) VALUES (%s) ON CONFLICT DO NOTHING",
                (version,),
            )
            applied_now.append(version)
    return applied_now


def sync_fleet(dsn: str, assignment: Iterable[tuple[str, str, str, str]]) -> int:
    """Upsert satellites and their channel assignment.

    ``assignment`` holds (satellite_id, subsystem, channel, model_name) rows; returns how
    many rows were written.
    """
    rows = list(assignment)
    with psycopg.connect(dsn, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO satellites (satellite_id) VALUES (%s) ON CONFLICT DO NOTHING",
            sorted({(row[0],) for row in rows}),
        )
        cur.executemany(
            "INSERT INTO channel_assignment (satellite_id, subsystem, channel, model_name)"
            " VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (satellite_id, subsystem) DO UPDATE"
            " SET channel = EXCLUDED.channel, model_name = EXCLUDED.model_name,"
            "     assigned_at = now()"
            " WHERE channel_assignment.channel IS DISTINCT FROM EXCLUDED.channel",
            rows,
        )
    return len(rows)
