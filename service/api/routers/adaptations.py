"""Adapting a collection to its own domain: background jobs (start, show, list, cancel) and
the adopted adapter (show, remove). service/collections/adaptation.py runs the jobs."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response
from starlette.concurrency import run_in_threadpool

from service.api import schemas
from service.api.dependencies import ReadTenant, RegistryDep, StateDep, WriteTenant
from service.api.json_bodies import BoundedJSONRoute
from service.api.routers.collections import NamePath, with_revision
from service.collections.adaptation import AdaptationRunner
from service.edge.error_responses import error_responses
from service.storage.adaptations import RUNNING, StoredAdapter, StoredJob

router = APIRouter(prefix="/v1/collections", tags=["adaptation"], route_class=BoundedJSONRoute)

JobPath = Annotated[int, Path(ge=1, le=2**63 - 1, description="The job's id.", examples=[4])]


async def get_adaptations(state: StateDep) -> AdaptationRunner:
    """The adaptation jobs; 503 until the service is ready."""
    return state.require_adaptations()


AdaptationsDep = Annotated[AdaptationRunner, Depends(get_adaptations)]

CANNOT_ADAPT = (
    "conflict: a job of this collection runs already (through any replica), or it has too few "
    "examples to hold any out (2 classes, one of them with 2 examples, at least)."
)
TOO_LARGE = (
    "collection_too_large: more examples than PROTONET_ADAPT_MAX_EXAMPLES; validation_error: "
    "a bad name."
)
BUSY = (
    "adaptation_busy: this process runs as many adaptations as PROTONET_ADAPT_MAX_CONCURRENT "
    "allows; retry after Retry-After seconds."
)


def utc(moment: datetime | None) -> datetime | None:
    """A stored time (naive UTC) as RFC 3339 wants it: with its zone."""
    return None if moment is None else moment.replace(tzinfo=UTC)


def job_body(name: str, job: StoredJob) -> dict[str, Any]:
    """A job as the API shows it (:class:`schemas.AdaptationJob`)."""
    status = "cancelling" if job.status == RUNNING and job.cancel_requested else job.status
    adopted = job.decision == "adopted"
    return schemas.AdaptationJob.model_validate(
        {
            "id": job.id,
            "collection": name,
            "status": status,
            "decision": job.decision,
            "progress": {
                "fraction": job.progress,
                "examples_per_second": job.examples_per_second,
            },
            "model_version": job.model_version,
            "trained_revision": job.trained_revision,
            "n_examples": job.n_examples,
            "n_classes": job.n_classes,
            "held_out": job.result,
            "adapter_version": job.id if adopted else None,
            "revision": job.revision,
            "error": job.error,
            "created_at": utc(job.created_at),
            "finished_at": utc(job.finished_at),
        }
    ).model_dump(mode="json")


def adapter_body(adapter: StoredAdapter) -> dict[str, Any]:
    return schemas.AdapterInfo.model_validate(
        {
            "version": adapter.version,
            "trained_revision": adapter.trained_revision,
            "stale": adapter.stale,
            "model_version": adapter.model_version,
            "held_out": adapter.result,
            "created_at": utc(adapter.created_at),
        }
    ).model_dump(mode="json")


@router.post(
    "/{name}/adaptations",
    status_code=202,
    summary="Adapt the collection to its support set, in the background",
    response_model=schemas.AdaptationJob,
    responses=error_responses(
        404, 409, 422, 429, 503, descriptions={409: CANNOT_ADAPT, 422: TOO_LARGE, 429: BUSY}
    ),
)
async def start_adaptation(
    name: NamePath, adaptations: AdaptationsDep, tenant: WriteTenant, response: Response
) -> dict[str, Any]:
    """Trains a small map on the collection's stored embeddings (no re-encoding), compares it
    with the unadapted model on held-out examples, and adopts it only if it wins by the
    margin. Answers at once (202); follow the job with GET .../adaptations/{id}."""
    job = await run_in_threadpool(functools.partial(adaptations.start, name, tenant=tenant))
    response.headers["Location"] = f"/v1/collections/{name}/adaptations/{job.id}"
    return job_body(name, job)


@router.get(
    "/{name}/adaptations",
    summary="List the collection's latest adaptations",
    response_model=schemas.AdaptationList,
    responses=error_responses(404, 422, 503),
)
async def list_adaptations(
    name: NamePath, adaptations: AdaptationsDep, tenant: ReadTenant
) -> dict[str, Any]:
    jobs = await run_in_threadpool(functools.partial(adaptations.list, name, tenant=tenant))
    return {"adaptations": [job_body(name, job) for job in jobs]}


@router.get(
    "/{name}/adaptations/{job_id}",
    summary="Show an adaptation: status, progress, held-out figures, decision",
    response_model=schemas.AdaptationJob,
    responses=error_responses(404, 422, 503),
)
async def get_adaptation(
    name: NamePath, job_id: JobPath, adaptations: AdaptationsDep, tenant: ReadTenant
) -> dict[str, Any]:
    get = functools.partial(adaptations.get, name, job_id, tenant=tenant)
    return job_body(name, await run_in_threadpool(get))


@router.delete(
    "/{name}/adaptations/{job_id}",
    status_code=202,
    summary="Cancel a running adaptation",
    response_model=schemas.AdaptationJob,
    responses=error_responses(404, 409, 422, 503),
)
async def cancel_adaptation(
    name: NamePath, job_id: JobPath, adaptations: AdaptationsDep, tenant: WriteTenant
) -> dict[str, Any]:
    """The job stops at its next step (within a second, through any replica): its status is
    'cancelling' until then, 'cancelled' after; nothing is adopted. 409 if it has finished."""
    cancel = functools.partial(adaptations.cancel, name, job_id, tenant=tenant)
    return job_body(name, await run_in_threadpool(cancel))


@router.get(
    "/{name}/adapter",
    summary="Show the collection's adopted adapter",
    response_model=schemas.AdapterInfo,
    responses=error_responses(404, 422, 503),
)
async def get_adapter(name: NamePath, registry: RegistryDep, tenant: ReadTenant) -> dict[str, Any]:
    adapter = await run_in_threadpool(functools.partial(registry.adapter_of, name, tenant=tenant))
    return adapter_body(adapter)


@router.delete(
    "/{name}/adapter",
    status_code=204,
    summary="Remove the collection's adapter: back to the model's own space",
    responses=error_responses(404, 422, 503),
)
async def delete_adapter(name: NamePath, registry: RegistryDep, tenant: WriteTenant) -> Response:
    """The removal's revision is in the Protonet-Revision header."""
    remove = functools.partial(registry.remove_adapter, name, tenant=tenant)
    revision = await run_in_threadpool(remove)
    return with_revision(Response(status_code=204), revision)
