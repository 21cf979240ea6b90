"""Rejection calibration: where a checkpoint's known queries score, measured on its own
validation classes (a text checkpoint's: its validation intents' train-file texts).

A threshold at known acceptance ``a`` is the ``a``-quantile of the unknown-ness scores of
*known* queries (queries of a class in the support), one row per shot count. Only known
queries are needed, so no unknown class is ever chosen to tune against; and only classes the
checkpoint held out from training, never the classes its accuracy is reported on (for the
bundled model: the lake split's validation alphabets of images_background, never
images_evaluation). Episodes are closed-set: the nearest-prototype distance of a known query
barely depends on the way (``calibrate --way 20`` shows it), so 5-way is the default.
:func:`run_calibrate` is the calibrate command.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protonet.checkpoint import Checkpoint, load_checkpoint
from protonet.embedding import pick_device
from protonet.open_set import ACCEPTANCES, DEFAULT_SCORE, SCORES, RejectionCalibration
from training import omniglot
from training.card import record
from training.checks import ClassSet, EpisodeFlags, check_episodes, class_sizes, largest_size
from training.config import DEFAULT_DATA, device_option, option, progress_option, threads_option
from training.emoji import is_emoji_dir, load_emoji_split
from training.episodes import EpisodeShape
from training.evaluate import embed_imageset, scored_episodes, select_folder_classes, trained_on
from training.folder import load_folder
from training.text_evaluate import validation_intents

CALIBRATION_SHOTS = (1, 2, 3, 5, 10)
# Text adds 8, the examples per intent a support team registers (README): a class is judged
# by the nearest calibrated shot count at or below its own, so 8-shot intents would otherwise
# get the looser 5-shot thresholds.
TEXT_CALIBRATION_SHOTS = (1, 2, 3, 5, 8, 10)
# What the flags of the calibrate command are called in messages.
CALIBRATE_FLAGS = EpisodeFlags("--way", "the calibrated shot", "--query")
# The validation classes of each Omniglot training split (training/trainer.py).
OMNIGLOT_VALIDATION = {"lake": omniglot.LAKE_VALIDATION, "vinyals": "vinyals-val"}


def validation_classes(checkpoint: Checkpoint, data: Path, progress: bool = False) -> ClassSet:
    """The classes ``checkpoint`` held out from training, read from ``data``: the only classes
    a calibration may be measured on. Raises ``ValueError`` where the checkpoint does not say
    which they are, or ``data`` is not what it was trained on."""
    split = checkpoint.training_config.get("split")
    spec = checkpoint.input_spec
    if split in OMNIGLOT_VALIDATION:
        if not omniglot.is_omniglot_dir(data):
            raise ValueError(
                f"the checkpoint was trained on Omniglot (--split {split}): --data must be the "
                f"Omniglot directory, not {data}"
            )
        name = OMNIGLOT_VALIDATION[split]
        images = omniglot.load_split(data, name, spec, progress=progress)
        groups = sorted(set(images.class_groups))
        named = ", ".join(groups) if len(groups) <= 8 else f"{len(groups)} alphabets"
        origin = f"Omniglot {name}: the {split} split's validation classes ({named})"
        return ClassSet(images, f"Omniglot {name}", origin)
    if split == "emoji":
        if not is_emoji_dir(data):
            raise ValueError("the checkpoint was trained on emoji: --data must be their folder")
        return load_emoji_split(data, spec, "val", progress)
    if split == "folder":
        images, fingerprint = load_folder(data, spec, progress=progress)
        if not trained_on(checkpoint, data, fingerprint):
            raise ValueError(
                f"{data} is not the folder the checkpoint was trained on, or the checkpoint does "
                "not record which classes it held out: calibration needs the classes held out "
                "for validation, not classes of unknown standing"
            )
        held_out = select_folder_classes(images, data, fingerprint, checkpoint, "heldout")
        origin = f"{data}: the classes held out for validation in training"
        return ClassSet(held_out.classes.items, "the held-out set", origin)
    raise ValueError(
        f"the checkpoint does not say which classes it was validated on (training split "
        f"{split!r}): calibration needs its held-out validation classes"
    )


def validation_embeddings(
    checkpoint: Checkpoint, data: Path, device: str = "auto", progress: bool = False
) -> tuple[ClassSet, torch.Tensor]:
    """The checkpoint's validation classes (:func:`validation_classes`, or a text checkpoint's
    validation intents) and their embeddings through it, ``[n, dim]``."""
    if checkpoint.modality == "text":
        return validation_intents(checkpoint, data, progress)
    classes = validation_classes(checkpoint, data, progress)
    encoder = checkpoint.build_encoder(pick_device(device))
    embeddings = embed_imageset(encoder, classes.items, checkpoint.input_spec, progress=progress)
    return classes, embeddings


def calibration_shots(checkpoint: Checkpoint) -> tuple[int, ...]:
    """The shot counts to calibrate ``checkpoint`` at."""
    return TEXT_CALIBRATION_SHOTS if checkpoint.modality == "text" else CALIBRATION_SHOTS


@dataclass(frozen=True)
class Calibration:
    """A measured calibration and what a reader should know about it."""

    rejection: RejectionCalibration
    notes: list[str]


def known_scores(
    embeddings: torch.Tensor,
    classes: ClassSet,
    shape: EpisodeShape,
    method: str,
    n_episodes: int,
    seed: int,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Unknown-ness scores of known queries and each one's group (alphabet), both
    ``[n_episodes * n_way * n_query]``."""
    episodes = list(
        scored_episodes(
            embeddings, classes.items, shape, n_episodes, seed, False, method, progress=progress
        )
    )
    groups = np.array(classes.items.class_groups)
    labels = np.concatenate([episode.known_labels for episode in episodes])
    return np.concatenate([episode.known for episode in episodes]), groups[labels]


