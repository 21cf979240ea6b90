"""The served model's description."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.dependencies import EncoderDep
from service.api.schemas import InputSpecInfo, ModelInfo, RejectionCalibrationInfo
from service.collections.encoder import Encoder

router = APIRouter(prefix="/v1", tags=["model"])


@router.get("/model", summary="The served model: version, embedding size, input spec, card")
async def get_model(encoder: EncoderDep) -> ModelInfo:
    return ModelInfo(
        version=encoder.version,
        embedding_dim=encoder.embedding_dim,
        metric=encoder.checkpoint.metric,
        input=InputSpecInfo(**encoder.input_spec.to_dict()),
        card=encoder.card(),
        rejection=calibration_info(encoder),
    )


def calibration_info(encoder: Encoder) -> RejectionCalibrationInfo | None:
    """The summary of the model's rejection calibration (thresholds stay in the checkpoint)."""
    calibration = encoder.checkpoint.rejection
    if calibration is None:
        return None
    return RejectionCalibrationInfo(
        method=calibration.method,
        shots=list(calibration.shots),
        acceptances=list(calibration.acceptances),
        default_acceptance=calibration.default_acceptance,
    )
