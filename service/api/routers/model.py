"""The served model's description."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.dependencies import EncoderDep
from service.api.schemas import InputSpecInfo, ModelInfo

router = APIRouter(prefix="/v1", tags=["model"])


@router.get("/model", summary="The served model: version, embedding size, input spec, card")
async def get_model(encoder: EncoderDep) -> ModelInfo:
    return ModelInfo(
        version=encoder.version,
        embedding_dim=encoder.embedding_dim,
        metric=encoder.checkpoint.metric,
        input=InputSpecInfo(**encoder.input_spec.to_dict()),
        card=encoder.card(),
    )
