"""On-disk caches: decoded image sets (uint8 arrays in one ``.npz``), and tensors such as
frozen base text embeddings (one ``.pt``, read back with ``weights_only``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from training.imageset import ImageSet


def default_cache_dir() -> Path:
    """``$PROTONET_CACHE_DIR``, else ``~/.cache/protonet``."""
    return Path(os.environ.get("PROTONET_CACHE_DIR", Path.home() / ".cache" / "protonet"))


def cached_imageset(path: Path, build: Callable[[], ImageSet]) -> ImageSet:
    """Load ``path`` if present, else ``build()`` and save it there (atomically)."""
    if path.is_file():
        with np.load(path) as cached:
            return ImageSet(
                pixels=cached["pixels"],
                labels=cached["labels"],
                class_names=[str(n) for n in cached["class_names"]],
                class_groups=[str(g) for g in cached["class_groups"]],
            )
    images = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    np.savez(
        temp,
        pixels=images.pixels,
        labels=images.labels,
        class_names=np.array(images.class_names),
        class_groups=np.array(images.class_groups),
    )
    temp.replace(path)
    return images


def cached_tensor(path: Path, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Load ``path`` if present, else ``build()`` and save it there (atomically)."""
    if path.is_file():
        return torch.load(path, weights_only=True)
    tensor = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.stem}.{os.getpid()}.pt")
    torch.save(tensor, temp)
    temp.replace(path)
    return tensor
