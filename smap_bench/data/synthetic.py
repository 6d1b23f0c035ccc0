"""SMAP-shaped channels with labeled anomalies, generated offline and deterministically.

Used when no dataset is found, so that the whole stack runs without a download. Each
channel mimics the real layout: column 0 is a continuous telemetry value (a sum of
sinusoids plus noise, inside the normal range [-0.8, 0.8] of the [-1, 1] scale), columns
1..24 are sparse one-hot commands (at most one per row). The test split carries injected
anomalies of the dataset's two kinds:

- ``point``: values outside the normal range (spikes or a level shift, |x| > 0.85);
- ``contextual``: values inside the normal range with the wrong shape (the signal
  freezes, or oscillates at a different frequency).

The same (channel, seed, sizes) always give the same arrays, on any machine.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from smap_bench.catalog import SMAP_CHANNELS
from smap_bench.data.loader import LABELS_FILE, NUM_COLUMNS, ChannelData, LabeledRange

#: Channels the synthetic source provides: the names of the real ones.
SYNTHETIC_CHANNELS: tuple[str, ...] = SMAP_CHANNELS
#: Column 0 stays within +-NORMAL_LIMIT outside anomalies.
NORMAL_LIMIT = 0.8
#: Point anomalies stay beyond +-POINT_FLOOR (and within +-1).
POINT_FLOOR = 0.85
COMMAND_RATE = 0.01
DEFAULT_TRAIN_ROWS = 2000
DEFAULT_TEST_ROWS = 4000


def _rng(channel: str, seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(channel.encode()), stream])


def _signal(rng: np.random.Generator, n: int, train_rows: int) -> np.ndarray:
    """Sum of 2-3 sinusoids plus noise, scaled on the train part to +-NORMAL_LIMIT."""
    t = np.arange(n, dtype=np.float64)
    components = int(rng.integers(2, 4))
    periods = rng.uniform(40.0, 400.0, components)
    amplitudes = rng.uniform(0.3, 1.0, components)
    phases = rng.uniform(0.0, 2 * np.pi, components)
    x = amplitudes[:, None] * np.sin(2 * np.pi * t[None, :] / periods[:, None] + phases[:, None])
    values = x.sum(axis=0) + rng.normal(0.0, 0.02 * amplitudes.sum(), n)
    lo, hi = values[:train_rows].min(), values[:train_rows].max()
    scaled = (2.0 * (values - lo) / (hi - lo) - 1.0) * NORMAL_LIMIT
    return np.clip(scaled, -NORMAL_LIMIT, NORMAL_LIMIT)


def _commands(rng: np.random.Generator, n: int) -> np.ndarray:
    """Sparse one-hot commands over a few of the 24 command columns."""
    commands = np.zeros((n, NUM_COLUMNS - 1))
    used = rng.choice(NUM_COLUMNS - 1, size=int(rng.integers(1, 6)), replace=False)
    rows = np.flatnonzero(rng.random(n) < COMMAND_RATE)
    commands[rows, rng.choice(used, size=len(rows))] = 1.0
    return commands


def _place(rng: np.random.Generator, test_rows: int) -> list[LabeledRange]:
    """1-3 non-overlapping ranges, one per equal slot after a 10% lead-in."""
    count = int(rng.integers(1, 4))
    lead = test_rows // 10
    slot = (test_rows - lead) // count
    ranges = []
    for i in range(count):
        kind = "point" if rng.random() < 0.5 else "contextual"
        low, high = (5, 40) if kind == "point" else (60, 250)
        length = int(rng.integers(low, high + 1))
        length = max(1, min(length, slot // 2))
        start = lead + i * slot + int(rng.integers(0, slot - length + 1))
        ranges.append(LabeledRange(start, start + length - 1, kind))
    return ranges


def _inject(rng: np.random.Generator, value: np.ndarray, anomaly: LabeledRange) -> None:
    """Overwrite ``value[start:end+1]`` (test column 0) with an anomaly of its kind."""
    span = slice(anomaly.start, anomaly.end + 1)
    n = anomaly.length
    if anomaly.kind == "point":
        sign = rng.choice([-1.0, 1.0])
        if rng.random() < 0.5:  # level shift: a steady out-of-range value
            magnitude = rng.uniform(0.9, 0.97) + rng.normal(0.0, 0.01, n)
        else:  # spikes
            magnitude = rng.uniform(POINT_FLOOR + 0.02, 1.0, n)
        value[span] = sign * np.clip(magnitude, POINT_FLOOR + 0.01, 1.0)
        return
    if rng.random() < 0.5:  # frozen signal, at the value where it stopped
        shape = value[anomaly.start] + rng.normal(0.0, 0.002, n)
    else:  # fast oscillation, inside the normal range
        shape = 0.5 * NORMAL_LIMIT * np.sin(2 * np.pi * np.arange(n) / rng.uniform(4.0, 10.0))
    value[span] = np.clip(shape, -NORMAL_LIMIT, NORMAL_LIMIT)


def generate_channel(
    channel: str,
    *,
    seed: int = 0,
    train_rows: int = DEFAULT_TRAIN_ROWS,
    test_rows: int = DEFAULT_TEST_ROWS,
) -> ChannelData:
    """One synthetic channel: float32 (rows, 25) splits and the injected labeled ranges."""
    if train_rows < 10 or test_rows < 50:
        raise ValueError(
            f"need train_rows >= 10 and test_rows >= 50, got {train_rows}, {test_rows}"
        )
    n = train_rows + test_rows
    rng = _rng(channel, seed, 0)
    value = _signal(rng, n, train_rows)
    commands = _commands(rng, n)
    anomalies = _place(_rng(channel, seed, 1), test_rows)
    test_value = value[train_rows:]
    inject_rng = _rng(channel, seed, 2)
    for anomaly in anomalies:
        _inject(inject_rng, test_value, anomaly)
    array = np.column_stack([value, commands]).astype(np.float32)
    return ChannelData(channel, array[:train_rows], array[train_rows:], tuple(anomalies))


def generate_dataset(
    channels: Sequence[str] | None = None, *, seed: int = 0, **sizes: int
) -> list[ChannelData]:
    """Synthetic channels in memory (all of :data:`SYNTHETIC_CHANNELS` by default)."""
    names = list(channels) if channels is not None else list(SYNTHETIC_CHANNELS)
    return [generate_channel(c, seed=seed, **sizes) for c in names]


def _format_labels(anomalies: Sequence[LabeledRange]) -> tuple[str, str]:
    ranges = "[" + ", ".join(f"[{a.start}, {a.end}]" for a in anomalies) + "]"
    kinds = "[" + ", ".join(a.kind for a in anomalies) + "]"
    return ranges, kinds


def write_synthetic_dataset(
    path: Path, channels: Sequence[str] | None = None, *, seed: int = 0, **sizes: int
) -> Path:
    """Write synthetic channels to ``path`` in the telemanom layout; returns ``path``.

    Arrays are written as float64 and the labels csv in the official format, so the
    loader reads them exactly as it reads the real dataset.
    """
    path = Path(path)
    (path / "train").mkdir(parents=True, exist_ok=True)
    (path / "test").mkdir(parents=True, exist_ok=True)
    data = generate_dataset(channels, seed=seed, **sizes)
    with (path / LABELS_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["chan_id", "spacecraft", "anomaly_sequences", "class", "num_values"])
        for channel in data:
            np.save(path / "train" / f"{channel.channel}.npy", channel.train.astype(np.float64))
            np.save(path / "test" / f"{channel.channel}.npy", channel.test.astype(np.float64))
            ranges, kinds = _format_labels(channel.anomalies)
            writer.writerow([channel.channel, "SMAP", ranges, kinds, len(channel.test)])
    return path
