"""The API's bearer token: where the local stack keeps it, and how a request is checked.

No token is built in. The local stack generates one into ``<run_dir>/api-token`` (mode
0600) and passes it to the API as ``SMAP_API_TOKEN``; with no token configured the
mutating routes answer 503 rather than accept anyone.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from smap_bench.config import Settings

#: Name of the token file under the run directory.
TOKEN_FILE = "api-token"


def token_path(settings: Settings) -> Path:
    return settings.run_dir / TOKEN_FILE


def ensure_api_token(settings: Settings) -> str:
    """The local stack's API token: ``settings.api_token`` if set, else the token file's,
    created (random, URL-safe, owner-only) when missing."""
    if settings.api_token is not None:
        return settings.api_token.get_secret_value()
    path = token_path(settings)
    if path.is_file():
        token = path.read_text().strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # Created with owner-only permissions from the start (no window where others can read).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    path.chmod(0o600)
    return token


@dataclass(frozen=True)
class AuthFailure(Exception):
    """Why a request may not mutate: the HTTP status and a one-line reason."""

    status_code: int
    detail: str


def check_bearer(authorization: str | None, expected: str | None) -> None:
    """Accept ``Authorization: Bearer <expected>``; raise :class:`AuthFailure` otherwise.

    503 when no token is configured, 401 when the header is missing, malformed or wrong
    (compared in constant time).
    """
    if not expected:
        raise AuthFailure(
            503,
            "no API token configured: set SMAP_API_TOKEN (the local stack writes one "
            "into .run/api-token)",
        )
    if not authorization:
        raise AuthFailure(401, "this route changes state: send Authorization: Bearer <token>")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise AuthFailure(401, "malformed Authorization header: expected 'Bearer <token>'")
    if not secrets.compare_digest(credentials.strip().encode(), expected.encode()):
        raise AuthFailure(401, "invalid API token")
