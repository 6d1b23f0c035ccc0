"""The operator-facing processes' niceness: set on every thread where allowed, a warning
where not."""

from __future__ import annotations

import logging
import os

import pytest

from smap_bench import priority


def test_every_thread_gets_the_niceness(monkeypatch: pytest.MonkeyPatch) -> None:
    set_on: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "getpriority", lambda which, who: 0)
    monkeypatch.setattr(os, "listdir", lambda path: ["101", "102"])
    monkeypatch.setattr(os, "setpriority", lambda which, who, n: set_on.append((who, n)))
    assert priority.set_niceness(-5)
    assert set_on == [(101, -5), (102, -5)]


def test_without_the_right_the_process_warns_and_keeps_running(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(which: int, who: int, niceness: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "getpriority", lambda which, who: 0)
    monkeypatch.setattr(os, "setpriority", refuse)
    with caplog.at_level(logging.WARNING, logger="smap_bench.priority"):
        assert not priority.set_niceness(-5, "the API")
    assert (
        "cannot set niceness -5" in caplog.text
        and "the API runs at 0" in caplog.text
        and "CAP_SYS_NICE" in caplog.text
    )
