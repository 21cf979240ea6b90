"""A user's own images: ``ROOT/<class name>/<image file>``, any format Pillow reads."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from protonet.errors import InvalidInputError
from protonet.preprocessing import InputSpec, to_pixels
from training.cache import cached_imageset, default_cache_dir
from training.imageset import ImageSet

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def list_folder(root: Path) -> dict[str, list[Path]]:
    """``class name -> sorted image paths`` for every sub-folder of ``root`` holding images."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    classes = {
        folder.name: sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for folder in sorted(root.iterdir())
        if folder.is_dir()
    }
    classes = {name: paths for name, paths in classes.items() if paths}
    if not classes:
        raise ValueError(f"{root}: expected ROOT/<class>/<image files>, found no images")
    return classes


def holds_class_folders(root: Path) -> bool:
    """Whether ``root`` is ``ROOT/<class>/<image files>`` (a user's own images)."""
    try:
        list_folder(root)
    except (OSError, ValueError):
        return False
    return True


def folder_fingerprint(classes: dict[str, list[Path]]) -> str:
    digest = hashlib.sha256()
    for name, paths in classes.items():
        for path in paths:
            stat = path.stat()
            digest.update(f"{name}/{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return f"sha256:{digest.hexdigest()[:24]}"


def _read_folder(classes: dict[str, list[Path]], spec: InputSpec, progress: bool) -> ImageSet:
    pixels: list[np.ndarray] = []
    labels: list[int] = []
    names: list[str] = []
    total = sum(map(len, classes.values()))
    with tqdm(total=total, desc="decoding images", unit="img", disable=not progress) as bar:
        for name, paths in classes.items():
            for path in paths:
                try:
                    pixels.append(to_pixels(path.read_bytes(), spec))
                    labels.append(len(names))
                except InvalidInputError as error:
                    warnings.warn(f"skipping {path}: {error}", stacklevel=2)
                bar.update()
            names.append(name)
    if not pixels:
        raise ValueError("no readable images")
    return ImageSet(
        pixels=np.stack(pixels),
        labels=np.array(labels, dtype=np.int64),
        class_names=names,
        class_groups=[""] * len(names),
    )


def load_folder(
    root: Path, spec: InputSpec, cache_dir: Path | None = None, progress: bool = True
) -> tuple[ImageSet, str]:
    """The folder as an :class:`ImageSet` (cached) and its data fingerprint."""
    classes = list_folder(root)
    fingerprint = folder_fingerprint(classes)
    key = hashlib.sha256(f"{fingerprint}|{sorted(spec.to_dict().items())}".encode()).hexdigest()
    path = (cache_dir or default_cache_dir()) / f"folder-{key[:20]}.npz"
    return cached_imageset(path, lambda: _read_folder(classes, spec, progress)), fingerprint


def split_classes(images: ImageSet, val_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Disjoint train/validation classes, chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(images.n_classes)
    n_val = max(1, round(images.n_classes * val_fraction))
    if images.n_classes - n_val < 2:
        raise ValueError(
            f"the data has {images.n_classes} classes: --val-fraction {val_fraction:g} holds out "
            f"{n_val} for validation and leaves {images.n_classes - n_val} for training, which "
            "needs at least 2"
        )
    names = images.class_names
    return (
        images.select_classes([names[i] for i in sorted(order[n_val:])]),
        images.select_classes([names[i] for i in sorted(order[:n_val])]),
    )
