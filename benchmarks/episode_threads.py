"""Evaluation episodes with torch on all cores against one thread (a benchmark, not a test).

``evaluate`` embeds each image once and then runs its episodes over the embeddings: a few tiny
tensors per episode, where torch's intra-op threads only add waiting (worst on a busy machine).
This times the same seeded episodes over Omniglot-evaluation-sized random embeddings (659
classes of 20, 64 dimensions, 20 alphabets) with ``--threads`` threads and inside
``training.evaluate.one_thread`` (what ``episode_accuracies`` uses), side by side, and prints
the ratio. The accuracies are identical by construction: same episodes, same arithmetic.

    python benchmarks/episode_threads.py [--episodes 300] [--threads 0 (= all cores)]
    python benchmarks/episode_threads.py --smoke    # 5 episodes (tests)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import smoke  # noqa: E402
from benchmarks.machine import machine  # noqa: E402
from training import evaluate  # noqa: E402
from training.episodes import EpisodeShape  # noqa: E402

CLASSES, PER_CLASS, DIM, GROUPS = 659, 20, 64, 20


@dataclass(frozen=True)
class Items:
    labels: np.ndarray
    class_groups: list[str]

    @property
    def n_classes(self) -> int:
        return len(self.class_groups)


def timed(threads: int, episodes: int, within: bool) -> tuple[float, float]:
    """(seconds, mean accuracy) of 20-way 5-shot episodes with torch on ``threads`` threads
    (0: the one-thread context the evaluation uses)."""
    rng = np.random.default_rng(0)
    items = Items(
        np.repeat(np.arange(CLASSES), PER_CLASS), [f"g{c % GROUPS}" for c in range(CLASSES)]
    )
    embeddings = torch.from_numpy(rng.standard_normal((CLASSES * PER_CLASS, DIM))).float()
    embeddings += torch.from_numpy(np.repeat(rng.standard_normal((CLASSES, DIM)), PER_CLASS, 0))
    shape = EpisodeShape(20, 5, 15)
    if threads:  # the loop as it was: torch's threads as set, no one-thread context
        torch.set_num_threads(threads)
        original = evaluate.one_thread
        evaluate.one_thread = contextlib.nullcontext  # type: ignore[assignment]
    start = time.perf_counter()
    try:
        accuracies = evaluate.episode_accuracies(embeddings, items, shape, episodes, 0, within)
    finally:
        if threads:
            evaluate.one_thread = original  # type: ignore[assignment]
    return time.perf_counter() - start, float(accuracies.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0, help="0 = all cores")
    args = smoke.parse_args(parser, {"episodes": 5})
    threads = args.threads or len(os.sched_getaffinity(0))
    print(f"{machine()}; load average {os.getloadavg()[0]:.1f}")
    for within in (False, True):
        many, accuracy_many = timed(threads, args.episodes, within)
        one, accuracy_one = timed(0, args.episodes, within)
        assert accuracy_many == accuracy_one, "the same episodes must give the same accuracy"
        print(
            f"20-way 5-shot, {args.episodes} episodes{', within-alphabet' if within else ''}: "
            f"{threads} threads {many:.2f} s, one thread {one:.2f} s: {many / one:.1f}x faster"
        )


if __name__ == "__main__":
    main()
