"""The served model: a checkpoint's encoder plus the core's one preprocessing path.

Stage 1 (:func:`protonet.preprocessing.to_pixels`) turns any input into ``uint8`` pixels, which
storage keeps; stage 2 (:func:`protonet.preprocessing.pixels_to_tensor`) and the encoder turn
pixels into embeddings, so re-embedding stored examples with a new model feeds it exactly what
a fresh request would.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from protonet.checkpoint import Checkpoint, load_checkpoint
from protonet.embedding import embed, optimize_for_inference, pick_device
from protonet.model import embedding_dim
from protonet.preprocessing import ImageSource, InputSpec, pixels_to_tensor, to_pixels

logger = logging.getLogger(__name__)


@dataclass
class Encoder:
    """A loaded checkpoint, ready to turn inputs into embeddings."""

    checkpoint: Checkpoint
    network: nn.Module
    batch_size: int
    max_pixels: int

    @classmethod
    def load(cls, path: Path, device: str, batch_size: int, max_pixels: int) -> Encoder:
        """Read ``path`` and build its encoder, optimized for inference (checked against the
        plain one on a probe batch); raises :class:`~protonet.errors.CheckpointError`."""
        checkpoint = load_checkpoint(path)
        network = checkpoint.build_encoder(pick_device(device))
        spec = checkpoint.input_spec
        generator = torch.Generator().manual_seed(0)  # no side effect on the global RNG
        probe = torch.randint(
            0, 256, (8, *spec.pixel_shape), dtype=torch.uint8, generator=generator
        )
        network = optimize_for_inference(network, pixels_to_tensor(probe, spec))
        logger.info("loaded model %s from %s", checkpoint.version, path)
        return cls(checkpoint, network, batch_size, max_pixels)

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
        return to_pixels(source, self.input_spec, self.max_pixels)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """``uint8 [n, *pixel_shape]`` -> float32 ``[n, embedding_dim]`` (C-contiguous)."""
        if pixels.shape[0] == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        inputs = pixels_to_tensor(torch.from_numpy(pixels), self.input_spec)
        embeddings = embed(self.network, inputs, self.batch_size)
        return np.ascontiguousarray(embeddings.numpy(), dtype=np.float32)

    def card(self) -> dict[str, Any]:
        """What the checkpoint says about itself: architecture, training, evaluation, provenance."""
        checkpoint = self.checkpoint
        return {
            "encoder": checkpoint.encoder_config.to_dict(),
            "training": checkpoint.training_config,
            "evaluation": checkpoint.evaluation,
            "metadata": checkpoint.metadata,
            "data_fingerprint": checkpoint.data_fingerprint,
        }
