from __future__ import annotations

import pytest

from smap_bench.dashboard.store import DashboardStore
from tests.unit.dashboard.fakes import T0, FakeApi


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def store(api: FakeApi) -> DashboardStore:
    """A store on the fake API whose wall clock stands at T0 + 10 minutes."""
    from datetime import timedelta

    return DashboardStore(client=api, clock=lambda: T0 + timedelta(minutes=10))
