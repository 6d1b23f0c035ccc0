"""Integration tests run against the real local stack, which they start if it is down.

Never skipped: if a service cannot be started the fixture fails with what the stack
said, which names the service and what to do.
"""

from __future__ import annotations

import pytest

from smap_bench import stack
from smap_bench.config import Settings, get_settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def live_stack(settings: Settings) -> Settings:
    """The local stack, up and healthy (``smap-bench up`` when anything is down)."""
    if not all(s.healthy for s in stack.status(settings)):
        from smap_bench.stack_cli import bring_up

        try:
            statuses = bring_up(settings)
        except stack.StackError as exc:
            pytest.fail(f"the local stack could not start: {exc} (try `make up`)")
        down = [f"{s.name}: {s.detail}" for s in statuses if not s.healthy]
        if down:
            pytest.fail("services not healthy after `smap-bench up`: " + "; ".join(down))
    return settings
