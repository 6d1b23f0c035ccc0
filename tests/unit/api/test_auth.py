"""The API token: generated once, kept private, checked in constant time."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from smap_bench.api.auth import AuthFailure, check_bearer, ensure_api_token, token_path
from smap_bench.config import Settings


def test_token_is_created_once_private_and_reused(tmp_path: Path) -> None:
    settings = Settings(run_dir=tmp_path / "run", api_token=None)
    token = ensure_api_token(settings)
    path = token_path(settings)
    assert path == tmp_path / "run" / "api-token"
    assert len(token) >= 40
    assert path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_api_token(settings) == token


def test_two_run_dirs_get_different_tokens(tmp_path: Path) -> None:
    first = ensure_api_token(Settings(run_dir=tmp_path / "a", api_token=None))
    assert first != ensure_api_token(Settings(run_dir=tmp_path / "b", api_token=None))


def test_a_configured_token_wins_and_writes_nothing(tmp_path: Path) -> None:
    settings = Settings(run_dir=tmp_path, api_token="from-env")
    assert ensure_api_token(settings) == "from-env"
    assert not token_path(settings).exists()


def test_an_empty_token_file_is_replaced(tmp_path: Path) -> None:
    settings = Settings(run_dir=tmp_path, api_token=None)
    token_path(settings).write_text("\n")
    assert ensure_api_token(settings).strip()


def test_the_right_bearer_passes() -> None:
    check_bearer("Bearer s3cret", "s3cret")
    check_bearer("bearer  s3cret ", "s3cret")


@pytest.mark.parametrize(
    ("header", "expected", "status", "says"),
    [
        ("Bearer x", None, 503, "no API token configured"),
        (None, "s3cret", 401, "send Authorization"),
        ("", "s3cret", 401, "send Authorization"),
        ("Basic czNjcmV0", "s3cret", 401, "malformed"),
        ("Bearer", "s3cret", 401, "malformed"),
        ("Bearer s3cre", "s3cret", 401, "invalid API token"),
        ("Bearer s3cret2", "s3cret", 401, "invalid API token"),
        ("Bearer s3crét", "s3cret", 401, "invalid API token"),
    ],
)
def test_everything_else_is_refused(
    header: str | None, expected: str | None, status: int, says: str
) -> None:
    with pytest.raises(AuthFailure) as info:
        check_bearer(header, expected)
    assert info.value.status_code == status
    assert says in info.value.detail
