"""Core of the few-shot classifier, shared by ``training`` and ``service``.

Imports only torch, numpy and Pillow (and, when a text model's base encoder is loaded,
tokenizers and safetensors: the ``text`` extra). Neither ``training`` nor ``service`` is
imported here: dependencies point inward (``training -> protonet <- service``).
"""

from protonet.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from protonet.errors import CheckpointError, InvalidInputError, ProtonetError
from protonet.model import EncoderConfig, build_encoder
from protonet.preprocessing import InputSpec, pixels_to_tensor, preprocess, to_pixels
from protonet.prototypes import (
    compute_prototypes,
    episode_loss,
    prototype_logits,
    squared_euclidean,
)
from protonet.text import TextSpec, normalize_text, text_inputs

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "EncoderConfig",
    "InputSpec",
    "InvalidInputError",
    "ProtonetError",
    "TextSpec",
    "build_encoder",
    "compute_prototypes",
    "episode_loss",
    "load_checkpoint",
    "normalize_text",
    "pixels_to_tensor",
    "preprocess",
    "prototype_logits",
    "save_checkpoint",
    "squared_euclidean",
    "text_inputs",
    "to_pixels",
]
