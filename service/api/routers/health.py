"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.dependencies import StateDep
from service.api.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process is up")
async def healthz() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: model loaded, stored examples re-embedded, indexes built",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "Starting, or failed to start."}},
)
async def readyz(state: StateDep) -> JSONResponse:
    body = ReadyResponse(status=state.status, detail=state.detail)
    status_code = 200 if state.status == "ready" else 503
    return JSONResponse(body.model_dump(), status_code=status_code)
