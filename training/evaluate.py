"""The field's evaluation protocol: many random episodes, mean accuracy and a 95% CI.

In eval mode an image's embedding does not depend on the rest of its batch, so each image is
embedded once and the episodes are sampled over those embeddings: 1000 episodes cost one pass
over the split instead of 1000 forward passes, with identical results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from protonet.checkpoint import Checkpoint
from protonet.embedding import embed
from protonet.preprocessing import InputSpec, pixels_to_tensor
from protonet.prototypes import compute_prototypes, prototype_logits
from training.checks import ClassSet
from training.episodes import EpisodeSampler, EpisodeShape
from training.imageset import ImageSet

STANDARD_SETTINGS = ((5, 1), (5, 5), (20, 1), (20, 5))
# Which classes of a folder to evaluate on: those validation held out in training (never
# trained on), all of them, or those the model was trained on.
CLASS_SETS = ("heldout", "all", "training")


@dataclass(frozen=True)
class Selection:
    """The classes an evaluation runs on: ``name`` is one of :data:`CLASS_SETS`."""

    classes: ClassSet
    name: str
    description: str


def trained_on(checkpoint: Checkpoint, data: Path, fingerprint: str) -> bool:
    """Whether ``checkpoint`` was trained on the folder ``data``: same content, or same place
    (images added since training change the content, not which classes were held out)."""
    metadata = checkpoint.metadata
    if "held_out_classes" not in metadata:
        return False  # not folder-trained, or trained before checkpoints recorded the split
    same_place = str(Path(data).resolve()) == metadata.get("data_path")
    return fingerprint == checkpoint.data_fingerprint or same_place


def _why_all(checkpoint: Checkpoint) -> str:
    """Why a folder's held-out classes are unknown (its classes are all new, or may not be)."""
    if checkpoint.training_config.get("split") == "folder" and (
        "held_out_classes" not in checkpoint.metadata
    ):
        return "the checkpoint does not record which classes it held out"
    return "not the folder the checkpoint was trained on"


def select_folder_classes(
    images: ImageSet, data: Path, fingerprint: str, checkpoint: Checkpoint, wanted: str | None
) -> Selection:
    """The classes of folder ``data`` to evaluate on; ``wanted`` None picks the held-out
    classes where ``checkpoint`` was trained on this folder, else all of them."""
    if not trained_on(checkpoint, data, fingerprint):
        reason = _why_all(checkpoint)
        if wanted not in (None, "all"):
            raise ValueError(
                f"--classes {wanted}: unknown for {data} ({reason}); use --classes all"
            )
        everything = ClassSet(images, "the data", f"all classes of {data}")
        return Selection(everything, "all", f"all {images.n_classes} classes of {data} ({reason})")
    held_out = set(checkpoint.metadata["held_out_classes"])
    heldout = [name for name in images.class_names if name in held_out]
    if not heldout:
        raise ValueError(f"none of the checkpoint's {len(held_out)} held-out classes is in {data}")
    trained = [name for name in images.class_names if name not in held_out]
    wanted = wanted or "heldout"
    if wanted == "heldout":
        origin = f"held out for validation in training; --classes all adds the other {len(trained)}"
        return Selection(
            ClassSet(images.select_classes(heldout), "the held-out set", origin),
            wanted,
            f"the {len(heldout)} classes of {data} held out from training (--classes heldout)",
        )
    if wanted == "training":
        return Selection(
            ClassSet(images.select_classes(trained), "the training classes", "trained on"),
            wanted,
            f"the {len(trained)} classes of {data} the model was trained on (--classes training:"
            " accuracy on them overstates accuracy on new classes)",
        )
    return Selection(
        ClassSet(images, "the data", f"all classes of {data}"),
        wanted,
        f"all {images.n_classes} classes of {data}, {len(trained)} of which the model was "
        "trained on (--classes all)",
    )


@dataclass(frozen=True)
class EvaluationResult:
    n_way: int
    n_shot: int
    n_query: int
    episodes: int
    within_group: bool
    accuracy: float
    ci95: float

    def as_dict(self) -> dict[str, float | int | bool]:
        return {
            "way": self.n_way,
            "shot": self.n_shot,
            "query": self.n_query,
            "episodes": self.episodes,
            "within_alphabet": self.within_group,
            "accuracy": self.accuracy,
            "ci95": self.ci95,
        }

    def describe(self) -> str:
        mode = ", within-alphabet" if self.within_group else ""
        return (
            f"{self.n_way}-way {self.n_shot}-shot ({self.episodes} episodes{mode}): "
            f"{100 * self.accuracy:.2f}% ± {100 * self.ci95:.2f}%"
        )


def mean_and_ci95(accuracies: np.ndarray) -> tuple[float, float]:
    """Mean and 1.96 * std / sqrt(n), the half-width of the usual 95% interval."""
    return float(accuracies.mean()), float(1.96 * accuracies.std() / math.sqrt(len(accuracies)))


def embed_imageset(
    encoder: nn.Module, images: ImageSet, spec: InputSpec, batch_size: int = 512
) -> torch.Tensor:
    """Embeddings ``[n_images, dim]`` of every image of the set, in eval mode."""
    was_training = encoder.training
    encoder.eval()
    chunks = []
    for start in range(0, len(images.pixels), batch_size):
        batch = pixels_to_tensor(images.pixels[start : start + batch_size], spec)
        chunks.append(embed(encoder, batch, batch_size))
    encoder.train(was_training)
    return torch.cat(chunks)


def episode_accuracies(
    embeddings: torch.Tensor,
    images: ImageSet,
    shape: EpisodeShape,
    n_episodes: int,
    seed: int,
    within_group: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Query accuracy of each of ``n_episodes`` seeded episodes over precomputed embeddings."""
    sampler = EpisodeSampler(images, shape, seed=seed, within_group=within_group)
    accuracies = np.empty(n_episodes)
    for i in tqdm(range(n_episodes), desc="episodes", disable=not progress, leave=False):
        episode = sampler.sample()
        support_labels = torch.from_numpy(episode.support_labels)
        prototypes, classes = compute_prototypes(
            embeddings[episode.support_indices], support_labels
        )
        logits = prototype_logits(embeddings[episode.query_indices], prototypes)
        predicted = classes[logits.argmax(dim=1)]
        accuracies[i] = (predicted == torch.from_numpy(episode.query_labels)).float().mean()
    return accuracies


def evaluate(
    embeddings: torch.Tensor,
    images: ImageSet,
    shape: EpisodeShape,
    n_episodes: int = 1000,
    seed: int = 0,
    within_group: bool = False,
    progress: bool = False,
) -> EvaluationResult:
    accuracies = episode_accuracies(
        embeddings, images, shape, n_episodes, seed, within_group, progress
    )
    accuracy, ci95 = mean_and_ci95(accuracies)
    return EvaluationResult(
        shape.n_way, shape.n_shot, shape.n_query, n_episodes, within_group, accuracy, ci95
    )
