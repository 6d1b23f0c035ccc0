"""Answers kept as JSON bytes: slowly-changing reads valid while the database says their
tables are unchanged (:class:`FingerprintCache`), and hot live reads shared by every
caller for a fraction of a second (:class:`RecentAnswers`).

The fleet (satellites and their channel assignments) changes when an operator edits a
satellite or the fleet is re-synced, possibly by another process writing PostgreSQL
directly, so a time-to-live would serve stale rows. Instead each read first asks
PostgreSQL for a fingerprint of the tables' content (an md5 of every row's text, one
cheap statement); the kept answer is served while the fingerprint is the one it was
built under, and rebuilt otherwise. The fingerprint is read before the rows, so a write
between the two can only cause one needless rebuild, never a stale answer kept.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
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


#: Kept answers older than this are dropped whenever a new one is kept, and no more than
#: this many are kept (the oldest go first).
STALE_AFTER_S = 60.0
MAX_KEPT = 16


class RecentAnswers:
    """Answers of a live read, each served for ``max_age_s`` after it was asked for, and
    asked for once however many callers want it meanwhile (single flight).

    The fleet grid of every dashboard session polls the newest state of every stream
    several times a second; without sharing, N sessions cost N VictoriaMetrics queries
    per period. With it, they cost at most one per ``max_age_s``, and an answer is never
    older than that: a caller that finds none young enough waits for the read in flight
    or starts one. A failed read is not kept; everyone waiting on it gets its error.
    Runs on one event loop (the API server's).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._kept: dict[Hashable, tuple[float, bytes]] = {}
        self._pending: dict[Hashable, asyncio.Task[bytes]] = {}
        self.hits = 0
        self.joined = 0
        self.misses = 0

    async def read(
        self, key: Hashable, build: Callable[[], Awaitable[bytes]], max_age_s: float
    ) -> bytes:
        """The answer for ``key`` asked for less than ``max_age_s`` ago, or the one in
        flight, or ``await build()`` (kept, stamped with the time it was asked for)."""
        kept = self._kept.get(key)
        if kept is not None and self._clock() - kept[0] < max_age_s:
            self.hits += 1
            return kept[1]
        pending = self._pending.get(key)
        if pending is None:
            self.misses += 1
            pending = asyncio.ensure_future(self._build(key, build))
            self._pending[key] = pending
        else:
            self.joined += 1
        # The read runs as its own task: a caller that goes away (a client disconnect)
        # cancels its wait, not the read the others are waiting for.
        return await asyncio.shield(pending)

    async def _build(self, key: Hashable, build: Callable[[], Awaitable[bytes]]) -> bytes:
        asked = self._clock()
        try:
            answer = await build()
            # Keys come from clients (a parameter): forget the stale ones, so that many
            # distinct keys cannot grow the process without bound.
            young = [(k, v) for k, v in self._kept.items() if asked - v[0] < STALE_AFTER_S]
            young.sort(key=lambda item: item[1][0])
            self._kept = dict(young[-(MAX_KEPT - 1) :])
            self._kept[key] = (asked, answer)
            return answer
        finally:
            del self._pending[key]
