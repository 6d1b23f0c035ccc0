"""``data fetch``: retries, the offline error, safe unpacking, a full run from a local server."""

from __future__ import annotations

import functools
import http.server
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from smap_bench.data import fetch
from smap_bench.data.fetch import FetchError, download, extract_arrays, fetch_dataset
from smap_bench.data.loader import FETCH_MARKER, LABELS_FILE, list_channels, resolve_data_dir
from smap_bench.data.synthetic import write_synthetic_dataset

UNREACHABLE = "http://127.0.0.1:9"  # discard port: connection refused, no network needed


def test_offline_gives_one_clear_line_and_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "data" / "smap"
    with pytest.raises(FetchError) as caught:
        fetch_dataset(
            dest,
            data_url=f"{UNREACHABLE}/data.zip",
            labels_url=f"{UNREACHABLE}/labeled_anomalies.csv",
            attempts=2,
            max_wait=0.01,
            show_progress=False,
        )
    message = str(caught.value)
    assert "\n" not in message
    assert f"cannot download {UNREACHABLE}/labeled_anomalies.csv" in message
    assert "ConnectError" in message and "2 attempt(s)" in message
    assert not dest.exists()


def test_transient_errors_are_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def flaky(url: str, target: Path, timeout: float, progress: object) -> None:
        calls.append(url)
        if len(calls) < 3:
            raise httpx.ConnectError("refused")
        target.write_bytes(b"ok")

    monkeypatch.setattr(fetch, "_download_once", flaky)
    target = download("http://x/file", tmp_path / "file", attempts=3, max_wait=0.01)
    assert target.read_bytes() == b"ok" and len(calls) == 3


def test_http_404_is_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def missing(url: str, target: Path, timeout: float, progress: object) -> None:
        calls.append(url)
        request = httpx.Request("GET", url)
        raise httpx.HTTPStatusError(
            "not found", request=request, response=httpx.Response(404, request=request)
        )

    monkeypatch.setattr(fetch, "_download_once", missing)
    with pytest.raises(FetchError, match=r"cannot download http://x/file: HTTP 404"):
        download("http://x/file", tmp_path / "file", attempts=3, max_wait=0.01)
    assert len(calls) == 1


def _zip_of(dataset: Path, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(archive, "w") as bundle:
        for npy in sorted(dataset.glob("*/*.npy")):
            bundle.write(npy, f"data/{npy.parent.name}/{npy.name}")
        for name, content in (extra or {}).items():
            bundle.writestr(name, content)
    return archive


def test_extract_takes_only_train_and_test_arrays(tmp_path: Path) -> None:
    source = write_synthetic_dataset(tmp_path / "src", ["A-1", "B-1"], train_rows=20, test_rows=60)
    archive = _zip_of(
        source,
        tmp_path / "data.zip",
        {"../evil.npy": b"x", "data/train/../../evil2.npy": b"x", "data/readme.txt": b"x"},
    )
    dest = tmp_path / "out"
    assert extract_arrays(archive, dest) == 4
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.npy")) == [
        "test/A-1.npy",
        "test/B-1.npy",
        "train/A-1.npy",
        "train/B-1.npy",
    ]
    assert not (tmp_path / "evil.npy").exists()
    np.testing.assert_array_equal(np.load(dest / "test/A-1.npy"), np.load(source / "test/A-1.npy"))


def test_extract_refuses_a_non_zip(tmp_path: Path) -> None:
    bogus = tmp_path / "data.zip"
    bogus.write_text("<html>captive portal</html>")
    with pytest.raises(FetchError, match="not a zip archive"):
        extract_arrays(bogus, tmp_path / "out")


@pytest.fixture
def local_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain HTTP server on 127.0.0.1 serving a folder (stands in for S3 and GitHub)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_full_fetch_from_a_local_mirror(tmp_path: Path, local_server: tuple[str, Path]) -> None:
    url, root = local_server
    source = write_synthetic_dataset(tmp_path / "src", ["A-1", "E-2"], train_rows=20, test_rows=60)
    _zip_of(source, root / "data.zip")
    (root / LABELS_FILE).write_bytes((source / LABELS_FILE).read_bytes())
    dest = fetch_dataset(
        tmp_path / "data" / "smap",
        data_url=f"{url}/data.zip",
        labels_url=f"{url}/{LABELS_FILE}",
        show_progress=False,
    )
    assert (dest / FETCH_MARKER).is_file() and not (dest / "data.zip").exists()
    assert resolve_data_dir(dest).kind == "archive"
    assert list_channels(dest) == ["A-1", "E-2"]
