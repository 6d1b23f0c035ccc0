"""Read the SMAP dataset in the telemanom layout, and find where it is.

Layout (the public archive's)::

    <data_dir>/train/<channel>.npy     (rows, 25) anomaly-free training split
    <data_dir>/test/<channel>.npy      (rows, 25) test split
    <data_dir>/labeled_anomalies.csv   chan_id, spacecraft, anomaly_sequences, class, num_values

Only rows with ``spacecraft == SMAP`` are used; the csv also lists MSL channels. P-2 has
two rows with different ranges: both are kept, as two labeled ranges of one channel.
Ranges are inclusive row indices into the test split, returned sorted by start.

Where the data is: :func:`resolve_data_dir` tries the ``SMAP_DATA_DIR`` setting, then
``./data/smap`` (where ``smap-bench data fetch`` puts the public archive), then
``../shared/smap``, both relative to the working directory and to the checkout; with none
of them, the source is ``synthetic`` (:mod:`smap_bench.data.synthetic`).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from smap_bench.catalog import CatalogError, channel_sort_key, parse_channel
from smap_bench.config import PROJECT_ROOT

log = logging.getLogger(__name__)

LABELS_FILE = "labeled_anomalies.csv"
SPACECRAFT = "SMAP"
NUM_COLUMNS = 25
#: Marker written by ``smap-bench data fetch`` into a directory holding the public archive.
FETCH_MARKER = "SOURCE.json"
ANOMALY_KINDS = ("point", "contextual")


class DataError(ValueError):
    """The dataset is missing, or one of its files does not have the expected form."""


@dataclass(frozen=True)
class LabeledRange:
    """One labeled anomaly: test rows ``start`` to ``end``, both inclusive."""

    start: int
    end: int
    kind: str  # "point" or "contextual"

    @property
    def length(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class ChannelData:
    """The train and test split of one channel, float32 (rows, 25), and its labels."""

    channel: str
    train: np.ndarray
    test: np.ndarray
    anomalies: tuple[LabeledRange, ...]

    def test_labels(self) -> np.ndarray:
        """Per test row: True inside a labeled range."""
        labels = np.zeros(len(self.test), dtype=bool)
        for anomaly in self.anomalies:
            labels[anomaly.start : anomaly.end + 1] = True
        return labels


@dataclass(frozen=True)
class DataSource:
    """Where the dataset comes from.

    ``directory``: a telemanom-layout folder (setting or shared copy); ``archive``: the
    public archive downloaded by ``smap-bench data fetch``; ``synthetic``: no data found,
    channels are generated (``path`` is None).
    """

    kind: Literal["directory", "archive", "synthetic"]
    path: Path | None

    def describe(self) -> str:
        """One line for logs and ``data info``."""
        if self.kind == "synthetic":
            return (
                "synthetic (no SMAP dataset in SMAP_DATA_DIR, ./data/smap or ../shared/smap; "
                "`smap-bench data fetch` downloads it)"
            )
        return f"{self.kind} {self.path}"


def is_dataset(path: Path) -> bool:
    """Whether ``path`` looks like a telemanom-layout dataset (labels file and test/)."""
    return (path / LABELS_FILE).is_file() and (path / "test").is_dir()


def _source_at(path: Path) -> DataSource:
    kind: Literal["directory", "archive"] = (
        "archive" if (path / FETCH_MARKER).is_file() else "directory"
    )
    return DataSource(kind, path)


def candidate_dirs(cwd: Path | None = None, project_root: Path | None = None) -> list[Path]:
    """The places searched when no directory is configured, in order, without repeats.

    ``./data/smap`` and ``../shared/smap``, each relative to ``cwd`` (default: the working
    directory) and to ``project_root`` (default: the checkout this package runs from).
    """
    base = (cwd or Path.cwd()).resolve()
    project_root = project_root or PROJECT_ROOT
    candidates = [
        base / "data" / "smap",
        project_root / "data" / "smap",
        base.parent / "shared" / "smap",
        project_root.parent / "shared" / "smap",
    ]
    unique: list[Path] = []
    for path in candidates:
        resolved = path.resolve()
        if resolved not in unique:
            unique.append(resolved)
    return unique


def resolve_data_dir(
    settings_data_dir: Path | None,
    *,
    cwd: Path | None = None,
    project_root: Path | None = None,
) -> DataSource:
    """Find the dataset: the configured directory, else the first candidate holding one.

    A configured directory that does not hold a dataset is an error (not a silent
    fallback); an incomplete candidate is logged and passed over.
    """
    if settings_data_dir is not None:
        path = Path(settings_data_dir).expanduser().resolve()
        if not is_dataset(path):
            raise DataError(
                f"SMAP_DATA_DIR={path} does not hold a SMAP dataset "
                f"(expected {LABELS_FILE}, train/ and test/ there)"
            )
        return _source_at(path)
    for path in candidate_dirs(cwd, project_root):
        if is_dataset(path):
            return _source_at(path)
        if path.exists():
            log.warning("%s exists but holds no complete dataset; skipped", path)
    return DataSource("synthetic", None)


def _parse_kinds(text: str, where: str) -> list[str]:
    kinds = [part.strip().strip("'\"") for part in text.strip().strip("[]").split(",")]
    for kind in kinds:
        if kind not in ANOMALY_KINDS:
            raise DataError(f"{where}: unknown anomaly class {kind!r}")
    return kinds


def _parse_ranges(text: str, where: str) -> list[tuple[int, int]]:
    try:
        pairs = json.loads(text)
        ranges = [(int(start), int(end)) for start, end in pairs]
    except (ValueError, TypeError) as error:
        raise DataError(f"{where}: bad anomaly_sequences {text!r} ({error})") from None
    for start, end in ranges:
        if not 0 <= start <= end:
            raise DataError(f"{where}: bad anomaly range [{start}, {end}]")
    return ranges


def load_labels(data_dir: Path) -> dict[str, tuple[LabeledRange, ...]]:
    """Labeled ranges of every SMAP channel in ``labeled_anomalies.csv``."""
    path = Path(data_dir) / LABELS_FILE
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    collected: dict[str, list[LabeledRange]] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        required = {"chan_id", "spacecraft", "anomaly_sequences", "class"}
        missing = required - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path}: missing columns {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            if row["spacecraft"].strip() != SPACECRAFT:
                continue
            channel = row["chan_id"].strip()
            where = f"{path} line {line} ({channel})"
            try:
                parse_channel(channel)
            except CatalogError as error:
                raise DataError(f"{where}: {error}") from None
            ranges = _parse_ranges(row["anomaly_sequences"], where)
            kinds = _parse_kinds(row["class"], where)
            if len(kinds) != len(ranges):
                raise DataError(f"{where}: {len(ranges)} ranges but {len(kinds)} classes")
            collected.setdefault(channel, []).extend(
                LabeledRange(start, end, kind)
                for (start, end), kind in zip(ranges, kinds, strict=True)
            )
    return {
        channel: tuple(sorted(ranges, key=lambda r: (r.start, r.end)))
        for channel, ranges in sorted(collected.items(), key=lambda item: channel_sort_key(item[0]))
    }


def _array_paths(data_dir: Path, channel: str) -> tuple[Path, Path]:
    return data_dir / "train" / f"{channel}.npy", data_dir / "test" / f"{channel}.npy"


def list_channels(data_dir: Path) -> list[str]:
    """SMAP channels whose train and test arrays both exist, in natural order.

    Labeled channels without arrays are logged as warnings and left out.
    """
    data_dir = Path(data_dir)
    present = []
    for channel in load_labels(data_dir):
        missing = [p for p in _array_paths(data_dir, channel) if not p.is_file()]
        if missing:
            log.warning(
                "channel %s skipped: missing %s", channel, ", ".join(str(p) for p in missing)
            )
            continue
        present.append(channel)
    return present


def _load_array(path: Path) -> np.ndarray:
    """A (rows, 25) float32 array of finite values from ``path``, or a DataError."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npy array ({error})") from None
    if array.ndim != 2 or array.shape[1] != NUM_COLUMNS:
        raise DataError(f"{path}: shape {array.shape}, expected (rows, {NUM_COLUMNS})")
    if array.shape[0] == 0:
        raise DataError(f"{path}: no rows")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise DataError(f"{path}: dtype {array.dtype}, expected a numeric array")
    result = array.astype(np.float32)
    if not np.isfinite(result).all():
        bad = int(np.count_nonzero(~np.isfinite(result)))
        raise DataError(f"{path}: {bad} values are NaN or infinite")
    return result


