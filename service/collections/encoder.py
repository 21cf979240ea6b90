"""The served models: a checkpoint's encoder plus the core's one preprocessing path, with one
interface for image and text models.

Stage 1 turns a request's input into what storage keeps: an image model's
(:func:`protonet.preprocessing.to_pixels`) gives ``uint8`` pixels, a text model's
(:func:`protonet.text.normalize_text`) the cleaned text. Stage 2 turns a batch of those into
embeddings (:func:`protonet.preprocessing.pixels_to_tensor` and the network; the text model's
tokenizer, base and head), so re-embedding stored examples with a new model feeds it exactly
what a fresh request would.

A stage-1 *batch* is ``uint8 [n, *pixel_shape]`` for an image model and a list of ``n``
strings for a text model; the encoder stacks, joins and embeds its own kind.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from protonet.checkpoint import Checkpoint, load_checkpoint
from protonet.embedding import embed, optimize_for_inference, pick_device
from protonet.errors import CheckpointError
from protonet.model import embedding_dim
from protonet.preprocessing import (
    DEFAULT_MAX_SIDE,
    ImageSource,
    InputSpec,
    pixels_to_tensor,
    to_pixels,
)
from protonet.text import TextEncoder, TextSpec, normalize_text, token_estimate

logger = logging.getLogger(__name__)

Modality = Literal["image", "text"]
StageOneItem = np.ndarray | str  # one stored input: uint8 pixels, or normalized text
StageOneBatch = np.ndarray | list[str]  # uint8 [n, *pixel_shape], or n normalized texts
Source = ImageSource | str  # what a request item carries, decoded from base64 where needed


class Encoder(Protocol):
    """What the service needs of a served model, image or text."""

    name: str
    checkpoint: Checkpoint
    batch_size: int

    @property
    def modality(self) -> Modality: ...

    @property
    def version(self) -> str: ...

    @property
    def embedding_dim(self) -> int: ...

    def stage_one(self, source: Source) -> StageOneItem:
        """A request's input -> what storage keeps; raises ``InvalidInputError``."""
        ...

    def stack(self, items: list[StageOneItem]) -> StageOneBatch:
        """Stage-1 items (of this model's kind) -> one batch."""
        ...

    def join(self, batches: list[StageOneBatch]) -> StageOneBatch:
        """Several batches -> one, rows in order."""
        ...

    def embed_batch(self, batch: StageOneBatch) -> np.ndarray:
        """Stage 2: a batch -> float32 ``[n, embedding_dim]`` (C-contiguous)."""
        ...

    def costs(self, batch: StageOneBatch) -> list[int]:
        """What embedding each row costs, in the unit of this modality's encoder batch
        budget: an image 1 (``PROTONET_BATCH_MAX_ROWS``), a text its word pieces, estimated
        (``PROTONET_BATCH_MAX_TOKENS``)."""
        ...

    def conform(self, stored: list[StageOneItem]) -> StageOneBatch:
        """Stored stage-1 items (maybe of an older spec) -> a batch for :meth:`embed_batch`."""
        ...

    def card(self) -> dict[str, Any]: ...


def load_encoder(
    name: str,
    path: Path,
    device: str,
    batch_size: int,
    max_pixels: int,
    max_side: int = DEFAULT_MAX_SIDE,
) -> ImageEncoder | TextModelEncoder:
    """The served model ``name`` from the checkpoint at ``path``, of either modality; raises
    :class:`~protonet.errors.CheckpointError` naming the model (a text model also when the
    installed base encoder is not the one its head was trained on)."""
    try:
        checkpoint = load_checkpoint(path, modality=None)
        if checkpoint.modality == "text":
            return TextModelEncoder.build(name, checkpoint, device, batch_size)
        return ImageEncoder.build(name, checkpoint, device, batch_size, max_pixels, max_side)
    except CheckpointError as error:
        raise CheckpointError(f"model {name!r} ({path}): {error}") from None


def card_of(checkpoint: Checkpoint) -> dict[str, Any]:
    """What the checkpoint says about itself: architecture, training, evaluation, provenance."""
    return {
        "encoder": checkpoint.encoder_config.to_dict(),
        "training": checkpoint.training_config,
        "evaluation": checkpoint.evaluation,
        "metadata": checkpoint.metadata,
        "data_fingerprint": checkpoint.data_fingerprint,
        # A picture model's frozen pretrained base: which weights, by their sha256.
        **({"image_base": checkpoint.image_base.to_dict()} if checkpoint.image_base else {}),
    }


