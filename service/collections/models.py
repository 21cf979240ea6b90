"""The served models, by name (PROTONET_MODELS): each with its encoder and its own inference
pipeline (batches never mix models). One of them is the default: the model of collections
created without one, of ``GET /v1/model`` and of ``/v1/embed`` without one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from protonet.open_set import RejectionCalibration
from service.collections.encoder import Encoder
from service.collections.inference import InferencePipeline
from service.collections.rejection import RejectionPolicy, RejectionSetting
from service.errors import UnknownModelError


@dataclass
class ServedModel:
    name: str
    encoder: Encoder
    pipeline: InferencePipeline

    @property
    def calibration(self) -> RejectionCalibration | None:
        """The model's rejection calibration, if its checkpoint carries one."""
        return self.encoder.checkpoint.calibration

    def rejection_policy(self, setting: RejectionSetting) -> RejectionPolicy | None:
        """What ``setting`` means for this model (see :meth:`RejectionSetting.resolve`)."""
        return setting.resolve(self.calibration, model=self.name)


class ModelSet:
    """The served models in configuration order, and the default one's name."""

    def __init__(self, models: list[ServedModel], default: str) -> None:
        self._models = {model.name: model for model in models}
        if default not in self._models:
            raise UnknownModelError(f"default model {default!r} is not served")
        self.default_name = default

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    @property
    def names(self) -> list[str]:
        return list(self._models)

    @property
    def default(self) -> ServedModel:
        return self._models[self.default_name]

    def get(self, name: str | None) -> ServedModel:
        """The model ``name`` (None: the default); :class:`UnknownModelError` if not served."""
        if name is None:
            return self.default
        model = self._models.get(name)
        if model is None:
            raise UnknownModelError(
                f"model {name!r} is not served here; served models: {', '.join(self._models)} "
                "(GET /v1/models)"
            )
        return model

    def versions(self) -> list[str]:
        """Every served model version, without repeats, in order."""
        return list(dict.fromkeys(model.encoder.version for model in self))
