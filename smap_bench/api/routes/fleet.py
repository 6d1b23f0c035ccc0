"""Fleet: satellites, subsystems, channel assignment, and the model registry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from smap_bench.api import crud
from smap_bench.api.deps import DbDep, SettingsDep, TokenDep
from smap_bench.api.models import (
    AssignmentPublic,
    Message,
    ModelPublic,
    Responses,
    SatelliteId,
    SatellitePublic,
    SatelliteUpdate,
    SubsystemPublic,
)

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
