"""Compare post-hoc unknown-ness scores on open-set episodes (a benchmark, not a test).

    python benchmarks/open_set_scores.py                 # validation alphabets: the choice
    python benchmarks/open_set_scores.py --final         # + images_evaluation, reported only
    python benchmarks/open_set_scores.py --smoke         # 2 episodes on 40 characters (tests)

Every candidate is a function of the ``[Q, C]`` squared distances to the prototypes and the
``[C]`` shot counts only (what the service has). The choice is made on the lake split's
held-out background alphabets (``--split lake-validation``), within-alphabet episodes first
(look-alike unknowns: the hard case); images_evaluation is only reported, with ``--final``,
for the baseline and the best challenger. The bundled model; 500 episodes (300 with
``--final``), 15 queries per class, as many unknown classes as known ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import smoke  # noqa: E402
from protonet.checkpoint import load_checkpoint  # noqa: E402
from protonet.open_set import DEFAULT_SCORE, SCORES, ScoreFunction  # noqa: E402
from training import omniglot  # noqa: E402
from training.episodes import EpisodeShape  # noqa: E402
from training.evaluate import embed_imageset, evaluate_open_set  # noqa: E402
from training.imageset import ImageSet  # noqa: E402

SETTINGS = [(5, 1), (5, 5), (20, 1)]
# --smoke: 40 characters of a held-out background alphabet (20-way within-alphabet open-set
# episodes need 2 x 20) and of an images_evaluation one (--final).
SAMPLE = {"Bengali": 40, "Oriya": 40}


def _sorted(d: torch.Tensor) -> torch.Tensor:
    return d.sort(dim=1).values


def _softmax_score(temperature: float) -> ScoreFunction:
    return lambda d, s: -torch.softmax(-d / temperature, dim=1).max(dim=1).values


def _relative(power: float) -> ScoreFunction:
    return lambda d, s: d.min(dim=1).values / d.mean(dim=1) ** power


# Higher = more likely unknown. The margin/ratio/softmax/mean-relative families need >= 2 classes.
CANDIDATES: dict[str, ScoreFunction] = {
    "margin d1 - d2": lambda d, s: _sorted(d)[:, 0] - _sorted(d)[:, 1],
    "ratio d1 / d2": lambda d, s: _sorted(d)[:, 0] / _sorted(d)[:, 1],
    "d1 / d2^0.25": lambda d, s: _sorted(d)[:, 0] / _sorted(d)[:, 1] ** 0.25,
    "d1 - 0.1 d2": lambda d, s: _sorted(d)[:, 0] - 0.1 * _sorted(d)[:, 1],
    "-max softmax(-d)": _softmax_score(1.0),
    "-max softmax(-d / 10)": _softmax_score(10.0),
    "d1 - mean d": lambda d, s: d.min(dim=1).values - d.mean(dim=1),
    "(d1 - mean d) / std d": lambda d, s: (d.min(dim=1).values - d.mean(dim=1)) / d.std(dim=1),
    "d1 / mean d": _relative(1.0),
    "d1 / (mean d)^0.5": _relative(0.5),
    "d1 / (mean d)^0.25": _relative(0.25),
}
CHALLENGER = "d1 / (mean d)^0.25"  # the best on validation, for the --final report


def embeddings(data: Path, split: str) -> tuple[torch.Tensor, ImageSet]:
    checkpoint = load_checkpoint(ROOT / "models" / "omniglot-conv4.pt")
    images = omniglot.load_split(data, split, checkpoint.input_spec, progress=False)
    return embed_imageset(checkpoint.build_encoder(), images, checkpoint.input_spec), images


def table(data: Path, split: str, methods: list[str], episodes: int) -> str:
    vectors, images = embeddings(data, split)
    columns = [(w, s, within) for w, s in SETTINGS for within in (True, False)]
    header = "| score | " + " | ".join(
        f"{w}w{s}s {'within' if within else 'random'}" for w, s, within in columns
    )
    rows = [header + " |", "|---" * (len(columns) + 1) + "|"]
    accuracy = []
    for method in methods:
        cells = []
        for way, shot, within in columns:
            result = evaluate_open_set(
                vectors,
                images,
                EpisodeShape(way, shot, 15, way),
                method,
                n_episodes=episodes,
                seed=0,
                within_group=within,
            )
            cells.append(f"{result.auroc:.3f}")
            if method == methods[0]:
                accuracy.append(f"{100 * result.accuracy:.2f}%")
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    rows.append("| (closed-set accuracy) | " + " | ".join(accuracy) + " |")
    return f"{split}, {episodes} episodes, AUROC:\n" + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "omniglot")
    parser.add_argument("--final", action="store_true", help="also report images_evaluation")
    parser.add_argument("--episodes", type=int, default=500, help="per cell (--final: 300)")
    args = smoke.parse_args(parser, {"episodes": 2})
    torch.set_num_threads(1)  # tiny per-episode tensors: threads only add overhead
    SCORES.update(CANDIDATES)  # this process only: candidates go through the evaluator's path
    methods = [DEFAULT_SCORE, *CANDIDATES]
    with smoke.omniglot(args.data, args.smoke, SAMPLE) as data:
        print(table(data, omniglot.LAKE_VALIDATION, methods, args.episodes))
        if args.final:
            final = min(args.episodes, 300)
            print(table(data, "evaluation", [DEFAULT_SCORE, CHALLENGER], final))


if __name__ == "__main__":
    main()
