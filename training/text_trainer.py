"""Meta-training a text head over a frozen base sentence encoder (``--split banking77``).

The base (all-MiniLM-L6-v2) stays frozen: it embeds every training text once (cached on disk,
keyed by its weights), and episodes train only the head over those embeddings, so a run takes
minutes on one CPU core. The loop, validation, early stopping, resume and checkpointing are
the image trainer's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protonet.model import EncoderConfig, linear_head_config
from protonet.preprocessing import InputSpec
from protonet.text import TextSpec, base_identity
from training.checks import ClassSet
from training.config import TrainConfig
from training.head_trainer import HeadTrainer
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
from training.trainer import TrainingData


class TextTrainer(HeadTrainer):
    """A :class:`~training.trainer.Trainer` whose encoder is a head over cached base
    embeddings of Banking77's training intents."""

    text_spec: TextSpec
    split: IntentSplit

    def _load_data(self, config: TrainConfig) -> TrainingData:
        self.text_spec = base_identity()
        data_dir = Path(config.data)
        self.split = split_intents(banking77_intents(data_dir), config.seed)
        texts = load_banking77(data_dir, "train", self.text_spec)
        cache_dir = Path(config.cache_dir) if config.cache_dir else None
        embeddings = base_embeddings(texts, self.text_spec, cache_dir, config.progress)
        train, self.train_features = select_embedded(texts, embeddings, self.split.train)
        validation, self.validation_features = select_embedded(
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

    def _model_fields(self) -> dict[str, Any]:
        return {"input_spec": InputSpec(), "text_spec": self.text_spec}

    def _split_metadata(self) -> dict[str, Any]:
        """Which intents trained, validated and were held out: evaluation reads them."""
        return {
            "data_path": str(Path(self.config.data).resolve()),
            "modality": "text",
            "intents": self.split.to_dict(),
        }
