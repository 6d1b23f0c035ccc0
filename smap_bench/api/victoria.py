"""The API's asynchronous reader of VictoriaMetrics: raw samples and range queries.

The routes that read series run on the event loop and await VictoriaMetrics here,
rather than holding a worker thread per request: on a small machine, a thread per
request waiting for the GIL behind other requests' JSON work is what made the tail
latency (see ``smap-bench bench-api``). Results are :class:`smap_bench.metrics.Series`,
the same as the synchronous client's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx

from smap_bench.metrics import Series, parse_export, parse_matrix, parse_vector

__all__ = ["AsyncVictoria", "parse_export", "parse_matrix"]


class AsyncVictoria:
    """Reads of the single-node VictoriaMetrics HTTP API over one pooled async client."""

    def __init__(self, base_url: str, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, form: Mapping[str, Any] | Sequence[tuple[str, Any]]) -> Any:
        """The parameters as a form body (VictoriaMetrics reads them from either): the
        standard library encodes a body in microseconds, where httpx checks a long query
        string character by character (about 2 ms of CPU for the latest route's query)."""
        return await self._http.post(
            path,
            content=urlencode(form, doseq=True).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )

    async def export(self, match: str, start: float, end: float) -> list[Series]:
        """Raw samples of the series matching ``match`` between ``start`` and ``end``."""
        response = await self._post(
            "/api/v1/export", {"match[]": match, "start": start, "end": end}
        )
        response.raise_for_status()
        return parse_export(response.text)

    async def export_many(self, matches: list[str], start: float, end: float) -> list[Series]:
        """Raw samples of every series matching any of ``matches``, in one request (each
        series keeps its ``__name__`` label, so the caller can tell the metrics apart)."""
        response = await self._post(
            "/api/v1/export",
            [("match[]", m) for m in matches] + [("start", start), ("end", end)],
        )
        response.raise_for_status()
        return parse_export(response.text)

    async def query_range(self, query: str, start: float, end: float, step: str) -> list[Series]:
        """A MetricsQL range query on a ``step`` grid."""
        response = await self._post(
            "/api/v1/query_range", {"query": query, "start": start, "end": end, "step": step}
        )
        response.raise_for_status()
        return parse_matrix(response.json())

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
        response = await self._post("/api/v1/query", params)
        response.raise_for_status()
        return parse_vector(response.json())
