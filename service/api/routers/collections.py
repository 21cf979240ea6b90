"""Collections of labelled support examples, and queries against them."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool

from service.api import schemas
from service.api.dependencies import ReadTenant, RegistryDep, WriteTenant
from service.api.json_bodies import BoundedJSONRoute
from service.api.responses import json_response, query_answer_body
from service.api.schemas import COLLECTION_NAME_PATTERN
from service.collections.diagnostics import SupportSetDiagnostics
from service.collections.labels import RULE, normalize_label
from service.collections.live_collection import ClassCount, CollectionStatus
from service.collections.pages import PAGE_DEFAULT, PAGE_MAX
from service.collections.registry import CollectionRegistry
from service.edge.error_responses import error_responses
from service.storage.repository import IdempotencyClaim

router = APIRouter(prefix="/v1/collections", tags=["collections"], route_class=BoundedJSONRoute)

NamePath = Annotated[
    str,
    Path(
        pattern=COLLECTION_NAME_PATTERN,
        description=f"Collection name ({COLLECTION_NAME_PATTERN.strip('^$')}).",
        examples=["omniglot-demo"],
    ),
]
LabelPath = Annotated[
    str,
    Path(
        **schemas.LABEL_CONSTRAINTS,
        description=f"Class label, URL-encoded ('/' as %2F, '.' may be %2E): {RULE}.",
        examples=["a"],
    ),
    AfterValidator(normalize_label),
]
# Revisions are the ids of changes, BIGINT columns (service/storage/records.py).
MAX_REVISION = 2**63 - 1
MinRevision = Annotated[
    int | None,
    Query(
        ge=0,
        le=MAX_REVISION,
        description="Answer only once this process has applied the collection's changes up "
        "to this revision (one that a write returned): read-your-writes across replicas. "
        "Waits up to PROTONET_MIN_REVISION_TIMEOUT, then 503 revision_not_reached.",
    ),
]
REVISION_HEADER = "Protonet-Revision"  # on every response about one collection
PageLimit = Annotated[
    int,
    Query(ge=1, le=PAGE_MAX, description=f"Most items on the page (at most {PAGE_MAX})."),
]
PageCursor = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The next_cursor of the previous page, as it came; none: the first page.",
    ),
]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Makes the write safe to retry: the same key with the same body within "
        "PROTONET_IDEMPOTENCY_KEY_RETENTION_SECONDS (default a day) gets the first answer "
        "again and writes nothing; with another body, 422 idempotency_key_reused. Per tenant; "
        "any printable ASCII without spaces, e.g. a UUID.",
        examples=["9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"],
    ),
]


async def idempotency_claim(
    request: Request, tenant: str, key: str | None
) -> IdempotencyClaim | None:
    """The request's key and fingerprint: a hash of its method, path and body (hashed off the
    event loop: bodies may be megabytes)."""
    if key is None:
        return None
    target = f"{request.method} {request.url.path}\n".encode()
    body = await request.body()  # read already, by the route's JSON parsing
    digest = await to_thread.run_sync(lambda: hashlib.sha256(target + body).hexdigest())
    return IdempotencyClaim(tenant, key, digest)


def with_revision(response: Response, revision: int) -> Response:
    response.headers[REVISION_HEADER] = str(revision)
    return response


def summary_of(
    collection: CollectionStatus, registry: CollectionRegistry
) -> schemas.CollectionSummary:
    """A collection's summary; its rejection described with its model's calibration (which
    the default acceptance stands for)."""
    calibration = registry.calibration_of(collection.model)
    adapted = {} if collection.adapter is None else {"adapter": vars(collection.adapter)}
    return schemas.CollectionSummary.model_validate(
        {
            "name": collection.name,
            "n_classes": collection.n_classes,
            "n_examples": collection.n_examples,
            "revision": collection.revision,
            "index": collection.index,
            "index_in_use": collection.index_in_use,
            "rejection": collection.rejection_setting.describe(calibration),
            "model": collection.model,
            **adapted,  # no new key for collections without an adapter
        }
    )


def classes_of(classes: list[ClassCount]) -> list[schemas.ClassSummary]:
    return [schemas.ClassSummary(label=c.label, n_examples=c.n_examples) for c in classes]


@router.post(
    "",
    status_code=201,
    summary="Create an empty collection",
    response_model_exclude_unset=True,
    responses=error_responses(400, 409, 413, 422, 503),
)
async def create_collection(
    request: schemas.CreateCollectionRequest,
    registry: RegistryDep,
    tenant: WriteTenant,
    response: Response,
) -> schemas.CollectionSummary:
    summary = await run_in_threadpool(
        functools.partial(
            registry.create,
            request.name,
            tenant=tenant,
            index=request.index,
            rejection=schemas.rejection_setting(request.rejection),
            model=request.model,
        )
    )
    with_revision(response, summary.revision)
    return summary_of(summary, registry)


def summary_body(collection: CollectionStatus, registry: CollectionRegistry) -> dict[str, Any]:
    return summary_of(collection, registry).model_dump(mode="json", exclude_unset=True)


def listing_response(registry: CollectionRegistry, tenant: str) -> Response:
    """Blocking (takes per-collection locks): every collection's summary, as JSON."""
    collections = registry.list_all(tenant=tenant)
    return json_response({"collections": [summary_body(c, registry) for c in collections]})


