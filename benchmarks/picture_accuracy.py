"""Few-shot accuracy on emoji never trained or selected on, across drawing styles (the README's
picture table; a benchmark, not a test).

    python benchmarks/picture_accuracy.py                      # the bundled models, 600 episodes
    python benchmarks/picture_accuracy.py --episodes 100       # quicker, wider intervals
    python benchmarks/picture_accuracy.py --smoke              # 5 episodes, 20 emoji (tests)

Classes: the emoji of the test subcategories (training/emoji.py: whole subcategories held out,
never trained, validated or selected on). An emoji's drawings are by different vendors, so every
episode's queries are drawn in styles its support is not. Three encoders side by side over the
same episodes (same seed):

- the picture model: the meta-learned head over the frozen ImageNet MobileNetV2;
- the frozen base alone: plain prototypes over MobileNetV2's 1280-d pooled features;
- the Omniglot Conv-4 (the bundled pen-stroke model), on the same pictures in its own input.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import smoke  # noqa: E402
from protonet.checkpoint import Checkpoint, load_checkpoint  # noqa: E402
from protonet.mobilenet import ImageBaseSpec  # noqa: E402
from protonet.preprocessing import to_pixels  # noqa: E402
from protonet.text import embed_base  # noqa: E402
from training.emoji import load_emoji, split_emoji  # noqa: E402
from training.episodes import EpisodeShape  # noqa: E402
from training.evaluate import EvaluationResult, embed_imageset, evaluate  # noqa: E402
from training.imageset import ImageSet  # noqa: E402
from training.picture_trainer import base_features  # noqa: E402

SETTINGS = ((5, 1), (5, 5), (20, 1))
QUERIES = 1  # one query drawing per class and episode: emoji have 2 to 14 drawings each
# --smoke: the first 20 emoji of the test subcategories (20-way episodes need 20), drawn by the
# two PNG vendors and 4 Iconify sets (5-shot episodes need 6 drawings).
SAMPLE, ICON_SETS = 20, ("emojione", "fluent-emoji-flat", "noto", "twemoji")


def test_classes(data: Path, pictures: Checkpoint, cache: Path | None) -> ImageSet:
    images = load_emoji(data, pictures.input_spec, cache_dir=cache, progress=False)
    return split_emoji(images, "test")


def picture_embeddings(
    images: ImageSet, pictures: Checkpoint, cache: Path | None
) -> dict[str, torch.Tensor]:
    """The head's and the frozen base's embeddings of the test pictures."""
    base = pictures.image_base or ImageBaseSpec()
    features = base_features(images, pictures.input_spec, base, cache, progress=True)
    head = pictures.build_encoder().head  # type: ignore[union-attr]
    return {"picture model": embed_base(head, features), "frozen base": features}


def pen_stroke_embeddings(images: ImageSet, model: Checkpoint) -> torch.Tensor:
    """The pen-stroke model's embeddings of the same pictures, through its own preprocessing
    (grey, 28 px, inverted) from the pictures' stage-1 pixels."""
    pixels = np.stack([to_pixels(picture, model.input_spec) for picture in images.pixels])
    return embed_imageset(model.build_encoder(), replace(images, pixels=pixels), model.input_spec)


def table(
    images: ImageSet, embeddings: dict[str, torch.Tensor], episodes: int
) -> list[tuple[EpisodeShape, dict[str, EvaluationResult]]]:
    rows = []
    for way, shot in SETTINGS:
        shape = EpisodeShape(way, shot, QUERIES)
        rows.append(
            (shape, {name: evaluate(e, images, shape, episodes) for name, e in embeddings.items()})
        )
    return rows


def markdown(rows: list[tuple[EpisodeShape, dict[str, EvaluationResult]]]) -> str:
    names = list(rows[0][1])
    lines = [
        "| setting | " + " | ".join(f"{name} (%)" for name in names) + " | head - base (points) |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for shape, results in rows:
        cells = [f"{100 * r.accuracy:.2f} ± {100 * r.ci95:.2f}" for r in results.values()]
        gain = 100 * (results["picture model"].accuracy - results["frozen base"].accuracy)
        lines.append(
            f"| {shape.n_way}-way {shape.n_shot}-shot | " + " | ".join(cells) + f" | {gain:+.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "emoji")
    parser.add_argument(
        "--pictures", type=Path, default=ROOT / "models" / "pictures-mobilenetv2.pt"
    )
    parser.add_argument("--omniglot", type=Path, default=ROOT / "models" / "omniglot-conv4.pt")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = smoke.parse_args(parser, {"episodes": 5}, argv)
    pictures, pen = load_checkpoint(args.pictures), load_checkpoint(args.omniglot)
    with smoke.emoji(args.data, args.smoke, SAMPLE, ICON_SETS) as data:
        images = test_classes(data, pictures, args.cache_dir)
    embeddings = picture_embeddings(images, pictures, args.cache_dir)
    embeddings["Omniglot Conv-4"] = pen_stroke_embeddings(images, pen)
    groups = len(set(images.class_groups))
    print(f"{images.n_classes} emoji of {groups} test subcategories, {len(images.labels)} drawings")
    print(f"{args.episodes} episodes per cell, {QUERIES} query per class, seed 0")
    print(markdown(table(images, embeddings, args.episodes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
