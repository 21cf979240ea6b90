"""Does adapting the rejection thresholds to a collection help? (A benchmark, not a test.)

    python benchmarks/rejection_adaptation.py [--data DIR] [--episodes 10]
    python benchmarks/rejection_adaptation.py --smoke    # 1 episode, 2 small alphabets (tests)

Collections as a user would make them: per images_evaluation alphabet (never used in training
or calibration), half its characters registered with K drawings each, the other drawings of
those characters as known queries, and 5 drawings of each character of the other half as
unknown look-alikes (same alphabet: the hard case). Each query is judged as the service judges
it (service/collections/rejection.py): its nearest-prototype distance against the checkpoint's
threshold for K shots at 95% known acceptance, and against that threshold scaled to the
collection from its held-out (leave-one-out) support scores. Per K: known queries accepted
(pooled, and the lowest and highest alphabet) and unknown ones rejected, both ways.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import smoke  # noqa: E402
from protonet.checkpoint import load_checkpoint  # noqa: E402
from protonet.open_set import collection_scale, leave_one_out_distances  # noqa: E402
from protonet.prototypes import squared_euclidean  # noqa: E402
from service.collections.rejection import RejectionPolicy  # noqa: E402
from training import omniglot  # noqa: E402
from training.evaluate import embed_imageset  # noqa: E402

SAMPLE = {"Angelic": 10, "Keble": 10}  # --smoke: 10 characters of 2 images_evaluation alphabets
ACCEPTANCE = 0.95
UNKNOWN_PER_CLASS = 5
SHOTS = (2, 3, 4, 5, 8)
HEADER = (
    "| K | thresholds | known accepted (pooled) | lowest-highest alphabet | unknown rejected |\n"
    "|---|---|---|---|---|"
)


def nearest(queries: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    distances = squared_euclidean(torch.from_numpy(queries), torch.from_numpy(prototypes))
    return distances.min(dim=1).values.numpy()


def episode(
    vectors: np.ndarray, labels: np.ndarray, classes: list[int], shot: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Known and unknown queries' nearest distances, and each class's held-out scores."""
    order = rng.permutation(classes)
    known, unknown = order[: len(order) // 2], order[len(order) // 2 :]
    drawn = [vectors[rng.permutation(np.flatnonzero(labels == c))] for c in known]
    support = [rows[:shot] for rows in drawn]
    prototypes = np.stack([rows.mean(axis=0) for rows in support])
    own = np.zeros(shot, dtype=np.int64)
    scores = [
        leave_one_out_distances(rows, own, p[None], np.array([shot]))
        for rows, p in zip(support, prototypes, strict=True)
    ]
    strangers = [vectors[np.flatnonzero(labels == c)[:UNKNOWN_PER_CLASS]] for c in unknown]
    known_queries = np.concatenate([rows[shot:] for rows in drawn])
    return (
        nearest(known_queries, prototypes),
        nearest(np.concatenate(strangers), prototypes),
        scores,
    )


def measure(vectors, images, policy: RejectionPolicy, shot: int, episodes: int) -> list[str]:
    """Table rows for ``shot``: the checkpoint's thresholds, then the adapted ones."""
    rng = np.random.default_rng(shot)
    by_alphabet: dict[str, list[list[np.ndarray]]] = {"checkpoint": [], "collection": []}
    for alphabet in sorted(set(images.class_groups)):
        classes = [i for i, g in enumerate(images.class_groups) if g == alphabet]
        outcomes: dict[str, list[list[np.ndarray]]] = {k: [[], []] for k in by_alphabet}
        for _ in range(episodes):
            known, unknown, scores = episode(vectors, images.labels, classes, shot, rng)
            scale = collection_scale(scores, policy.calibration, policy.acceptance)
            base = policy.threshold(shot)
            for name, limit in (("checkpoint", base), ("collection", base * (scale or 1.0))):
                outcomes[name][0].append(known <= limit)
                outcomes[name][1].append(unknown > limit)
        for name, (accepted, rejected) in outcomes.items():
            by_alphabet[name].append([np.concatenate(accepted), np.concatenate(rejected)])
    rows = []
    for name, results in by_alphabet.items():
        pooled = np.concatenate([r[0] for r in results]).mean()
        spread = [r[0].mean() for r in results]
        rejected = np.concatenate([r[1] for r in results]).mean()
        rows.append(
            f"| {shot} | {name} | {pooled:.1%} | {min(spread):.1%}-{max(spread):.1%} "
            f"| {rejected:.1%} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "omniglot")
    parser.add_argument("--episodes", type=int, default=10, help="per alphabet and shot count")
    args = smoke.parse_args(parser, {"episodes": 1})
    torch.set_num_threads(1)
    checkpoint = load_checkpoint(ROOT / "models" / "omniglot-conv4.pt")
    assert checkpoint.calibration is not None
    spec = checkpoint.input_spec
    with smoke.omniglot(args.data, args.smoke, SAMPLE) as data:
        images = omniglot.load_split(data, "evaluation", spec, progress=False)
    vectors = embed_imageset(checkpoint.build_encoder(), images, spec).numpy()
    policy = RejectionPolicy(checkpoint.calibration, ACCEPTANCE)
    print(HEADER)
    for shot in SHOTS:
        print("\n".join(measure(vectors, images, policy, shot, args.episodes)), flush=True)


if __name__ == "__main__":
    main()