def held_out_acceptance(scores: np.ndarray, groups: np.ndarray, level: float) -> float:
    """The mean over groups of the share of a group's scores under the ``level``-quantile of
    the other groups' scores: what a threshold taken at ``level`` accepts in a group it was
    not measured on."""
    shares = []
    for group in np.unique(groups):
        inside = groups == group
        threshold = np.quantile(scores[~inside], level)
        shares.append(float(np.mean(scores[inside] <= threshold)))
    return float(np.mean(shares))


def cross_validated_levels(
    scores: np.ndarray, groups: np.ndarray, acceptances: tuple[float, ...]
) -> list[float]:
    """For each wanted acceptance ``a``, the quantile level (``a`` or above) whose threshold
    accepts ``a`` of the queries of a group left out of the measurement, averaged over groups
    (bisection). Groups differ (some alphabets are drawn more loosely than others), so the
    pooled ``a``-quantile accepts less than ``a`` in a new group on average; with one group
    there is nothing to correct."""
    if len(np.unique(groups)) < 2:
        return list(acceptances)
    return [_held_out_level(scores, groups, wanted) for wanted in acceptances]


def _held_out_level(scores: np.ndarray, groups: np.ndarray, wanted: float) -> float:
    """The lowest level in [``wanted``, 1] (to 2**-20) whose held-out acceptance is ``wanted``."""
    if held_out_acceptance(scores, groups, wanted) >= wanted:
        return wanted
    low, high = wanted, 1.0  # held-out acceptance below wanted at low, at least wanted at high
    for _ in range(20):
        middle = (low + high) / 2
        if held_out_acceptance(scores, groups, middle) < wanted:
            low = middle
        else:
            high = middle
    return high


def calibrate(
    embeddings: torch.Tensor,
    classes: ClassSet,
    method: str,
    way: int = 5,
    query: int = 15,
    n_episodes: int = 500,
    seed: int = 0,
    shots: tuple[int, ...] = CALIBRATION_SHOTS,
    acceptances: tuple[float, ...] = ACCEPTANCES,
    progress: bool = False,
) -> Calibration:
    """Thresholds for each of ``shots`` the classes allow, at each of ``acceptances``, from
    ``n_episodes`` closed-set episodes per shot over ``[n_images, dim]`` embeddings.

    The way is lowered to the number of classes, and the queries per class to what the
    ``way``-th largest class holds beside the support (with a note)."""
    sizes = class_sizes(classes.items)
    way = min(way, len(sizes))
    rows, notes, queries = [], [], {}
    for shot in shots:
        fitted = min(query, largest_size(sizes, way) - shot)
        if fitted < 1:
            notes.append(
                f"no {shot}-shot thresholds: fewer than {way} classes hold {shot + 1} images"
            )
            continue
        shape = EpisodeShape(way, shot, fitted)
        notes += check_episodes(classes, shape, CALIBRATE_FLAGS)
        # Another seed per shot: each row is measured on episodes of its own.
        scores, groups = known_scores(
            embeddings, classes, shape, method, n_episodes, seed + shot, progress
        )
        rows.append(np.quantile(scores, cross_validated_levels(scores, groups, acceptances)))
        queries[shot] = fitted
    if not rows:
        raise ValueError(f"{classes.label} cannot hold a 1-shot episode: no calibration")
    # More support examples only bring a prototype nearer its class's queries: a threshold
    # that rises with the shot count is noise in the quantile's tail, so each row is capped by
    # the one before it.
    capped = np.minimum.accumulate(np.stack(rows), axis=0)
    rejection = RejectionCalibration(
        method,
        tuple(queries),
        acceptances,
        tuple(tuple(float(t) for t in row) for row in capped),
        source=_source(classes, n_episodes, way, queries, seed),
    )
    return Calibration(rejection, list(dict.fromkeys(notes)))


