"""The fingerprint cache: a kept answer is served only under the fingerprint it was
built under (the database's part is tested against PostgreSQL in test_api.py)."""

from __future__ import annotations

from typing import Any

from smap_bench.api.cache import FingerprintCache


class _Tables:
    """Stands in for a connection: answers the fingerprint query with a version."""

    def __init__(self) -> None:
        self.version = 1

    def execute(self, sql: str) -> _Tables:
        return self

    def fetchone(self) -> tuple[str]:
        return (f"v{self.version}",)


def test_an_answer_is_rebuilt_when_the_fingerprint_changes() -> None:
    cache = FingerprintCache("SELECT fingerprint")
    tables = _Tables()
    built: list[int] = []

    def build(conn: Any) -> bytes:
        built.append(tables.version)
        return f"rows of v{tables.version}".encode()

    conn: Any = tables
    assert cache.read(conn, None, build) == b"rows of v1"
    assert cache.read(conn, None, build) == b"rows of v1"
    assert built == [1] and (cache.hits, cache.misses) == (1, 1)
    tables.version = 2
    assert cache.read(conn, None, build) == b"rows of v2"
    assert cache.read(conn, True, build) == b"rows of v2"  # another key, its own answer
    assert built == [1, 2, 2]


def test_a_write_between_fingerprint_and_rows_is_not_kept_as_current() -> None:
    # The rows are read after the fingerprint: if they already show a newer write, the
    # kept answer carries the older fingerprint, and the next read rebuilds it.
    cache = FingerprintCache("SELECT fingerprint")
    tables = _Tables()
    conn: Any = tables

    def build_during_a_write(conn: Any) -> bytes:
        tables.version = 2
        return b"rows of v2"

    cache.read(conn, None, build_during_a_write)
    rebuilt: list[bool] = []

    def rebuild(conn: Any) -> bytes:
        rebuilt.append(True)
        return b"rows of v2"

    cache.read(conn, None, rebuild)
    assert rebuilt == [True]
