"""Emoji drawn by many vendors: one class per emoji, one image per vendor's style.

The folder (``../shared/data/emoji``, described in its README.md) holds two styles as PNG files
(``google/``, ``twitter/``: ``<code points>.png``) and twelve more as the npm tarballs of
Iconify's emoji sets (``iconify/*.tgz``: SVG bodies keyed by name, ``chars.json`` from code
points to names), rasterised here with resvg (the ``resvg-py`` wheel, no system library).

An emoji's images are the same thing drawn differently, so any two of them are a cross-style
pair: episodes drawn by the one sampler put different vendors' drawings in support and
queries. Skin-tone variants are left out (their base emoji is the class: variants would give
one vendor several drawings of one class), and so are code points no catalogue entry names.
Classes are grouped by the catalogue's subcategory (``face-smiling``, ``animal-mammal``, ...):
splits hold out whole subcategories.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from protonet.files import file_hexdigest
from protonet.preprocessing import InputSpec, to_pixels
from training.cache import cached_imageset, default_cache_dir
from training.checks import ClassSet
from training.imageset import ImageSet

PNG_STYLES = ("google", "twitter")
SKIN_TONES = {"1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff"}
VARIATION_SELECTOR = "fe0f"  # present or not in a code, depending on the vendor
RENDER_SIZE = 128  # SVGs are drawn at this size; to_pixels then fits the model's input
CACHE_SCHEMA = 1


def emoji_key(code: str) -> str:
    """A vendor-independent key for code points ``1F468-200D-1F4BB`` / ``1f468-200d-1f4bb``."""
    points = [p for p in code.lower().split("-") if p != VARIATION_SELECTOR]
    return "-".join(points)


def has_skin_tone(key: str) -> bool:
    return any(point in SKIN_TONES for point in key.split("-"))


@dataclass(frozen=True)
class EmojiClass:
    key: str
    name: str  # the catalogue's short name, e.g. "grinning"
    subcategory: str


def read_catalogue(root: Path) -> dict[str, EmojiClass]:
    """``key -> EmojiClass`` for every emoji of ``emoji.json`` (skin tones excluded)."""
    entries = json.loads((root / "emoji.json").read_text())
    catalogue = {}
    for entry in entries:
        key = emoji_key(entry["unified"])
        if not has_skin_tone(key):
            catalogue[key] = EmojiClass(key, entry["short_name"], entry["subcategory"])
    return catalogue


def png_style(folder: Path) -> dict[str, bytes]:
    """``key -> PNG bytes`` of one vendor's folder."""
    return {emoji_key(path.stem): path.read_bytes() for path in sorted(folder.glob("*.png"))}


def _svg(icon: dict, default_size: tuple[int, int]) -> str:
    width, height = icon.get("width", default_size[0]), icon.get("height", default_size[1])
    left, top = icon.get("left", 0), icon.get("top", 0)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'viewBox="{left} {top} {width} {height}" width="{width}" height="{height}">'
        f"{icon['body']}</svg>"
    )


def _tar_json(archive: tarfile.TarFile, name: str) -> dict:
    member = archive.extractfile(f"package/{name}")
    if member is None:
        raise ValueError(f"package/{name} in an Iconify tarball is not a file")
    values: dict = json.load(member)
    return values


def _read_set(tarball: Path) -> tuple[dict, dict[str, str]]:
    """An Iconify set's ``icons.json`` and its ``chars.json`` (code points -> icon name;
    empty where the set has none)."""
    with tarfile.open(tarball) as archive:
        icons = _tar_json(archive, "icons.json")
        try:
            chars = _tar_json(archive, "chars.json")
        except KeyError:
            chars = {}
    return icons, chars


def name_index(tarballs: list[Path]) -> dict[str, str]:
    """``icon name -> key`` from every set's ``chars.json``: sets without one name their icons
    as the others do (``grinning-face``), so they join through these names."""
    index: dict[str, str] = {}
    for tarball in tarballs:
        for code, name in _read_set(tarball)[1].items():
            index.setdefault(name, emoji_key(code))
    return index


def iconify_style(tarball: Path, names: dict[str, str]) -> dict[str, str]:
    """``key -> SVG text`` of one Iconify emoji set (an ``npm pack`` tarball); icons are
    joined to code points by the set's ``chars.json``, else by ``names`` (:func:`name_index`)."""
    icons, chars = _read_set(tarball)
    size = (icons.get("width", 16), icons.get("height", 16))
    aliases = icons.get("aliases", {})
    by_key = {emoji_key(code): name for code, name in chars.items()} or {
        key: name for name in [*icons["icons"], *aliases] if (key := names.get(name)) is not None
    }
    svgs = {}
    for key, name in by_key.items():
        while name not in icons["icons"] and name in aliases:
            name = aliases[name]["parent"]
        if name in icons["icons"]:
            svgs[key] = _svg(icons["icons"][name], size)
    return svgs


