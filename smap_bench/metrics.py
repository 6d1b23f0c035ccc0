"""Prometheus text exposition lines, the pipeline's metric schema, and a VictoriaMetrics client.

The writer turns messages into samples with :func:`telemetry_lines`, :func:`result_lines`
and :func:`latency_lines` and sends them in batches with
:meth:`VictoriaMetrics.import_prometheus`; the events stage writes its decisions with
:func:`alarm_lines`; benchmarks, the API and tests read them back with
:meth:`VictoriaMetrics.query_range` or :meth:`VictoriaMetrics.export`.

Metric schema: the seed's names (design document 5.3), with no unbounded label and
every sample at its record's own timestamp, so that each metric of a stream is one
plain series along time.

==================================  ===========================================  =========
metric                              labels                                       timestamp
==================================  ===========================================  =========
``smap_feature``                    satellite_id, subsystem, feature_index       record
``loop``, ``record_index``          satellite_id                                 record
``inference_anomaly_detected``      satellite_id, subsystem, model_name          window end
``inference_anomaly_score``         satellite_id, subsystem, model_name          each record
``inference_anomaly_score_mean``    satellite_id, subsystem, model_name          window end
``inference_anomaly_score_max``     satellite_id, subsystem, model_name          window end
``inference_reconstruction``        satellite_id, subsystem, model_name,         each record
                                    feature_index
``inference_reconstruction_mean``   satellite_id, subsystem, model_name          each record
``inference_time_ms``               satellite_id, subsystem, model_name          window end
``inference_threshold``             satellite_id, subsystem, model_name          window end
``inference_context_distance``      satellite_id, subsystem, model_name          window end
``inference_context_threshold``     satellite_id, subsystem, model_name          window end
``inference_context_hold``          satellite_id, subsystem, model_name          window end
``inference_context_hold_threshold``  satellite_id, subsystem, model_name        window end
``inference_forecast_statistic``    satellite_id, subsystem, model_name          window end
``inference_forecast_threshold``    satellite_id, subsystem, model_name          window end
``smap_e2e_latency_seconds``        satellite_id, subsystem, stage               window end
``anomaly_alarm``                   satellite_id, subsystem, model_name          window end
==================================  ===========================================  =========

``inference_anomaly_detected`` is the worker's verdict on a window (written by the
writer); ``anomaly_alarm`` is the served decision on it (written by the events stage once
it decided the window, :func:`alarm_lines`): under the confirmed rule a window that
TranAD's score flagged is 1 only when the stream rule confirmed it, so the windows at 1
are those of the anomaly events in PostgreSQL. The dashboard's fleet grid and stream
timelines read ``anomaly_alarm``; the labeled replay benchmark reads the worker's verdicts.

Departures from the seed: ``job_id`` is never a label (it stays in Kafka and
PostgreSQL), and ``timestep`` is not a label either: the per-timestep metrics
(``inference_anomaly_score``, ``inference_reconstruction``,
``inference_reconstruction_mean``) put each timestep at its own record's timestamp
instead, so a stream's score timeline is one series rather than one per timestep.
Only the records a window is *responsible* for (:func:`responsible_offsets`, after
:func:`smap_bench.windows.responsible_range`: its newest ``stride`` records, the whole
window for the first window of a loop or one off the stride grid) get per-timestep
samples. So every record has exactly one score, the one the offline evaluation gives
it, overlapping windows never overwrite each other with different values, and a result
costs about a third of the lines. A redelivered result rewrites identical samples;
VictoriaMetrics keeps one of them only when run with ``-dedup.minScrapeInterval=1ms``
(without it, a raw export lists both). ``inference_threshold``,
``smap_e2e_latency_seconds`` and ``anomaly_alarm`` are additions; ``model_name`` is fixed
per stream, so it adds no series.

Series per satellite (:func:`series_per_satellite`): telemetry 7 x 25 + 2 = 177,
inference 7 x (25 + 11) = 252, latency 7 x 4 (router, scheduler, worker, writer) = 28,
alarm 7; 464 in all (2,320 for 5 satellites, 464,000 for 1,000).

Per-timestep timestamps: a result carries only ``window_start_time`` and
``window_end_time``; timestep ``i`` of ``n`` is placed at
``start + round(i * (end - start) / (n - 1))`` milliseconds, which is each record's own
timestamp when records are evenly spaced, as the simulator's clock makes them (one
second per record).

Latency: ``smap_e2e_latency_seconds{stage}`` is, per window, the time from the
production of the window's newest record (``stages.simulator``) to each later stage's
stamp, and, as ``stage="writer"``, to the moment VictoriaMetrics accepted the result:
record produced -> result queryable, less VictoriaMetrics' own flush delay.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import httpx
from pydantic_core import to_json

from smap_bench.schema import NUM_FEATURES, InferenceResult, TelemetryMessage
from smap_bench.windows import responsible_range


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


#: Stages whose latency is written as ``smap_e2e_latency_seconds{stage}``: the pipeline's
#: stages after the simulator, in flow order. Stage names in a message outside this list
#: are ignored, so a message cannot create series.
LATENCY_STAGES: tuple[str, ...] = ("router", "scheduler", "worker", "writer")

#: The stage that produced a record: latencies are measured from its stamp.
ORIGIN_STAGE = "simulator"


def series_per_satellite(
    n_subsystems: int = 7, n_features: int = NUM_FEATURES, n_latency_stages: int = 4
) -> dict[str, int]:
    """How many series one satellite adds to VictoriaMetrics, by group and in total."""
    counts = {
        "telemetry": n_subsystems * n_features + 2,
        # detected, score, score_mean, score_max, reconstruction x features,
        # reconstruction_mean, time_ms, threshold, context distance and threshold, context
        # hold and hold threshold
        "inference": n_subsystems * (n_features + 11),
        "latency": n_subsystems * n_latency_stages,
        "alarm": n_subsystems,  # anomaly_alarm, written by the events stage
    }
    counts["total"] = sum(counts.values())
    return counts


def timestamp_ms(value: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime (rounded, not truncated)."""
    return round(value.timestamp() * 1000)


