"""A one-task Celery app for the RabbitMQ round-trip test, run by a real worker process."""

from __future__ import annotations

import os

from celery import Celery

from smap_bench.config import get_settings

app = Celery("smap_bench_probe", broker=get_settings().rabbitmq_url, backend="rpc://")
app.conf.task_default_queue = os.environ.get("SMAP_PROBE_QUEUE", "smap-bench-probe")
app.conf.task_acks_late = True
app.conf.worker_hijack_root_logger = False


@app.task(name="probe.add")
def add(a: int, b: int) -> int:
    return a + b
