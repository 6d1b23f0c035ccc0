"""What a dataset holds: channels per subsystem and labeled-anomaly statistics.

Shared by ``smap-bench data info`` and the data notebook, so both report the same
numbers. Tables are pandas DataFrames; :func:`dataset_summary` is plain JSON-ready data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from smap_bench.catalog import SUBSYSTEMS, sort_channels, subsystem_of
from smap_bench.data.loader import (
    ANOMALY_KINDS,
    DataSource,
    LabeledRange,
    list_channels,
    load_labels,
)
from smap_bench.data.synthetic import generate_dataset

#: Label used in tables for the B, G and R channels, which belong to no subsystem.
NO_SUBSYSTEM = "(none)"


def source_labels(source: DataSource) -> dict[str, tuple[LabeledRange, ...]]:
    """Labeled ranges of every channel the source provides (present arrays only)."""
    if source.path is None:
        return {c.channel: c.anomalies for c in generate_dataset()}
    labels = load_labels(source.path)
    return {channel: labels[channel] for channel in list_channels(source.path)}


def _subsystem_name(channel: str) -> str:
    subsystem = subsystem_of(channel)
    return subsystem.value if subsystem is not None else NO_SUBSYSTEM


def channels_per_subsystem(channels: Iterable[str]) -> pd.DataFrame:
    """One row per subsystem (plus one for channels of no subsystem): code, count, names."""
    names = sort_channels(channels)
    rows = []
    for subsystem in SUBSYSTEMS:
        own = [c for c in names if subsystem_of(c) is subsystem]
        rows.append((subsystem.value, subsystem.code, len(own), ", ".join(own)))
    other = [c for c in names if subsystem_of(c) is None]
    prefixes = "".join(sorted({c[0] for c in other}))
    rows.append((NO_SUBSYSTEM, prefixes, len(other), ", ".join(other)))
    return pd.DataFrame(rows, columns=["subsystem", "code", "channels", "names"])


def anomaly_frame(labels: Mapping[str, Sequence[LabeledRange]]) -> pd.DataFrame:
    """One row per labeled range: channel, subsystem, kind, start, end, length."""
    rows = [
        (
            channel,
            _subsystem_name(channel),
            r.kind,
            r.start,
            r.end,
            r.length,
        )
        for channel in sort_channels(labels)
        for r in labels[channel]
    ]
    return pd.DataFrame(rows, columns=["channel", "subsystem", "kind", "start", "end", "length"])


def anomaly_statistics(frame: pd.DataFrame) -> pd.DataFrame:
    """Count and length statistics of labeled ranges per kind, plus an ``all`` row."""
    groups = {kind: frame[frame["kind"] == kind] for kind in ANOMALY_KINDS}
    groups["all"] = frame
    rows = []
    for kind, part in groups.items():
        lengths = part["length"]
        rows.append(
            {
                "kind": kind,
                "count": len(part),
                "channels": part["channel"].nunique(),
                "length_min": int(lengths.min()) if len(part) else 0,
                "length_median": float(lengths.median()) if len(part) else 0.0,
                "length_mean": float(lengths.mean()) if len(part) else 0.0,
                "length_max": int(lengths.max()) if len(part) else 0,
            }
        )
    return pd.DataFrame(rows).set_index("kind")


def dataset_summary(source: DataSource) -> dict[str, Any]:
    """JSON-ready summary of a source (the fields of ``smap-bench data info --json``)."""
    labels = source_labels(source)
    missing: list[str] = []
    if source.path is not None:
        missing = [c for c in load_labels(source.path) if c not in labels]
    kinds = Counter(r.kind for ranges in labels.values() for r in ranges)
    subsystems = Counter(_subsystem_name(c) for c in labels)
    return {
        "source": source.kind,
        "path": str(source.path) if source.path is not None else None,
        "channels": len(labels),
        "anomalies": sum(kinds.values()),
        "anomalies_by_kind": {kind: kinds[kind] for kind in ANOMALY_KINDS},
        "channels_by_subsystem": {
            name: subsystems[name] for name in [*(s.value for s in SUBSYSTEMS), NO_SUBSYSTEM]
        },
        "missing_channels": missing,
        "channel_names": sort_channels(labels),
    }


def anomalies_per_subsystem(frame: pd.DataFrame) -> pd.DataFrame:
    """Labeled ranges per subsystem and kind (rows in subsystem order), with totals."""
    order = [*(s.value for s in SUBSYSTEMS), NO_SUBSYSTEM]
    table = (
        frame.groupby(["subsystem", "kind"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=order, columns=list(ANOMALY_KINDS), fill_value=0)
    )
    table["total"] = table.sum(axis=1)
    return table