def responsible_offsets(record_index_start: int | None, window_size: int, stride: int) -> range:
    """Timesteps of a window whose records it judges (:func:`windows.responsible_range`).

    The first window of a loop (``record_index_start == 0``) judges all its records, every
    later one its newest ``stride``. A result that cannot be placed on the stride grid (no
    ``record_index_start``, as in the seed's format, or one off the grid) is taken whole,
    the same rule as :func:`smap_bench.scoring.responsible_rows`.
    """
    if window_size < 1:
        raise ValueError(f"window_size must be at least 1, got {window_size}")
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    if record_index_start is None or record_index_start % stride or stride > window_size:
        return range(window_size)
    lo, hi = responsible_range(record_index_start, window_size, stride)
    return range(lo - record_index_start, hi - record_index_start)


def timestep_times_ms(start: datetime, end: datetime, n: int) -> list[int]:
    """Timestamp (ms) of each of a window's ``n`` records, evenly spread from start to end."""
    first, last = timestamp_ms(start), timestamp_ms(end)
    if last < first:
        raise ValueError(
            f"window_end_time {end.isoformat()} is before window_start_time {start.isoformat()}"
        )
    if n == 1:
        return [last]
    span = last - first
    return [first + round(i * span / (n - 1)) for i in range(n)]


@lru_cache(maxsize=65_536)
def _feature_prefixes(satellite_id: str, subsystem: str) -> tuple[str, ...]:
    sat, sub = _escape(satellite_id), _escape(subsystem)
    return tuple(
        f'smap_feature{{satellite_id="{sat}",subsystem="{sub}",feature_index="{i}"}} '
        for i in range(NUM_FEATURES)
    )


@lru_cache(maxsize=65_536)
def _inference_labels(satellite_id: str, subsystem: str, model_name: str) -> str:
    return (
        f'satellite_id="{_escape(satellite_id)}",subsystem="{_escape(subsystem)}",'
        f'model_name="{_escape(model_name)}"'
    )


@lru_cache(maxsize=65_536)
def _timestep_prefixes(labels: str) -> tuple[str, ...]:
    return (
        f"inference_anomaly_score{{{labels}}} ",
        f"inference_reconstruction_mean{{{labels}}} ",
        *(
            f'inference_reconstruction{{{labels},feature_index="{i}"}} '
            for i in range(NUM_FEATURES)
        ),
    )


