"""Each real service of the local stack does its job: one round trip through each."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import httpx
import psycopg
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from confluent_kafka import Consumer, Producer, TopicPartition

from smap_bench import catalog
from smap_bench.config import Settings
from smap_bench.kafka import consumer_config, producer_config
from smap_bench.metrics import VictoriaMetrics, prometheus_line
from smap_bench.stack import status

pytestmark = pytest.mark.integration


def test_every_service_reports_healthy(live_stack: Settings) -> None:
    statuses = {s.name: s for s in status(live_stack)}
    infrastructure = {"postgres", "rabbitmq", "kafka", "victoria-metrics", "triton", "nginx"}
    assert infrastructure <= set(statuses)
    assert all(s.healthy for s in statuses.values()), statuses


def test_pipeline_topics_exist(live_stack: Settings) -> None:
    from smap_bench.kafka import admin_client

    topics = admin_client(live_stack).list_topics(timeout=10).topics
    assert len(topics[live_stack.topic_raw].partitions) == live_stack.topic_raw_partitions
    for name in (live_stack.topic_results, live_stack.topic_dead_letter):
        assert name in topics
    for satellite in catalog.satellite_ids(live_stack.satellites):
        for subsystem in catalog.Subsystem:
            assert live_stack.subsystem_topic(subsystem.value, satellite) in topics


def test_kafka_round_trip_with_consumer_group_and_commit(live_stack: Settings) -> None:
    topic = live_stack.topic_dead_letter  # an existing topic; a unique key marks our message
    group = f"test-{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().hex.encode()
    producer = Producer(producer_config(live_stack, "integration-test"))
    producer.produce(topic, key=key, value=b'{"probe": true}')
    assert producer.flush(10) == 0

    consumer = Consumer(consumer_config(live_stack, group))
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        found = None
        while found is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None and message.key() == key:
                found = message
        assert found is not None, "the produced message never reached the consumer group"
        consumer.commit(message=found, asynchronous=False)
        committed = consumer.committed([TopicPartition(topic, found.partition())], timeout=10)
        assert committed[0].offset == found.offset() + 1
    finally:
        consumer.close()


def test_celery_task_through_rabbitmq(live_stack: Settings, monkeypatch) -> None:
    """A task sent over RabbitMQ, run by a real worker process, its result returned."""
    queue = f"probe-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SMAP_PROBE_QUEUE", queue)
    from tests.integration import celery_probe

    celery_probe.app.conf.task_default_queue = queue
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.integration.celery_probe",
            "worker",
            "--pool=solo",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=WARNING",
        ],
        env={**os.environ, "SMAP_PROBE_QUEUE": queue},
    )
    try:
        assert celery_probe.add.delay(20, 22).get(timeout=60) == 42
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_victoria_metrics_write_then_read(live_stack: Settings) -> None:
    run = uuid.uuid4().hex[:8]
    now_ms = int(time.time() * 1000)
    lines = [
        prometheus_line("smap_probe", {"run": run, "i": str(i)}, float(i) / 2, now_ms - 1000 * i)
        for i in range(5)
    ]
    with VictoriaMetrics(live_stack.victoria_url) as vm:
        assert vm.import_prometheus(lines) == 5
        deadline = time.monotonic() + 20
        series = []
        while time.monotonic() < deadline:
            httpx.get(f"{live_stack.victoria_url}/internal/force_flush", timeout=5)
            series = vm.export(f'smap_probe{{run="{run}"}}')
            if len(series) == 5:
                break
            time.sleep(0.2)
        assert len(series) == 5
        by_i = {s.labels["i"]: s.samples for s in series}
        assert by_i["3"] == [((now_ms - 3000) / 1000.0, 1.5)]
        deadline = time.monotonic() + 20
        result = []
        while time.monotonic() < deadline and not result:
            result = vm.query(f'sum(smap_probe{{run="{run}"}})', time=now_ms / 1000)
            time.sleep(0.2)
        assert result and result[0].samples[0][1] == pytest.approx(0.0 + 0.5 + 1.0 + 1.5 + 2.0)


def test_postgres_schema_and_a_row(live_stack: Settings) -> None:
    with psycopg.connect(live_stack.postgres_dsn) as conn:
        codes = dict(conn.execute("SELECT name, code FROM subsystems").fetchall())
        assert codes == {s.value: s.code for s in catalog.Subsystem}
        satellite = f"probe-{uuid.uuid4().hex[:8]}"
        conn.execute("INSERT INTO satellites (satellite_id) VALUES (%s)", (satellite,))
        row = conn.execute(
            "SELECT satellite_id, active FROM satellites WHERE satellite_id = %s", (satellite,)
        ).fetchone()
        assert row == (satellite, True)
        conn.rollback()


def test_triton_ready_over_http_and_grpc(live_stack: Settings) -> None:
    http = httpclient.InferenceServerClient(live_stack.triton_http_url)
    grpc = grpcclient.InferenceServerClient(live_stack.triton_grpc_url)
    assert http.is_server_live() and http.is_server_ready()
    assert grpc.is_server_live() and grpc.is_server_ready()
    assert http.get_server_metadata()["name"] == "triton"
    served = {model.name for model in grpc.get_model_repository_index().models}
    local_repository = live_stack.run_dir / "triton-models"
    assert served == {p.name for p in local_repository.iterdir() if p.is_dir()}


def test_nginx_answers(live_stack: Settings) -> None:
    response = httpx.get(f"http://{live_stack.host}:{live_stack.nginx_port}/healthz", timeout=5)
    assert response.status_code == 200 and response.text.strip() == "ok"


def test_migrations_build_an_empty_database_and_rerun_harmlessly(live_stack: Settings) -> None:
    from psycopg.conninfo import make_conninfo

    from smap_bench import db

    name = f"smap_bench_probe_{uuid.uuid4().hex[:8]}"
    dsn = make_conninfo(live_stack.postgres_dsn, dbname=name)
    assert db.ensure_database(dsn) is True
    try:
        first = db.migrate(dsn)
        assert first == [p.stem for p in db.migration_files()]
        assert db.migrate(dsn) == []
        with psycopg.connect(dsn) as conn:
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema='public'"
                )
            }
        assert {
            "satellites",
            "subsystems",
            "channel_assignment",
            "models",
            "anomaly_events",
            "alarm_history",
        } <= tables
    finally:
        with psycopg.connect(db.admin_dsn(live_stack.postgres_dsn), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}"')


def test_db_migrate_brings_an_older_volume_up_to_date(live_stack: Settings) -> None:
    """A database initialised by an older release (only 001, as PostgreSQL's init scripts
    left it) gets the later migrations from `smap-bench db migrate`, as compose runs it."""
    from psycopg.conninfo import make_conninfo

    from smap_bench import db

    name = f"smap_bench_probe_{uuid.uuid4().hex[:8]}"
    dsn = make_conninfo(live_stack.postgres_dsn, dbname=name)
    assert db.ensure_database(dsn) is True
    try:
        first, *later = db.migration_files()
        with psycopg.connect(dsn) as conn:
            conn.execute(first.read_text().encode())  # what docker-entrypoint-initdb.d ran
        env = {**os.environ, "SMAP_POSTGRES_DSN": dsn}

        def migrate() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "smap_bench.cli", "db", "migrate"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        run = migrate()
        assert run.returncode == 0, run.stderr
        assert f"migrations applied: {', '.join(p.stem for p in later)}" in run.stdout
        with psycopg.connect(dsn) as conn:
            columns = {
                row[0]
                for row in conn.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = 'anomaly_events'"
                )
            }
        assert "detected_by" in columns
        again = migrate()
        assert again.returncode == 0 and "none (up to date)" in again.stdout
    finally:
        with psycopg.connect(db.admin_dsn(live_stack.postgres_dsn), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}"')
