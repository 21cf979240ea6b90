"""Meta-training a text head over a frozen base sentence encoder (``--split banking77``).

The base (all-MiniLM-L6-v2) stays frozen: it embeds every training text once (cached on disk,
keyed by its weights), and episodes train only the head over those embeddings, so a run takes
minutes on one CPU core. The loop, validation, early stopping, resume and checkpointing are
the image trainer's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from protonet.model import EncoderConfig, LinearHead, build_encoder, linear_head_config
from protonet.preprocessing import InputSpec
from protonet.text import TextSpec, base_identity, embed_base
from training.checks import ClassSet
from training.config import TrainConfig
from training.episodes import Episode
from training.textset import (
    TRAIN_INTENTS,
    VALIDATION_INTENTS,
    IntentSplit,
    banking77_fingerprint,
    banking77_intents,
    base_embeddings,
    load_banking77,
    select_embedded,
    split_intents,
)
from training.trainer import Trainer, TrainingData, episode_items


class TextTrainer(Trainer):
    """A :class:`~training.trainer.Trainer` whose encoder is a head over cached base
    embeddings of Banking77's training intents."""

    text_spec: TextSpec
    split: IntentSplit
    train_embeddings: torch.Tensor
    validation_embeddings: torch.Tensor

    def _load_data(self, config: TrainConfig) -> TrainingData:
        self.text_spec = base_identity()
        data_dir = Path(config.data)
        self.split = split_intents(banking77_intents(data_dir), config.seed)
        texts = load_banking77(data_dir, "train", self.text_spec)
        cache_dir = Path(config.cache_dir) if config.cache_dir else None
        embeddings = base_embeddings(texts, self.text_spec, cache_dir, config.progress)
        train, self.train_embeddings = select_embedded(texts, embeddings, self.split.train)
        validation, self.validation_embeddings = select_embedded(
            texts, embeddings, self.split.validation
        )
        return TrainingData(
            ClassSet(train, "training", f"{TRAIN_INTENTS} of 77 intents, chosen by --seed"),
            ClassSet(
                validation,
                "validation",
                f"{VALIDATION_INTENTS} more intents of the train file, chosen by --seed",
            ),
            banking77_fingerprint(data_dir),
        )

    def _encoder_config(self) -> EncoderConfig:
        return linear_head_config(self.text_spec.base_dim)

    def _build_encoder(self) -> nn.Module:
        head = build_encoder(self.encoder_config)
        assert isinstance(head, LinearHead)
        # A resumed run loads its weights instead; "identity" is LinearHead's own start.
        if not self.config.resume and self.config.head_start == "whitening":
            labels = torch.from_numpy(self.data.train.images.labels)
            weight, bias = whitening_start(self.train_embeddings, labels)
            with torch.no_grad():
                head.linear.weight.copy_(weight)
                head.linear.bias.copy_(bias)
        return head.to(self.device)

    def _amp_dtype(self) -> torch.dtype | None:
        return None  # a 384 x 384 head: nothing for bf16 to speed up

    def _batch(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        indices, query_labels = episode_items(episode, self.device)
        support_labels = torch.from_numpy(episode.support_labels).to(self.device)
        return self.train_embeddings[indices].to(self.device), support_labels, query_labels

    def _validation_embeddings(self) -> torch.Tensor:
        was_training = self.encoder.training
        self.encoder.eval()
        embeddings = embed_base(self.encoder, self.validation_embeddings)
        self.encoder.train(was_training)
        return embeddings

    def _model_fields(self) -> dict[str, Any]:
        return {"input_spec": InputSpec(), "text_spec": self.text_spec}

    def _split_metadata(self) -> dict[str, Any]:
        """Which intents trained, validated and were held out: evaluation reads them."""
        return {
            "data_path": str(Path(self.config.data).resolve()),
            "modality": "text",
            "intents": self.split.to_dict(),
        }


# Shrinkage of the within-class covariance towards its mean eigenvalue, in units of that mean.
WHITENING_SHRINKAGE = 3.0


def whitening_start(
    embeddings: torch.Tensor, labels: torch.Tensor, shrinkage: float = WHITENING_SHRINKAGE
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's starting point: centre on the training texts' mean and whiten by their
    within-intent covariance (shrunk towards isotropy), ``x -> (x - mean) @ W.T``.

    Directions in which texts of one intent vary (paraphrase noise, shared by all banking
    intents) are shrunk, and directions that separate intents stretched: the closed-form
    metric an LDA learns, from the training intents only. Episodes then adjust it.
    ``embeddings [n, d]``, ``labels [n]`` -> ``(weight [d, d], bias [d])``.
    """
    centred = embeddings.clone()
    for label in labels.unique():
        rows = labels == label
        centred[rows] -= embeddings[rows].mean(dim=0)
    within = centred.T @ centred / len(centred)
    eigenvalues, vectors = torch.linalg.eigh(within.double())
    scale = eigenvalues.mean()
    inverse_root = (eigenvalues + shrinkage * scale).rsqrt() * scale.sqrt()  # ~1 on average
    weight = (vectors * inverse_root) @ vectors.T
    return weight.float(), -(embeddings.mean(dim=0) @ weight.float().T)