def number_texts(values: Sequence[float]) -> list[str]:
    """Each value as its shortest round-trip decimal text, formatted in one call.

    Serialising the whole list with pydantic-core's JSON writer (Rust) and splitting it is
    several times faster than ``repr`` per value, which dominated the writer's profile.
    The values must be finite (the messages are validated): JSON has no NaN.
    """
    if not values:
        return []
    return to_json(values).decode()[1:-1].split(",")


def telemetry_lines(message: TelemetryMessage) -> list[str]:
    """Samples of one raw telemetry record: ``smap_feature`` per subsystem and feature,
    ``loop`` and ``record_index``, all at the record's timestamp.

    ``message`` is validated (finite values, 25 features per subsystem), so no value
    check is repeated here.
    """
    ts = f" {timestamp_ms(message.timestamp)}"
    sat = message.satellite_id
    prefixes: list[str] = []
    values: list[float] = []
    for subsystem, reading in message.subsystems.items():
        if len(reading.features) != NUM_FEATURES:
            raise ValueError(f"subsystems.{subsystem.value}: expected {NUM_FEATURES} features")
        prefixes += _feature_prefixes(sat, subsystem.value)
        values += reading.features
    lines = [f"{p}{v}{ts}" for p, v in zip(prefixes, number_texts(values), strict=True)]
    esc = _escape(sat)
    lines.append(f'loop{{satellite_id="{esc}"}} {message.loop}{ts}')
    lines.append(f'record_index{{satellite_id="{esc}"}} {message.record_index}{ts}')
    return lines


def result_lines(result: InferenceResult, stride: int) -> list[str]:
    """Samples of one window's result.

    Per window, at ``window_end_time``: ``inference_anomaly_detected`` (0/1),
    ``inference_anomaly_score_mean``, ``inference_anomaly_score_max``,
    ``inference_time_ms`` and, when the result has them, ``inference_threshold``,
    ``inference_context_distance`` and ``inference_context_threshold``,
    ``inference_context_hold`` and ``inference_context_hold_threshold`` (the context
    detector's, :mod:`smap_bench.model.context`), ``inference_forecast_statistic`` and
    ``inference_forecast_threshold`` (the forecaster's, :mod:`smap_bench.model.forecaster`).
    Per responsible timestep (:func:`responsible_offsets`), at that record's timestamp:
    ``inference_anomaly_score``, ``inference_reconstruction_mean`` (mean over the
    features) and ``inference_reconstruction{feature_index}``. A window responsible for
    ``k`` records gives ``5 + 27 k`` lines (275 for stride 10).
    """
    labels = _inference_labels(result.satellite_id, result.subsystem.value, result.model_name)
    n = result.window_size
    times = timestep_times_ms(result.window_start_time, result.window_end_time, n)
    end = f" {times[-1]}"
    lines = [
        f"inference_anomaly_detected{{{labels}}} {1 if result.is_anomaly else 0}{end}",
        f"inference_anomaly_score_mean{{{labels}}} {result.mean_anomaly_score!r}{end}",
        f"inference_anomaly_score_max{{{labels}}} {result.max_anomaly_score!r}{end}",
        f"inference_time_ms{{{labels}}} {result.inference_time_ms!r}{end}",
    ]
    if result.threshold is not None:
        lines.append(f"inference_threshold{{{labels}}} {result.threshold!r}{end}")
    if result.context_distance is not None and result.context_threshold is not None:
        lines.append(f"inference_context_distance{{{labels}}} {result.context_distance!r}{end}")
        lines.append(f"inference_context_threshold{{{labels}}} {result.context_threshold!r}{end}")
    if result.context_hold is not None and result.context_hold_threshold is not None:
        lines.append(f"inference_context_hold{{{labels}}} {result.context_hold}{end}")
        lines.append(
            f"inference_context_hold_threshold{{{labels}}} {result.context_hold_threshold!r}{end}"
        )
    if result.forecast_statistic is not None and result.forecast_threshold is not None:
        lines.append(f"inference_forecast_statistic{{{labels}}} {result.forecast_statistic!r}{end}")
        lines.append(f"inference_forecast_threshold{{{labels}}} {result.forecast_threshold!r}{end}")
    # Per timestep: score, reconstruction mean, then the 25 reconstructed features.
    prefixes = _timestep_prefixes(labels)
    width = len(prefixes)
    offsets = responsible_offsets(result.record_index_start, n, stride)
    scores = result.anomaly_scores
    values: list[float] = []
    for i in offsets:
        row = result.reconstructions[i]
        values.append(scores[i])
        values.append(sum(row) / len(row))
        values += row
    stamps = [f" {times[i]}" for i in offsets for _ in range(width)]
    all_prefixes = prefixes * len(offsets)
    texts = number_texts(values)
    lines += [f"{p}{v}{t}" for p, v, t in zip(all_prefixes, texts, stamps, strict=True)]
    return lines


