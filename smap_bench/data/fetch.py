"""Download the public SMAP/MSL archive (telemanom layout) into ``./data/smap``.

The archive holds ``data/train/<chan>.npy`` and ``data/test/<chan>.npy``; the labels file
is downloaded beside it. Arrays are extracted by file name only (no paths from the
archive are trusted), then a ``SOURCE.json`` marker records where they came from, which
makes :func:`smap_bench.data.loader.resolve_data_dir` report the source as ``archive``.
Transient network errors are retried; an unreachable host ends in one :class:`FetchError`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import httpx
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from smap_bench.data.loader import FETCH_MARKER, LABELS_FILE

DATA_URL = "https://s3-us-west-2.amazonaws.com/telemanom/data.zip"
LABELS_URL = "https://raw.githubusercontent.com/khundman/telemanom/master/labeled_anomalies.csv"
DEFAULT_DEST = Path("data") / "smap"
_CHUNK = 1 << 16


class FetchError(RuntimeError):
    """The archive could not be downloaded or unpacked; the message says why, in one line."""


def _retryable(error: BaseException) -> bool:
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code >= 500 or error.response.status_code == 429
    return isinstance(error, httpx.TransportError)


def _download_once(url: str, target: Path, timeout: float, progress: Progress | None) -> None:
    partial = target.with_name(target.name + ".part")
    with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
        response.raise_for_status()
        total = int(response.headers.get("content-length", 0)) or None
        task = progress.add_task(target.name, total=total) if progress else None
        with partial.open("wb") as handle:
            for chunk in response.iter_bytes(_CHUNK):
                handle.write(chunk)
                if progress is not None and task is not None:
                    progress.update(task, advance=len(chunk))
    partial.replace(target)


def download(
    url: str,
    target: Path,
    *,
    timeout: float = 30.0,
    attempts: int = 4,
    max_wait: float = 20.0,
    progress: Progress | None = None,
) -> Path:
    """Stream ``url`` to ``target`` with retries on transient errors; FetchError otherwise."""
    target.parent.mkdir(parents=True, exist_ok=True)
    retrying = Retrying(
        retry=retry_if_exception(_retryable),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=1.0, max=max_wait),
        reraise=False,
    )
    try:
        for attempt in retrying:
            with attempt:
                _download_once(url, target, timeout, progress)
    except RetryError as error:
        last = error.last_attempt.exception()
        raise FetchError(
            f"cannot download {url} ({_reason(last)}, {attempts} attempt(s)); check the "
            "network, or copy the dataset to ./data/smap, or set SMAP_DATA_DIR"
        ) from None
    except httpx.HTTPError as error:
        raise FetchError(f"cannot download {url}: {_reason(error)}") from None
    finally:
        target.with_name(target.name + ".part").unlink(missing_ok=True)
    return target


def _reason(error: BaseException | None) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code}"
    text = " ".join(str(error).split()) if error is not None else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def extract_arrays(archive: Path, dest: Path) -> int:
    """Copy every ``train/*.npy`` and ``test/*.npy`` of ``archive`` into ``dest``; count them."""
    count = 0
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                parts = PurePosixPath(member.filename).parts
                if member.is_dir() or len(parts) < 2 or not parts[-1].endswith(".npy"):
                    continue
                split, name = parts[-2], parts[-1]
                if split not in ("train", "test"):
                    continue
                (dest / split).mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, (dest / split / name).open("wb") as out:
                    shutil.copyfileobj(source, out)
                count += 1
    except zipfile.BadZipFile as error:
        raise FetchError(f"{archive}: not a zip archive ({error})") from None
    if count == 0:
        raise FetchError(f"{archive}: no train/*.npy or test/*.npy inside")
    return count


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_dataset(
    dest: Path = DEFAULT_DEST,
    *,
    data_url: str = DATA_URL,
    labels_url: str = LABELS_URL,
    timeout: float = 30.0,
    attempts: int = 4,
    max_wait: float = 20.0,
    show_progress: bool = True,
    keep_archive: bool = False,
) -> Path:
    """Download and unpack the public archive and its labels into ``dest``; returns ``dest``.

    On failure a ``dest`` created by this call is removed again, so that no half-filled
    folder is left for the loader to find.
    """
    dest = Path(dest)
    created = not dest.exists()
    archive = dest / "data.zip"
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, disable=not show_progress) as progress:
            for url, target in ((labels_url, dest / LABELS_FILE), (data_url, archive)):
                download(
                    url,
                    target,
                    timeout=timeout,
                    attempts=attempts,
                    max_wait=max_wait,
                    progress=progress,
                )
        arrays = extract_arrays(archive, dest)
    except FetchError:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    marker = {
        "data_url": data_url,
        "labels_url": labels_url,
        "archive_sha256": _sha256(archive),
        "labels_sha256": _sha256(dest / LABELS_FILE),
        "arrays": arrays,
        "fetched_at": datetime.now(UTC).isoformat(),
    }
    (dest / FETCH_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    if not keep_archive:
        archive.unlink()
    return dest
