"""Prometheus metrics (not part of the versioned API, so not in the OpenAPI schema)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from service.edge.metrics import CONTENT_TYPE, ServiceMetrics

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def get_metrics(request: Request) -> Response:
    metrics: ServiceMetrics = request.app.state.metrics
    # Off the loop: the collection gauges take each collection's lock briefly.
    body = await run_in_threadpool(metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE)
