"""Self-describing checkpoints: plain dicts of tensors and primitives.

``torch.load(path, weights_only=True)`` reads them (no pickled modules or classes), and the
file carries everything a consumer needs: modality, encoder config, input spec, metric, training
config, data fingerprint and evaluation results. A text checkpoint (``modality`` "text") holds
only the meta-learned head: its ``text_spec`` names the frozen base encoder, the sha256 of its
weights and tokenizer (checked when the base is loaded) and the tokenization settings. A
picture checkpoint (an image one with ``image_base``) likewise holds only a head over a frozen
pretrained image base that ``image_base`` names with its weights' sha256.
Optimizer state for resuming lives in a separate file (see ``training``), so the shipped model
stays small and inert.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from protonet.errors import CheckpointError
from protonet.mobilenet import ImageBaseSpec, PictureEncoder, load_base
from protonet.model import EncoderConfig, build_encoder
from protonet.open_set import RejectionCalibration
from protonet.preprocessing import InputSpec
from protonet.text import TextEncoder, TextSpec, load_base_encoder

FORMAT_NAME = "protonet-checkpoint"
FORMAT_VERSION = 1
METRIC = "squared_euclidean"
MODALITIES = ("image", "text")
PROTONET = "protonet"


def weights_version(state_dict: dict[str, torch.Tensor]) -> str:
    """Content hash of the weights: two checkpoints share a version iff they embed alike."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(
            tensor.float().numpy().tobytes()
            if tensor.is_floating_point()
            else tensor.numpy().tobytes()
        )
    return digest.hexdigest()[:16]


def _primitives(values: dict[str, Any]) -> dict[str, Any]:
    """Plain JSON types only: anything else (a TorchVersion, a Path) would need pickling,
    which ``weights_only=True`` rightly refuses to load."""
    return dict(json.loads(json.dumps(values, default=str)))


@dataclass
class Checkpoint:
    """A trained encoder and everything that describes it.

    An image checkpoint's encoder reads ``input_spec`` images; a text checkpoint's encoder is
    a head over the base encoder that ``text_spec`` names (its ``input_spec`` is unused: the
    file holds None there, and loading gives the default)."""

    encoder_config: EncoderConfig
    input_spec: InputSpec
    state_dict: dict[str, torch.Tensor]
    metric: str = METRIC
    training_config: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    evaluation: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    # Open-set rejection thresholds measured on training/validation classes (open_set.py);
    # saved under the payload key "rejection" (the files' name for it since calibrations began).
    calibration: RejectionCalibration | None = None
    text_spec: TextSpec | None = None
    # A MAML-family model's linear head (weight ``[way, dim]``, bias ``[way]``), which the
    # trainer's evaluator fine-tunes; not part of the embedding, so not of ``version``. (Not a
    # text checkpoint's head: that is its encoder, in ``state_dict``.)
    classifier_head: dict[str, torch.Tensor] = field(default_factory=dict)
    # A picture checkpoint's frozen pretrained base: its encoder is this base with the head
    # of ``state_dict`` on top (the base's weights come from an installed package).
    image_base: ImageBaseSpec | None = None

    @property
    def method(self) -> str:
        """How the encoder was meta-trained: ``protonet``, or ``maml``/``fomaml``/``anil``."""
        return str(self.metadata.get("method", PROTONET))

    @property
    def version(self) -> str:
        return weights_version(self.state_dict)

    @property
    def modality(self) -> str:
        return "text" if self.text_spec is not None else "image"

    def build_encoder(self, device: str | torch.device = "cpu") -> nn.Module:
        """The encoder with these weights, in eval mode, on ``device``."""
        encoder = build_encoder(self.encoder_config)
        try:
            encoder.load_state_dict(self.state_dict)
        except RuntimeError as error:
            raise CheckpointError(f"weights do not match the encoder config: {error}") from None
        if self.image_base is not None:
            encoder = PictureEncoder(load_base(self.image_base), encoder)
        return encoder.to(device).eval()

    def build_text_encoder(self, device: str | torch.device = "cpu") -> TextEncoder:
        """Base and head of a text checkpoint; CheckpointError where the installed base is
        not the one the head was trained on (or the text extra is missing)."""
        if self.text_spec is None:
            raise CheckpointError("an image checkpoint has no text encoder")
        return TextEncoder(load_base_encoder(self.text_spec, device), self.build_encoder(device))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "version": self.version,
            "modality": self.modality,
            "encoder_config": self.encoder_config.to_dict(),
            "input_spec": self.input_spec.to_dict() if self.text_spec is None else None,
            "text_spec": self.text_spec.to_dict() if self.text_spec else None,
            "metric": self.metric,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict.items()},
            "training_config": _primitives(self.training_config),
            "data_fingerprint": self.data_fingerprint,
            "evaluation": _primitives(self.evaluation),
            "metadata": _primitives(self.metadata),
            "rejection": self.calibration.to_dict() if self.calibration else None,
            # Only picture checkpoints have the key: the others stay as they were.
            **({"image_base": self.image_base.to_dict()} if self.image_base else {}),
            # Only MAML-family checkpoints have the key: prototype ones stay as they were.
            **(
                {"classifier_head": {k: v.detach().cpu() for k, v in self.classifier_head.items()}}
                if self.classifier_head
                else {}
            ),
        }


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> Path:
    """Write atomically (temp file + rename): a crash never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_torch_save(checkpoint.to_dict(), path)


def atomic_torch_save(payload: Any, path: Path) -> Path:
    """``torch.save`` to a temp file beside ``path``, then rename over it."""
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    try:
        torch.save(payload, temp_name)
        os.chmod(temp_name, 0o644)  # mkstemp's 0600 would hide a shipped model from other users
        os.replace(temp_name, path)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
    return path


def _read_payload(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, pickle and unpickler errors all mean "not a valid file"
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or truncated?): {type(error).__name__}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a {FORMAT_NAME} file")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {payload.get('format_version')!r}; "
            f"this code reads version {FORMAT_VERSION}"
        )
    return payload


def _calibration(values: dict[str, Any] | None) -> RejectionCalibration | None:
    return RejectionCalibration.from_dict(values) if values else None


def _text_spec(payload: dict[str, Any]) -> TextSpec | None:
    """Files written before text checkpoints have no modality: they are image checkpoints."""
    modality = payload.get("modality", "image")
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}")
    return TextSpec.from_dict(payload["text_spec"]) if modality == "text" else None


def _input_spec(payload: dict[str, Any]) -> InputSpec:
    values = payload["input_spec"]
    return InputSpec() if values is None else InputSpec.from_dict(values)


def _classifier_head(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A MAML-family classifier head: absent in prototype checkpoints (and in older files;
    files of 2026-11-27 called it ``head``)."""
    values = payload.get("classifier_head", payload.get("head"))
    if not values:
        return {}
    if not isinstance(values, dict) or not all(
        isinstance(v, torch.Tensor) for v in values.values()
    ):
        raise ValueError("classifier_head must map names to tensors")
    return dict(values)


