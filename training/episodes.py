"""The one episode sampler: seeded N-way K-shot Q-query episodes, optionally within a group,
optionally open-set (queries of classes outside the support too), optionally with the queries
drawn from a second set of the same classes (support from a train file, queries from a test
file). It reads only labels and groups, so image and text sets alike feed it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np


class LabelledSet(Protocol):
    """What episodes are drawn from: a class per item and a group per class (an
    :class:`~training.imageset.ImageSet`, a :class:`~training.textset.TextSet`)."""

    @property
    def labels(self) -> np.ndarray: ...

    @property
    def class_groups(self) -> list[str]: ...

    @property
    def n_classes(self) -> int: ...


@dataclass(frozen=True)
class EpisodeShape:
    """``n_way`` known classes of ``n_shot`` support and ``n_query`` query images each, and
    ``n_unknown`` more classes (open-set episodes) that give ``n_query`` queries each and no
    support."""

    n_way: int
    n_shot: int
    n_query: int
    n_unknown: int = 0

    def __post_init__(self) -> None:
        if min(self.n_way, self.n_shot, self.n_query) < 1:
            raise ValueError(f"way, shot and query must all be >= 1, got {self}")
        if self.n_unknown < 0:
            raise ValueError(f"the number of unknown classes must be >= 0, got {self}")

    @property
    def n_classes(self) -> int:
        """Distinct classes an episode draws: known and unknown."""
        return self.n_way + self.n_unknown


@dataclass(frozen=True)
class Episode:
    """Indices into a :class:`LabelledSet`, and the class label of each (query and unknown
    indices point into the sampler's query set where it has one).

    ``support_indices``/``support_labels``: ``[n_way * n_shot]``; ``query_*``:
    ``[n_way * n_query]``; ``unknown_*``: ``[n_unknown * n_query]``, queries of classes with
    no support (empty unless open-set). Labels are the image set's class indices (not
    0..n_way-1).
    """

    support_indices: np.ndarray
    support_labels: np.ndarray
    query_indices: np.ndarray
    query_labels: np.ndarray
    unknown_indices: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    unknown_labels: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


class EpisodeSampler:
    """Draws episodes from the classes that have at least ``n_shot + n_query`` images.

    With a ``query_set`` (the same classes, labelled alike), support comes from ``images``
    and queries from ``query_set``: a class takes part where it has ``n_shot`` items in one
    and ``n_query`` in the other.

    With ``within_group`` every class of an episode comes from one group (one Omniglot
    alphabet: the harder protocol, as look-alike characters compete). Groups are drawn in
    proportion to their number of eligible classes, so every class is about equally likely.

    Open-set episodes (``shape.n_unknown > 0``) add queries of ``n_unknown`` other classes,
    drawn after the known ones from the same group: within a group, the unknowns are
    look-alikes (the hard case), so only groups with ``n_way + n_unknown`` eligible classes
    take part (``training.checks`` notes the others).
    """

    def __init__(
        self,
        images: LabelledSet,
        shape: EpisodeShape,
        seed: int | list[int] = 0,
        within_group: bool = False,
        query_set: LabelledSet | None = None,
    ) -> None:
        self.shape = shape
        self.within_group = within_group
        self.rng = np.random.default_rng(seed)
        needed = shape.n_shot + shape.n_query
        members = _members(images)
        if query_set is None:
            self.query_members = None
            eligible = [c for c in range(images.n_classes) if len(members[c]) >= needed]
        else:
            self.query_members = _members(query_set, images.n_classes)
            eligible = [
                c
                for c in range(images.n_classes)
                if len(members[c]) >= shape.n_shot and len(self.query_members[c]) >= shape.n_query
            ]
        self.class_members = {c: members[c] for c in eligible}
        self.groups = self._eligible_groups(images, shape.n_classes if within_group else 1)
        n_eligible = sum(len(classes) for classes in self.groups)
        if within_group and not self.groups:
            raise ValueError(
                f"no group has {shape.n_classes} classes with >= {needed} images each"
                + (f" ({_describe(shape)})" if shape.n_unknown else "")
            )
        if n_eligible < shape.n_classes:
            raise ValueError(
                f"{_describe(shape)} episodes need {shape.n_classes} classes with >= {needed} "
                f"images each; the data has {n_eligible}"
            )
        sizes = np.array([len(classes) for classes in self.groups], dtype=np.float64)
        self.group_weights = sizes / sizes.sum()

    def _eligible_groups(self, images: LabelledSet, min_size: int) -> list[np.ndarray]:
        by_group: dict[str, list[int]] = {}
        for c in self.class_members:
            key = images.class_groups[c] if self.within_group else ""
            by_group.setdefault(key, []).append(c)
        return [np.array(v) for _, v in sorted(by_group.items()) if len(v) >= min_size]

    def sample(self) -> Episode:
        shape, rng = self.shape, self.rng
        group = self.groups[rng.choice(len(self.groups), p=self.group_weights)]
        classes = rng.choice(group, size=shape.n_way, replace=False)
        support, query = [], []
        for c in classes:
            if self.query_members is None:
                picked = rng.choice(
                    self.class_members[c], size=shape.n_shot + shape.n_query, replace=False
                )
                support.append(picked[: shape.n_shot])
                query.append(picked[shape.n_shot :])
            else:
                support.append(rng.choice(self.class_members[c], size=shape.n_shot, replace=False))
                query.append(rng.choice(self.query_members[c], size=shape.n_query, replace=False))
        episode = Episode(
            support_indices=np.concatenate(support),
            support_labels=np.repeat(classes, shape.n_shot),
            query_indices=np.concatenate(query),
            query_labels=np.repeat(classes, shape.n_query),
        )
        if not shape.n_unknown:
            return episode  # closed-set episodes draw exactly what they always drew
        unknown = rng.choice(np.setdiff1d(group, classes), size=shape.n_unknown, replace=False)
        pool = self.class_members if self.query_members is None else self.query_members
        unknown_indices = [rng.choice(pool[c], size=shape.n_query, replace=False) for c in unknown]
        return replace(
            episode,
            unknown_indices=np.concatenate(unknown_indices),
            unknown_labels=np.repeat(unknown, shape.n_query),
        )

    def __iter__(self) -> Iterator[Episode]:
        while True:
            yield self.sample()


def _members(items: LabelledSet, n_classes: int | None = None) -> list[np.ndarray]:
    """The indices of each class's items, ``n_classes`` (default: the set's) lists."""
    n = items.n_classes if n_classes is None else n_classes
    order = np.argsort(items.labels, kind="stable")
    counts = np.bincount(items.labels, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return [order[starts[c] : starts[c] + counts[c]] for c in range(n)]


def _describe(shape: EpisodeShape) -> str:
    unknown = f" + {shape.n_unknown} unknown" if shape.n_unknown else ""
    return f"{shape.n_way}-way{unknown}"