def render_svg(svg: str, size: int = RENDER_SIZE) -> bytes:
    """PNG bytes of ``svg`` drawn ``size`` pixels wide and high (transparent background)."""
    import resvg_py  # the trainer's extra; only emoji sets need it

    return bytes(resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size))


def style_names(root: Path) -> list[str]:
    """Every style in ``root``: the PNG vendors, then each Iconify set by its tarball name."""
    tarballs = sorted((root / "iconify").glob("*.tgz"))
    return [s for s in PNG_STYLES if (root / s).is_dir()] + [t.name for t in tarballs]


def _style_images(root: Path, style: str, names: dict[str, str]) -> dict[str, bytes | str]:
    if style in PNG_STYLES:
        return dict(png_style(root / style))
    return dict(iconify_style(root / "iconify" / style, names))


def _read_emoji(root: Path, spec: InputSpec, min_styles: int, progress: bool) -> ImageSet:
    catalogue = read_catalogue(root)
    names = name_index(sorted((root / "iconify").glob("*.tgz")))
    drawings: dict[str, list[np.ndarray]] = {key: [] for key in catalogue}
    for style in tqdm(style_names(root), desc="emoji styles", unit="style", disable=not progress):
        for key, image in _style_images(root, style, names).items():
            if key in drawings:
                png = render_svg(image) if isinstance(image, str) else image
                drawings[key].append(to_pixels(png, spec))
    kept = [key for key, images in drawings.items() if len(images) >= min_styles]
    if not kept:
        raise ValueError(f"{root}: no emoji is drawn in {min_styles} styles")
    return ImageSet(
        pixels=np.stack([image for key in kept for image in drawings[key]]),
        labels=np.repeat(np.arange(len(kept)), [len(drawings[key]) for key in kept]),
        class_names=[f"{catalogue[key].name} ({key})" for key in kept],
        class_groups=[catalogue[key].subcategory for key in kept],
    )


def load_emoji(
    root: Path,
    spec: InputSpec,
    min_styles: int = 2,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> ImageSet:
    """Every emoji drawn in at least ``min_styles`` styles, as an :class:`ImageSet` whose
    groups are subcategories (cached: rasterising the SVG sets takes a minute or two)."""
    root = Path(root)
    if not (root / "emoji.json").is_file():
        raise FileNotFoundError(f"{root}: no emoji.json (expected the emoji folder's layout)")
    key = hashlib.sha256(
        f"{emoji_fingerprint(root)}|{sorted(spec.to_dict().items())}|{min_styles}|{CACHE_SCHEMA}".encode()
    ).hexdigest()
    path = (cache_dir or default_cache_dir()) / f"emoji-{key[:20]}.npz"
    return cached_imageset(path, lambda: _read_emoji(root, spec, min_styles, progress))


def emoji_fingerprint(root: Path) -> str:
    """The folder's content, cheaply: each style's file sizes and the catalogue's hash (what
    the image cache is keyed by, and what a checkpoint records as its data)."""
    listing = "|".join(f"{s}:{_size(root, s)}" for s in style_names(root))
    catalogue = file_hexdigest(root / "emoji.json")
    return f"emoji:{hashlib.sha256(f'{listing}|{catalogue}'.encode()).hexdigest()[:24]}"


def _size(root: Path, style: str) -> int:
    folder = root / style
    if folder.is_dir():
        return sum(p.stat().st_size for p in folder.glob("*.png"))
    return (root / "iconify" / style).stat().st_size


# Whole subcategories held out, by a hash of their name: fixed, recorded here, and independent
# of which emoji a future catalogue adds. About 70% train, 10% validation, 20% test.
SPLIT_BUCKETS = {"train": range(0, 7), "val": range(7, 8), "test": range(8, 10)}


def subcategory_split(subcategory: str) -> str:
    """``train``, ``val`` or ``test``: where every emoji of ``subcategory`` belongs."""
    bucket = int(hashlib.sha256(subcategory.encode()).hexdigest(), 16) % 10
    return next(split for split, buckets in SPLIT_BUCKETS.items() if bucket in buckets)


def is_emoji_dir(path: Path) -> bool:
    """Whether ``path`` has the emoji data's layout (its catalogue, ``emoji.json``)."""
    return (Path(path) / "emoji.json").is_file()


def load_emoji_split(
    root: Path, spec: InputSpec, split: str, progress: bool = False
) -> ClassSet[ImageSet]:
    """The emoji of ``split``'s subcategories, as evaluation and calibration take them."""
    images = split_emoji(load_emoji(root, spec, progress=progress), split)
    groups = len(set(images.class_groups))
    origin = f"the emoji of the {groups} {split} subcategories (training/emoji.py)"
    return ClassSet(images, f"the emoji {split} split", origin)


def split_emoji(images: ImageSet, split: str) -> ImageSet:
    """The classes of ``images`` whose subcategory belongs to ``split``."""
    if split not in SPLIT_BUCKETS:
        raise ValueError(f"split must be one of {sorted(SPLIT_BUCKETS)}, not {split!r}")
    groups = sorted({g for g in images.class_groups if subcategory_split(g) == split})
    return images.select_groups(groups)
