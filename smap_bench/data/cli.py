"""``smap-bench data info`` and ``smap-bench data fetch``.

Thin shells over :mod:`smap_bench.data`: settings in, one summary or one clear error line
out (never a traceback for a missing dataset or an offline machine).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from smap_bench.config import get_settings
from smap_bench.data.fetch import DATA_URL, DEFAULT_DEST, LABELS_URL, FetchError, fetch_dataset
from smap_bench.data.loader import DataError, is_dataset, resolve_data_dir
from smap_bench.data.stats import dataset_summary

data_app = typer.Typer(help="Where the SMAP dataset is and what it holds.", no_args_is_help=True)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@data_app.command()
def info(
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the summary as JSON to this file.")
    ] = None,
) -> None:
    """Say which dataset is in use (directory, archive or synthetic) and what it holds."""
    try:
        source = resolve_data_dir(get_settings().data_dir)
        summary = dataset_summary(source)
    except DataError as error:
        raise _fail(str(error)) from None
    typer.echo(f"source     {source.describe()}")
    typer.echo(f"channels   {summary['channels']}")
    kinds = ", ".join(f"{k} {n}" for k, n in summary["anomalies_by_kind"].items())
    typer.echo(f"anomalies  {summary['anomalies']} ({kinds})")
    per_subsystem = ", ".join(f"{s} {n}" for s, n in summary["channels_by_subsystem"].items())
    typer.echo(f"subsystems {per_subsystem}")
    if summary["missing_channels"]:
        typer.echo(f"missing    {', '.join(summary['missing_channels'])} (labeled, no arrays)")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(summary, indent=2) + "\n")


@data_app.command()
def fetch(
    dest: Annotated[Path, typer.Option(help="Where to put the dataset.")] = DEFAULT_DEST,
    force: Annotated[bool, typer.Option(help="Download even if a dataset is there.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds without data before giving up.")] = 30.0,
    attempts: Annotated[int, typer.Option(min=1, help="Tries per file.")] = 4,
    data_url: Annotated[str, typer.Option(help="Archive URL (or a mirror of it).")] = DATA_URL,
    labels_url: Annotated[str, typer.Option(help="Labels csv URL.")] = LABELS_URL,
) -> None:
    """Download the public SMAP/MSL archive and its labels (needs network access)."""
    if is_dataset(dest) and not force:
        typer.echo(f"{dest} already holds a dataset; --force downloads it again")
        return
    try:
        path = fetch_dataset(
            dest, data_url=data_url, labels_url=labels_url, timeout=timeout, attempts=attempts
        )
        summary = dataset_summary(resolve_data_dir(path))
    except (FetchError, DataError) as error:
        raise _fail(str(error)) from None
    typer.echo(
        f"{path}: {summary['channels']} SMAP channels, {summary['anomalies']} labeled anomalies"
    )