def _source(
    classes: ClassSet, n_episodes: int, way: int, queries: dict[int, int], seed: int
) -> str:
    """What a calibration was measured on, for the model card."""
    n_groups = len(set(classes.items.class_groups))
    first = next(iter(queries.values()))
    fewer = [f"{q} at {shot}-shot" for shot, q in queries.items() if q != first]
    return (
        f"{classes.origin}, {classes.items.n_classes} classes; {n_episodes} closed-set "
        f"{way}-way episodes per shot count, {first} known queries per class"
        + (f" ({', '.join(fewer)})" if fewer else "")
        + f"; seed {seed}"
        + (f"; quantiles cross-validated over {n_groups} groups" if n_groups > 1 else "")
    )


@dataclass(frozen=True)
class CalibrateConfig:
    """The calibrate command's options; each field is its flag (``training/cli.py``)."""

    checkpoint: str = option("", "the checkpoint (.pt) to calibrate", required=True)
    data: str = option(
        DEFAULT_DATA,
        "the data the checkpoint was trained on: Omniglot directory or ROOT/<class>/"
        "<images>; only its validation classes are read (default: %(default)s)",
    )
    score: str = option(
        DEFAULT_SCORE,
        "the unknown-ness score to calibrate (default: %(default)s)",
        tuple(sorted(SCORES)),
    )
    way: int = option(5, "classes per episode (default: %(default)s)")
    query: int = option(
        15,
        "known queries per class, fewer where a class holds fewer images beside the "
        "support (default: %(default)s)",
    )
    episodes: int = option(500, "episodes per shot count (default: %(default)s)")
    acceptance: float = option(
        0.95,
        "the default known acceptance, whose thresholds the service applies unless told "
        "otherwise (default: %(default)s)",
    )
    seed: int = option(0, "seed of the episodes (default: %(default)s)")
    json: bool = option(False, "print one JSON object on stdout, and nothing else there")
    write: bool = option(False, "store the calibration in the checkpoint")
    write_card: bool = option(
        False, "store it in the checkpoint and rewrite <checkpoint>.card.json beside it"
    )
    device: str = device_option()
    threads: int = threads_option()
    progress: bool = progress_option()

    @property
    def shows_progress(self) -> bool:
        """Progress bars, unless stdout is for the JSON object alone."""
        return self.progress and not self.json


def run_calibrate(config: CalibrateConfig) -> int:
    """The calibrate command: the thresholds measured on the checkpoint's validation classes,
    printed as a table (or one JSON object), and with ``write``/``write_card`` stored."""
    if config.threads:
        torch.set_num_threads(config.threads)
    if min(config.way, config.query, config.episodes) < 1:
        raise ValueError("--way, --query and --episodes must all be >= 1")
    if not ACCEPTANCES[0] <= config.acceptance <= ACCEPTANCES[-1]:
        raise ValueError(
            f"--acceptance must be between {ACCEPTANCES[0]} and {ACCEPTANCES[-1]}, the "
            f"calibrated range; not {config.acceptance}"
        )
    progress = config.shows_progress
    checkpoint = load_checkpoint(config.checkpoint, modality=None)
    data = Path(config.data)
    classes, embeddings = validation_embeddings(checkpoint, data, config.device, progress)
    measured = calibrate(
        embeddings,
        classes,
        config.score,
        config.way,
        config.query,
        config.episodes,
        config.seed,
        calibration_shots(checkpoint),
        progress=progress,
    )
    for note in measured.notes:
        print(f"note: {note}", file=sys.stderr)
    rejection = replace(measured.rejection, default_acceptance=config.acceptance)
    written = config.write or config.write_card
    card = None
    if written:
        checkpoint.calibration = rejection
        card = record(checkpoint, config.checkpoint, card=config.write_card)
    if config.json:
        print(json.dumps(_calibration_summary(config, checkpoint, rejection, written)))
        return 0
    print(_threshold_table(rejection))
    if written:
        where = f" and {card}" if card else ""
        print(f"written to {config.checkpoint}{where} (model version {checkpoint.version})")
    return 0


def _calibration_summary(
    config: CalibrateConfig,
    checkpoint: Checkpoint,
    rejection: RejectionCalibration,
    written: bool,
) -> dict[str, Any]:
    return {
        "checkpoint": str(config.checkpoint),
        "model_version": checkpoint.version,
        "data": str(config.data),
        "way": config.way,
        "episodes": config.episodes,
        "seed": config.seed,
        "written": written,
        "rejection": rejection.to_dict(),
    }


def _threshold_table(rejection: RejectionCalibration) -> str:
    """The thresholds as a text table: a row per shot count, a column per acceptance."""
    header = "shot" + "".join(f"{100 * a:>9g}%" for a in rejection.acceptances)
    rows = [
        f"{shot:>4}" + "".join(f"{t:>10.3f}" for t in row)
        for shot, row in zip(rejection.shots, rejection.thresholds, strict=True)
    ]
    return "\n".join(
        [
            f"rejection thresholds of {rejection.method} (above them a query is unknown), by "
            f"shot count and known acceptance (default {100 * rejection.default_acceptance:g}%):",
            header,
            *rows,
            f"measured on {rejection.source}",
        ]
    )
