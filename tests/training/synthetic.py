"""Small synthetic few-shot data: each class is a random stroke pattern, drawn with jitter."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def class_template(rng: np.random.Generator, n_strokes: int = 3) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in rng.integers(10, 95, size=4)) for _ in range(n_strokes)]


Ink = int | tuple[int, int, int]


def draw(
    template: list[tuple[int, ...]], rng: np.random.Generator, size: int = 105, ink: Ink = 0
) -> Image.Image:
    """Strokes (black, or ``ink``: an RGB colour) on white, shifted and thickened at random:
    same class, new drawing."""
    colour = isinstance(ink, tuple)
    image = Image.new("RGB" if colour else "L", (size, size), (255, 255, 255) if colour else 255)
    pen = ImageDraw.Draw(image)
    dx, dy = rng.integers(-8, 9, size=2)
    for x0, y0, x1, y1 in template:
        jitter = rng.integers(-5, 6, size=4)
        pen.line(
            (x0 + dx + jitter[0], y0 + dy + jitter[1], x1 + dx + jitter[2], y1 + dy + jitter[3]),
            fill=ink,
            width=int(rng.integers(4, 9)),
        )
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def truncated_png(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` and whose pixel data stops after a few
    bytes: only a check of the header can refuse it for its size (decoding it would fail)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    ihdr = struct.pack(">I", len(header)) + b"IHDR" + header
    ihdr += struct.pack(">I", zlib.crc32(b"IHDR" + header))
    idat = struct.pack(">I", 1000) + b"IDAT" + b"\x78\x9c"  # says 1000 bytes, holds 2
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat


def write_folder_dataset(
    root: Path, n_classes: int, per_class: int, seed: int = 0, colour: bool = False
) -> Path:
    """``root/<class>/<i>.png`` with ``n_classes`` synthetic classes; with ``colour``, RGB
    images whose strokes have a colour of their class."""
    rng = np.random.default_rng(seed)
    for c in range(n_classes):
        template = class_template(rng)
        ink: Ink = 0
        if colour:  # drawn only here, so grey datasets stay as they were for a seed
            red, green, blue = (int(v) for v in rng.integers(0, 200, size=3))
            ink = (red, green, blue)
        folder = root / f"class_{c:03d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            draw(template, rng, ink=ink).save(folder / f"{i:02d}.png")
    return root


def write_omniglot_zip(
    path: Path, subset: str, alphabets: dict[str, int], per_character: int = 4, seed: int = 0
) -> Path:
    """A tiny zip in the canonical Omniglot layout:
    ``images_<subset>/<Alphabet>/characterNN/<id>_<drawer>.png``."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"images_{subset}/", b"")
        for alphabet, n_characters in alphabets.items():
            for c in range(1, n_characters + 1):
                template = class_template(rng)
                for d in range(1, per_character + 1):
                    name = f"images_{subset}/{alphabet}/character{c:02d}/{c:04d}_{d:02d}.png"
                    archive.writestr(name, png_bytes(draw(template, rng).convert("1")))
    return path
