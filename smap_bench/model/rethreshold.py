"""Run the decision-rule selection and re-fit thresholds of trained models, no retraining.

Thin I/O around :mod:`smap_bench.model.selection` and
:func:`smap_bench.model.threshold.fit_threshold`: models are scored through their ONNX
files on their train splits only. ``rethreshold`` recomputes each model's threshold
exactly as training would with the new :class:`ThresholdConfig` (fit-part windows at the
training stride plus validation-tail windows at stride 1), rewrites ``threshold``,
``threshold_parameters``, ``settings`` and ``settings_hash`` in metadata.json (so resumable
training sees the model as up to date), and records the selection evidence.

Register with ``app.add_typer(rethreshold.app, name="rule")`` in ``smap_bench/cli.py``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from smap_bench import windows
from smap_bench.config import get_settings
from smap_bench.data.loader import load_channel
from smap_bench.model import selection
from smap_bench.model.threshold import ThresholdConfig, fit_threshold, window_statistic

if TYPE_CHECKING:  # torch and onnxruntime load only when a command runs
    import onnxruntime as ort

    from smap_bench.model.train import TrainConfig

log = logging.getLogger(__name__)

app = typer.Typer(help="Choose the decision rule on training data and re-fit thresholds.")

#: Where the selection writes its evidence (under the run directory).
EVIDENCE_FILE = "rule-selection.json"


def onnx_scorer(session: ort.InferenceSession, batch: int = 1024) -> selection.ScoreFn:
    """Windows ``[k, window, f]`` -> per-record scores ``[k, window]`` through a session."""

    def score(raw: np.ndarray) -> np.ndarray:
        if len(raw) == 0:
            return np.zeros((0, raw.shape[1]), dtype=np.float32)
        parts = [
            session.run(["score"], {"input": np.ascontiguousarray(raw[i : i + batch], np.float32)})[
                0
            ]
            for i in range(0, len(raw), batch)
        ]
        return np.concatenate(parts)

    return score


def _session(repository: Path, channel: str) -> ort.InferenceSession:
    from smap_bench.model.offline import onnx_session
    from smap_bench.model.repository import onnx_path

    return onnx_session(onnx_path(repository, channel))


def train_config_from(settings: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` recorded in a model's metadata ``settings``."""
    from smap_bench.model.train import TrainConfig
    from smap_bench.model.tranad import TranADConfig

    fields = dict(settings)
    fields["network"] = TranADConfig(**fields["network"])
    fields["threshold"] = ThresholdConfig(**fields["threshold"])
    return TrainConfig(**fields)


def run_selection(
    data_dir: Path | None,
    repository: Path,
    channels: list[str],
    seed: int = 0,
    event_gap: int = 0,
) -> tuple[list[selection.Outcome], list[str]]:
    """Judge every candidate of :func:`selection.candidate_grid` on the held-out halves,
    under the event rule ``event_gap``."""
    from smap_bench.model.repository import read_metadata

    material, skipped = [], []
    for channel in channels:
        data = load_channel(channel, data_dir)
        meta = read_metadata(repository, channel)
        score = onnx_scorer(_session(repository, channel))
        settings = meta["settings"]
        try:
            material.append(
                selection.channel_material(
                    channel,
                    data.train,
                    score,
                    seed=seed,
                    window=int(meta["window"]),
                    train_stride=int(settings["train_stride"]),
                    validation_fraction=float(settings["validation_fraction"]),
                )
            )
        except ValueError as exc:
            log.warning("%s left out of the selection: %s", channel, exc)
            skipped.append(channel)
    outcomes = [
        selection.judge(c, material, event_gap=event_gap) for c in selection.candidate_grid()
    ]
    return outcomes, skipped


