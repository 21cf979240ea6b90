"""The field's evaluation protocol: many random episodes, mean accuracy and a 95% CI; and the
evaluate command (:func:`run_evaluate`; a text checkpoint's: ``training/text_evaluate.py``).

In eval mode an image's embedding does not depend on the rest of its batch, so each image is
embedded once and the episodes are sampled over those embeddings: 1000 episodes cost one pass
over the split instead of 1000 forward passes, with identical results.

Open-set episodes (:func:`evaluate_open_set`) add queries of as many unknown classes: how well
the unknown-ness score (``protonet.open_set``) ranks them above the known queries (AUROC), and
what the checkpoint's rejection calibration accepts and rejects.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from protonet.checkpoint import Checkpoint, load_checkpoint
from protonet.embedding import embed, pick_device
from protonet.open_set import (
    DEFAULT_SCORE,
    SCORES,
    RejectionCalibration,
    is_known,
    open_set_score,
)
from protonet.preprocessing import InputSpec, pixels_to_tensor
from protonet.prototypes import compute_prototypes, prototype_logits, squared_euclidean
from protonet.threads import one_thread
from training import omniglot
from training.card import record
from training.checks import ClassSet, EpisodeFlags, check_episodes
from training.config import DEFAULT_DATA, device_option, option, progress_option, threads_option
from training.emoji import is_emoji_dir, load_emoji_split
from training.episodes import Episode, EpisodeSampler, EpisodeShape, LabelledSet
from training.folder import load_folder
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


@dataclass
class EpisodeItems:
    """The items an evaluation draws episodes from, in the two forms learners read
    (:class:`training.meta_learning.EpisodeLearner`): ``embeddings`` ``[n_items, dim]``, every
    item embedded once in eval mode by ``embed`` on first use and kept; and ``inputs(indices)``,
    the encoder's inputs of some items (pixels ``[k, C, H, W]``; a head's cached base features
    ``[k, base_dim]``), which a learner fine-tuned on each episode's support reads instead."""

    items: LabelledSet
    embed: Callable[[], torch.Tensor]
    inputs: Callable[[np.ndarray], torch.Tensor]

    @cached_property
    def embeddings(self) -> torch.Tensor:
        return self.embed()


def image_items(
    images: ImageSet, spec: InputSpec, encoder: nn.Module, progress: bool = False
) -> EpisodeItems:
    """``images`` as learners read them, embedded by ``encoder`` (:func:`embed_imageset`)."""
    pixels = torch.from_numpy(images.pixels)
    return EpisodeItems(
        images,
        lambda: embed_imageset(encoder, images, spec, progress=progress),
        lambda indices: pixels_to_tensor(pixels[indices], spec),
    )


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