def detail_response(
    registry: CollectionRegistry, name: str, tenant: str, classes_limit: int | None
) -> Response:
    """Blocking: the collection's summary, and the first page of its classes if
    ``classes_limit`` (``ClassCount`` dataclasses serialize as ``{"label", "n_examples"}``),
    as JSON."""
    detail = registry.describe(name, tenant=tenant, classes_limit=classes_limit)
    body = summary_body(detail, registry)
    if detail.classes is not None:
        body.update(classes=detail.classes.items, next_cursor=detail.classes.next_cursor)
    return with_revision(json_response(body), detail.revision)


def class_page_response(
    registry: CollectionRegistry, name: str, tenant: str, cursor: str | None, limit: int
) -> Response:
    """Blocking: a page of the collection's classes, as JSON."""
    revision, page = registry.class_page(name, tenant=tenant, cursor=cursor, limit=limit)
    body = {"classes": page.items, "next_cursor": page.next_cursor, "revision": revision}
    return with_revision(json_response(body), revision)


# Listings are built and serialized in a worker thread: at 50,000 classes (3 MB of JSON), on the
# event loop, 4 clients raised /healthz p50 to over a second (benchmarks/event_loop_stalls.py).
@router.get(
    "",
    summary="List collections",
    response_model=schemas.CollectionList,
    responses=error_responses(422, 503),
)
async def list_collections(registry: RegistryDep, tenant: ReadTenant) -> Response:
    return await run_in_threadpool(listing_response, registry, tenant)


@router.get(
    "/{name}",
    summary="Describe a collection: its counts and settings (and a first page of classes)",
    response_model=schemas.CollectionDetail,
    responses=error_responses(404, 422, 503),
)
async def get_collection(
    name: NamePath,
    registry: RegistryDep,
    tenant: ReadTenant,
    min_revision: MinRevision = None,
    classes: Annotated[
        bool,
        Query(description="Also list the first page of classes (and next_cursor for the rest)."),
    ] = False,
    limit: PageLimit = PAGE_DEFAULT,
) -> Response:
    """Counts in O(1) whatever the collection's size; the classes only when asked."""
    await registry.require_revision(name, min_revision, tenant=tenant)
    classes_limit = limit if classes else None
    return await run_in_threadpool(detail_response, registry, name, tenant, classes_limit)


@router.get(
    "/{name}/classes",
    summary="List a collection's classes, a page at a time, oldest first",
    response_model=schemas.ClassPage,
    responses=error_responses(404, 422, 503),
)
async def list_classes(
    name: NamePath,
    registry: RegistryDep,
    tenant: ReadTenant,
    min_revision: MinRevision = None,
    cursor: PageCursor = None,
    limit: PageLimit = PAGE_DEFAULT,
) -> Response:
    """The classes as this process has them, at the revision in the answer (min_revision
    works as for the collection's GET)."""
    await registry.require_revision(name, min_revision, tenant=tenant)
    return await run_in_threadpool(class_page_response, registry, name, tenant, cursor, limit)


def diagnostics_of(
    report: SupportSetDiagnostics, model_version: str, revision: int
) -> schemas.DiagnosticsResponse:
    return schemas.DiagnosticsResponse.model_validate(
        {**dataclasses.asdict(report), "model_version": model_version, "revision": revision}
    )


TOO_LARGE_TO_DIAGNOSE = (
    "collection_too_large: the collection has more examples than "
    "PROTONET_DIAGNOSTICS_MAX_EXAMPLES, or its diagnostics would compute more distances than "
    "PROTONET_DIAGNOSTICS_MAX_DISTANCES; validation_error or invalid_input: a bad name or "
    "min_revision."
)
DIAGNOSTICS_BUSY = (
    "diagnostics_busy: as many diagnostics as PROTONET_DIAGNOSTICS_MAX_CONCURRENT (per "
    "process) or PROTONET_DIAGNOSTICS_MAX_CONCURRENT_PER_TENANT allow are running; retry after "
    "Retry-After seconds."
)


def diagnostics_response(registry: CollectionRegistry, name: str, tenant: str) -> Response:
    """Blocking: the diagnostics (one class entry per class), computed and serialized."""
    revision, version, report = registry.diagnose(name, tenant=tenant)
    body = diagnostics_of(report, version, revision).model_dump(mode="json")
    return with_revision(json_response(body), revision)


