"""Episode settings checked against the data before the first episode is drawn.

Every message names the flag to change and the numbers behind it, so a setting the data
cannot satisfy fails within a second of loading, not after hours of training.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Generic, TypeVar

import numpy as np

from training.config import DEFAULT_VAL_QUERY, DEFAULT_VAL_WAY, DEFAULT_WAY, TrainConfig
from training.episodes import EpisodeShape, LabelledSet

SetT = TypeVar("SetT", bound=LabelledSet)


@dataclass(frozen=True)
class ClassSet(Generic[SetT]):
    """Classes episodes are drawn from, and what messages call them.

    Attributes:
        items: the classes and their items (an image set, or a text set).
        label: what holds them, as a message's subject: ``"training"``, ``"the held-out set"``.
        origin: why it holds what it does, e.g. ``"20% of 10"``.
    """

    items: SetT
    label: str
    origin: str


@dataclass(frozen=True)
class EpisodeFlags:
    """The flags that set an episode's way, shot and query: named in every message."""

    way: str = "--way"
    shot: str = "--shot"
    query: str = "--query"


TRAINING_FLAGS = EpisodeFlags()
VALIDATION_FLAGS = EpisodeFlags("--val-way", "--val-shot", "--val-query")


def class_sizes(images: LabelledSet) -> np.ndarray:
    """Items per class, ``[n_classes]``."""
    return np.bincount(images.labels, minlength=images.n_classes)


def largest_size(sizes: np.ndarray, k: int) -> int:
    """The ``k``-th largest class size (0 when there are fewer than ``k`` classes)."""
    return int(np.sort(sizes)[::-1][k - 1]) if 0 < k <= len(sizes) else 0


def _size_range(sizes: np.ndarray) -> str:
    low, high = int(sizes.min()), int(sizes.max())
    return f"{low} images each" if low == high else f"{low} to {high} images"


def _classes(shape: EpisodeShape, flags: EpisodeFlags) -> str:
    """What an episode's classes are called in a message: ``--way 5`` (``+ 5 unknown``)."""
    unknown = f" + {shape.n_unknown} unknown" if shape.n_unknown else ""
    return f"{flags.way} {shape.n_way}{unknown}"


def _max_way(shape: EpisodeShape, n: int) -> int:
    """The largest way ``n`` classes allow, unknown classes scaling with the way (open-set
    episodes draw as many unknown classes as known ones)."""
    return n * shape.n_way // shape.n_classes


def _too_few_images(
    classes: ClassSet, shape: EpisodeShape, flags: EpisodeFlags, eligible: int
) -> str:
    sizes = class_sizes(classes.items)
    need = shape.n_shot + shape.n_query
    fits = largest_size(sizes, shape.n_classes)  # the most images the last class can give
    remedies = []
    if fits >= 2:
        remedies.append(f"lower {flags.shot} + {flags.query} to <= {fits}")
    if _max_way(shape, eligible) >= 1:
        remedies.append(f"lower {flags.way} to <= {_max_way(shape, eligible)}")
    enough = f"only {eligible}" if eligible else "none"
    return (
        f"{_classes(shape, flags)} needs {shape.n_classes} classes of at least {flags.shot} + "
        f"{flags.query} = {shape.n_shot} + {shape.n_query} = {need} images; {classes.label} "
        f"has {len(sizes)} classes, {enough} of them that large (they hold "
        f"{_size_range(sizes)}): " + (" or ".join(remedies) or "add images")
    )


def _group_sizes(classes: ClassSet, shape: EpisodeShape) -> dict[str, int]:
    """Eligible classes (``n_shot + n_query`` images) per group."""
    items = classes.items
    eligible = class_sizes(items) >= shape.n_shot + shape.n_query
    per_group: dict[str, int] = {}
    for group, ok in zip(items.class_groups, eligible, strict=True):
        per_group[group] = per_group.get(group, 0) + int(ok)
    return per_group


def _check_groups(classes: ClassSet, shape: EpisodeShape, flags: EpisodeFlags) -> list[str]:
    """Within-alphabet episodes need one alphabet with ``n_classes`` classes that are big
    enough; open-set ones note the alphabets too small to take part."""
    per_group = _group_sizes(classes, shape)
    most = max(per_group.values())
    if most < shape.n_classes:
        raise ValueError(
            f"--within-alphabet: no alphabet of {classes.label} has {shape.n_classes} classes "
            f"with {shape.n_shot + shape.n_query} images each (the most is {most}"
            + (f"; {_classes(shape, flags)}" if shape.n_unknown else "")
            + f"): lower {flags.way} to <= {_max_way(shape, most)} or drop --within-alphabet"
        )
    small = sorted(g for g, n in per_group.items() if n < shape.n_classes)
    if not shape.n_unknown or not small:
        return []
    return [
        f"--within-alphabet, {_classes(shape, flags)}: the unknown classes come from the known "
        f"ones' alphabet, so only alphabets with {shape.n_classes} classes take part; "
        f"{len(small)} of {len(per_group)} alphabets of {classes.label} are left out "
        f"({', '.join(small[:3])}{', ...' if len(small) > 3 else ''})"
    ]


