"""The fingerprint cache: a kept answer is served only under the fingerprint it was
built under (the database's part is tested against PostgreSQL in test_api.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from smap_bench.api.cache import MAX_KEPT, STALE_AFTER_S, FingerprintCache, RecentAnswers


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


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_recent_answer_serves_until_it_is_older_than_the_max_age() -> None:
    clock = _Clock()
    answers = RecentAnswers(clock)
    reads: list[float] = []

    async def build() -> bytes:
        reads.append(clock.now)
        return f"state at {clock.now}".encode()

    async def scenario() -> list[bytes]:
        got = [await answers.read("fleet", build, max_age_s=0.2)]
        clock.now += 0.15
        got.append(await answers.read("fleet", build, max_age_s=0.2))  # still young
        got.append(await answers.read("other", build, max_age_s=0.2))  # its own answer
        clock.now += 0.1
        got.append(await answers.read("fleet", build, max_age_s=0.2))  # 0.25 s old: anew
        got.append(await answers.read("fleet", build, max_age_s=0.0))  # 0: always anew
        return got

    got = asyncio.run(scenario())
    assert (
        got == [b"state at 100.0", b"state at 100.0", b"state at 100.15"] + [b"state at 100.25"] * 2
    )
    assert reads == [100.0, 100.15, 100.25, 100.25]
    assert (answers.hits, answers.joined, answers.misses) == (1, 0, 4)


def test_callers_arriving_during_a_read_share_it_and_its_failure() -> None:
    answers = RecentAnswers(_Clock())
    calls = 0

    async def scenario(fail: bool) -> list[bytes | BaseException]:
        release = asyncio.Event()

        async def build() -> bytes:
            nonlocal calls
            calls += 1
            await release.wait()
            if fail:
                raise RuntimeError("victoria unavailable")
            return b"one read"

        waiting = [asyncio.ensure_future(answers.read("k", build, 1.0)) for _ in range(5)]
        await asyncio.sleep(0)
        release.set()
        return await asyncio.gather(*waiting, return_exceptions=True)

    failed = asyncio.run(scenario(fail=True))
    assert calls == 1 and all(isinstance(r, RuntimeError) for r in failed)
    # A failure is not kept: the next callers read anew (and share that read).
    assert asyncio.run(scenario(fail=False)) == [b"one read"] * 5
    assert calls == 2 and (answers.misses, answers.joined) == (2, 8)


def test_a_caller_that_goes_away_does_not_cancel_the_read_of_the_others() -> None:
    answers = RecentAnswers(_Clock())

    async def scenario() -> bytes:
        release = asyncio.Event()

        async def build() -> bytes:
            await release.wait()
            return b"answer"

        first = asyncio.ensure_future(answers.read("k", build, 1.0))
        second = asyncio.ensure_future(answers.read("k", build, 1.0))
        await asyncio.sleep(0)
        first.cancel()  # the client that started the read disconnects
        await asyncio.sleep(0)
        release.set()
        return await second

    assert asyncio.run(scenario()) == b"answer"


def test_answers_of_keys_nobody_asks_for_any_more_are_dropped() -> None:
    clock = _Clock()
    answers = RecentAnswers(clock)

    async def build() -> bytes:
        return b"answer"

    async def scenario() -> None:
        for key in range(100):  # distinct keys, as a client varying a parameter sends
            clock.now += 0.01
            await answers.read(key, build, max_age_s=0.2)
        assert list(answers._kept) == list(range(100 - MAX_KEPT, 100))  # the newest
        clock.now += STALE_AFTER_S + 1
        await answers.read("fresh", build, max_age_s=0.2)

    asyncio.run(scenario())
    assert list(answers._kept) == ["fresh"]