@dataclass(frozen=True)
class EvaluateConfig:
    """The evaluate command's options; each field is its flag (``training/cli.py``)."""

    checkpoint: str = option("", "the checkpoint (.pt) to evaluate", required=True)
    data: str = option(
        DEFAULT_DATA,
        "Omniglot directory (the zips) or ROOT/<class>/<images> (default: %(default)s)",
    )
    split: str | None = option(
        None,
        "Omniglot only: which classes (vinyals-*: with rotation classes)",
        omniglot.EVALUATION_SPLITS,
        kind=str,
    )
    classes: str | None = option(
        None,
        "folder data: held out from training, all, or trained on (default: heldout when "
        "the checkpoint was trained on --data, else all); a text checkpoint: its held-out, all "
        "or meta-training intents (default: heldout)",
        CLASS_SETS,
        kind=str,
    )
    way: int = option(5, "classes per episode (default: %(default)s)")
    shot: int = option(1, "support images per class (default: %(default)s)")
    query: int = option(15, "query images per class (default: %(default)s)")
    episodes: int = option(1000, "random episodes (default: %(default)s)")
    within_alphabet: bool = option(
        False, "draw each episode's classes from one alphabet (Omniglot's harder protocol)"
    )
    seed: int = option(0, "seed of the episodes (default: %(default)s)")
    table: bool = option(
        False, "all four standard settings, 5/20-way x 1/5-shot, instead of --way/--shot"
    )
    within_train: bool = option(
        False,
        "text: the criterion for choosing between models, from the train file alone: "
        "8 texts per intent for all intents (10 seeded draws), and as queries every other "
        "train text of the validation and held-out intents",
    )
    open_set: bool = option(
        False,
        "add queries of --way unknown classes (text: 10 held-out intents' test texts "
        "against all other intents): AUROC of known against unknown, and the shares "
        "accepted/rejected at the checkpoint's rejection threshold",
    )
    score: str | None = option(
        None,
        f"--open-set: the unknown-ness score (default: the calibration's, else {DEFAULT_SCORE})",
        tuple(sorted(SCORES)),
        kind=str,
    )
    acceptance: float | None = option(
        None,
        "--open-set: the known acceptance whose threshold judges the queries (default: "
        "the calibration's default, 0.95)",
        kind=float,
    )
    finetune_steps: int | None = option(
        None,
        "MAML-family checkpoints: inner-loop steps on each episode's support set "
        "(default: the checkpoint's --finetune-steps); 0, for snail checkpoints too: nearest "
        "prototype of the backbone's embeddings, as the service classifies (snail's default: "
        "its own network)",
        kind=int,
    )
    json: bool = option(False, "print one JSON object on stdout, and nothing else there")
    write_card: bool = option(
        False, "store the results in the checkpoint and write <checkpoint>.card.json beside it"
    )
    device: str = device_option()
    threads: int = threads_option()
    progress: bool = progress_option()

    @property
    def shows_progress(self) -> bool:
        """Progress bars, unless stdout is for the JSON object alone."""
        return self.progress and not self.json


def run_evaluate(config: EvaluateConfig) -> int:
    """The evaluate command: a checkpoint's accuracy (and open-set figures) over random
    episodes, printed (or one JSON object), and with ``write_card`` recorded in its card."""
    from training.meta_learning import evaluation_learner  # it builds on this module

    if config.threads:
        torch.set_num_threads(config.threads)
    checkpoint = load_checkpoint(config.checkpoint, modality=None)
    if checkpoint.modality == "text":
        from training.text_evaluate import run_evaluate_text

        return run_evaluate_text(config, checkpoint)
    if config.within_train:
        raise ValueError(f"--within-train is for text checkpoints; {config.checkpoint} is not")
    progress = config.shows_progress
    method, calibration = open_set_scoring(config, checkpoint)
    selection = _evaluation_classes(config, checkpoint, progress)
    settings = _settings(config)
    notes = [  # all of them before the slow part
        note
        for shape, within, episode_flags in settings
        for note in check_episodes(selection.classes, shape, episode_flags, within)
    ]
    for note in dict.fromkeys(notes):  # settings of another shot repeat a note
        print(f"note: {note}", file=sys.stderr)
    if not config.json:
        print(f"classes: {selection.description}")
    images = selection.classes.items
    device = pick_device(config.device)
    learner = evaluation_learner(checkpoint, device, config.finetune_steps, config.open_set)
    for shape, _, _ in settings:  # all of them before the slow part
        learner.check_way(shape.n_way)
    items = image_items(images, checkpoint.input_spec, learner.encoder, progress)
    results: list[EvaluationResult | OpenSetResult] = []
    for shape, within, _ in settings:
        result: EvaluationResult | OpenSetResult
        if config.open_set:  # the learner is the nearest prototype: scores are distances
            result = evaluate_open_set(
                items.embeddings,
                images,
                shape,
                method,
                calibration,
                config.acceptance,
                config.episodes,
                config.seed,
                within,
                progress,
            )
        else:
            result = learner.evaluate(items, shape, config.episodes, config.seed, within, progress)
        results.append(result)
        if not config.json:
            print(result.describe())
    summary = _summary(config, checkpoint.version, selection, results)
    if config.write_card:
        key = config.split or f"folder-{summary['classes']}"
        suffix = "-open-set" if config.open_set else ""
        record(checkpoint, config.checkpoint, {key + suffix: summary["results"]})
    if config.json:
        print(json.dumps(summary))
    return 0


