"""API read latency at a fixed request rate (the issue's target: p99 < 20 ms at 50 req/s).

Open loop: requests are sent on a fixed schedule (``rps`` per second for ``duration_s``),
whatever the answers' speed, so a slow answer does not slow the sending down and hide
itself. Latency is measured per request from the moment it was due on the schedule to
the end of its body (coordinated omission corrected, as wrk2 does: a request the client
sent late, because it or the machine was busy, counts its wait); the time from the
actual send is reported beside it as ``service``. The read paths rotate over the API's
routes a dashboard refresh uses. The client's own CPU time is reported, since on a
small machine it shares the cores with the server it measures.

The client is one asyncio loop speaking plain HTTP/1.1 over a few keep-alive
connections (what wrk does, in Python): it spends a fraction of a millisecond per
request, so that on a small machine its own CPU and thread switches do not become the
tail it reports. Loopback only: this is a probe of the local stack, not a load tool.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: Reads a dashboard refresh makes, rotated request by request.
DEFAULT_PATHS: tuple[str, ...] = (
    "/api/health/live",
    "/api/fleet/satellites",
    "/api/fleet/latest",
    "/api/events?limit=50",
    "/api/replay",
    "/api/series/scores?satellite_id=sat1&subsystem=ACS",
    "/api/series/telemetry?satellite_id=sat1&subsystem=ACS&features=0",
)
#: A request that starts later than this after its slot counts as late (client overload).
LATE_S = 0.010
#: Status code recorded for a request that got no answer (refused, reset, timed out).
NO_ANSWER = 0
#: An idle keep-alive connection older than this is closed rather than reused: servers
#: close idle connections (uvicorn after 5 s by default), and a request written into one
#: the server is closing fails.
MAX_IDLE_S = 4.0


def check_loopback(base_url: str) -> None:
    """Refuse anything but a loopback address (127.0.0.0/8, ::1, localhost)."""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"bench_api only probes loopback addresses, not {host!r} ({base_url})")


def schedule(rps: float, duration_s: float) -> list[float]:
    """Send offsets (seconds from the start) of an open-loop run: ``rps`` per second."""
    if not (math.isfinite(rps) and rps > 0):
        raise ValueError(f"rps must be a positive number, got {rps}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive number, got {duration_s}")
    return [i / rps for i in range(max(int(rps * duration_s), 1))]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by linear interpolation; ``None`` for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Sample:
    path: str
    latency_s: float  #: from the request's slot on the schedule to the end of its answer
    status: int  #: NO_ANSWER when the request failed without an answer
    late_s: float  #: how long after its slot the request was sent
    error: str = ""  #: why a request failed: ``HTTP <status>`` or the exception's name

    @property
    def service_s(self) -> float:
        """From the actual send to the end of the answer (lateness left out)."""
        return self.latency_s - self.late_s


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def summarize(samples: Sequence[Sample], rps: float, elapsed_s: float) -> dict[str, Any]:
    """p50 / p99 / max latency in milliseconds, overall and per path, with error and
    lateness counts. Latencies of answered requests only (errors are counted apart)."""
    ok = [s for s in samples if 200 <= s.status < 400]
    latencies = [s.latency_s for s in ok]
    service = [s.service_s for s in ok]
    lateness = [s.late_s for s in samples]
    kinds: dict[str, int] = {}
    for sample in samples:
        if not 200 <= sample.status < 400:
            reason = sample.error or f"HTTP {sample.status}"
            kinds[reason] = kinds.get(reason, 0) + 1
    by_path: dict[str, dict[str, Any]] = {}
    for path in sorted({s.path for s in samples}):
        mine = [s.latency_s for s in ok if s.path == path]
        by_path[path] = {
            "requests": sum(1 for s in samples if s.path == path),
            "errors": sum(1 for s in samples if s.path == path and not 200 <= s.status < 400),
            "p50": _ms(percentile(mine, 50)),
            "p99": _ms(percentile(mine, 99)),
            "max": _ms(max(mine, default=None)),
            "service_p99": _ms(percentile([s.service_s for s in ok if s.path == path], 99)),
        }
    return {
        "p50": _ms(percentile(latencies, 50)),
        "p99": _ms(percentile(latencies, 99)),
        "max": _ms(max(latencies, default=None)),
        "unit": "ms",
        "rps": rps,
        "achieved_rps": round(len(samples) / elapsed_s, 2) if elapsed_s > 0 else None,
        "requests": len(samples),
        "errors": len(samples) - len(ok),
        "late": sum(1 for s in samples if s.late_s > LATE_S),
        "late_p99": _ms(percentile(lateness, 99)),
        "late_max": _ms(max(lateness, default=None)),
        "service": {
            "p50": _ms(percentile(service, 50)),
            "p99": _ms(percentile(service, 99)),
            "max": _ms(max(service, default=None)),
        },
        "error_kinds": dict(sorted(kinds.items())),
        "paths": by_path,
    }


class HttpError(Exception):
    """The server's answer could not be read as HTTP/1.1."""


