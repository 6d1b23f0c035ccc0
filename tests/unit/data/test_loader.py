"""The telemanom-layout loader, on the real shared dataset and on small broken copies."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from smap_bench.catalog import SMAP_CHANNELS
from smap_bench.data.loader import (
    FETCH_MARKER,
    LABELS_FILE,
    ChannelData,
    DataError,
    LabeledRange,
    list_channels,
    load_all,
    load_channel,
    load_labels,
    resolve_data_dir,
)
from smap_bench.data.synthetic import generate_channel, write_synthetic_dataset

# --- the real dataset ----------------------------------------------------------------------


def _csv_rows(data_dir: Path) -> list[dict[str, str]]:
    with (data_dir / LABELS_FILE).open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_real_channels_are_the_54_smap_channels_in_natural_order(shared_smap: Path) -> None:
    channels = list_channels(shared_smap)
    assert len(channels) == 54
    assert channels == list(SMAP_CHANNELS)
    assert channels.index("D-9") < channels.index("D-11")
    assert channels[:2] == ["A-1", "A-2"] and channels[-1] == "T-3"


def test_real_labels_keep_smap_rows_only_and_both_p2_rows(shared_smap: Path) -> None:
    labels = load_labels(shared_smap)
    rows = _csv_rows(shared_smap)
    smap_rows = [r for r in rows if r["spacecraft"] == "SMAP"]
    msl_only = {r["chan_id"] for r in rows if r["spacecraft"] == "MSL"} - {
        r["chan_id"] for r in smap_rows
    }
    assert msl_only and not msl_only & set(labels)
    assert set(labels) == {r["chan_id"] for r in smap_rows}
    expected_ranges = sum(len(json.loads(r["anomaly_sequences"])) for r in smap_rows)
    assert sum(len(ranges) for ranges in labels.values()) == expected_ranges == 69
    assert labels["P-2"] == (
        LabeledRange(5300, 6420, "point"),
        LabeledRange(5350, 6575, "point"),
    )
    kinds = [r.kind for ranges in labels.values() for r in ranges]
    assert (kinds.count("point"), kinds.count("contextual")) == (43, 26)


def test_real_channel_arrays(shared_smap: Path) -> None:
    data = load_channel("P-1", shared_smap)
    raw_test = np.load(shared_smap / "test" / "P-1.npy")
    assert data.channel == "P-1"
    assert data.train.dtype == np.float32 and data.test.dtype == np.float32
    assert data.train.shape[1] == data.test.shape[1] == 25
    assert data.test.shape == raw_test.shape
    np.testing.assert_array_equal(data.test, raw_test.astype(np.float32))
    # the csv lists P-1's ranges out of order; the loader sorts them by start
    assert [r.start for r in data.anomalies] == sorted(r.start for r in data.anomalies)
    assert all(r.kind == "contextual" for r in data.anomalies)
    labels = data.test_labels()
    assert labels.sum() == sum(r.length for r in data.anomalies)
    assert labels[data.anomalies[0].start] and not labels[data.anomalies[0].start - 1]


def test_real_load_all_reports_unknown_names(shared_smap: Path) -> None:
    loaded, missing = load_all(shared_smap, ["A-1", "X-1", "S-1"])
    assert [c.channel for c in loaded] == ["A-1", "S-1"]
    assert missing == ["X-1"]


def test_unknown_channel_lists_what_exists(shared_smap: Path) -> None:
    with pytest.raises(DataError, match=r"unknown channel 'M-1'.*A-1, A-2"):
        load_channel("M-1", shared_smap)


# --- resolution ------------------------------------------------------------------------


def test_configured_directory_wins(small_dataset: Path, no_dataset: Path) -> None:
    source = resolve_data_dir(small_dataset)
    assert (source.kind, source.path) == ("directory", small_dataset.resolve())


def test_configured_directory_without_data_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"SMAP_DATA_DIR=.*does not hold a SMAP dataset"):
        resolve_data_dir(tmp_path / "absent")


def test_nothing_found_means_synthetic(no_dataset: Path) -> None:
    source = resolve_data_dir(None)
    assert (source.kind, source.path) == ("synthetic", None)
    assert "synthetic" in source.describe()


def test_search_order_data_then_shared(tmp_path: Path) -> None:
    repo, shared = tmp_path / "repo", tmp_path / "shared" / "smap"
    repo.mkdir()
    write_synthetic_dataset(shared, ["A-1"], train_rows=50, test_rows=100)
    # ../shared/smap relative to the working directory
    found = resolve_data_dir(None, cwd=repo, project_root=tmp_path / "elsewhere" / "x")
    assert found.path == shared.resolve()
    # ... and relative to the checkout, from an unrelated working directory
    other = tmp_path / "other" / "cwd"
    other.mkdir(parents=True)
    assert resolve_data_dir(None, cwd=other, project_root=repo).path == shared.resolve()
    # ./data/smap comes first
    local = write_synthetic_dataset(repo / "data" / "smap", ["A-2"], train_rows=50, test_rows=100)
    assert resolve_data_dir(None, cwd=repo, project_root=repo).path == local.resolve()


def test_incomplete_candidate_is_skipped_with_a_warning(
    no_dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (no_dataset / "data" / "smap").mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        assert resolve_data_dir(None).kind == "synthetic"
    assert "holds no complete dataset" in caplog.text


def test_fetched_archive_is_reported_as_archive(small_dataset: Path) -> None:
    (small_dataset / FETCH_MARKER).write_text("{}")
    assert resolve_data_dir(small_dataset).kind == "archive"


def test_no_dataset_loads_synthetic_channels(no_dataset: Path) -> None:
    data = load_channel("E-1")
    expected = generate_channel("E-1")
    np.testing.assert_array_equal(data.test, expected.test)
    assert data.anomalies == expected.anomalies
    loaded, missing = load_all(None, ["A-1", "Q-1"])
    assert [c.channel for c in loaded] == ["A-1"] and missing == ["Q-1"]
    with pytest.raises(DataError, match="synthetic"):
        load_channel("Q-1")


# --- broken copies ---------------------------------------------------------------------


def test_missing_array_is_reported_and_skipped(
    small_dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (small_dataset / "train" / "A-2.npy").unlink()
    with caplog.at_level(logging.WARNING):
        assert list_channels(small_dataset) == ["A-1", "E-1"]
    assert "A-2" in caplog.text and "A-2.npy" in caplog.text
    loaded, missing = load_all(small_dataset)
    assert [c.channel for c in loaded] == ["A-1", "E-1"]
    assert missing == ["A-2"]
    with pytest.raises(DataError, match=r"A-2\.npy: file not found"):
        load_channel("A-2", small_dataset)


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.zeros((40, 24)), r"shape \(40, 24\), expected \(rows, 25\)"),
        (np.zeros(40), r"shape \(40,\)"),
        (np.zeros((0, 25)), "no rows"),
        (np.full((40, 25), np.nan), "1000 values are NaN or infinite"),
        (np.array([["x"] * 25] * 4), "dtype <U1"),
    ],
)
def test_bad_array_names_file_and_problem(
    small_dataset: Path, array: np.ndarray, problem: str
) -> None:
    np.save(small_dataset / "test" / "E-1.npy", array)
    with pytest.raises(DataError, match=r"test/E-1\.npy: " + problem):
        load_channel("E-1", small_dataset)


def test_unreadable_array(small_dataset: Path) -> None:
    (small_dataset / "train" / "A-1.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"train/A-1\.npy: not a readable \.npy array"):
        load_channel("A-1", small_dataset)


def test_pickled_array_is_refused(small_dataset: Path) -> None:
    np.save(small_dataset / "train" / "A-1.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="not a readable"):
        load_channel("A-1", small_dataset)


def _rewrite_labels(
    data_dir: Path, edit: dict[str, str], extra: list[list[str]] | None = None
) -> None:
    rows = _csv_rows(data_dir)
    with (data_dir / LABELS_FILE).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, **edit} if row["chan_id"] == "A-1" else row)
        for values in extra or []:
            writer.writerow(dict(zip(rows[0], values, strict=True)))


def test_msl_rows_are_ignored(small_dataset: Path) -> None:
    _rewrite_labels(small_dataset, {}, [["M-1", "MSL", "[[1, 2]]", "[point]", "100"]])
    assert "M-1" not in load_labels(small_dataset)
    assert list_channels(small_dataset) == ["A-1", "A-2", "E-1"]


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        ({"class": "[sideways]"}, "unknown anomaly class 'sideways'"),
        ({"anomaly_sequences": "[[5, 2]]", "class": "[point]"}, r"bad anomaly range \[5, 2\]"),
        ({"anomaly_sequences": "[[1, 2"}, "bad anomaly_sequences"),
        ({"anomaly_sequences": "[[1, 2], [3, 4]]", "class": "[point]"}, "2 ranges but 1 classes"),
        ({"chan_id": "a1"}, "bad channel name 'a1'"),
    ],
)
def test_bad_labels_name_the_line(small_dataset: Path, edit: dict[str, str], problem: str) -> None:
    _rewrite_labels(small_dataset, edit)
    with pytest.raises(DataError, match=r"labeled_anomalies\.csv line 2 .*" + problem):
        load_labels(small_dataset)


def test_label_beyond_the_test_split(small_dataset: Path) -> None:
    _rewrite_labels(small_dataset, {"anomaly_sequences": "[[10, 400]]", "class": "[point]"})
    with pytest.raises(DataError, match=r"400 rows, but labeled range \[10, 400\]"):
        load_channel("A-1", small_dataset)


def test_missing_labels_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"labeled_anomalies\.csv: file not found"):
        load_labels(tmp_path)


def test_channel_data_is_frozen(small_dataset: Path) -> None:
    data = load_channel("A-1", small_dataset)
    assert isinstance(data, ChannelData)
    with pytest.raises(AttributeError):
        data.channel = "A-2"  # type: ignore[misc]