@router.get(
    "/{name}/diagnostics",
    summary="Diagnose the support set: leave-one-out accuracy, confusable classes, "
    "suspected mislabelled examples",
    response_model=schemas.DiagnosticsResponse,
    responses=error_responses(
        404, 422, 429, 503, descriptions={422: TOO_LARGE_TO_DIAGNOSE, 429: DIAGNOSTICS_BUSY}
    ),
)
async def diagnose_collection(
    name: NamePath,
    registry: RegistryDep,
    tenant: ReadTenant,
    min_revision: MinRevision = None,
) -> Response:
    """From the stored embeddings (nothing is re-encoded); the work grows with examples x
    classes (docs/service.md, "Diagnostics of a support set"). At most
    PROTONET_DIAGNOSTICS_MAX_CONCURRENT run at once in a process (per tenant:
    PROTONET_DIAGNOSTICS_MAX_CONCURRENT_PER_TENANT); beyond, 429 diagnostics_busy."""
    await registry.require_revision(name, min_revision, tenant=tenant)
    return await run_in_threadpool(diagnostics_response, registry, name, tenant)


@router.patch(
    "/{name}",
    summary="Change a collection's settings: its rejection of unknown inputs",
    response_model_exclude_unset=True,  # no "adapter" key for a collection without one
    responses=error_responses(400, 404, 413, 422, 503),
)
async def update_collection(
    name: NamePath,
    request: schemas.UpdateCollectionRequest,
    registry: RegistryDep,
    tenant: WriteTenant,
    response: Response,
) -> schemas.CollectionSummary:
    """The change's revision is in the answer (and the Protonet-Revision header)."""
    summary = await run_in_threadpool(
        functools.partial(
            registry.set_rejection,
            name,
            schemas.rejection_setting(request.rejection),
            tenant=tenant,
        )
    )
    with_revision(response, summary.revision)
    return summary_of(summary, registry)


@router.delete(
    "/{name}",
    status_code=204,
    summary="Delete a collection with all its classes and examples",
    responses=error_responses(404, 422, 503),
)
async def delete_collection(name: NamePath, registry: RegistryDep, tenant: WriteTenant) -> Response:
    """The deletion's revision is in the Protonet-Revision header."""
    revision = await run_in_threadpool(registry.delete, name, tenant=tenant)
    return with_revision(Response(status_code=204), revision)


@router.post(
    "/{name}/support",
    summary="Add labelled examples (all or nothing); new labels create classes",
    responses=error_responses(400, 404, 413, 422, 503),
)
async def add_support(
    name: NamePath,
    request: schemas.SupportRequest,
    registry: RegistryDep,
    tenant: WriteTenant,
    response: Response,
    http_request: Request,
    idempotency_key: IdempotencyKeyHeader = None,
) -> schemas.SupportResponse:
    """With an Idempotency-Key, a retry (same key, same body) within
    PROTONET_IDEMPOTENCY_KEY_RETENTION_SECONDS gets the first answer and writes nothing."""
    claim = await idempotency_claim(http_request, tenant, idempotency_key)
    added = await registry.add_support(name, request.examples, tenant=tenant, claim=claim)
    with_revision(response, added.revision)
    return schemas.SupportResponse(
        n_added=added.n_added, classes=classes_of(added.classes), revision=added.revision
    )


@router.delete(
    "/{name}/classes/{label:path}",
    status_code=204,
    summary="Delete one class and its examples",
    responses=error_responses(404, 422, 503),
)
async def delete_class(
    name: NamePath, label: LabelPath, registry: RegistryDep, tenant: WriteTenant
) -> Response:
    """The deletion's revision is in the Protonet-Revision header."""
    revision = await run_in_threadpool(registry.delete_class, name, label, tenant=tenant)
    return with_revision(Response(status_code=204), revision)


@router.post(
    "/{name}/query",
    summary="Classify images (or texts) against the collection's class prototypes",
    response_model=schemas.QueryResponse,
    responses=error_responses(400, 404, 409, 413, 422, 429, 503),
)
async def query_collection(
    name: NamePath,
    request: schemas.QueryRequest,
    registry: RegistryDep,
    tenant: ReadTenant,
    min_revision: MinRevision = None,
) -> Response:
    """Queries of concurrent requests are decoded, embedded and ranked in shared batches."""
    await registry.require_revision(name, min_revision, tenant=tenant)
    rejection = None if request.rejection is None else schemas.rejection_setting(request.rejection)
    outcome = await registry.query(
        name,
        request.queries,
        request.top_k,
        tenant=tenant,
        rejection=rejection,
        remember=request.remember,
    )
    results = [query_answer_body(answer) for answer in outcome.answers]
    for result, input_id in zip(results, outcome.input_ids or [], strict=False):
        result["input_id"] = input_id  # no new key for queries that do not remember
    body: dict[str, Any] = {
        "model_version": outcome.model_version,
        "revision": outcome.revision,
        "index": outcome.answers[0].index,
        "results": results,
    }
    if outcome.adapter_version is not None:  # likewise: only where an adapter answered
        body["adapter_version"] = outcome.adapter_version
    if outcome.applied_rejection is not None:  # no new key for queries without rejection
        body["rejection"] = outcome.applied_rejection.to_json()
    return with_revision(json_response(body), outcome.revision)
