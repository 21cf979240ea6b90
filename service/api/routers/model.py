"""The served models' descriptions: every one (``/v1/models``), and the default one
(``/v1/model``, as when one process served one model)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.dependencies import ModelsDep
from service.api.schemas import (
    InputSpecInfo,
    ModelInfo,
    ModelList,
    ModelSummary,
    RejectionCalibrationInfo,
    TextSpecInfo,
)
from service.collections.encoder import Encoder, TextModelEncoder
from service.collections.models import ModelSet

router = APIRouter(prefix="/v1", tags=["model"])


@router.get("/models", summary="The served models: name, modality, version, input, rejection")
async def list_models(models: ModelsDep) -> ModelList:
    return ModelList(models=[model_summary(m.encoder, models) for m in models])


@router.get("/model", summary="The default model: version, embedding size, input spec, card (full)")
async def get_model(models: ModelsDep) -> ModelInfo:
    encoder = models.default.encoder
    return ModelInfo(
        **model_summary(encoder, models).model_dump(),
        metric=encoder.checkpoint.metric,
        card=encoder.card(),
    )


def model_summary(encoder: Encoder, models: ModelSet) -> ModelSummary:
    """What a client needs to send a model inputs, and whether it can reject unknowns."""
    checkpoint = encoder.checkpoint
    text = None
    if isinstance(encoder, TextModelEncoder):
        spec = encoder.text_spec
        text = TextSpecInfo(
            base_encoder=spec.base_encoder,
            base_weights_sha256=spec.base_weights_sha256,
            max_chars=spec.max_chars,
            max_tokens=spec.max_tokens,
            base_dim=spec.base_dim,
        )
    image = InputSpecInfo(**checkpoint.input_spec.to_dict()) if text is None else None
    return ModelSummary(
        name=encoder.name,
        modality=encoder.modality,
        default=encoder.name == models.default_name,
        version=encoder.version,
        embedding_dim=encoder.embedding_dim,
        input=image,
        text=text,
        rejection=calibration_info(encoder),
    )


def calibration_info(encoder: Encoder) -> RejectionCalibrationInfo | None:
    """The summary of the model's rejection calibration (thresholds stay in the checkpoint)."""
    calibration = encoder.checkpoint.calibration
    if calibration is None:
        return None
    return RejectionCalibrationInfo(
        method=calibration.method,
        shots=list(calibration.shots),
        acceptances=list(calibration.acceptances),
        default_acceptance=calibration.default_acceptance,
    )
