"""Feedback on a collection's answers: a remembered query input (a query sent with
``"remember": true``) added as a support example of its right label."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.api import schemas
from service.api.dependencies import RegistryDep, WriteTenant
from service.api.json_bodies import BoundedJSONRoute
from service.api.routers.collections import (
    IdempotencyKeyHeader,
    NamePath,
    classes_of,
    idempotency_claim,
    with_revision,
)
from service.edge.error_responses import error_responses

router = APIRouter(prefix="/v1/collections", tags=["collections"], route_class=BoundedJSONRoute)

FORGOTTEN = (
    "Unknown collection, or an input_id not remembered for it: never was, expired "
    "(PROTONET_REMEMBER_SECONDS), or used for feedback already."
)


@router.post(
    "/{name}/feedback",
    summary="Confirm or correct an answer: add a remembered query input as an example",
    responses=error_responses(400, 404, 413, 422, 503, descriptions={404: FORGOTTEN}),
)
async def feedback(
    name: NamePath,
    request: schemas.FeedbackRequest,
    registry: RegistryDep,
    tenant: WriteTenant,
    response: Response,
    http_request: Request,
    idempotency_key: IdempotencyKeyHeader = None,
) -> schemas.SupportResponse:
    """The input a query remembered (``"remember": true`` gave each result an ``input_id``)
    becomes a support example of ``label``: the label it was given (a confirmation) or
    another (a correction), new or not. The input is used up: feedback on it counts once
    (with an Idempotency-Key, a retry gets the first answer). The answer is the support
    answer: the class touched, its size, and the write's revision."""
    claim = await idempotency_claim(http_request, tenant, idempotency_key)
    added = await registry.feedback(
        name, request.input_id, request.label, tenant=tenant, claim=claim
    )
    with_revision(response, added.revision)
    return schemas.SupportResponse(
        n_added=added.n_added, classes=classes_of(added.classes), revision=added.revision
    )
