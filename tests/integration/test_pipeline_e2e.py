"""The whole pipeline on the real services: a short labeled replay, checked end to end.

Simulator -> Kafka -> router -> scheduler -> RabbitMQ -> workers -> Triton -> Kafka ->
writer -> VictoriaMetrics, and events -> PostgreSQL. The replay's detections, read back
from VictoriaMetrics, must score exactly as the offline evaluation of the same models
scores the same test splits, with every window sent scored once.
"""

from __future__ import annotations

import psycopg
import pytest

from smap_bench.bench.live import LabeledReplay
from smap_bench.config import Settings
from smap_bench.data import resolve_data_dir
from smap_bench.metrics import VictoriaMetrics
from smap_bench.model.runner import evaluate_repository
from smap_bench.stack import status
from smap_bench.stack_cli import bring_up

pytestmark = pytest.mark.integration

#: A few channels of different subsystems and lengths, each with labeled anomalies.
CHANNELS = ["A-1", "E-1", "P-1", "T-1"]
PIPELINE = {"router", "scheduler", "writer", "events", "worker1"}


@pytest.fixture(scope="module")
def live_pipeline(live_stack: Settings) -> Settings:
    """The stack with the pipeline processes running (`smap-bench up --no-replay`)."""
    missing = [
        c for c in CHANNELS if not (live_stack.model_repository / "onnx" / f"SMAP_{c}").is_dir()
    ]
    if missing:
        pytest.fail(f"no trained model for {missing}: run `smap-bench train --channels all`")
    running = {s.name for s in status(live_stack) if s.healthy}
    if not running >= PIPELINE:
        bring_up(live_stack, pipeline=True, replay=False)
    return live_stack


@pytest.fixture(scope="module")
def replay(live_pipeline: Settings) -> dict:
    return LabeledReplay(live_pipeline, CHANNELS, timeout_s=600, stall_s=90).run()


def test_every_window_sent_is_scored_once(replay: dict) -> None:
    assert replay["windows_sent"] == replay["windows_expected"]
    assert replay["windows_scored"] == replay["windows_expected"]
    assert replay["lost"] == 0
    assert replay["duplicates"] == 0
    assert replay["windows_rejected"] == 0
    assert replay["split_windows_missing"] == 0


def test_live_and_offline_scores_agree(live_pipeline: Settings, replay: dict) -> None:
    """The events (after the events stage's confirmation) score as the offline evaluation
    under the served decision rule, and the workers' window verdicts as the static one."""
    source = resolve_data_dir(live_pipeline.data_dir)

    def offline(rule: str) -> dict:
        pooled, skipped = evaluate_repository(
            source,
            CHANNELS,
            live_pipeline.model_repository,
            live_pipeline.window_size,
            live_pipeline.stride,
            live_pipeline.event_gap,
            rule=rule,
            context=live_pipeline.context_detector,
            forecaster=live_pipeline.linear_forecaster,
        )
        assert skipped == []
        return pooled

    def counts(pooled: dict) -> list[tuple]:
        return [(c["channel"], c["tp"], c["fp"], c["fn"]) for c in pooled["per_channel"]]

    served = offline(live_pipeline.decision_rule)
    assert replay["decision_rule"] == live_pipeline.decision_rule
    assert abs(replay["event"]["f1"] - served["event"]["f1"]) <= 0.01
    assert counts(replay) == counts(served)
    assert counts(replay["window_verdicts"]) == counts(offline("static"))
    # the dashboard shows the events stage's decisions: every window, scored as served
    assert replay["dashboard_alarms"]["windows_missing"] == 0
    # every flagged window was judged on its whole history (none waited out its patience)
    assert replay["confirmation"]["judged"] > 0
    assert replay["confirmation"]["incomplete"] == 0
    # every flag was judged by the rule its result carried (the workers send the floor)
    assert replay["confirmation"]["unconfirmed"] == 0
    assert counts(replay["dashboard_alarms"]) == counts(served)


def test_telemetry_and_results_are_in_victoria_metrics(
    live_pipeline: Settings, replay: dict
) -> None:
    satellites = "|".join(replay["satellites"])
    with VictoriaMetrics(live_pipeline.victoria_url) as vm:
        features = vm.export(f'smap_feature{{satellite_id=~"{satellites}",feature_index="0"}}')
        scores = vm.export(f'inference_anomaly_score{{satellite_id=~"{satellites}"}}')
    # one feature-0 series per (satellite, subsystem), a sample per replayed record
    assert len(features) == 7 * len(replay["satellites"])
    assert sum(len(s.samples) for s in features) == 7 * replay["records_replayed"]
    assert scores and all(s.samples for s in scores)


def test_detected_segments_become_anomaly_events(live_pipeline: Settings, replay: dict) -> None:
    """Each stored event of a split is made of windows the workers flagged: it lies inside
    one of their predicted segments (the events stage applies the evaluation's event rule,
    ``event_gap``, and its confirmation only takes alarms away); under the static rule the
    events are exactly those segments."""
    with psycopg.connect(live_pipeline.postgres_dsn) as conn:
        rows = conn.execute(
            "SELECT satellite_id, subsystem, start_record_index, end_record_index"
            " FROM anomaly_events WHERE satellite_id = ANY(%s) AND loop = 0",
            (replay["satellites"],),
        ).fetchall()
    streams = {(s["satellite_id"], s["subsystem"]): s for s in replay["streams"]}
    stored = [row for row in rows if (row[0], row[1]) in streams]
    assert stored, "the replay stored no event: nothing to check"
    for satellite_id, subsystem, start, end in stored:
        stream = streams[(satellite_id, subsystem)]
        if [start, end] not in stream["events"]:  # runs past the split: not scored
            continue
        assert any(a <= start and end <= b for a, b in stream["segments"]), (
            f"event {start}..{end} of {stream['channel']} outside the flagged segments"
        )
    if live_pipeline.decision_rule == "static":
        assert all(s["events"] == s["segments"] for s in streams.values())
    else:
        flagged = sum(len(s["segments"]) for s in streams.values())
        kept = sum(len(s["events"]) for s in streams.values())
        assert kept <= flagged
