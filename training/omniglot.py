"""Omniglot from the public zips: reading, caching, and the standard splits.

The zips (``images_background.zip``, ``images_evaluation.zip``) are read directly; every PNG
goes through the core's ``to_pixels`` once, and the result is cached as a uint8 array keyed
by a hash of the zip and the input spec, so later runs load in well under a second.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from protonet.files import file_hexdigest
from protonet.preprocessing import InputSpec, to_pixels
from training.cache import cached_imageset, default_cache_dir
from training.imageset import ImageSet, concatenate

SUBSETS = ("background", "evaluation")
# Bumped whenever the cached content would change for the same zip and spec.
CACHE_SCHEMA = 1
# Held-out background alphabets: the bundled model's validation set (model selection never
# touches images_evaluation). Five of thirty, spread over the alphabetical list.
LAKE_VALIDATION_ALPHABETS = (
    "Bengali",
    "Futurama",
    "Japanese_(katakana)",
    "Mkhedruli_(Georgian)",
    "Tifinagh",
)
# lake-validation: the held-out alphabets above (the bundled model's validation classes), for
# choices made after training (open-set scores, rejection thresholds) on classes never trained on.
LAKE_VALIDATION = "lake-validation"
EVALUATION_SPLITS = (
    "vinyals-train",
    "vinyals-val",
    "vinyals-test",
    "background",
    "evaluation",
    LAKE_VALIDATION,
)


def zip_path(data_dir: Path, subset: str) -> Path:
    return Path(data_dir) / f"images_{subset}.zip"


def is_omniglot_dir(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds an Omniglot zip (else: a folder of class folders)."""
    return any(zip_path(data_dir, subset).is_file() for subset in SUBSETS)


def _character_members(archive: zipfile.ZipFile) -> dict[str, list[str]]:
    """``"Alphabet/characterNN" -> [png member names, sorted]`` from the canonical layout."""
    characters: dict[str, list[str]] = {}
    for member in archive.namelist():
        parts = member.split("/")
        if len(parts) == 4 and parts[3].lower().endswith(".png"):
            characters.setdefault(f"{parts[1]}/{parts[2]}", []).append(member)
    if not characters:
        raise ValueError(
            f"{archive.filename}: no images in the layout "
            "images_<subset>/<Alphabet>/<character>/*.png"
        )
    return {name: sorted(members) for name, members in sorted(characters.items())}


def read_zip(path: Path, spec: InputSpec, progress: bool = True) -> ImageSet:
    """Decode every drawing of an Omniglot zip: an :class:`ImageSet`, a class per character."""
    pixels, labels, names = [], [], []
    with zipfile.ZipFile(path) as archive:
        characters = _character_members(archive)
        bar = tqdm(
            total=sum(map(len, characters.values())),
            desc=f"decoding {path.name}",
            unit="img",
            disable=not progress,
            leave=False,
        )
        for class_index, (name, members) in enumerate(characters.items()):
            for member in members:
                with Image.open(io.BytesIO(archive.read(member))) as image:
                    pixels.append(to_pixels(image, spec))
                labels.append(class_index)
            names.append(name)
            bar.update(len(members))
        bar.close()
    return ImageSet(
        pixels=np.stack(pixels),
        labels=np.array(labels, dtype=np.int64),
        class_names=names,
        class_groups=[name.split("/")[0] for name in names],
    )


def load_subset(
    data_dir: Path,
    subset: str,
    spec: InputSpec,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> ImageSet:
    """One Omniglot zip as an :class:`ImageSet`, through the on-disk cache."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown Omniglot subset {subset!r}; choose from {SUBSETS}")
    path = zip_path(data_dir, subset)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; run `python -m training data omniglot --dest {data_dir}`"
        )
    key = hashlib.sha256(
        f"{file_hexdigest(path)}|{sorted(spec.to_dict().items())}|{CACHE_SCHEMA}".encode()
    ).hexdigest()[:20]
    cache_file = (cache_dir or default_cache_dir()) / f"omniglot-{subset}-{key}.npz"
    return cached_imageset(cache_file, lambda: read_zip(path, spec, progress))


def read_split_file(data_dir: Path, name: str) -> list[str]:
    """Class names (``Alphabet/characterNN/rotDDD``) of a Vinyals split file."""
    path = Path(data_dir) / "splits" / "vinyals" / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found (the Vinyals split files belong beside the zips)"
        )
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def data_fingerprint(data_dir: Path, subsets: Sequence[str], split: str) -> str:
    """Identifies exactly which data a model saw: zip hashes plus the split's name."""
    digest = hashlib.sha256(split.encode())
    for subset in subsets:
        digest.update(file_hexdigest(zip_path(data_dir, subset)).encode())
    return f"sha256:{digest.hexdigest()[:24]}"


def load_split(
    data_dir: Path,
    split: str,
    spec: InputSpec,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> ImageSet:
    """Classes of a named evaluation/training split (see :data:`EVALUATION_SPLITS`).

    ``vinyals-*`` classes include rotations (as listed in the split files); ``background``
    and ``evaluation`` are the plain characters of each zip, with no rotation classes;
    ``lake-validation`` the lake split's held-out background alphabets, unrotated.
    """
    if split in SUBSETS:
        return load_subset(data_dir, split, spec, cache_dir, progress)
    if split == LAKE_VALIDATION:
        background = load_subset(data_dir, "background", spec, cache_dir, progress)
        return background.select_groups(LAKE_VALIDATION_ALPHABETS)
    if split.startswith("vinyals-"):
        everything = concatenate(
            [load_subset(data_dir, s, spec, cache_dir, progress) for s in SUBSETS]
        ).with_rotations()
        return everything.select_classes(read_split_file(data_dir, split.removeprefix("vinyals-")))
    raise ValueError(f"unknown Omniglot split {split!r}; choose from {EVALUATION_SPLITS}")


def lake_train_val(
    data_dir: Path, spec: InputSpec, cache_dir: Path | None = None, progress: bool = True
) -> tuple[ImageSet, ImageSet]:
    """Train on background alphabets (with rotation classes); validate on held-out ones.

    ``images_evaluation`` is never read here: it is for final evaluation only.
    """
    background = load_subset(data_dir, "background", spec, cache_dir, progress)
    train_alphabets = sorted(set(background.class_groups) - set(LAKE_VALIDATION_ALPHABETS))
    train = background.select_groups(train_alphabets).with_rotations()
    validation = background.select_groups(LAKE_VALIDATION_ALPHABETS)
    return train, validation
