"""The API's asynchronous reader of VictoriaMetrics: raw samples and range queries.

The routes that read series run on the event loop and await VictoriaMetrics here,
rather than holding a worker thread per request: on a small machine, a thread per
request waiting for the GIL behind other requests' JSON work is what made the tail
latency (see ``smap-bench bench-api``). Results are :class:`smap_bench.metrics.Series`,
the same as the synchronous client's.

The client is aiohttp (C-accelerated HTTP parsing): a read of one stream's 10 minutes of
scores costs it about 0.8 ms of CPU, against 2.7 ms for httpx's async client on the
same machine, and the API makes one such read per series request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import aiohttp

from smap_bench.metrics import Series, parse_export, parse_matrix, parse_vector

__all__ = [
    "AsyncVictoria",
    "VictoriaRefused",
    "VictoriaUnavailable",
    "parse_export",
    "parse_matrix",
]

_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class VictoriaUnavailable(Exception):
    """VictoriaMetrics could not be reached, or did not answer in time."""


class VictoriaRefused(Exception):
    """VictoriaMetrics answered with an error status; ``reason`` is its first line."""

    def __init__(self, status: int, body: str) -> None:
        lines = body.strip().splitlines()
        self.status = status
        self.reason = lines[0][:300] if lines else f"HTTP {status}"
        super().__init__(f"HTTP {status}: {self.reason}")


class AsyncVictoria:
    """Reads of the single-node VictoriaMetrics HTTP API over one pooled async client
    (opened on first use, inside the server's event loop)."""

    def __init__(self, base_url: str, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=32),
                timeout=self._timeout,
                raise_for_status=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, path: str, form: Mapping[str, Any] | Sequence[tuple[str, Any]]) -> bytes:
        """The parameters as a form body (VictoriaMetrics reads them from either); the
        answer's body, or :class:`VictoriaRefused` / :class:`VictoriaUnavailable`."""
        body = urlencode(form, doseq=True).encode()
        try:
            async with self._client().post(
                self.base_url + path, data=body, headers=_FORM
            ) as response:
                content = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = str(exc).strip() or exc.__class__.__name__
            raise VictoriaUnavailable(f"{exc.__class__.__name__}: {detail}") from exc
        if status >= 400:
            raise VictoriaRefused(status, content.decode(errors="replace"))
        return content

    async def export(self, match: str, start: float, end: float) -> list[Series]:
        """Raw samples of the series matching ``match`` between ``start`` and ``end``."""
        found = await self._post("/api/v1/export", {"match[]": match, "start": start, "end": end})
        return parse_export(found.decode())

    async def export_many(self, matches: list[str], start: float, end: float) -> list[Series]:
        """Raw samples of every series matching any of ``matches``, in one request (each
        series keeps its ``__name__`` label, so the caller can tell the metrics apart)."""
        found = await self._post(
            "/api/v1/export",
            [("match[]", m) for m in matches] + [("start", start), ("end", end)],
        )
        return parse_export(found.decode())

    async def query_range(self, query: str, start: float, end: float, step: str) -> list[Series]:
        """A MetricsQL range query on a ``step`` grid."""
        found = await self._post(
            "/api/v1/query_range", {"query": query, "start": start, "end": end, "step": step}
        )
        return parse_matrix(json.loads(found))

    async def query(
        self, query: str, time: float | None = None, *, fresh: bool = False
    ) -> list[Series]:
        """An instant query at ``time`` (default now); ``fresh`` includes the newest second
        that the server's ``-search.latencyOffset`` otherwise hides from queries."""
        params: dict[str, Any] = {"query": query}
        if time is not None:
            params["time"] = time
        if fresh:
            params["latency_offset"] = "0s"
        return parse_vector(json.loads(await self._post("/api/v1/query", params)))
