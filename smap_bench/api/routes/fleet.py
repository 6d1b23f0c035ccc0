"""Fleet: satellites, subsystems, channel assignment, and the model registry."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from smap_bench.api import crud
from smap_bench.api.deps import DbDep, SettingsDep, TokenDep, VictoriaAsyncDep
from smap_bench.api.models import (
    AssignmentPublic,
    FleetLatestPublic,
    Message,
    ModelPublic,
    Responses,
    SatelliteId,
    SatellitePublic,
    SatelliteUpdate,
    StreamLatest,
    SubsystemPublic,
)
from smap_bench.catalog import Subsystem
from smap_bench.metrics import Series

router = APIRouter(prefix="/fleet", tags=["fleet"])

SatelliteIdPath = Annotated[SatelliteId, Path(description="Satellite id, e.g. sat1")]
NOT_FOUND: Responses = {404: {"model": Message, "description": "No such satellite or model"}}


@router.get("/satellites", response_model=list[SatellitePublic])
def list_satellites(
    db: DbDep, active: Annotated[bool | None, Query(description="Only (in)active ones")] = None
) -> list[crud.Row]:
    """Every satellite with the channel each of its subsystems replays."""
    return crud.list_satellites(db, active)


@router.get("/satellites/{satellite_id}", response_model=SatellitePublic, responses=NOT_FOUND)
def get_satellite(db: DbDep, satellite_id: SatelliteIdPath) -> crud.Row:
    return crud.get_satellite(db, satellite_id)


@router.patch("/satellites/{satellite_id}", response_model=SatellitePublic, responses=NOT_FOUND)
def update_satellite(
    operator: TokenDep, db: DbDep, satellite_id: SatelliteIdPath, changes: SatelliteUpdate
) -> crud.Row:
    """Rename a satellite or mark it (in)active."""
    return crud.update_satellite(db, satellite_id, changes.model_dump(exclude_unset=True))


@router.get("/subsystems", response_model=list[SubsystemPublic])
def list_subsystems(db: DbDep) -> list[crud.Row]:
    return crud.list_subsystems(db)


@router.get("/assignments", response_model=list[AssignmentPublic])
def list_assignments(db: DbDep, satellite_id: SatelliteId | None = None) -> list[crud.Row]:
    """Which SMAP channel (and model) each (satellite, subsystem) stream replays."""
    return crud.list_assignments(db, satellite_id)


@router.get("/models", response_model=list[ModelPublic])
def list_models(db: DbDep, settings: SettingsDep) -> list[crud.Row]:
    """The model registry (newest version of each model); when the registry table is
    empty, the metadata.json files of the Triton repository."""
    return crud.list_models(db, settings.model_repository)


@router.get("/models/{model_name}", response_model=ModelPublic, responses=NOT_FOUND)
def get_model(
    db: DbDep,
    settings: SettingsDep,
    model_name: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")],
) -> crud.Row:
    return crud.get_model(db, settings.model_repository, model_name)


@router.get("/latest", response_model=FleetLatestPublic)
async def latest(
    victoria: VictoriaAsyncDep,
    lookback_s: Annotated[
        float, Query(ge=5, le=3600, description="Look this far around now (seconds)")
    ] = 60,
) -> FleetLatestPublic:
    """Every stream's newest telemetry sample and its latest window's detection (the
    fleet grid's colours): one raw read of feature 0 and the detections of every stream
    within ``lookback_s`` of now (a stream with nothing there has no row)."""
    now = time.time()
    found = await victoria.export_many(
        ['smap_feature{feature_index="0"}', "inference_anomaly_detected"],
        now - lookback_s,
        now + lookback_s,
    )
    return FleetLatestPublic(data=stream_latest(found), lookback_s=lookback_s)


def stream_latest(found: list[Series]) -> list[StreamLatest]:
    """One row per stream of a raw read of ``smap_feature`` (feature 0) and
    ``inference_anomaly_detected``: the newest sample of each, in natural satellite order;
    streams of unknown subsystems are left out."""
    known = {s.value for s in Subsystem}
    newest: dict[tuple[str, str], float] = {}
    flagged: dict[tuple[str, str], tuple[float, float]] = {}
    for series in found:
        key = (series.labels.get("satellite_id", ""), series.labels.get("subsystem", ""))
        if not key[0] or key[1] not in known or not series.samples:
            continue
        last = max(series.samples)
        if series.labels.get("__name__") == "inference_anomaly_detected":
            flagged[key] = max(last, flagged.get(key, last))
        else:
            newest[key] = max(last[0], newest.get(key, last[0]))
    keys = sorted({*newest, *flagged}, key=lambda k: (len(k[0]), k[0], k[1]))

    def when(value: float | None) -> datetime | None:
        return datetime.fromtimestamp(value, UTC) if value is not None else None

    return [
        StreamLatest(
            satellite_id=sat,
            subsystem=Subsystem(sub),
            last_time=when(newest.get((sat, sub))),
            detected=flagged[(sat, sub)][1] if (sat, sub) in flagged else None,
            detected_time=when(flagged[(sat, sub)][0]) if (sat, sub) in flagged else None,
        )
        for sat, sub in keys
    ]