def refit_metadata(
    meta: dict[str, Any],
    train: np.ndarray,
    score: selection.ScoreFn,
    config: ThresholdConfig,
    evidence: dict[str, Any] | None,
) -> dict[str, Any]:
    """Metadata with the threshold re-fitted under ``config`` from the train split only."""
    from smap_bench.model.train import array_sha256

    train_config = replace(train_config_from(meta["settings"]), threshold=config)
    train = np.asarray(train, dtype=np.float32)
    n_validation = round(len(train) * train_config.validation_fraction)
    fit_part, validation_part = train[:-n_validation], train[-n_validation:]
    fit_stat = window_statistic(
        score(windows.make_windows(fit_part, train_config.window, train_config.train_stride))
    )
    val_stat = window_statistic(
        score(windows.make_windows(validation_part, train_config.window, 1))
    )
    threshold = fit_threshold(fit_stat, val_stat, config)
    out = dict(meta)
    out["threshold"] = threshold.value
    out["threshold_parameters"] = threshold.parameters
    out["settings"] = train_config.as_dict()
    out["settings_hash"] = train_config.settings_hash(array_sha256(train))
    out["metrics"] = {
        **meta.get("metrics", {}),
        "validation_windows_over_threshold": int((val_stat > threshold.value).sum()),
    }
    if evidence is not None:
        out["rule_selection"] = evidence
    return out


def write_metadata(repository: Path, channel: str, meta: dict[str, Any]) -> None:
    """Replace a model's metadata.json atomically."""
    from smap_bench.model.repository import model_dir

    path = model_dir(repository, channel) / "metadata.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _channels(wanted: str) -> tuple[Path | None, list[str]]:
    """The resolved dataset directory (None: synthetic) and the selected channels."""
    from smap_bench.model.runner import data_source, select_channels

    source = data_source(get_settings().data_dir)
    present, missing = select_channels(source, wanted)
    if missing:
        raise typer.BadParameter(f"unknown channels: {', '.join(missing)}")
    return source.path, present


@app.command("select")
def select_command(
    channels: Annotated[str, typer.Option(help="'all' or a comma list")] = "all",
    records_per_anomaly: Annotated[float, typer.Option()] = selection.RECORDS_PER_ANOMALY,
) -> None:
    """Judge every candidate rule on training data (held-out halves, injected anomalies)."""
    settings = get_settings()
    repository = settings.model_repository
    data_dir, names = _channels(channels)
    outcomes, skipped = run_selection(data_dir, repository, names, event_gap=settings.event_gap)
    best = selection.select(outcomes, records_per_anomaly)
    rates = (576.0, float(selection.RECORDS_PER_ANOMALY), 8640.0)
    report = {
        "criterion": f"expected event-wise F1 at one anomaly per {records_per_anomaly:g} records",
        "repository": str(repository),
        "channels": len(names) - len(skipped),
        "event_gap": settings.event_gap,
        "skipped": skipped,
        "chosen": best.as_dict(rates),
        "best_at_other_rates": {
            str(int(r)): selection.select(outcomes, r).candidate.label for r in rates
        },
        "candidates": [o.as_dict(rates) for o in outcomes],
    }
    path = settings.run_dir / EVIDENCE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(
        f"chosen: {best.candidate.label} ({json.dumps(best.as_dict(rates))}); evidence {path}"
    )


@app.command("rethreshold")
def rethreshold_command(
    repository: Annotated[Path | None, typer.Option(help="default: the served repository")] = None,
    channels: Annotated[str, typer.Option(help="'all' or a comma list")] = "all",
    evidence: Annotated[Path | None, typer.Option(help="selection evidence JSON to record")] = None,
) -> None:
    """Re-fit every model's threshold with the current ThresholdConfig, from training data."""
    from smap_bench.model.repository import read_metadata

    settings = get_settings()
    repo = repository or settings.model_repository
    config = ThresholdConfig()
    summary = None
    if evidence is not None:
        report = json.loads(evidence.read_text())
        summary = {k: report[k] for k in ("criterion", "channels", "chosen", "best_at_other_rates")}
        summary["file"] = evidence.name
    data_dir, names = _channels(channels)
    for channel in names:
        data = load_channel(channel, data_dir)
        meta = read_metadata(repo, channel)
        score = onnx_scorer(_session(repo, channel))
        new = refit_metadata(meta, data.train, score, config, summary)
        write_metadata(repo, channel, new)
        typer.echo(
            f"{channel}: {meta['threshold']:.6g} -> {new['threshold']:.6g} ({asdict(config)})"
        )
