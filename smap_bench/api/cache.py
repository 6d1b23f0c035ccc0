"""Answers of slowly-changing reads kept as JSON bytes, valid while the database says
their tables are unchanged.

The fleet (satellites and their channel assignments) changes when an operator edits a
satellite or the fleet is re-synced, possibly by another process writing PostgreSQL
directly, so a time-to-live would serve stale rows. Instead each read first asks
PostgreSQL for a fingerprint of the tables' content (an md5 of every row's text, one
cheap statement); the kept answer is served while the fingerprint is the one it was
built under, and rebuilt otherwise. The fingerprint is read before the rows, so a write
between the two can only cause one needless rebuild, never a stale answer kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

import psycopg

#: md5 of the text of every row of the fleet's tables, in key order.
FLEET_FINGERPRINT = (
    "SELECT md5("
    "coalesce((SELECT string_agg(s::text, ',' ORDER BY s.satellite_id) FROM satellites s), '')"
    " || '|' || "
    "coalesce((SELECT string_agg(a::text, ',' ORDER BY a.satellite_id, a.subsystem)"
    " FROM channel_assignment a), ''))"
)


class FingerprintCache:
    """Serialized answers by key, each valid for the fingerprint it was built under."""

    def __init__(self, fingerprint_sql: str) -> None:
        self.fingerprint_sql = fingerprint_sql
        self._kept: dict[Hashable, tuple[str, bytes]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def fingerprint(self, conn: psycopg.Connection[Any]) -> str:
        row = conn.execute(self.fingerprint_sql).fetchone()
        return str(row[0]) if row else ""

    def read(
        self,
        conn: psycopg.Connection[Any],
        key: Hashable,
        build: Callable[[psycopg.Connection[Any]], bytes],
    ) -> bytes:
        """The kept answer for ``key`` if the tables are unchanged, else ``build(conn)``
        (kept for next time)."""
        current = self.fingerprint(conn)
        with self._lock:
            kept = self._kept.get(key)
        if kept is not None and kept[0] == current:
            self.hits += 1
            return kept[1]
        self.misses += 1
        answer = build(conn)
        with self._lock:
            self._kept[key] = (current, answer)
        return answer

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()