class Connection:
    """One keep-alive HTTP/1.1 connection: GET a path, read status and body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.reusable = True
        self.idle_since = time.monotonic()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def get(self, target: str, host_header: str) -> tuple[int, bytes]:
        self.writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nAccept: application/json\r\n"
            "\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        keep_alive = headers.get("connection", "").lower()
        if keep_alive == "close" or (parts[0] == "HTTP/1.0" and keep_alive != "keep-alive"):
            self.reusable = False
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked()
        else:
            body = await self.reader.read()
            self.reusable = False
        return int(parts[1]), body

    async def _chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(chunks)
            chunks.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        self.writer.close()


class ConnectionPool:
    """Idle keep-alive connections, opened on demand (so a slow answer never holds up
    the next request: it gets a connection of its own)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Connection] = []
        self.opened = 0
        self.expired = 0  #: idle connections closed for their age
        self.retried = 0  #: requests sent again after a reused connection was found closed

    async def take(self, fresh: bool = False) -> tuple[Connection, bool]:
        """A connection, and whether it was used before (it may have been closed since);
        ``fresh``: a new one. Connections idle longer than :data:`MAX_IDLE_S` are closed."""
        now = time.monotonic()
        while self.idle and not fresh:
            connection = self.idle.pop()
            if now - connection.idle_since <= MAX_IDLE_S:
                return connection, True
            connection.close()
            self.expired += 1
        self.opened += 1
        return await Connection.open(self.host, self.port), False

    def give(self, connection: Connection) -> None:
        if connection.reusable:
            connection.idle_since = time.monotonic()
            self.idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()


def _closed_before_answer(error: BaseException) -> bool:
    """The connection ended before any byte of the answer (an idle close, not a crash)."""
    if isinstance(error, asyncio.IncompleteReadError):
        return not error.partial
    return isinstance(error, ConnectionResetError | BrokenPipeError)


async def _run(
    base_url: str, offsets: Sequence[float], paths: Sequence[str], timeout_s: float, warm: int
) -> tuple[list[Sample], float, ConnectionPool]:
    parts = urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    host_header = parts.netloc
    prefix = parts.path.rstrip("/")
    pool = ConnectionPool(host, port)
    samples: list[Sample] = []

    async def one(path: str, due: float, record: bool) -> None:
        sent = time.perf_counter()
        connection: Connection | None = None
        status = NO_ANSWER
        error_kind = ""
        try:
            async with asyncio.timeout(timeout_s):
                for attempt in (1, 2):
                    connection, reused = await pool.take(fresh=attempt == 2)
                    try:
                        status, _ = await connection.get(prefix + path, host_header)
                        break
                    except (OSError, asyncio.IncompleteReadError) as error:
                        connection.reusable = False
                        pool.give(connection)
                        connection = None
                        # The server closed an idle keep-alive connection: one try on a
                        # new connection (as any HTTP client does); a new one's failure
                        # counts.
                        if not reused or attempt == 2 or not _closed_before_answer(error):
                            raise
                        pool.retried += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError, HttpError, ValueError) as exc:
            error_kind = exc.__class__.__name__
            if connection is not None:
                connection.reusable = False
        finally:
            if connection is not None:
                pool.give(connection)
        if record:
            if not error_kind and not 200 <= status < 400:
                error_kind = f"HTTP {status}"
            end = time.perf_counter()
            samples.append(Sample(path, end - due, status, sent - due, error_kind))

    try:
        # Warm-up: connections opened and every route called once, unrecorded (connection
        # set-up and first-call costs are not what a running dashboard sees).
        await asyncio.gather(
            *(one(paths[i % len(paths)], time.perf_counter(), False) for i in range(warm))
        )
        for path in paths:
            await one(path, time.perf_counter(), False)
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        for i, offset in enumerate(offsets):
            due = start + offset
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(paths[i % len(paths)], due, True)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    finally:
        pool.close()
    return samples, elapsed, pool


