"""The field's evaluation protocol: many random episodes, mean accuracy and a 95% CI.

In eval mode an image's embedding does not depend on the rest of its batch, so each image is
embedded once and the episodes are sampled over those embeddings: 1000 episodes cost one pass
over the split instead of 1000 forward passes, with identical results.

Open-set episodes (:func:`evaluate_open_set`) add queries of as many unknown classes: how well
the unknown-ness score (``protonet.open_set``) ranks them above the known queries (AUROC), and
what the checkpoint's rejection calibration accepts and rejects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from protonet.checkpoint import Checkpoint
from protonet.embedding import embed
from protonet.open_set import RejectionCalibration, is_known, open_set_score
from protonet.preprocessing import InputSpec, pixels_to_tensor
from protonet.prototypes import compute_prototypes, prototype_logits, squared_euclidean
from protonet.threads import one_thread
from training.checks import ClassSet
from training.episodes import Episode, EpisodeSampler, EpisodeShape, LabelledSet
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
    encoder: nn.Module,
    images: ImageSet,
    spec: InputSpec,
    batch_size: int = 512,
    progress: bool = False,
) -> torch.Tensor:
    """Embeddings ``[n_images, dim]`` of every image of the set, in eval mode (with a progress
    bar: on a busy CPU the 13,180 images of Omniglot's evaluation split take a minute)."""
    was_training = encoder.training
    encoder.eval()
    chunks = []
    n_images = len(images.pixels)
    with tqdm(total=n_images, desc="embedding", unit="img", disable=not progress) as bar:
        for start in range(0, n_images, batch_size):
            batch = pixels_to_tensor(images.pixels[start : start + batch_size], spec)
            chunks.append(embed(encoder, batch, batch_size))
            bar.update(len(batch))
    encoder.train(was_training)
    return torch.cat(chunks)


@dataclass(frozen=True)
class Queries:
    """A second set to draw queries from (same classes, labelled alike): a test file beside
    the train file the support comes from. ``embeddings``: ``[len(items), dim]``."""

    embeddings: torch.Tensor
    items: LabelledSet


# An episode's classifier over embeddings: (support [S, dim], support labels [S], queries
# [Q, dim]) -> the predicted label [Q] of each query.
Classify = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def nearest_prototype(
    support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor
) -> torch.Tensor:
    """Each query's nearest prototype's class: the classifier the service serves."""
    prototypes, classes = compute_prototypes(support, support_labels)
    return classes[prototype_logits(queries, prototypes).argmax(dim=1)]


def episode_accuracies(
    embeddings: torch.Tensor,
    images: LabelledSet,
    shape: EpisodeShape,
    n_episodes: int,
    seed: int,
    within_group: bool = False,
    progress: bool = False,
    queries: Queries | None = None,
    classify: Classify = nearest_prototype,
) -> np.ndarray:
    """Query accuracy of each of ``n_episodes`` seeded episodes over precomputed embeddings
    (queries from ``queries`` where given, else from ``images`` too), classified by
    ``classify`` (SNAIL's network reads the same embeddings)."""
    query_set = queries.items if queries else None
    sampler = EpisodeSampler(images, shape, seed, within_group, query_set)
    query_embeddings = queries.embeddings if queries else embeddings
    accuracies = np.empty(n_episodes)
    with one_thread(), torch.no_grad():
        for i in tqdm(range(n_episodes), desc="episodes", disable=not progress, leave=False):
            episode = sampler.sample()
            predicted = classify(
                embeddings[episode.support_indices],
                torch.from_numpy(episode.support_labels),
                query_embeddings[episode.query_indices],
            )
            accuracies[i] = (predicted == torch.from_numpy(episode.query_labels)).float().mean()
    return accuracies


def evaluate(
    embeddings: torch.Tensor,
    images: LabelledSet,
    shape: EpisodeShape,
    n_episodes: int = 1000,
    seed: int = 0,
    within_group: bool = False,
    progress: bool = False,
    queries: Queries | None = None,
    classify: Classify = nearest_prototype,
) -> EvaluationResult:
    accuracies = episode_accuracies(
        embeddings, images, shape, n_episodes, seed, within_group, progress, queries, classify
    )
    accuracy, ci95 = mean_and_ci95(accuracies)
    return EvaluationResult(
        shape.n_way, shape.n_shot, shape.n_query, n_episodes, within_group, accuracy, ci95
    )


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Area under the ROC curve of unknown-ness scores: the chance that an unknown query
    scores above a known one, ties counted half (the Mann-Whitney U statistic over the
    average ranks). ``known``: ``[n_known]``, ``unknown``: ``[n_unknown]``, both non-empty."""
    if not len(known) or not len(unknown):
        raise ValueError("AUROC needs at least one known and one unknown score")
    scores = np.concatenate([known, unknown])
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # Tied scores share the mean of the 1-based ranks they span.
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[group]
    n_known, n_unknown = len(known), len(unknown)
    wins = ranks[n_known:].sum() - n_unknown * (n_unknown + 1) / 2
    return float(wins / (n_known * n_unknown))


@dataclass(frozen=True)
class ScoredEpisode:
    """One episode's queries as open-set evaluation and calibration see them.

    ``correct``: ``[n_way * n_query]`` nearest prototype is the query's class; ``known`` /
    ``unknown``: ``[n_way * n_query]`` / ``[n_unknown * n_query]`` unknown-ness scores;
    ``known_labels``: ``[n_way * n_query]`` the known queries' classes;
    ``known_accepted`` / ``unknown_accepted``: the same queries judged by a calibration
    (None without one).
    """

    correct: np.ndarray
    known: np.ndarray
    unknown: np.ndarray
    known_labels: np.ndarray
    known_accepted: np.ndarray | None = None
    unknown_accepted: np.ndarray | None = None


def scored_episodes(
    embeddings: torch.Tensor,
    images: LabelledSet,
    shape: EpisodeShape,
    n_episodes: int,
    seed: int,
    within_group: bool,
    method: str,
    calibration: RejectionCalibration | None = None,
    progress: bool = False,
) -> Iterator[ScoredEpisode]:
    """``n_episodes`` seeded episodes over precomputed ``[n_images, dim]`` embeddings, each
    query scored by ``method`` (and judged by ``calibration``, whose method must match)."""
    if calibration is not None and calibration.method != method:
        raise ValueError(f"the calibration is for {calibration.method!r}, not {method!r}")
    sampler = EpisodeSampler(images, shape, seed=seed, within_group=within_group)
    for _ in tqdm(range(n_episodes), desc="episodes", disable=not progress, leave=False):
        with one_thread():  # not around the yield: the caller's code runs as it set it
            scored = _scored_episode(embeddings, sampler.sample(), shape, method, calibration)
        yield scored


def _scored_episode(
    embeddings: torch.Tensor,
    episode: Episode,
    shape: EpisodeShape,
    method: str,
    calibration: RejectionCalibration | None,
) -> ScoredEpisode:
    """One open-set episode's known and unknown queries, scored (and judged)."""
    prototypes, classes = compute_prototypes(
        embeddings[episode.support_indices], torch.from_numpy(episode.support_labels)
    )
    shots = torch.full((len(classes),), shape.n_shot)
    known = squared_euclidean(embeddings[episode.query_indices], prototypes)
    unknown = squared_euclidean(embeddings[episode.unknown_indices], prototypes)
    correct = classes[known.argmin(dim=1)] == torch.from_numpy(episode.query_labels)
    return ScoredEpisode(
        correct=correct.numpy(),
        known=open_set_score(known, shots, method).numpy(),
        unknown=open_set_score(unknown, shots, method).numpy(),
        known_labels=episode.query_labels,
        known_accepted=_accepted(known, shots, calibration),
        unknown_accepted=_accepted(unknown, shots, calibration),
    )


def _accepted(
    distances: torch.Tensor, shots: torch.Tensor, calibration: RejectionCalibration | None
) -> np.ndarray | None:
    """``[Q, C]`` distances -> ``[Q]`` accepted as known by ``calibration`` (None without)."""
    return None if calibration is None else is_known(distances, shots, calibration).numpy()


def _share(flags: list[np.ndarray | None]) -> float:
    """The share of True over all episodes' ``[Q]`` flags."""
    return float(np.concatenate([f for f in flags if f is not None]).mean())


@dataclass(frozen=True)
class OpenSetResult:
    """Open-set episodes: closed-set accuracy on the known queries, AUROC of known against
    unknown, and (with a calibration) the shares accepted/rejected at ``acceptance``."""

    n_way: int
    n_shot: int
    n_query: int
    n_unknown: int
    episodes: int
    within_group: bool
    accuracy: float
    ci95: float
    score: str
    auroc: float
    auroc_ci95: float
    acceptance: float | None = None
    threshold: float | None = None
    known_accepted: float | None = None
    unknown_rejected: float | None = None

    def as_dict(self) -> dict[str, float | int | bool | str | None]:
        return {
            "way": self.n_way,
            "shot": self.n_shot,
            "query": self.n_query,
            "unknown_way": self.n_unknown,
            "episodes": self.episodes,
            "within_alphabet": self.within_group,
            "accuracy": self.accuracy,
            "ci95": self.ci95,
            "score": self.score,
            "auroc": self.auroc,
            "auroc_ci95": self.auroc_ci95,
            "acceptance": self.acceptance,
            "threshold": self.threshold,
            "known_accepted": self.known_accepted,
            "unknown_rejected": self.unknown_rejected,
        }

    def describe(self) -> str:
        mode = ", within-alphabet" if self.within_group else ""
        text = (
            f"{self.n_way}-way {self.n_shot}-shot + {self.n_unknown} unknown ({self.episodes} "
            f"episodes{mode}): accuracy {100 * self.accuracy:.2f}% ± {100 * self.ci95:.2f}%, "
            f"AUROC {self.auroc:.3f} ± {self.auroc_ci95:.3f} ({self.score})"
        )
        if self.known_accepted is None or self.unknown_rejected is None:
            return text
        return (
            f"{text}; at {100 * (self.acceptance or 0):g}% acceptance (threshold "
            f"{self.threshold:.3g}): known accepted {100 * self.known_accepted:.1f}%, unknown "
            f"rejected {100 * self.unknown_rejected:.1f}%"
        )


def evaluate_open_set(
    embeddings: torch.Tensor,
    images: ImageSet,
    shape: EpisodeShape,
    method: str,
    calibration: RejectionCalibration | None = None,
    acceptance: float | None = None,
    n_episodes: int = 1000,
    seed: int = 0,
    within_group: bool = False,
    progress: bool = False,
) -> OpenSetResult:
    """Open-set episodes (``shape.n_unknown`` > 0) scored by ``method``; the shares at the
    calibration's threshold for ``shape.n_shot`` at ``acceptance`` (default: its default)."""
    if not shape.n_unknown:
        raise ValueError("open-set evaluation needs episodes with unknown classes")
    if calibration is not None:  # judge every query at ``acceptance``
        calibration = replace(
            calibration, default_acceptance=acceptance or calibration.default_acceptance
        )
    episodes = list(
        scored_episodes(
            embeddings, images, shape, n_episodes, seed, within_group, method, calibration, progress
        )
    )
    accuracy, ci95 = mean_and_ci95(np.array([e.correct.mean() for e in episodes]))
    area, area_ci95 = mean_and_ci95(np.array([auroc(e.known, e.unknown) for e in episodes]))
    result = OpenSetResult(
        shape.n_way,
        shape.n_shot,
        shape.n_query,
        shape.n_unknown,
        n_episodes,
        within_group,
        accuracy,
        ci95,
        method,
        area,
        area_ci95,
    )
    if calibration is None:
        return result
    return replace(
        result,
        acceptance=calibration.default_acceptance,
        threshold=calibration.threshold(shape.n_shot),
        known_accepted=_share([e.known_accepted for e in episodes]),
        unknown_rejected=1.0 - _share([e.unknown_accepted for e in episodes]),
    )
