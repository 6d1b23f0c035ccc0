"""`smap-bench train` and `smap-bench evaluate`: per-channel TranAD models and their scores."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from smap_bench.config import Settings, get_settings
from smap_bench.model.context import ContextConfig
from smap_bench.model.forecaster import LinearForecasterConfig

if TYPE_CHECKING:  # torch is imported only when a command runs, not by `smap-bench --help`
    from smap_bench.model import runner
    from smap_bench.model.train import TrainConfig

DEFAULT_EPOCHS = 5
DEFAULT_WINDOW = 30

console = Console()
log = logging.getLogger(__name__)

ChannelsOpt = Annotated[str, typer.Option(help="'all' or a comma list such as A-1,P-2")]
EpochsOpt = Annotated[int, typer.Option(min=1, help="Training epochs per channel")]
WindowOpt = Annotated[int, typer.Option(min=2, help="Window length of the model (records)")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here")]
JobsOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Channels trained at once, one process each (default: cores)"),
]


HorizonOpt = Annotated[
    int,
    typer.Option(
        min=0,
        help="Newest records of each window whose telemetry value the network does not see "
        "and forecasts (0: plain reconstruction)",
    ),
]


def _config(epochs: int, window: int, seed: int, horizon: int = 0) -> TrainConfig:
    from smap_bench.model.train import TrainConfig

    config = TrainConfig()
    network = replace(config.network, window=window, horizon=horizon)
    return replace(config, epochs=epochs, window=window, seed=seed, network=network)


def _jobs(jobs: int | None) -> int:
    """Training processes: as asked, else one per core."""
    return jobs if jobs is not None else max(os.cpu_count() or 1, 1)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def train_channels(
    settings: Settings,
    channels: str,
    config: TrainConfig,
    repository: Path,
    force: bool = False,
    jobs: int = 1,
) -> tuple[dict[str, runner.ChannelOutcome], list[str]]:
    """Train the selected channels into ``repository`` with progress bars.

    With ``jobs`` > 1, channels train in that many processes at once. Each channel seeds
    its own generators (:func:`smap_bench.model.train.seed_everything`), so the models do
    not depend on how many run at once or in which order.
    """
    from smap_bench.model import runner

    source = runner.data_source(settings.data_dir)
    selected, missing = runner.select_channels(source, channels)
    for channel in missing:
        console.print(f"[yellow]warning:[/] channel {channel} has no data in {source.describe()}")
    outcomes: dict[str, runner.ChannelOutcome] = {}
    with _progress() as progress:
        overall = progress.add_task(f"seed {config.seed}: channels", total=len(selected))
        if jobs > 1 and len(selected) > 1:
            done = _train_in_processes(
                source, selected, repository, config, force, jobs, progress, overall
            )
            return {channel: done[channel] for channel in selected}, missing
        per_channel = progress.add_task("epochs", total=config.epochs)
        for channel in selected:
            progress.update(per_channel, description=f"{channel} epochs", completed=0)

            def on_epoch(_channel: str, epoch: int, _loss: float) -> None:
                progress.update(per_channel, completed=epoch)

            outcome = runner.train_one(source, channel, repository, config, force, on_epoch)
            progress.update(per_channel, completed=config.epochs)
            outcomes[channel] = outcome
            progress.advance(overall)
    return outcomes, missing


def _train_in_processes(
    source: runner.DataSource,
    selected: list[str],
    repository: Path,
    config: TrainConfig,
    force: bool,
    jobs: int,
    progress: Progress,
    overall: TaskID,
) -> dict[str, runner.ChannelOutcome]:
    """Train channels in ``jobs`` processes; their outcomes by channel."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from smap_bench.model import runner

    running = progress.add_task(f"{jobs} processes", total=None)
    done: dict[str, runner.ChannelOutcome] = {}
    context = multiprocessing.get_context("spawn")  # torch and fork do not mix
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {
            pool.submit(runner.train_one, source, channel, repository, config, force): channel
            for channel in selected
        }
        for future in as_completed(futures):
            channel = futures[future]
            done[channel] = future.result()
            progress.update(running, description=f"{jobs} processes: {channel} done")
            progress.advance(overall)
    progress.update(running, visible=False)
    return done


