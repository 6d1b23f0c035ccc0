"""Tables and plots of benchmark results (notebooks show them; the logic lives here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import holoviews as hv
import pandas as pd


def sweep_frame(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per fleet size: throughput, latency, loss."""
    rows = []
    for r in results:
        e2e = r.get("e2e_latency_ms") or {}
        rows.append(
            {
                "satellites": r["satellites"],
                "subsystem_records_per_s": r["subsystem_records_per_s"],
                "windows_per_s": r["windows_per_s"],
                "e2e_p50_ms": e2e.get("p50"),
                "e2e_p99_ms": e2e.get("p99"),
                "lost": r["lost"],
                "kafka_lag_max": r["kafka_lag"]["max"],
            }
        )
    return pd.DataFrame(rows).sort_values("satellites").reset_index(drop=True)


def stage_frame(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """CPU and memory of every process, per fleet size (long format)."""
    rows = [
        {"satellites": r["satellites"], "process": name, **values}
        for r in results
        for name, values in r["stages"].items()
    ]
    return pd.DataFrame(rows)


def sweep_plot(frame: pd.DataFrame) -> hv.Layout:
    """Throughput and end-to-end latency against the number of satellites."""
    throughput = hv.Curve(frame, "satellites", "subsystem_records_per_s").opts(
        title="Throughput", ylabel="subsystem records/s"
    ) * hv.Scatter(frame, "satellites", "subsystem_records_per_s")
    latency = (
        hv.Curve(frame, "satellites", "e2e_p50_ms", label="p50")
        * hv.Curve(frame, "satellites", "e2e_p99_ms", label="p99")
    ).opts(title="End-to-end latency", ylabel="ms")
    return (throughput + latency).opts(shared_axes=False)


def cpu_plot(stages: pd.DataFrame) -> hv.Bars:
    """CPU per process and fleet size: where the two cores go."""
    return hv.Bars(stages, ["process", "satellites"], "cpu_percent").opts(
        title="CPU per process (% of one core)", xrotation=45, width=800, height=320
    )
