"""The one episode sampler: seeded N-way K-shot Q-query episodes, optionally within a group."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from training.imageset import ImageSet


@dataclass(frozen=True)
class EpisodeShape:
    n_way: int
    n_shot: int
    n_query: int

    def __post_init__(self) -> None:
        if min(self.n_way, self.n_shot, self.n_query) < 1:
            raise ValueError(f"way, shot and query must all be >= 1, got {self}")


@dataclass(frozen=True)
class Episode:
    """Indices into an :class:`ImageSet`, and the class label of each.

    ``support_indices``/``support_labels``: ``[n_way * n_shot]``; ``query_*``:
    ``[n_way * n_query]``. Labels are the image set's class indices (not 0..n_way-1).
    """

    support_indices: np.ndarray
    support_labels: np.ndarray
    query_indices: np.ndarray
    query_labels: np.ndarray


class EpisodeSampler:
    """Draws episodes from the classes that have at least ``n_shot + n_query`` images.

    With ``within_group`` every class of an episode comes from one group (one Omniglot
    alphabet: the harder protocol, as look-alike characters compete). Groups are drawn in
    proportion to their number of eligible classes, so every class is about equally likely.
    """

    def __init__(
        self,
        images: ImageSet,
        shape: EpisodeShape,
        seed: int | list[int] = 0,
        within_group: bool = False,
    ) -> None:
        self.shape = shape
        self.within_group = within_group
        self.rng = np.random.default_rng(seed)
        order = np.argsort(images.labels, kind="stable")
        counts = np.bincount(images.labels, minlength=images.n_classes)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        needed = shape.n_shot + shape.n_query
        self.class_members = {
            c: order[starts[c] : starts[c] + counts[c]]
            for c in range(images.n_classes)
            if counts[c] >= needed
        }
        self.groups = self._eligible_groups(images, shape.n_way if within_group else 1)
        n_eligible = sum(len(classes) for classes in self.groups)
        if within_group and not self.groups:
            raise ValueError(f"no group has {shape.n_way} classes with >= {needed} images each")
        if n_eligible < shape.n_way:
            raise ValueError(
                f"{shape.n_way}-way episodes need {shape.n_way} classes with >= {needed} images "
                f"each; the data has {n_eligible}"
            )
        sizes = np.array([len(classes) for classes in self.groups], dtype=np.float64)
        self.group_weights = sizes / sizes.sum()

    def _eligible_groups(self, images: ImageSet, min_size: int) -> list[np.ndarray]:
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
            picked = rng.choice(
                self.class_members[c], size=shape.n_shot + shape.n_query, replace=False
            )
            support.append(picked[: shape.n_shot])
            query.append(picked[shape.n_shot :])
        return Episode(
            support_indices=np.concatenate(support),
            support_labels=np.repeat(classes, shape.n_shot),
            query_indices=np.concatenate(query),
            query_labels=np.repeat(classes, shape.n_query),
        )

    def __iter__(self) -> Iterator[Episode]:
        while True:
            yield self.sample()