def _read_channel(
    channel: str, data_dir: Path, labels: dict[str, tuple[LabeledRange, ...]]
) -> ChannelData:
    if channel not in labels:
        known = ", ".join(labels) or "none"
        raise DataError(
            f"unknown channel {channel!r} in {data_dir / LABELS_FILE}; SMAP channels: {known}"
        )
    train_path, test_path = _array_paths(data_dir, channel)
    train, test = _load_array(train_path), _load_array(test_path)
    anomalies = labels[channel]
    beyond = [a for a in anomalies if a.end >= len(test)]
    if beyond:
        raise DataError(
            f"{test_path}: {len(test)} rows, but labeled range "
            f"[{beyond[0].start}, {beyond[0].end}] goes beyond them"
        )
    return ChannelData(channel, train, test, anomalies)


def _synthetic(channels: Sequence[str] | None) -> tuple[list[ChannelData], list[str]]:
    # imported here: the synthetic module builds on this one's types
    from smap_bench.data.synthetic import SYNTHETIC_CHANNELS, generate_channel

    wanted = list(channels) if channels is not None else list(SYNTHETIC_CHANNELS)
    missing = [c for c in wanted if c not in SYNTHETIC_CHANNELS]
    return [generate_channel(c) for c in wanted if c in SYNTHETIC_CHANNELS], missing