def alarm_lines(results: Iterable[InferenceResult]) -> list[str]:
    """``anomaly_alarm`` (0/1) of each decided window, at its ``window_end_time``: the
    served decision (the result's final ``is_anomaly``), on the same series labels and
    timestamp as the worker's ``inference_anomaly_detected`` of :func:`result_lines`."""
    lines = []
    for result in results:
        labels = _inference_labels(result.satellite_id, result.subsystem.value, result.model_name)
        end = timestep_times_ms(result.window_start_time, result.window_end_time, 1)[-1]
        lines.append(f"anomaly_alarm{{{labels}}} {1 if result.is_anomaly else 0} {end}")
    return lines


def latency_lines(
    result: InferenceResult,
    written_at: float,
    stages: Sequence[str] = LATENCY_STAGES,
    writer_stage: str = "writer",
) -> list[str]:
    """``smap_e2e_latency_seconds{stage}``: seconds from the record's production (the
    ``simulator`` stamp) to each later stage that stamped the result, and to
    ``written_at`` (when VictoriaMetrics accepted the result's samples) as ``writer``.

    At the window's end timestamp, labelled by satellite and subsystem so that windows of
    different streams never share a (series, timestamp). No origin stamp, no lines.
    """
    stamps = result.stages or {}
    origin = stamps.get(ORIGIN_STAGE)
    if origin is None:
        return []
    ts = f" {timestamp_ms(result.window_end_time)}"
    head = (
        f'smap_e2e_latency_seconds{{satellite_id="{_escape(result.satellite_id)}",'
        f'subsystem="{result.subsystem.value}",stage="'
    )
    lines = []
    for stage in stages:
        at = written_at if stage == writer_stage else stamps.get(stage)
        if at is not None:
            lines.append(f'{head}{stage}"}} {max(at - origin, 0.0)!r}{ts}')
    return lines


@dataclass(frozen=True)
class Series:
    """One series read back: its labels and (timestamp seconds, value) pairs."""

    labels: dict[str, str]
    samples: list[tuple[float, float]]


def parse_export(text: str) -> list[Series]:
    """Series of an ``/api/v1/export`` answer (one JSON object per line; ms timestamps)."""
    found = []
    for line in text.splitlines():
        if not line:
            continue
        item = json.loads(line)
        pairs = zip(item["timestamps"], item["values"], strict=True)
        found.append(
            Series(labels=item["metric"], samples=[(ts / 1000.0, float(v)) for ts, v in pairs])
        )
    return found


def parse_matrix(payload: dict[str, Any]) -> list[Series]:
    """Series of a ``query_range`` answer (``data.result`` of ``[time, "value"]`` pairs)."""
    return [
        Series(labels=r["metric"], samples=[(float(t), float(v)) for t, v in r["values"]])
        for r in payload["data"]["result"]
    ]


def parse_vector(payload: dict[str, Any]) -> list[Series]:
    """Series of an instant ``query`` answer (one ``[time, "value"]`` sample each)."""
    return [
        Series(labels=r["metric"], samples=[(float(r["value"][0]), float(r["value"][1]))])
        for r in payload["data"]["result"]
    ]


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
        return parse_export(response.text)

    def query_range(self, query: str, start: float, end: float, step: str = "1s") -> list[Series]:
        """A PromQL/MetricsQL range query."""
        response = self._http.get(
            "/api/v1/query_range",
            params={"query": query, "start": start, "end": end, "step": step},
        )
        response.raise_for_status()
        return parse_matrix(response.json())

    def query(self, query: str, time: float | None = None) -> list[Series]:
        """An instant query."""
        params: dict[str, Any] = {"query": query}
        if time is not None:
            params["time"] = time
        response = self._http.get("/api/v1/query", params=params)
        response.raise_for_status()
        return parse_vector(response.json())
