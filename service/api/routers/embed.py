"""Raw embeddings, for clients that keep their own index."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.api.dependencies import ReadTenant, RegistryDep
from service.api.json_bodies import BoundedJSONRoute
from service.api.responses import json_response
from service.api.schemas import EmbedRequest, EmbedResponse
from service.edge.error_responses import error_responses

router = APIRouter(prefix="/v1", tags=["embed"], route_class=BoundedJSONRoute)


@router.post(
    "/embed",
    summary="Embed images (or texts) with a served model (default: the default model)",
    response_model=EmbedResponse,
    responses=error_responses(400, 413, 422, 503),
)
async def embed_inputs(
    request: EmbedRequest, registry: RegistryDep, _tenant: ReadTenant
) -> Response:
    version, embeddings = await registry.embed(request.inputs, request.model)  # [n, dim]
    return json_response({"model_version": version, "embeddings": embeddings})