def _image_base(payload: dict[str, Any]) -> ImageBaseSpec | None:
    values = payload.get("image_base")
    return ImageBaseSpec.from_dict(values) if values else None


def with_article(word: str) -> str:
    """``"an image"``, ``"a text"``: messages name a modality with its article."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def load_checkpoint(path: str | Path, modality: str | None = "image") -> Checkpoint:
    """Read and validate a checkpoint; every failure is a :class:`CheckpointError`.

    ``modality`` is what the caller can use: a checkpoint of another modality is refused
    (an image-only consumer never mistakes a text head for an image encoder); None takes
    either."""

    path = Path(path)
    payload = _read_payload(path)
    try:
        checkpoint = Checkpoint(
            encoder_config=EncoderConfig.from_dict(payload["encoder_config"]),
            input_spec=_input_spec(payload),
            text_spec=_text_spec(payload),
            state_dict=payload["state_dict"],
            metric=payload["metric"],
            training_config=payload.get("training_config", {}),
            data_fingerprint=payload.get("data_fingerprint", ""),
            evaluation=payload.get("evaluation", {}),
            metadata=payload.get("metadata", {}),
            calibration=_calibration(payload.get("rejection")),
            classifier_head=_classifier_head(payload),
            image_base=_image_base(payload),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} is missing or has invalid fields: {error}") from None
    if modality is not None and checkpoint.modality != modality:
        raise CheckpointError(
            f"{path} is {with_article(checkpoint.modality)} checkpoint; "
            f"{with_article(modality)} one is needed here"
        )
    if checkpoint.metric != METRIC:
        raise CheckpointError(
            f"{path} uses metric {checkpoint.metric!r}; only {METRIC!r} is supported"
        )
    if payload.get("version") != checkpoint.version:
        raise CheckpointError(f"{path}: weights do not match their recorded version (corrupt?)")
    return checkpoint