def _evaluation_classes(
    config: EvaluateConfig, checkpoint: Checkpoint, progress: bool
) -> Selection:
    data, spec = Path(config.data), checkpoint.input_spec
    if is_emoji_dir(data):
        if config.split or config.classes:
            raise ValueError("--split and --classes are not for emoji: the test subcategories")
        classes = load_emoji_split(data, spec, "test", progress)
        description = f"{classes.origin}, held out from training and validation"
        return Selection(classes, "all", description)
    if omniglot.is_omniglot_dir(data):
        if not config.split:
            raise ValueError(
                f"--split is required for Omniglot: one of {omniglot.EVALUATION_SPLITS}"
            )
        if config.classes:
            raise ValueError("--classes is for folder data; Omniglot's classes come from --split")
        images = omniglot.load_split(data, config.split, spec, progress=progress)
        classes = ClassSet(images, f"Omniglot {config.split}", f"the {config.split} split")
        return Selection(classes, "all", f"all {images.n_classes} classes of {config.split}")
    images, fingerprint = load_folder(data, spec, progress=progress)
    return select_folder_classes(images, data, fingerprint, checkpoint, config.classes)


# An episode shape to evaluate, whether within-alphabet, and the flags that set it.
Setting = tuple[EpisodeShape, bool, EpisodeFlags]


def _settings(config: EvaluateConfig) -> list[Setting]:
    """Each episode shape to evaluate, whether within-alphabet, and the flags that set it."""
    unknown = 1 if config.open_set else 0  # open-set: as many unknown classes as known ones
    if not config.table:
        shape = EpisodeShape(config.way, config.shot, config.query, unknown * config.way)
        return [(shape, config.within_alphabet, EpisodeFlags())]
    table_flags = EpisodeFlags("the --table way", "the --table shot", "--query")
    within = [False, True] if config.within_alphabet else [False]
    return [
        (EpisodeShape(way, shot, config.query, unknown * way), mode, table_flags)
        for way, shot in STANDARD_SETTINGS
        for mode in within
    ]


def open_set_scoring(
    config: EvaluateConfig, checkpoint: Checkpoint
) -> tuple[str, RejectionCalibration | None]:
    """The score method of an open-set evaluation, and the calibration that judges it: the
    checkpoint's, where it was measured for that method."""
    if not config.open_set:
        if config.score or config.acceptance is not None:
            raise ValueError("--score and --acceptance are for --open-set evaluations")
        return DEFAULT_SCORE, None
    calibration = checkpoint.calibration
    method = config.score or (calibration.method if calibration else DEFAULT_SCORE)
    if calibration is None or calibration.method != method:
        print(
            f"note: the checkpoint holds no rejection calibration for {method}: no shares "
            "accepted/rejected (the calibrate command measures one)",
            file=sys.stderr,
        )
        return method, None
    low, high = calibration.acceptances[0], calibration.acceptances[-1]
    if config.acceptance is not None and not low <= config.acceptance <= high:
        raise ValueError(f"--acceptance must be within the calibrated {low} to {high}")
    return method, calibration


def _summary(
    config: EvaluateConfig,
    version: str,
    selection: Selection,
    results: list[EvaluationResult | OpenSetResult],
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "checkpoint": str(config.checkpoint),
        "model_version": version,
        "data": str(config.data),
        "split": config.split,
        "classes": selection.name,
        "n_classes": selection.classes.items.n_classes,
        "seed": config.seed,
        "open_set": config.open_set,
        "results": [r.as_dict() for r in results],
    }
    summary.update({"accuracy": results[0].accuracy, "ci95": results[0].ci95})
    if isinstance(results[0], OpenSetResult):
        summary.update({"score": results[0].score, "auroc": results[0].auroc})
    return summary
