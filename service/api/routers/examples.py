"""A collection's stored examples: their ids and labels (and texts, for a text model), and
each one's image (thumbnails).

The image is the example as stored: the stage-1 pixels (protonet/preprocessing.py), resized to
the model's input size and not inverted, so black ink on white paper as it was drawn. A text
example has no image (404): the listing carries its text, as stored (cleaned).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool

from service.api import schemas
from service.api.dependencies import ReadTenant, RegistryDep
from service.api.responses import json_response
from service.api.routers.collections import NamePath, PageCursor, PageLimit
from service.collections import stored_examples
from service.collections.labels import RULE, normalize_label
from service.collections.pages import PAGE_DEFAULT
from service.edge.error_responses import error_responses
from service.storage.repository import Storage

router = APIRouter(prefix="/v1/collections", tags=["collections"])

LabelQuery = Annotated[
    Annotated[str, AfterValidator(normalize_label)] | None,
    Query(
        **schemas.LABEL_CONSTRAINTS,
        description=f"Only this class's examples (all classes when left out). {RULE}.",
        examples=["a"],
    ),
]
ExampleIdPath = Annotated[
    int,
    Path(
        ge=1,
        le=2**63 - 1,  # beyond any database's integer key (and SQLite's driver would overflow)
        description="The example's id, as listed by GET .../examples.",
        examples=[1],
    ),
]
PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The stored pixels as a PNG (grayscale or RGB, the model's input size).",
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def examples_response(
    storage: Storage, name: str, tenant: str, label: str | None, cursor: str | None, limit: int
) -> Response:
    """Blocking: a page of the listing as JSON (``StoredExample`` dataclasses serialize as
    ``{"id", "label", "text"}``), read from storage off the event loop."""
    page = stored_examples.list_examples(
        storage, name, tenant=tenant, label=label, cursor=cursor, limit=limit
    )
    return json_response({"examples": page.items, "next_cursor": page.next_cursor})


@router.get(
    "/{name}/examples",
    summary="List the stored examples (ids, labels, and texts of a text model), a page at a "
    "time, by id",
    response_model=schemas.ExampleList,
    responses=error_responses(404, 422, 503),
)
async def list_examples(
    name: NamePath,
    registry: RegistryDep,
    tenant: ReadTenant,
    label: LabelQuery = None,
    cursor: PageCursor = None,
    limit: PageLimit = PAGE_DEFAULT,
) -> Response:
    """Read from storage, which every replica shares: no min_revision is needed."""
    return await run_in_threadpool(
        examples_response, registry.storage, name, tenant, label, cursor, limit
    )


@router.get(
    "/{name}/examples/{example_id}/image",
    summary="One stored example as a PNG image (a thumbnail of what the model sees)",
    response_class=Response,
    responses={**PNG_RESPONSE, **error_responses(404, 422, 503)},
)
async def example_image(
    name: NamePath, example_id: ExampleIdPath, registry: RegistryDep, tenant: ReadTenant
) -> Response:
    pixels = await run_in_threadpool(
        stored_examples.example_pixels, registry.storage, name, example_id, tenant=tenant
    )
    return Response(stored_examples.png_bytes(pixels), media_type="image/png")