def check_episodes(
    classes: ClassSet, shape: EpisodeShape, flags: EpisodeFlags, within_group: bool = False
) -> list[str]:
    """Raise ``ValueError`` unless ``shape`` episodes can be drawn from ``classes``.

    Returns notes (classes too small to take part); the messages name ``flags``.
    """
    sizes = class_sizes(classes.items)
    n = len(sizes)
    if shape.n_classes > n:
        unknown = f" ({_classes(shape, flags)})" if shape.n_unknown else ""
        raise ValueError(
            f"{classes.label} holds {n} classes ({classes.origin}): {flags.way} must be <= "
            f"{_max_way(shape, n)}{unknown}"
        )
    need = shape.n_shot + shape.n_query
    eligible = int((sizes >= need).sum())
    if eligible < shape.n_classes:
        raise ValueError(_too_few_images(classes, shape, flags, eligible))
    notes = _check_groups(classes, shape, flags) if within_group else []
    if eligible == n:
        return notes
    return [
        f"{classes.label}: {n - eligible} of {n} classes have fewer than {need} images "
        f"({flags.shot} + {flags.query}) and are left out of its episodes",
        *notes,
    ]


def fit_validation(config: TrainConfig, validation: ClassSet) -> tuple[TrainConfig, list[str]]:
    """Fill in ``val_way``/``val_query`` left at 0: the defaults, or what the data allows.

    Only settings the user left open are lowered (with a note); explicit ones stay as given,
    for :func:`check_episodes` to accept or refuse.
    """
    sizes = class_sizes(validation.items)
    n = len(sizes)
    notes = []
    way = config.val_way
    if not way:
        if n < 2:
            raise ValueError(
                f"validation holds {n} class ({validation.origin}): validation episodes need "
                "at least 2 classes; raise --val-fraction or add classes"
            )
        way = min(DEFAULT_VAL_WAY, n)
        if way < DEFAULT_VAL_WAY:
            notes.append(
                f"validation holds {n} classes ({validation.origin}): validating {way}-way, "
                f"not {DEFAULT_VAL_WAY}-way (--val-way sets it)"
            )
    query = config.val_query
    if not query:
        query = max(1, min(DEFAULT_VAL_QUERY, largest_size(sizes, way) - config.val_shot))
        if query < DEFAULT_VAL_QUERY:
            notes.append(
                f"validation episodes use {query} queries per class, not {DEFAULT_VAL_QUERY}, "
                f"so that {way} classes hold --val-shot {config.val_shot} + {query} images "
                "(--val-query sets it)"
            )
    return replace(config, val_way=way, val_query=query), notes


def fit_training_way(config: TrainConfig, train: ClassSet) -> tuple[TrainConfig, list[str]]:
    """Fill in ``way`` left at 0: :data:`DEFAULT_WAY`, or fewer where the training classes
    that hold ``shot + query`` images (in one alphabet with ``within_alphabet``, beside the
    ``unknown_way`` classes) cannot fill that, with a note. A way given stays as given. Where
    not even 2 classes are large enough, the way is what the number of classes allows, so that
    :func:`check_episodes` says which flags to lower for the images the classes hold.
    """
    if config.way:
        return config, []
    shape = EpisodeShape(1, config.shot, config.query)
    sizes = class_sizes(train.items)
    enough = int((sizes >= shape.n_shot + shape.n_query).sum())
    if config.within_alphabet:
        enough = max(_group_sizes(train, shape).values())
    way = min(DEFAULT_WAY, enough - config.unknown_way)
    if way < 2:  # too few large classes: episodes of all of them, refused for their size
        return replace(config, way=max(2, min(DEFAULT_WAY, len(sizes) - config.unknown_way))), []
    notes = [_fitted_way_note(config, train, enough, way)] if way < DEFAULT_WAY else []
    return replace(config, way=way), notes


def _fitted_way_note(config: TrainConfig, train: ClassSet, enough: int, way: int) -> str:
    n = train.items.n_classes
    where = " in one alphabet (--within-alphabet)" if config.within_alphabet else ""
    large = f", {enough} of them{where} with --shot + --query = {config.shot + config.query} images"
    if enough == n and not where:
        large = ""
    unknown = f", less --unknown-way {config.unknown_way}" if config.unknown_way else ""
    return (
        f"{train.label} holds {n} classes ({train.origin}){large}{unknown}: training "
        f"{way}-way, not {DEFAULT_WAY}-way (--way sets it)"
    )


def fit_to_data(
    config: TrainConfig, train: ClassSet, validation: ClassSet
) -> tuple[TrainConfig, list[str]]:
    """``config`` with its open settings (``way``, ``val_way``, ``val_query``) filled in, and
    notes for the user.

    Raises ``ValueError`` naming the flag when training or validation episodes of the
    configured shape cannot be drawn from the data.
    """
    config, way_notes = fit_training_way(config, train)
    config, notes = fit_validation(config, validation)
    notes = way_notes + notes
    notes += check_episodes(
        train,
        EpisodeShape(config.way, config.shot, config.query, config.unknown_way),
        TRAINING_FLAGS,
        config.within_alphabet,
    )
    notes += check_episodes(
        validation,
        EpisodeShape(config.val_way, config.val_shot, config.val_query),
        VALIDATION_FLAGS,
    )
    if config.unknown_way:  # open-set validation: as many unknown classes as known
        notes += check_episodes(
            validation,
            EpisodeShape(config.val_way, config.val_shot, config.val_query, config.val_way),
            VALIDATION_FLAGS,
            config.within_alphabet,
        )
    # The open-set check repeats the closed-set one's notes on class sizes: say each once.
    return config, list(dict.fromkeys(notes))
