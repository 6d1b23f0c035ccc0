"""Prometheus text exposition lines and a small VictoriaMetrics client.

The writer turns messages into samples with :func:`prometheus_line` and sends them in
batches with :meth:`VictoriaMetrics.import_prometheus`; benchmarks, the API and tests
read them back with :meth:`VictoriaMetrics.query_range` or :meth:`VictoriaMetrics.export`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_line(
    name: str, labels: Mapping[str, str | int], value: float, timestamp_ms: int
) -> str:
    """One sample in the Prometheus text format, labels in the given order."""
    if not math.isfinite(value):
        raise ValueError(f"{name}: sample value {value!r} is not finite")
    body = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
    return f"{name}{{{body}}} {value!r} {int(timestamp_ms)}"


@dataclass(frozen=True)
class Series:
    """One series read back: its labels and (timestamp seconds, value) pairs."""

    labels: dict[str, str]
    samples: list[tuple[float, float]]


class VictoriaMetrics:
    """Client for the single-node VictoriaMetrics HTTP API."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VictoriaMetrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def import_prometheus(self, lines: Iterable[str]) -> int:
        """Write samples (Prometheus text lines); returns how many lines were sent."""
        body = "\n".join(lines)
        if not body:
            return 0
        response = self._http.post("/api/v1/import/prometheus", content=body.encode())
        response.raise_for_status()
        return body.count("\n") + 1

    def export(self, match: str, start: float | None = None, end: float | None = None):
        """Raw samples of the series matching ``match`` (visible at once, no latency offset)."""
        params: dict[str, Any] = {"match[]": match}
        if start is not None:
            params["start"] = start
        if end is not None:
            params["end"] = end
        response = self._http.get("/api/v1/export", params=params)
        response.raise_for_status()
        series = []
        for line in response.text.splitlines():
            item = json.loads(line)
            samples = [
                (ts / 1000.0, float(v))
                for ts, v in zip(item["timestamps"], item["values"], strict=True)
            ]
            series.append(Series(labels=item["metric"], samples=samples))
        return series

    def query_range(self, query: str, start: float, end: float, step: str = "1s") -> list[Series]:
        """A PromQL/MetricsQL range query."""
        response = self._http.get(
            "/api/v1/query_range",
            params={"query": query, "start": start, "end": end, "step": step},
        )
        response.raise_for_status()
        return [
            Series(labels=r["metric"], samples=[(float(t), float(v)) for t, v in r["values"]])
            for r in response.json()["data"]["result"]
        ]

    def query(self, query: str, time: float | None = None) -> list[Series]:
        """An instant query."""
        params: dict[str, Any] = {"query": query}
        if time is not None:
            params["time"] = time
        response = self._http.get("/api/v1/query", params=params)
        response.raise_for_status()
        return [
            Series(labels=r["metric"], samples=[(float(r["value"][0]), float(r["value"][1]))])
            for r in response.json()["data"]["result"]
        ]