def bench_api(
    base_url: str,
    rps: float = 50,
    duration_s: float = 20,
    *,
    paths: Sequence[str] = DEFAULT_PATHS,
    connections: int = 4,
    timeout_s: float = 5.0,
) -> dict[str, Any]:
    """Read the API at ``rps`` requests/s for ``duration_s`` s; latency percentiles (ms).

    Returns ``{"p50", "p99", "max", "requests", "errors", "late", "achieved_rps",
    "connections", "paths": {path: {"requests", "errors", "p50", "p99", "max"}}, ...}``.
    ``connections`` are opened before the run; more are opened while all are busy.
    """
    check_loopback(base_url)
    if not paths:
        raise ValueError("bench_api needs at least one path")
    if connections < 1:
        raise ValueError(f"connections must be at least 1, got {connections}")
    offsets = schedule(rps, duration_s)
    cpu = time.process_time()
    samples, elapsed, pool = asyncio.run(
        _run(base_url, offsets, list(paths), timeout_s, connections)
    )
    cpu = time.process_time() - cpu
    result = summarize(samples, rps, elapsed)
    result["connections"] = pool.opened
    result["connections_expired"] = pool.expired
    result["retried"] = pool.retried
    # The load generator's own CPU (warm-up included), beside the server it measures.
    result["client_cpu_s"] = round(cpu, 3)
    result["client_cpu_ms_per_request"] = round(1000 * cpu / max(len(samples), 1), 3)
    result["base_url"] = base_url
    result["duration_s"] = duration_s
    return result


# --------------------------------------------------------------------------- visibility


@dataclass(frozen=True)
class Sighting:
    """A window's detection first returned by the API, and when its record was produced."""

    satellite_id: str
    subsystem: str
    window_end: float  #: record time of the window's newest record (Unix seconds)
    detected: float
    produced_at: float  #: wall clock of that record's production (the simulator's stamp)
    seen_at: float  #: wall clock when the API first returned the window

    @property
    def latency_s(self) -> float:
        return self.seen_at - self.produced_at


