"""`smap-bench replay`: labeled test splits through the live pipeline, scored like `evaluate`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from smap_bench.bench.live import LabeledReplay, ReplayError, events_of, resolve_channels
from smap_bench.config import get_settings

console = Console(width=None if sys.stdout.isatty() else 150)


@contextmanager
def phase_progress(labels: dict[str, str]) -> Iterator[Callable[[str, float, float], None]]:
    """A progress bar per phase; yields ``report(phase, done, total)``."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def report(phase: str, done: float, total: float) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(labels.get(phase, phase), total=total)
            progress.update(tasks[phase], completed=done, total=total)

        yield report


def replay(
    labeled: Annotated[
        bool, typer.Option("--labeled", help="Replay the labeled test splits and score them")
    ] = False,
    channels: Annotated[str, typer.Option(help="'all' or a comma-separated list")] = "all",
    speed: Annotated[str, typer.Option(help="Speed factor, or 'max'")] = "max",
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds")] = 900.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the result here")] = None,
) -> None:
    """Push the labeled test splits through the running pipeline and score the detections."""
    if not labeled:
        raise typer.BadParameter("only --labeled replays exist so far (the fleet replay: make up)")
    settings = get_settings()
    try:
        chosen = resolve_channels(settings, channels)
        run = LabeledReplay(settings, chosen, speed=speed, timeout_s=timeout)
        with phase_progress(
            {
                "simulate": "records produced",
                "inference_anomaly_detected": "windows scored",
                "events": "results turned into events",
                "anomaly_alarm": "decisions written for the dashboard",
            }
        ) as report:
            result = run.run(report)
        result["events"] = events_of(settings, result["satellites"])
    except ReplayError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(summary_table(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {json_path}")
    if result["lost"]:
        console.print(f"[red]{result['lost']} windows sent were never scored[/]")
        raise typer.Exit(1)


def summary_table(result: dict[str, Any]) -> Table:
    table = Table(title="Labeled replay through the live pipeline", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    event = result["event"]
    rows = [
        ("channels", result["channels"]),
        ("records replayed", result["records_replayed"]),
        (
            "event precision / recall / F1",
            f"{event['precision']:.3f} / {event['recall']:.3f} / {event['f1']:.3f}",
        ),
        ("TP / FP / FN", f"{event['tp']} / {event['fp']} / {event['fn']}"),
        ("decision rule (events)", result.get("decision_rule", "-")),
    ]
    verdicts = (result.get("window_verdicts") or {}).get("event")
    if verdicts:
        rows.append(
            (
                "workers' window verdicts P / R / F1",
                f"{verdicts['precision']:.3f} / {verdicts['recall']:.3f} / {verdicts['f1']:.3f}",
            )
        )
    confirmation = result.get("confirmation")
    if confirmation:
        judged, incomplete = confirmation["judged"], confirmation["incomplete"]
        late = confirmation.get("late")
        rows.append(
            (
                "flagged windows judged (incomplete history, its windows late)",
                f"{_known(judged)} ({_known(incomplete)}, {_known(late)})",
            )
        )
        unconfirmed = _known(confirmation.get("unconfirmed"))
        rows.append(("flags left as the worker decided (no rule in their result)", unconfirmed))
    shown = result.get("dashboard_alarms") or {}
    if shown.get("event"):
        alarms = shown["event"]
        rows.append(
            (
                "dashboard's alarms P / R / F1 (missing)",
                f"{alarms['precision']:.3f} / {alarms['recall']:.3f} / {alarms['f1']:.3f}"
                f" ({shown.get('windows_missing', 0)})",
            )
        )
    rows += [
        (
            "point-adjusted F1 (random baseline)",
            f"{result['point_adjusted']['f1']:.3f} "
            f"({result['random_baseline']['point_adjusted_f1']:.3f})",
        ),
        ("false alarms per 10k records", f"{result['false_alarms_per_10k']:.2f}"),
        (
            "windows expected / sent / scored",
            f"{result['windows_expected']} / {_known(result['windows_sent'])} / "
            f"{result['windows_scored']}",
        ),
        ("lost / duplicates", f"{_known(result['lost'])} / {result['duplicates']}"),
        ("split windows without a result", result["split_windows_missing"]),
        ("anomaly events in PostgreSQL", result.get("events", "-")),
        ("seconds (simulator / total)", f"{result['simulate_seconds']} / {result['seconds']}"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def bench(
    satellites: Annotated[int, typer.Option(min=1, help="Benchmark satellites at 1 Hz")] = 5,
    duration: Annotated[float, typer.Option(min=5, help="Seconds of sustained load")] = 60.0,
    startup: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds of the fleet's start left out of the sustained latency "
            "(the whole run's is reported beside it)",
        ),
    ] = 30.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the result here")] = None,
) -> None:
    """Sustained load through the live pipeline: throughput, latency, lag, CPU per stage."""
    from smap_bench.bench.live import ReplayError
    from smap_bench.bench.load import LoadBenchmark

    settings = get_settings()
    run = LoadBenchmark(settings, satellites, duration, startup_s=startup)
    try:
        with phase_progress({"run": "load (s)", "drain": "windows finished"}) as report:
            result = run.run(report)
    except (ReplayError, RuntimeError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(bench_table(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {json_path}")


def bench_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"Pipeline load: {result['satellites']} satellites at 1 Hz")
    table.add_column("measure")
    table.add_column("value", justify="right")
    e2e = result["e2e_latency_ms"]
    whole = result.get("e2e_latency_ms_whole_run", {})
    for name, value in [
        ("subsystem records/s", result["subsystem_records_per_s"]),
        ("windows/s sent / results/s", f"{result['windows_per_s']} / {result['results_per_s']}"),
        (
            f"end-to-end latency p50 / p99 ms (after {result['startup_s']:g} s)",
            f"{e2e.get('p50', '-')} / {e2e.get('p99', '-')}",
        ),
        (
            "end-to-end latency p50 / p99 ms (whole run)",
            f"{whole.get('p50', '-')} / {whole.get('p99', '-')}",
        ),
        (
            "windows sent / results / lost",
            f"{result['windows_sent']} / {result['results']} / {result['lost']}",
        ),
        ("Kafka lag max", result["kafka_lag"]["max"]),
        ("RabbitMQ queue depth max", result["rabbitmq_queue_depth"]["max"]),
    ]:
        table.add_row(name, str(value))
    for name, stage in sorted(result["stages"].items()):
        table.add_row(
            f"  {name}",
            f"{stage['cpu_percent']}% CPU, {stage['rss_mb']} MB, p50 {stage['latency_ms']} ms",
        )
    return table


def _known(count: int | None) -> str:
    """A count from a stage's counters; None: the stage restarted during the run (its
    counters began again), so the run's count is not known."""
    return "not known (stage restarted)" if count is None else str(count)
