"""Meta-training a picture head over a frozen ImageNet base (``--split emoji``).

The base (MobileNetV2, protonet/mobilenet.py) stays frozen: it embeds every training picture
once (cached on disk, keyed by the pictures and the base's weights), and episodes train only the
head over those features, so a run takes minutes on a CPU, as the text head's does. Episodes
put different vendors' drawings of an emoji in support and queries (training/emoji.py): the
same thing drawn differently, what a user's photos of one product are.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from protonet.mobilenet import ImageBaseSpec, load_base
from protonet.model import EncoderConfig, linear_head_config
from protonet.preprocessing import InputSpec, picture_spec
from training.cache import cached_tensor, default_cache_dir
from training.checks import ClassSet
from training.config import TrainConfig
from training.emoji import emoji_fingerprint, load_emoji, split_emoji
from training.evaluate import embed_imageset
from training.head_trainer import HeadTrainer
from training.imageset import ImageSet
from training.trainer import TrainingData

FEATURE_BATCH = 64  # pictures per forward pass of the base when caching features


def base_features(
    images: ImageSet,
    spec: InputSpec,
    base_spec: ImageBaseSpec,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """The frozen base's features ``[n_images, feature_dim]`` of ``images`` (cached)."""
    digest = hashlib.sha256(images.pixels.tobytes())
    digest.update(f"{sorted(spec.to_dict().items())}|{base_spec.weights_sha256}".encode())
    path = (cache_dir or default_cache_dir()) / f"features-{digest.hexdigest()[:20]}.pt"

    def build() -> torch.Tensor:
        return embed_imageset(load_base(base_spec), images, spec, FEATURE_BATCH, progress)

    return cached_tensor(path, build)


class PictureTrainer(HeadTrainer):
    """A :class:`~training.trainer.Trainer` whose encoder is a head over cached base features
    of the emoji set's training subcategories."""

    base_spec: ImageBaseSpec

    def _load_data(self, config: TrainConfig) -> TrainingData:
        self.spec = picture_spec(config.image_size)
        self.base_spec = ImageBaseSpec()
        cache_dir = Path(config.cache_dir) if config.cache_dir else None
        images = load_emoji(
            Path(config.data), self.spec, cache_dir=cache_dir, progress=config.progress
        )
        train, validation = split_emoji(images, "train"), split_emoji(images, "val")
        self.train_features = base_features(
            train, self.spec, self.base_spec, cache_dir, config.progress
        )
        self.validation_features = base_features(
            validation, self.spec, self.base_spec, cache_dir, config.progress
        )
        return TrainingData(
            ClassSet(train, "training", "the emoji of the training subcategories"),
            ClassSet(validation, "validation", "the emoji of the validation subcategories"),
            emoji_fingerprint(Path(config.data)),
        )

    def _encoder_config(self) -> EncoderConfig:
        return linear_head_config(self.base_spec.feature_dim)

    def _model_fields(self) -> dict[str, Any]:
        return {"input_spec": self.spec, "image_base": self.base_spec}

    def _split_metadata(self) -> dict[str, Any]:
        return {
            "data_path": str(Path(self.config.data).resolve()),
            "modality": "image",
            "emoji_split": "subcategories by training.emoji.subcategory_split",
        }
