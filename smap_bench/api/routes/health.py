"""Health: the API's own liveness, and the whole pipeline's state at a glance."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from smap_bench.api import monitor
from smap_bench.api.deps import SettingsDep, VictoriaDep
from smap_bench.api.models import Liveness, PipelineHealthPublic, ServiceHealth

router = APIRouter(prefix="/health", tags=["health"])

NAME_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"


@router.get("/live", response_model=Liveness)
async def live() -> Liveness:
    """The API process answers (used by container and supervisor health checks)."""
    return Liveness()


@router.get("/pipeline", response_model=PipelineHealthPublic)
def pipeline(
    settings: SettingsDep,
    victoria: VictoriaDep,
    group: Annotated[
        list[Annotated[str, Query(pattern=NAME_PATTERN)]] | None,
        Query(max_length=20, description="Kafka consumer groups (default: the pipeline's)"),
    ] = None,
    queue: Annotated[
        list[Annotated[str, Query(pattern=NAME_PATTERN)]] | None,
        Query(max_length=20, description="RabbitMQ queues (default: the inference queue)"),
    ] = None,
) -> PipelineHealthPublic:
    """Each service up or down, Kafka consumer lag per group, RabbitMQ queue depth and
    consumers, Triton model readiness, stage rates and latencies, and ingestion rate.

    The parts are read in parallel, each with a short timeout; a part that cannot be
    read says why in ``detail`` instead of failing the whole answer.
    """
    from smap_bench import stack

    groups = group or list(monitor.DEFAULT_GROUPS)
    queues = queue or list(monitor.default_queues())
    with ThreadPoolExecutor(max_workers=5, thread_name_prefix="health") as pool:
        jobs: dict[str, Future[Any]] = {
            "services": pool.submit(stack.status, settings),
            "kafka_lag": pool.submit(monitor.consumer_lag, settings, groups),
            "queues": pool.submit(monitor.queue_depths, settings, queues),
            "triton": pool.submit(monitor.triton_models, settings),
            "stages": pool.submit(monitor.stage_stats, victoria),
        }
        found: dict[str, Any] = {}
        problems: list[str] = []
        for name, job in jobs.items():
            try:
                found[name] = job.result(timeout=15)
            except Exception as exc:
                problems.append(f"{name}: {exc.__class__.__name__}: {exc}")
    services = [
        ServiceHealth(name=s.name, url=s.url, healthy=s.healthy, detail=s.detail)
        for s in found.get("services", [])
    ]
    stages = found.get("stages", [])
    return PipelineHealthPublic(
        checked_at=datetime.now(UTC),
        services=services,
        kafka_lag=found.get("kafka_lag", []),
        queues=found.get("queues", []),
        triton=found.get("triton", {"ready": False, "models": [], "detail": "not read"}),
        stages=stages,
        ingestion_rate=monitor.ingestion_rate(stages),
        detail=problems,
    )
