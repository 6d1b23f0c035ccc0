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


def sync_models(dsn: str, onnx_repository: Path) -> int:
    """Register every model of the ONNX repository (its metadata.json) in ``models``.

    Upserts on (model_name, version), so a retrained model replaces its row; returns how
    many models were written.
    """
    import hashlib
    import json

    rows = []
    for meta_path in sorted(onnx_repository.glob("SMAP_*/metadata.json")):
        model_dir = meta_path.parent
        metadata = json.loads(meta_path.read_text())
        versions = sorted(
            (int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()),
            reverse=True,
        )
        if not versions:
            log.warning("%s has metadata.json but no version folder; not registered", model_dir)
            continue
        onnx = model_dir / str(versions[0]) / "model.onnx"
        digest = hashlib.sha256(onnx.read_bytes()).hexdigest() if onnx.exists() else ""
        channel = str(metadata.get("channel") or model_dir.name.removeprefix("SMAP_"))
        rows.append(
            (
                model_dir.name,
                versions[0],
                channel,
                float(metadata["threshold"]),
                digest,
                json.dumps(metadata),
            )
        )
    if not rows:
        return 0
    with psycopg.connect(dsn, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO models (model_name, version, channel, threshold, onnx_sha256, metadata)"
            " VALUES (%s, %s, %s, %s, %s, %s::jsonb)"
            " ON CONFLICT (model_name, version) DO UPDATE"
            " SET threshold = EXCLUDED.threshold, onnx_sha256 = EXCLUDED.onnx_sha256,"
            "     metadata = EXCLUDED.metadata, channel = EXCLUDED.channel,"
            "     registered_at = now()"
            " WHERE models.onnx_sha256 IS DISTINCT FROM EXCLUDED.onnx_sha256"
            "    OR models.metadata IS DISTINCT FROM EXCLUDED.metadata",
            rows,
        )
    return len(rows)
