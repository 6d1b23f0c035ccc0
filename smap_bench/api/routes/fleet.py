"""Fleet: satellites, subsystems, channel assignment, and the model registry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import TypeAdapter

from smap_bench.api import crud
from smap_bench.api.cache import FLEET_FINGERPRINT, FingerprintCache, RecentAnswers
from smap_bench.api.deps import DbDep, PoolDep, SettingsDep, TokenDep, VictoriaAsyncDep, in_db
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
from smap_bench.api.queries import SATELLITE_ID_PATTERN
from smap_bench.api.victoria import AsyncVictoria
from smap_bench.catalog import Subsystem
from smap_bench.metrics import Series

router = APIRouter(prefix="/fleet", tags=["fleet"])

SatelliteIdPath = Annotated[SatelliteId, Path(description="Satellite id, e.g. sat1")]
NOT_FOUND: Responses = {404: {"model": Message, "description": "No such satellite or model"}}


#: The satellites route's answers, valid while the fleet's tables are unchanged.
FLEET_CACHE = FingerprintCache(FLEET_FINGERPRINT)
_SATELLITES = TypeAdapter(list[SatellitePublic])


def _satellites_json(conn: psycopg.Connection[Any], active: bool | None) -> bytes:
    return _SATELLITES.dump_json(_SATELLITES.validate_python(crud.list_satellites(conn, active)))


@router.get("/satellites", response_model=list[SatellitePublic])
async def list_satellites(
    pool: PoolDep,
    active: Annotated[bool | None, Query(description="Only (in)active ones")] = None,
) -> Response:
    """Every satellite with the channel each of its subsystems replays."""
    body = await in_db(pool, FLEET_CACHE.read, active, lambda conn: _satellites_json(conn, active))
    return Response(body, media_type="application/json")


@router.get("/satellites/{satellite_id}", response_model=SatellitePublic, responses=NOT_FOUND)
async def get_satellite(pool: PoolDep, satellite_id: SatelliteIdPath) -> crud.Row:
    return await in_db(pool, crud.get_satellite, satellite_id)


@router.patch("/satellites/{satellite_id}", response_model=SatellitePublic, responses=NOT_FOUND)
def update_satellite(
    operator: TokenDep, db: DbDep, satellite_id: SatelliteIdPath, changes: SatelliteUpdate
) -> crud.Row:
    """Rename a satellite or mark it (in)active."""
    return crud.update_satellite(db, satellite_id, changes.model_dump(exclude_unset=True))


@router.get("/subsystems", response_model=list[SubsystemPublic])
async def list_subsystems(pool: PoolDep) -> list[crud.Row]:
    return await in_db(pool, crud.list_subsystems)


@router.get("/assignments", response_model=list[AssignmentPublic])
async def list_assignments(
    pool: PoolDep, satellite_id: SatelliteId | None = None
) -> list[crud.Row]:
    """Which SMAP channel (and model) each (satellite, subsystem) stream replays."""
    return await in_db(pool, crud.list_assignments, satellite_id)


@router.get("/models", response_model=list[ModelPublic])
async def list_models(pool: PoolDep, settings: SettingsDep) -> list[crud.Row]:
    """The model registry (newest version of each model); when the registry table is
    empty, the metadata.json files of the Triton repository."""
    return await in_db(pool, crud.list_models, settings.model_repository)


@router.get("/models/{model_name}", response_model=ModelPublic, responses=NOT_FOUND)
async def get_model(
    pool: PoolDep,
    settings: SettingsDep,
    model_name: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")],
) -> crud.Row:
    return await in_db(pool, crud.get_model, settings.model_repository, model_name)


#: Satellites the latest route looks at: those the API serves series for (the catalog's
#: ``sat<N>``), as a label regex (anchored, as Prometheus label regexes are).
FLEET_SATELLITES = SATELLITE_ID_PATTERN.removeprefix("^").removesuffix("$")


_SUBSYSTEMS = {s.value: s for s in Subsystem}

#: The label that tells the parts of the latest route's one query apart.
PART_LABEL = "smap_latest_part"


@router.get("/latest", response_model=FleetLatestPublic)
async def latest(
    request: Request,
    victoria: VictoriaAsyncDep,
    settings: SettingsDep,
    lookback_s: Annotated[
        float, Query(ge=10, le=86_400, description="Look this far back from now (seconds)")
    ] = 21_600,
) -> Response:
    """Every stream's newest telemetry sample and its latest decided window's served
    decision (``anomaly_alarm``, written by the events stage: under the confirmed rule a
    flagged window counts only once confirmed), the fleet grid's colours and where a live
    timeline ends, from one instant query (three parts) over the last ``lookback_s``.
    Record times are the simulated clock, which falls behind the wall clock by every
    pause: hence the long default lookback. One answer serves every caller for
    ``api_latest_max_age_ms`` (200 ms by default), however many dashboard sessions poll
    it."""

    # The query looks back whole seconds: the answer says so, and is shared by that.
    window_s = round(lookback_s)

    async def read() -> bytes:
        data = await _read_latest(victoria, window_s)
        return (
            FleetLatestPublic.model_construct(data=data, lookback_s=window_s)
            .model_dump_json()
            .encode()
        )

    answers: RecentAnswers = request.app.state.latest_answers
    body = await answers.read(window_s, read, max_age_s=settings.api_latest_max_age_ms / 1000)
    return Response(body, media_type="application/json")


async def _read_latest(victoria: AsyncVictoria, window_s: int) -> list[StreamLatest]:
    window = f"{window_s}s"
    sats = f'satellite_id=~"{FLEET_SATELLITES}"'
    # The newest record of a satellite is the newest of each of its subsystems (a record
    # carries them all): one record_index series per satellite, not one per stream.
    records = f"record_index{{{sats}}}"
    detections = f"anomaly_alarm{{{sats}}}"  # the served decision (the events stage's)
    # One request, not three: each VictoriaMetrics round trip costs the API more CPU than
    # the answer's few dozen series. Each part is tagged with a label to tell them apart.
    parts = {
        "newest": f"tlast_over_time({records}[{window}])",
        "flagged": f"last_over_time({detections}[{window}])",
        "flagged_at": f"tlast_over_time({detections}[{window}])",
    }
    query = (
        "union("
        + ", ".join(f'label_set({q}, "{PART_LABEL}", "{name}")' for name, q in parts.items())
        + ")"
    )
    found: dict[str, list[Series]] = {name: [] for name in parts}
    for series in await victoria.query(query, fresh=True):
        part = series.labels.get(PART_LABEL)
        if part in found:
            found[part].append(series)
    return stream_latest(found["newest"], found["flagged"], found["flagged_at"])


def _by_stream(found: list[Series]) -> dict[tuple[str, str], float]:
    values = {}
    for series in found:
        key = (series.labels.get("satellite_id", ""), series.labels.get("subsystem", ""))
        if series.samples:
            values[key] = series.samples[-1][1]
    return values


def stream_latest(
    newest: list[Series], flagged: list[Series], flagged_at: list[Series]
) -> list[StreamLatest]:
    """One row per stream of the three instant-query answers of :func:`latest` (each
    satellite's newest record time, each stream's latest detection and its time), every
    subsystem of a satellite with a record, in natural satellite order; streams of
    unknown subsystems are left out."""
    values, ends = _by_stream(flagged), _by_stream(flagged_at)
    known = _SUBSYSTEMS.keys()
    by_satellite = {sat: t for (sat, _), t in _by_stream(newest).items()}
    times = {(sat, sub.value): t for sat, t in by_satellite.items() for sub in Subsystem}
    keys = sorted(
        {k for k in (*times, *values, *ends) if k[0] and k[1] in known},
        key=lambda k: (len(k[0]), k[0], k[1]),
    )

    def when(value: float | None) -> datetime | None:
        return datetime.fromtimestamp(value, UTC) if value is not None else None

    # Built from values of the right types (str, Subsystem, datetime, float): no
    # validation per row (about 35 us each); the answer is checked once as it is sent.
    return [
        StreamLatest.model_construct(
            satellite_id=sat,
            subsystem=_SUBSYSTEMS[sub],
            last_time=when(times.get((sat, sub))),
            detected=values.get((sat, sub)),
            detected_time=when(ends.get((sat, sub))),
        )
        for sat, sub in keys
    ]
