"""Draw the quickstart's sample images (examples/images/*.png): two made-up symbols, a few
drawings of each, as a person would draw them on a 105x105 canvas (Omniglot's size).

    .venv/bin/python examples/make_images.py     # rewrites examples/images/*.png

The PNGs are committed, so the docs run without this; it exists so that they can be remade and
so that nothing in them comes from a dataset.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 105
OUT = Path(__file__).resolve().parent / "images"


def ring(rng: random.Random) -> list[list[tuple[float, float]]]:
    """An open ring with a tail: one stroke."""
    cx, cy, r = 52 + rng.uniform(-4, 4), 48 + rng.uniform(-4, 4), 26 + rng.uniform(-3, 3)
    start = rng.uniform(-0.3, 0.3)
    points = [
        (cx + r * math.cos(start + t / 40 * 5.5), cy + r * math.sin(start + t / 40 * 5.5))
        for t in range(41)
    ]
    tail = (points[-1][0] + rng.uniform(-2, 2), points[-1][1] + 30 + rng.uniform(-3, 3))
    return [[*points, tail]]


def fork(rng: random.Random) -> list[list[tuple[float, float]]]:
    """A vertical bar with two branches: three strokes."""

    def jitter(x: float, y: float) -> tuple[float, float]:
        return (x + rng.uniform(-3, 3), y + rng.uniform(-3, 3))

    stem = [jitter(52, 88), jitter(52, 40)]
    return [stem, [stem[1], jitter(28, 18)], [stem[1], jitter(76, 18)]]


def draw(strokes: list[list[tuple[float, float]]]) -> Image.Image:
    image = Image.new("L", (SIZE, SIZE), 255)
    pen = ImageDraw.Draw(image)
    for stroke in strokes:
        pen.line(stroke, fill=0, width=4, joint="curve")
    return image


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, shape in (("ring", ring), ("fork", fork)):
        for number in (1, 2, 3):
            rng = random.Random(f"{name}-{number}")
            draw(shape(rng)).save(OUT / f"{name}{number}.png", optimize=True)


if __name__ == "__main__":
    main()
