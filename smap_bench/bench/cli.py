"""`smap-bench bench-inference`: the inference benchmark as a command with a rich table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from smap_bench.bench.inference import DEFAULT_BATCH_SIZES, PATHS, Budget, run_inference_bench
from smap_bench.config import get_settings


def parse_int_list(text: str, what: str) -> list[int]:
    """``"1,8,64"`` -> [1, 8, 64]; positive integers only."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise typer.BadParameter(f"{what} must be positive integers, got {text!r}")
    return values


def results_table(result: dict[str, Any]) -> Table:
    """One row per path and batch size: per-call p50/p99 and windows/s (the batch-1 rows
    are the latency of one window), with the ceiling's windows/s divided by the path's."""
    table = Table(title=f"Inference benchmark: {result['model']}")
    for name in ("path", "batch", "p50 ms", "p99 ms", "windows/s", "ceiling / path"):
        table.add_column(name, justify="left" if name == "path" else "right")
    for path, data in result["paths"].items():
        if data["error"]:
            table.add_row(path, "", "", "", "", "[red]failed[/red]", end_section=True)
            continue
        for i, point in enumerate(data["points"]):
            ratio = data["ratio_to_ceiling"].get(str(point["batch"]))
            table.add_row(
                path if i == 0 else "",
                str(point["batch"]),
                f"{point['p50_ms']:.2f}",
                f"{point['p99_ms']:.2f}",
                f"{point['windows_per_s']:,.0f}",
                f"{ratio:.2f}x" if ratio is not None and path != "ort-ceiling" else "",
                end_section=i == len(data["points"]) - 1,
            )
    return table


def bench_inference(
    model: Annotated[
        str | None, typer.Option(help="Model name; default the first in the repository")
    ] = None,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes")] = ",".join(
        map(str, DEFAULT_BATCH_SIZES)
    ),
    duration: Annotated[
        float, typer.Option(min=0.0, help="Seconds measured per path and batch size")
    ] = 2.0,
    requests: Annotated[
        int | None,
        typer.Option(min=1, help="Exactly this many calls per point, instead of --duration"),
    ] = None,
    paths: Annotated[str, typer.Option(help=f"Comma-separated, of {', '.join(PATHS)}")] = ",".join(
        PATHS
    ),
    ceiling_threads: Annotated[
        int | None,
        typer.Option(
            min=0, help="ONNX Runtime threads for the ceiling; default SMAP_ONNX_INTRA_OP_THREADS"
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the result here")
    ] = None,
) -> None:
    """Latency (p50/p99, one window) and throughput per batch size through Triton HTTP,
    Triton gRPC and in-process ONNX Runtime, beside the bare model's ceiling."""
    console = Console()
    chosen = [p.strip() for p in paths.split(",") if p.strip()]
    try:
        result = run_inference_bench(
            get_settings(),
            model=model,
            batch_sizes=parse_int_list(batch_sizes, "--batch-sizes"),
            budget=Budget(duration_s=duration, max_calls=requests),
            paths=chosen,
            ceiling_threads=ceiling_threads,
            on_point=lambda path, batch: console.log(f"measuring {path} at batch {batch}"),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console.print(results_table(result))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {json_path}")
    failed = {p: d["error"] for p, d in result["paths"].items() if d["error"]}
    for path, error in failed.items():
        console.print(f"[red]{path} failed:[/red] {error}", soft_wrap=True)
    if failed:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Mount the benchmark commands on the ``smap-bench`` app."""
    from smap_bench.bench.api_cli import (
        bench_api_command,
        bench_dashboard_command,
        bench_visible_command,
    )
    from smap_bench.bench.replay_cli import bench, replay

    app.command("bench-api")(bench_api_command)
    app.command("bench-dashboard")(bench_dashboard_command)
    app.command("bench-visible")(bench_visible_command)
    app.command("bench-inference")(bench_inference)
    app.command("replay")(replay)
    app.command("bench")(bench)
