"""In-memory labelled image sets: the one shape every data source is turned into."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ROTATIONS = (0, 90, 180, 270)


def select_labels(
    labels: np.ndarray, class_names: Sequence[str], names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Selecting the classes ``names`` (in that order) from items labelled ``labels [n]``:
    ``(keep [n] bool, the kept items' new labels 0..len(names)-1, the classes' old ids)``."""
    index_of = {name: i for i, name in enumerate(class_names)}
    missing = [name for name in names if name not in index_of]
    if missing:
        raise KeyError(f"{len(missing)} classes not in the data, e.g. {missing[:3]}")
    old_ids = np.array([index_of[name] for name in names], dtype=np.int64)
    remap = np.full(len(class_names), -1, dtype=np.int64)
    remap[old_ids] = np.arange(len(names))
    keep = remap[labels] >= 0
    return keep, remap[labels[keep]], old_ids


@dataclass(frozen=True)
class ImageSet:
    """Preprocessed (stage-1, ``uint8``) images with a class per image.

    Attributes:
        pixels: ``[n_images, H, W]`` (or ``[n_images, H, W, C]``) uint8, from ``to_pixels``.
        labels: ``[n_images]`` int64 index into ``class_names``.
        class_names: one name per class, e.g. ``"Latin/character01/rot090"``.
        class_groups: one group per class (the alphabet for Omniglot), for within-group
            episodes; a folder dataset uses a single group.
    """

    pixels: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    class_groups: list[str]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def select_classes(self, names: Sequence[str]) -> ImageSet:
        """The classes named, in that order, relabelled 0..len(names)-1."""
        keep, labels, old_ids = select_labels(self.labels, self.class_names, names)
        return ImageSet(
            pixels=self.pixels[keep],
            labels=labels,
            class_names=list(names),
            class_groups=[self.class_groups[i] for i in old_ids],
        )

    def select_groups(self, groups: Sequence[str]) -> ImageSet:
        wanted = set(groups)
        return self.select_classes(
            [n for n, g in zip(self.class_names, self.class_groups, strict=True) if g in wanted]
        )

    def with_rotations(self, rotations: Sequence[int] = ROTATIONS) -> ImageSet:
        """Each class at each rotation becomes its own class, ``name/rotDDD`` (Vinyals et al.).

        Rotation is counter-clockwise, as PIL's ``Image.rotate`` in the reference code.
        """
        pixels, labels, names, groups = [], [], [], []
        for r, degrees in enumerate(rotations):
            pixels.append(np.rot90(self.pixels, k=degrees // 90, axes=(1, 2)))
            labels.append(self.labels * len(rotations) + r)
        for name, group in zip(self.class_names, self.class_groups, strict=True):
            for degrees in rotations:
                names.append(f"{name}/rot{degrees:03d}")
                groups.append(group)
        return ImageSet(
            pixels=np.ascontiguousarray(np.concatenate(pixels)),
            labels=np.concatenate(labels),
            class_names=names,
            class_groups=groups,
        )


def concatenate(sets: Sequence[ImageSet]) -> ImageSet:
    """One set holding all classes of ``sets`` (class names must be distinct)."""
    offsets = np.cumsum([0] + [s.n_classes for s in sets[:-1]])
    return ImageSet(
        pixels=np.concatenate([s.pixels for s in sets]),
        labels=np.concatenate([s.labels + o for s, o in zip(sets, offsets, strict=True)]),
        class_names=[n for s in sets for n in s.class_names],
        class_groups=[g for s in sets for g in s.class_groups],
    )