@dataclass
class ImageEncoder:
    """A loaded image checkpoint, ready to turn images into embeddings."""

    name: str
    checkpoint: Checkpoint
    network: nn.Module
    batch_size: int
    max_pixels: int
    max_side: int = DEFAULT_MAX_SIDE
    # One forward pass at a time: the pipeline's encode thread, and re-embedding during a
    # rolling upgrade (the change feed's thread, requests' threads) call the same network.
    forward_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def build(
        cls,
        name: str,
        checkpoint: Checkpoint,
        device: str,
        batch_size: int,
        max_pixels: int,
        max_side: int = DEFAULT_MAX_SIDE,
    ) -> ImageEncoder:
        """The checkpoint's encoder, optimized for inference (checked against the plain one
        on a probe batch)."""
        network = checkpoint.build_encoder(pick_device(device))
        spec = checkpoint.input_spec
        generator = torch.Generator().manual_seed(0)  # no side effect on the global RNG
        probe = torch.randint(
            0, 256, (8, *spec.pixel_shape), dtype=torch.uint8, generator=generator
        )
        network = optimize_for_inference(network, pixels_to_tensor(probe, spec))
        logger.info("loaded image model %r, version %s", name, checkpoint.version)
        return cls(name, checkpoint, network, batch_size, max_pixels, max_side)

    @property
    def modality(self) -> Modality:
        return "image"

    @cached_property
    def version(self) -> str:
        """Content hash of the weights (hashing them takes ~1 ms: once)."""
        return self.checkpoint.version

    @property
    def input_spec(self) -> InputSpec:
        return self.checkpoint.input_spec

    @property
    def embedding_dim(self) -> int:
        spec = self.checkpoint.input_spec
        return embedding_dim(self.checkpoint.encoder_config, spec.image_size)

    def to_pixels(self, source: ImageSource) -> np.ndarray:
        """Stage 1: an encoded image (bytes) or ``[H, W]`` array -> ``uint8`` pixels of the spec's
        ``pixel_shape``. Raises :class:`~protonet.errors.InvalidInputError`."""
        return to_pixels(source, self.input_spec, self.max_pixels, self.max_side)

    def stage_one(self, source: Source) -> StageOneItem:
        assert not isinstance(source, str), "payloads route text to text models only"
        return self.to_pixels(source)

    def stack(self, items: list[StageOneItem]) -> StageOneBatch:
        return np.stack(items)

    def join(self, batches: list[StageOneBatch]) -> StageOneBatch:
        return batches[0] if len(batches) == 1 else np.concatenate(batches)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """``uint8 [n, *pixel_shape]`` -> float32 ``[n, embedding_dim]`` (C-contiguous)."""
        if pixels.shape[0] == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        inputs = pixels_to_tensor(torch.from_numpy(pixels), self.input_spec)
        with self.forward_lock:
            embeddings = embed(self.network, inputs, self.batch_size)
        return np.ascontiguousarray(embeddings.numpy(), dtype=np.float32)

    def embed_batch(self, batch: StageOneBatch) -> np.ndarray:
        assert isinstance(batch, np.ndarray)
        return self.embed_pixels(batch)

    def costs(self, batch: StageOneBatch) -> list[int]:
        return [1] * len(batch)

    def conform(self, stored: list[StageOneItem]) -> StageOneBatch:
        """Re-runs stage 1 only for pixels stored under a different spec."""
        shape = self.input_spec.pixel_shape
        pixels = [
            p if isinstance(p, np.ndarray) and p.shape == shape else self.stage_one(p)
            for p in stored
        ]
        return np.stack(pixels)

    def card(self) -> dict[str, Any]:
        return card_of(self.checkpoint)


@dataclass
class TextModelEncoder:
    """A loaded text checkpoint (the meta-learned head over the installed base encoder)."""

    name: str
    checkpoint: Checkpoint
    encoder: TextEncoder
    batch_size: int
    forward_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # as above

    @classmethod
    def build(
        cls, name: str, checkpoint: Checkpoint, device: str, batch_size: int
    ) -> TextModelEncoder:
        """Base and head; CheckpointError if the installed base differs from the recorded one."""
        encoder = checkpoint.build_text_encoder(pick_device(device))
        logger.info("loaded text model %r, version %s", name, checkpoint.version)
        return cls(name, checkpoint, encoder, batch_size)

    @property
    def modality(self) -> Modality:
        return "text"

    @cached_property
    def version(self) -> str:
        return self.checkpoint.version

    @property
    def text_spec(self) -> TextSpec:
        return self.encoder.spec

    @property
    def embedding_dim(self) -> int:
        return embedding_dim(self.checkpoint.encoder_config, 0)  # a head: its output width

    def stage_one(self, source: Source) -> StageOneItem:
        """The core's one cleaning of text (limits included): what storage keeps."""
        return normalize_text(source, self.text_spec)

    def stack(self, items: list[StageOneItem]) -> StageOneBatch:
        return [str(item) for item in items]

    def join(self, batches: list[StageOneBatch]) -> StageOneBatch:
        return [text for batch in batches for text in batch]

    def embed_batch(self, batch: StageOneBatch) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        with self.forward_lock:
            embeddings = self.encoder.embed(list(batch), self.batch_size)
        return np.ascontiguousarray(embeddings.numpy(), dtype=np.float32)

    def costs(self, batch: StageOneBatch) -> list[int]:
        return [token_estimate(str(text), self.text_spec) for text in batch]

    def conform(self, stored: list[StageOneItem]) -> StageOneBatch:
        return [str(text) for text in stored]

    def card(self) -> dict[str, Any]:
        return card_of(self.checkpoint)