def train(
    channels: ChannelsOpt = "all",
    seed: Annotated[int, typer.Option(help="Training seed (torch, numpy)")] = 0,
    epochs: EpochsOpt = DEFAULT_EPOCHS,
    window: WindowOpt = DEFAULT_WINDOW,
    force: Annotated[bool, typer.Option(help="Retrain channels that are up to date")] = False,
    jobs: JobsOpt = None,
    json_path: JsonOpt = None,
    horizon: HorizonOpt = 0,
) -> None:
    """Train one TranAD model per channel into the model repository (resumable)."""
    settings = get_settings()
    started = time.perf_counter()
    config = _config(epochs, window, seed, horizon)
    outcomes, missing = train_channels(
        settings, channels, config, settings.model_repository, force, _jobs(jobs)
    )
    total = time.perf_counter() - started
    trained = sum(not o.skipped for o in outcomes.values())
    console.print(
        f"{trained} trained, {len(outcomes) - trained} up to date, {len(missing)} missing; "
        f"{total:.1f} s; repository {settings.model_repository}"
    )
    if json_path is not None:
        payload = {
            "channels": {
                c: {
                    "epochs": o.epochs,
                    "seconds": o.seconds,
                    "threshold": o.threshold,
                    "skipped": o.skipped,
                }
                for c, o in outcomes.items()
            },
            "missing_channels": missing,
            "seconds_total": round(total, 3),
            "jobs": _jobs(jobs),
            "repository": str(settings.model_repository),
        }
        json_path.write_text(json.dumps(payload, indent=2) + "\n")


def seed_repository(
    settings: Settings,
    seed: int,
    committed_seed: int = 0,
    *,
    window: int = DEFAULT_WINDOW,
    epochs: int = DEFAULT_EPOCHS,
    horizon: int = 0,
) -> Path:
    """Repository of a training seed: the configured one for the committed seed and
    settings, else a cache under ``run_dir``, one per window, epochs and horizon, so that
    neither extra seeds nor other settings ever overwrite the served models or each other."""
    if horizon:
        name = f"window-{window}-epochs-{epochs}-horizon-{horizon}"
        return settings.run_dir / "model-seeds" / name / f"seed-{seed}"
    if (window, epochs) != (DEFAULT_WINDOW, DEFAULT_EPOCHS):
        return (
            settings.run_dir / "model-seeds" / f"window-{window}-epochs-{epochs}" / f"seed-{seed}"
        )
    if seed == committed_seed:
        return settings.model_repository
    return settings.run_dir / "model-seeds" / f"seed-{seed}"


def _means(node: Any) -> Any:
    """Replace each ``{mean, std, n}`` leaf of a seed summary by its mean."""
    if isinstance(node, dict) and "mean" in node and "n" in node:
        return node["mean"]
    return {k: _means(v) for k, v in node.items()} if isinstance(node, dict) else node


def _stds(node: Any) -> Any:
    """Replace each ``{mean, std, n}`` leaf of a seed summary by its std."""
    if isinstance(node, dict) and "mean" in node and "n" in node:
        return node["std"]
    return {k: _stds(v) for k, v in node.items()} if isinstance(node, dict) else node


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def evaluation_table(report: dict[str, Any]) -> Table:
    """Rich table of an :func:`evaluate_seeds` report: per channel, pooled in the caption."""
    per_channel = report["per_channel"]
    table = Table(title="Event-wise detection per channel (mean over seeds)")
    for name in ("channel", "TP", "FP", "FN", "F1", "latency median"):
        table.add_column(name, justify="right" if name != "channel" else "left")
    for row in per_channel:
        table.add_row(
            row["channel"],
            _fmt(row["tp"]),
            _fmt(row["fp"]),
            _fmt(row["fn"]),
            _fmt(row["f1"]),
            _fmt(row["latency_median"]),
        )
    event = report["event"]
    f1_std = report["std_over_seeds"]["event"]["f1"] or 0.0
    table.caption = (
        f"{report['seeds']} seed(s), {report['channels']} channels: event P "
        f"{event['precision']:.3f} R {event['recall']:.3f} F1 {event['f1']:.3f} ± {f1_std:.3f}; "
        f"point-adjusted F1 {report['point_adjusted']['f1']:.3f} "
        f"(random flags {report['random_baseline']['point_adjusted_f1']:.3f}); "
        f"false alarms / 10k {report['false_alarms_per_10k']:.2f}"
    )
    return table


