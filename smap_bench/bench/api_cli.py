"""`smap-bench bench-api`: API read latency at a fixed rate, as a command with a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from smap_bench.bench.api import DEFAULT_PATHS, bench_api
from smap_bench.config import Settings, get_settings
from smap_bench.priority import set_niceness


def results_table(result: dict[str, Any]) -> Table:
    """One row per path (requests, errors, p50, p99, max), then the overall row."""
    table = Table(
        title=f"API reads at {result['rps']:g} req/s for {result['duration_s']:g} s "
        f"({result['base_url']})"
    )
    for name in ("path", "requests", "errors", "p50 ms", "p99 ms", "max ms"):
        table.add_column(name, justify="left" if name == "path" else "right")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    for path, data in result["paths"].items():
        table.add_row(
            path,
            str(data["requests"]),
            str(data["errors"]),
            ms(data["p50"]),
            ms(data["p99"]),
            ms(data["max"]),
        )
    table.add_row(
        "[bold]all[/bold]",
        str(result["requests"]),
        str(result["errors"]),
        ms(result["p50"]),
        ms(result["p99"]),
        ms(result["max"]),
        end_section=True,
    )
    return table


def bench_api_command(
    rps: Annotated[float, typer.Option(min=0.1, max=2000, help="Requests per second")] = 50,
    duration: Annotated[float, typer.Option(min=1, max=3600, help="Seconds measured")] = 20,
    url: Annotated[
        str | None,
        typer.Option(help="API base URL (loopback only); default the local API's port"),
    ] = None,
    path: Annotated[
        list[str] | None,
        typer.Option("--path", help="A path to read (repeat); default the dashboard's reads"),
    ] = None,
    connections: Annotated[
        int, typer.Option(min=1, max=64, help="Keep-alive connections opened up front")
    ] = 4,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the result here")
    ] = None,
) -> None:
    """Read the operations API at a fixed rate (open loop, latency from each request's
    scheduled time) and report p50/p99 latency per route and overall, with the errors and
    their kinds and the client's own CPU (the target: p99 < 20 ms at 50 req/s)."""
    settings = get_settings()
    base = url or f"http://{settings.host}:{settings.api_port}"
    try:
        result = bench_api(
            base, rps=rps, duration_s=duration, paths=path or DEFAULT_PATHS, connections=connections
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console = Console()
    console.print(results_table(result))
    service = result["service"]
    console.print(
        "Latency counts from each request's slot on the schedule (coordinated omission "
        f"corrected); from the actual send: p50 {service['p50']} ms, p99 {service['p99']} ms. "
        f"Client CPU {result['client_cpu_ms_per_request']:.2f} ms per request."
    )
    if result["late"]:
        console.print(
            f"[yellow]{result['late']} requests were sent more than 10 ms late "
            f"(client or machine busy; worst {result['late_max']} ms)"
        )
    if result["error_kinds"]:
        console.print(f"[red]errors: {result['error_kinds']}")
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")


def _as_dashboard_server() -> Settings:
    """The settings, with this process at the dashboard server's niceness: the dashboard
    benchmarks run its refreshes here as the server runs them."""
    settings = get_settings()
    set_niceness(settings.operator_nice, "the dashboard bench")
    return settings


def _table(title: str, columns: tuple[str, ...]) -> Table:
    """A table with the first column a label (left) and the rest numbers (right)."""
    table = Table(title=title)
    for index, name in enumerate(columns):
        table.add_column(name, justify="left" if index == 0 else "right")
    return table


def bench_dashboard_command(
    satellite: Annotated[str, typer.Option(help="Satellite of the stream")] = "sat1",
    subsystem: Annotated[str, typer.Option(help="Subsystem of the stream")] = "ACS",
    window: Annotated[int, typer.Option(min=30, max=3600, help="Seconds shown")] = 600,
    repeats: Annotated[int, typer.Option(min=1, max=10_000, help="Refreshes timed")] = 100,
    period: Annotated[
        float, typer.Option(min=0, max=60, help="Seconds between refreshes (0: back to back)")
    ] = 0.0,
    views: Annotated[
        bool, typer.Option(help="Also redraw the timeline and heatmap views' models")
    ] = True,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the result here")
    ] = None,
) -> None:
    """Time the dashboard's refresh of one stream's timeline and heatmap in the Panel
    server (fetch, apply and redraw, derived values), p50/p90/p99 per phase (the target:
    p99 < 100 ms for the last 10 minutes)."""
    from smap_bench.dashboard.bench import bench_refresh

    settings = _as_dashboard_server()
    result = bench_refresh(
        settings,
        satellite_id=satellite,
        subsystem=subsystem,
        window_s=window,
        repeats=repeats,
        period_s=period,
        views=views,
    )
    table = _table(
        f"Dashboard refresh of {satellite}/{subsystem}, last {window} s, "
        f"{result['records']} records shown ({repeats} refreshes)",
        ("phase", "p50 ms", "p90 ms", "p99 ms", "max ms"),
    )
    for phase, stats in result["phases"].items():
        table.add_row(
            phase,
            *("-" if stats[k] is None else f"{stats[k]:.1f}" for k in ("p50", "p90", "p99", "max")),
        )
    Console().print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")


def bench_visible_command(
    duration: Annotated[
        float, typer.Option(min=10, max=3600, help="Seconds the live session is watched")
    ] = 120,
    satellite: Annotated[str, typer.Option(help="Satellite of the timeline's stream")] = "sat1",
    subsystem: Annotated[str, typer.Option(help="Subsystem of the timeline's stream")] = "ACS",
    refresh_period_ms: Annotated[
        int | None,
        typer.Option(min=250, max=60_000, help="Live refresh period (default: the app's)"),
    ] = None,
    latest_period_ms: Annotated[
        int | None, typer.Option(min=100, max=60_000, help="Fleet grid period (default: the app's)")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the result here")
    ] = None,
) -> None:
    """With the pipeline live, how soon each window's detection shows in a dashboard
    session (the app's store and views, refreshed as the served app does), from the
    production of the window's newest record: p50/p99/max and how many within 2 s (the
    target), for the fleet grid (every stream) and the chosen stream's timeline."""
    from smap_bench.dashboard.bench import bench_visible

    settings = _as_dashboard_server()
    result = bench_visible(
        settings,
        duration_s=duration,
        refresh_period_ms=refresh_period_ms,
        latest_period_ms=latest_period_ms,
        satellite_id=satellite,
        subsystem=subsystem,
    )
    table = _table(
        f"Detections visible in a dashboard session, {duration:g} s live "
        f"(grid every {result['latest_period_ms']} ms, rest every "
        f"{result['refresh_period_ms']} ms)",
        ("view", "windows", "p50 ms", "p99 ms", "max ms", "within 2 s"),
    )
    views = {
        "fleet grid": "fleet_grid",
        "fleet grid, flagged": "fleet_grid_flagged",
        f"timeline {satellite}/{subsystem}": "timeline",
    }
    for label, key in views.items():
        stats = result[key]
        table.add_row(
            label,
            str(stats.get("windows", 0)),
            *("-" if stats.get(k) is None else f"{stats[k]:.0f}" for k in ("p50", "p99", "max")),
            str(stats.get("within_2s", 0)),
        )
    console = Console()
    console.print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    if not result["fleet_grid"].get("windows"):
        console.print("[red]no window was seen: is the pipeline running a replay?[/red]")
        raise typer.Exit(code=1)