def load_channel(channel: str, data_dir: Path | None = None) -> ChannelData:
    """One channel's splits and labels; with no ``data_dir``, from :func:`resolve_data_dir`.

    ``data_dir=None`` resolves without a configured directory and falls back to the
    synthetic channels when no dataset is found.
    """
    if data_dir is None:
        source = resolve_data_dir(None)
        if source.path is None:
            loaded, _ = _synthetic([channel])
            if not loaded:
                raise DataError(f"unknown channel {channel!r} among the synthetic channels")
            return loaded[0]
        data_dir = source.path
    data_dir = Path(data_dir)
    return _read_channel(channel, data_dir, load_labels(data_dir))


def load_all(
    data_dir: Path | None, channels: Sequence[str] | None = None
) -> tuple[list[ChannelData], list[str]]:
    """Every present SMAP channel (or those named), and the names that could not be loaded.

    A named channel that is unknown or lacks arrays goes to the second list (with a
    warning); a present channel whose files are malformed raises DataError.
    ``data_dir=None`` resolves as :func:`load_channel` does.
    """
    if data_dir is None:
        source = resolve_data_dir(None)
        if source.path is None:
            return _synthetic(channels)
        data_dir = source.path
    data_dir = Path(data_dir)
    labels = load_labels(data_dir)
    present = list_channels(data_dir)
    wanted = present if channels is None else list(channels)
    loaded, missing = [], []
    for channel in wanted:
        if channel not in present:
            log.warning("channel %s not loaded: unknown or without arrays in %s", channel, data_dir)
            missing.append(channel)
            continue
        loaded.append(_read_channel(channel, data_dir, labels))
    if channels is None:
        missing = [c for c in labels if c not in present]
    return loaded, missing