def _mean_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-channel rows averaged over seeds (counts as means)."""
    by_channel: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        for row in run["per_channel"]:
            by_channel.setdefault(row["channel"], []).append(row)
    rows = []
    for channel, items in by_channel.items():
        mean_row: dict[str, Any] = {"channel": channel}
        for key in ("tp", "fp", "fn", "f1", "latency_median"):
            values = [i[key] for i in items if i[key] is not None]
            mean_row[key] = float(sum(values) / len(values)) if values else None
        rows.append(mean_row)
    return rows


def evaluate_seeds(
    settings: Settings,
    channels: str,
    seeds: int,
    epochs: int = DEFAULT_EPOCHS,
    window: int = DEFAULT_WINDOW,
    repository_for: Callable[[Settings, int], Path] | None = None,
    jobs: int = 1,
    rule: str | None = None,
    horizon: int = 0,
    context: ContextConfig | None = None,
    forecaster: LinearForecasterConfig | None = None,
) -> dict[str, Any]:
    """Train (or reuse) each seed's models and score the test splits as the live pipeline
    does; returns the ``evaluate`` JSON (headline as mean/std over seeds, per-channel rows,
    and every seed's full pooled report under ``runs``). ``rule``: the window decision
    rule (default: the served ``settings.decision_rule``); ``forecaster``: the linear
    forecaster or'ed in (what ``settings.linear_forecaster`` serves)."""
    from smap_bench import evaluation
    from smap_bench.model import runner

    rule = rule or settings.decision_rule

    if repository_for is None:

        def repository_for(settings: Settings, seed: int) -> Path:
            return seed_repository(settings, seed, window=window, epochs=epochs, horizon=horizon)

    source = runner.data_source(settings.data_dir)
    runs = []
    missing: set[str] = set()
    for seed in range(seeds):
        repository = repository_for(settings, seed)
        config = _config(epochs, window, seed, horizon)
        _, not_found = train_channels(settings, channels, config, repository, jobs=jobs)
        selected, _ = runner.select_channels(source, channels)
        pooled, absent = runner.evaluate_repository(
            source,
            selected,
            repository,
            settings.window_size,
            settings.stride,
            settings.event_gap,
            rule=rule,
            context=context,
            forecaster=forecaster,
        )
        pooled["seed"] = seed
        pooled["repository"] = str(repository)
        runs.append(pooled)
        missing |= set(not_found) | set(absent)
        event = pooled["event"]
        console.print(
            f"seed {seed}: P {event['precision']:.3f} R {event['recall']:.3f} "
            f"F1 {event['f1']:.3f} (TP {event['tp']} FP {event['fp']} FN {event['fn']})"
        )
    summary = evaluation.mean_std_over_seeds(runs)
    return {
        **{
            key: _means(summary[key])
            for key in (
                "event",
                "point_adjusted",
                "random_baseline",
                "false_alarms_per_10k",
                "detection_latency",
            )
        },
        "std_over_seeds": {
            key: _stds(summary[key])
            for key in ("event", "point_adjusted", "false_alarms_per_10k", "detection_latency")
        },
        "channels": runs[0]["channels"],
        "seeds": seeds,
        "missing_channels": sorted(missing),
        "window": window,
        "horizon": horizon,
        "stride": settings.stride,
        "event_gap": settings.event_gap,
        "rule": _rule_description(rule),
        "context": None if context is None else context.to_dict(),
        "forecaster": None if forecaster is None else forecaster.to_dict(),
        "per_channel": _mean_rows(runs),
        "runs": runs,
    }


def _rule_description(rule: str) -> dict[str, Any]:
    """The window decision rule as the evaluation JSON records it."""
    from smap_bench.model.stream_rule import StreamRuleConfig

    if rule == "stream":
        return StreamRuleConfig().to_dict()
    if rule == "confirmed":
        return {
            **StreamRuleConfig().to_dict(),
            "rule": "confirmed",
            "decision": "window statistic above the channel's threshold and kept by the"
            " stream rule",
        }
    return {"rule": "static", "decision": "window statistic above the channel's threshold"}


def evaluate(
    channels: ChannelsOpt = "all",
    seeds: Annotated[int, typer.Option(min=1, help="Training seeds 0..N-1")] = 3,
    epochs: EpochsOpt = DEFAULT_EPOCHS,
    window: WindowOpt = DEFAULT_WINDOW,
    jobs: JobsOpt = None,
    json_path: JsonOpt = None,
    rule: Annotated[
        str | None,
        typer.Option(
            help="Window decision rule: 'static' (the channel's threshold), 'stream' "
            "(judged against the stream's recent windows, causally) or 'confirmed' (both); "
            "default: as the live pipeline serves it (SMAP_DECISION_RULE)"
        ),
    ] = None,
    horizon: HorizonOpt = 0,
    context: Annotated[
        bool | None,
        typer.Option(
            "--context/--no-context",
            help="Also flag windows whose recent telemetry values are unlike every stretch "
            "of the train split (the context detector, smap_bench.model.context); default: "
            "as the live pipeline serves it (SMAP_CONTEXT_LENGTH > 0)",
        ),
    ] = None,
    context_length: Annotated[
        int | None,
        typer.Option(min=2, help="Context detector: records of history per window [served]"),
    ] = None,
    context_factor: Annotated[
        float | None, typer.Option(min=0.01, help="Context detector: threshold factor [served]")
    ] = None,
    hold_factor: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Context detector: hold threshold as a multiple of the train split's "
            "longest hold (0: the hold off) [served]",
        ),
    ] = None,
    level_margin: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Context detector: also flag a window whose context's level or spread (mean, "
            "standard deviation) lies outside the train contexts' range widened by this "
            "margin times its width, at least min_distance (not served; default: off)",
        ),
    ] = None,
    forecaster: Annotated[
        bool | None,
        typer.Option(
            "--forecaster/--no-forecaster",
            help="Also flag windows by the linear forecaster of the telemetry value "
            "(smap_bench.model.forecaster; chosen by the training-only selection harness); "
            "default: as the live pipeline serves it (SMAP_FORECASTER)",
        ),
    ] = None,
) -> None:
    """Train (or reuse) models for each seed and score the test splits as the live pipeline
    does: windows of 30 every 10 records, event-wise metrics pooled over channels."""
    from smap_bench.model.stream_rule import RULES

    settings = get_settings()
    rule = rule or settings.decision_rule
    if rule not in RULES:
        raise typer.BadParameter(f"unknown rule {rule!r} (known: {', '.join(RULES)})")
    served = settings.context_detector
    use_context = served is not None if context is None else context
    if level_margin is not None and not use_context:
        raise typer.BadParameter(
            "--level-margin is a check of the context detector, which is off here "
            "(--no-context, or SMAP_CONTEXT_LENGTH=0 without --context)"
        )
    context_config = (
        ContextConfig(
            context_length or (served.length if served else ContextConfig.length),
            context_factor or (served.factor if served else ContextConfig.factor),
            hold_factor=(
                hold_factor
                if hold_factor is not None
                else (served.hold_factor if served else ContextConfig.hold_factor)
            ),
            level_margin=level_margin,
        )
        if use_context
        else None
    )
    report = evaluate_seeds(
        settings,
        channels,
        seeds,
        epochs,
        window,
        jobs=_jobs(jobs),
        rule=rule,
        horizon=horizon,
        context=context_config,
        forecaster=(
            settings.linear_forecaster
            if forecaster is None
            else (LinearForecasterConfig() if forecaster else None)
        ),
    )
    console.print(evaluation_table(report))
    if report["missing_channels"]:
        console.print(f"[yellow]missing channels:[/] {', '.join(report['missing_channels'])}")
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
