"""Snapshots of collections over HTTP: export one as a file, streamed; restore one into a new
collection from a file streamed in (service/collections/snapshots.py has the format,
service/collections/restore.py the restore). Neither holds the collection in memory."""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Generator
from typing import Annotated, Any

import anyio
from anyio import to_thread
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.api import schemas
from service.api.dependencies import ReadTenant, RegistryDep, StateDep, WriteTenant
from service.api.routers.collections import REVISION_HEADER, NamePath, summary_of, with_revision
from service.collections.restore import blocking, restore_collection
from service.collections.snapshots import MEDIA_TYPE, SnapshotReader, export_chunks
from service.edge.error_responses import error_responses
from service.errors import NotFoundError
from service.settings import MODEL_NAME_PATTERN
from service.storage.repository import Storage, StoredCollection

router = APIRouter(prefix="/v1/collections", tags=["snapshots"])

# The one route whose body is read as a stream, not buffered (service/edge/body_size.py).
RESTORE_PATH = re.compile(r"^/v1/collections/[^/]+/snapshot$")
BINARY = {"schema": {"type": "string", "format": "binary"}}
SNAPSHOT_FILE: dict[str, Any] = {MEDIA_TYPE: BINARY}  # what an export answers
# What a restore takes: the file's bytes, whatever the Content-Type says.
UPLOADED_FILE: dict[str, Any] = {"application/octet-stream": BINARY}
INVALID_SNAPSHOT = (
    "invalid_snapshot: the file is damaged, cut short, or not a snapshot (the message says "
    "where); wrong_modality: its examples are not what the model takes; unknown_model: its "
    "model (or ?model=) is not served; rejection_unavailable: the model cannot reject unknowns "
    "as the snapshot's collection did; validation_error: a bad name or model. Nothing is kept."
)
ModelQuery = Annotated[
    str | None,
    Query(
        pattern=MODEL_NAME_PATTERN,
        description="The served model to bind the new collection to (GET /v1/models); "
        "default: the snapshot's. Examples whose embeddings the snapshot does not carry for "
        "this model's version are embedded as they are restored.",
    ),
]


def find(storage: Storage, name: str, tenant: str) -> StoredCollection:
    stored = storage.find_collection(tenant, name)
    if stored is None:
        raise NotFoundError(f"collection {name!r} does not exist")
    return stored


async def in_worker_thread(chunks: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """A blocking iterator's chunks, each made in a worker thread; closed at the end, also
    when the client goes away (which ends the export's database read)."""
    try:
        while (chunk := await to_thread.run_sync(next, chunks, None)) is not None:
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            await to_thread.run_sync(chunks.close)


@router.get(
    "/{name}/snapshot",
    summary="Export a collection as a snapshot file (streamed)",
    response_class=StreamingResponse,
    responses={200: {"content": SNAPSHOT_FILE}, **error_responses(404, 422, 503)},
)
async def export_snapshot(
    name: NamePath,
    registry: RegistryDep,
    tenant: ReadTenant,
    embeddings: Annotated[
        bool,
        Query(
            description="Carry each example's stored embeddings (by model version): a "
            "restore on the same model version then embeds nothing."
        ),
    ] = True,
) -> StreamingResponse:
    """The collection as the database has it when the export begins (one consistent read,
    however long the download takes): its settings, every example's input and label, and
    their embeddings; the file ends with a checksum (docs/service.md, "Snapshots")."""
    stored = await run_in_threadpool(find, registry.storage, name, tenant)
    chunks = export_chunks(registry.storage, stored, embeddings)
    header = await to_thread.run_sync(next, chunks)  # a database error is still a 503 here

    async def body() -> AsyncIterator[bytes]:
        yield header
        async for chunk in in_worker_thread(chunks):
            yield chunk

    filename = f"{name}.protonet-snapshot.jsonl"
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        REVISION_HEADER: str(stored.revision),
    }
    return StreamingResponse(body(), media_type=MEDIA_TYPE, headers=headers)


@router.post(
    "/{name}/snapshot",
    status_code=201,
    summary="Restore a snapshot file (streamed) into a new collection",
    response_model_exclude_unset=True,  # no "adapter" key: a restored collection has none
    openapi_extra={"requestBody": {"required": True, "content": UPLOADED_FILE}},
    responses=error_responses(404, 409, 413, 422, 503, descriptions={422: INVALID_SNAPSHOT}),
)
async def restore_snapshot(
    name: NamePath,
    request: Request,
    state: StateDep,
    registry: RegistryDep,
    tenant: WriteTenant,
    response: Response,
    model: ModelQuery = None,
) -> schemas.CollectionSummary:
    """The body is a snapshot as GET .../snapshot wrote it, of any collection and tenant, any
    size (up to PROTONET_MAX_SNAPSHOT_BYTES): read as it arrives, written in batches into a
    collection that nobody sees until the whole file checks out; then it appears at once,
    with one revision. A damaged or truncated file is refused and nothing is kept."""
    settings = state.settings
    reader = SnapshotReader(
        settings.max_body_bytes, settings.max_image_pixels, settings.max_image_side
    )
    restore = functools.partial(
        restore_collection, registry, name, tenant, blocking(request.stream()), model, reader
    )
    status = await to_thread.run_sync(restore)
    with_revision(response, status.revision)
    return summary_of(status, registry)