class ProductionClock:
    """Follows the raw telemetry topic from its end and remembers, per (satellite, record
    time), the wall clock at which the simulator produced the record (``stages.simulator``)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.produced: dict[tuple[str, float], float] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="production-clock", daemon=True)
        self.error: str | None = None

    def __enter__(self) -> ProductionClock:
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError(f"could not follow {self.settings.topic_raw}: {self.error}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        import json
        import uuid
        from datetime import datetime

        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        from smap_bench.kafka import consumer_config

        topic = self.settings.topic_raw
        consumer = Consumer(consumer_config(self.settings, f"bench-visibility-{uuid.uuid4().hex}"))
        try:
            metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is None or not metadata.partitions:
                self.error = f"topic {topic} missing"
                return
            consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in metadata.partitions])
            self._ready.set()
            while not self._stop.is_set():
                for message in consumer.consume(500, timeout=0.1):
                    if message.error() is not None:
                        continue
                    try:
                        record = json.loads(message.value() or b"{}")
                        when = datetime.fromisoformat(record["timestamp"]).timestamp()
                        key = (str(record["satellite_id"]), round(when, 3))
                        self.produced[key] = float(record["stages"]["simulator"])
                    except (KeyError, TypeError, ValueError):
                        continue
        except Exception as exc:  # reported by __enter__ or the result
            self.error = f"{exc.__class__.__name__}: {exc}"
        finally:
            consumer.close()


def bench_visibility(
    settings: Any,
    duration_s: float = 120,
    poll_s: float = 0.1,
    base_url: str | None = None,
) -> dict[str, Any]:
    """How soon a window's detection is returned by the API the dashboard polls
    (``/api/fleet/latest``, which colours the fleet grid every refresh), counted from the
    production of the window's newest record, for every window of every live stream
    and, apart, for the windows flagged anomalous.

    The API is polled every ``poll_s`` (the first sighting is late by at most that); a
    dashboard shows a sighting at its next refresh, so the figure a user sees is this
    plus at most one refresh period and the refresh's own time.
    """
    base = (base_url or f"http://{settings.host}:{settings.api_port}").rstrip("/")
    check_loopback(base)
    known: set[tuple[str, str, float]] = set()
    pending: dict[tuple[str, str, float], tuple[float, float]] = {}
    with ProductionClock(settings) as clock, httpx_client(base) as http:

        def poll() -> list[dict[str, Any]]:
            answer = http.get("/api/fleet/latest")
            answer.raise_for_status()
            rows: list[dict[str, Any]] = answer.json()["data"]
            return rows

        from datetime import datetime

        for row in poll():  # windows already visible before the run are not counted
            if row.get("detected_time"):
                at = datetime.fromisoformat(row["detected_time"]).timestamp()
                known.add((row["satellite_id"], row["subsystem"], round(at, 3)))
        deadline = time.monotonic() + duration_s
        polls = 0
        while time.monotonic() < deadline:
            began = time.monotonic()
            rows = poll()
            seen = time.time()
            polls += 1
            for row in rows:
                if not row.get("detected_time"):
                    continue
                at = datetime.fromisoformat(row["detected_time"]).timestamp()
                key = (row["satellite_id"], row["subsystem"], round(at, 3))
                if key not in known:
                    known.add(key)
                    pending[key] = (float(row["detected"] or 0.0), seen)
            time.sleep(max(0.0, poll_s - (time.monotonic() - began)))
        produced = dict(clock.produced)
    sightings = [
        Sighting(sat, sub, end, detected, produced[(sat, end)], seen)
        for (sat, sub, end), (detected, seen) in pending.items()
        if (sat, end) in produced
    ]
    flagged = [s for s in sightings if s.detected > 0.5]

    def stats(items: Sequence[Sighting]) -> dict[str, Any]:
        values = [s.latency_s for s in items]
        return {
            "windows": len(values),
            "p50": _ms(percentile(values, 50)),
            "p99": _ms(percentile(values, 99)),
            "max": _ms(max(values, default=None)),
            "within_2s": sum(1 for v in values if v <= 2.0),
        }

    return {
        "unit": "ms",
        "duration_s": duration_s,
        "poll_s": poll_s,
        "polls": polls,
        "route": "/api/fleet/latest",
        "windows_seen": len(pending),
        "windows_matched": len(sightings),
        "streams": len({(s.satellite_id, s.subsystem) for s in sightings}),
        "all_windows": stats(sightings),
        "flagged_windows": stats(flagged),
        "flagged": [
            {
                "satellite_id": s.satellite_id,
                "subsystem": s.subsystem,
                "window_end": s.window_end,
                "latency_ms": round(s.latency_s * 1000, 1),
            }
            for s in flagged
        ],
    }


def httpx_client(base_url: str) -> Any:
    """A short-timeout HTTP client of the API (for the slower, sequential probes)."""
    import httpx

    return httpx.Client(base_url=base_url, timeout=5.0)
