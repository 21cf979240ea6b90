"""Liveness and readiness probes.

Readiness means "can answer queries": a process whose database is down still answers them from
memory (writes get 503 database_unavailable), so it stays ready (200) and says
``"database": "down"``; taking every replica out of rotation would turn a write outage into a
full one. A probe that should fail while the database is down asks ``/readyz?require=database``
(the ``protonet_database_up`` gauge says the same to monitoring).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from service.api.dependencies import StateDep
from service.api.schemas import HealthResponse, ReadyResponse
from service.edge.error_responses import error_responses

router = APIRouter(tags=["health"])

Requirement = Annotated[
    Literal["database"] | None,
    Query(
        description="database: also answer 503 while the database is unreachable (for a "
        "probe that should route only to replicas that can write).",
    ),
]


@router.get("/healthz", summary="Liveness: the process is up")
async def healthz() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: model loaded, stored examples re-embedded, indexes built; and whether "
    "the database answers",
    response_model=ReadyResponse,
    responses={
        **error_responses(422),
        503: {
            "model": ReadyResponse,
            "description": "Starting, or failed to start; or (with require=database) the "
            "database is unreachable.",
        },
    },
)
async def readyz(state: StateDep, require: Requirement = None) -> JSONResponse:
    database_up = state.database.up()  # the probe thread's last answer: no I/O here
    body = ReadyResponse(
        status=state.status, detail=state.detail, database="up" if database_up else "down"
    )
    ready = state.status == "ready" and (database_up or require != "database")
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
