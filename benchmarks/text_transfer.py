"""Which text head to serve: candidate heads against the frozen base, on Banking77 intents and
on a domain none of them trained on (README, "Text: few-shot intents", "Which head").

Two criteria; neither reads Banking77's test file, and nothing here reads CLINC150:

1. Banking77 within-train (``evaluate --within-train``'s draws): 8 train texts of every one of
   the 77 intents as support, every other train text of the 10 validation and 27 held-out
   intents as a query, 10 seeded draws.
2. Another domain: OpenVoiceOS skill intents (``training/skill_intents.py``; ``--skills DIR``
   holds the unpacked packages), 8 sentences of every intent as support and every other one a
   query, 20 seeded draws.

Each difference to the base is paired (the same draws) with its 95% interval. The rule, fixed
before measuring: among the candidates whose mean difference on the other domain is >= 0,
serve the one with the largest Banking77 gain; if there is none, serve the base itself (an
identity head).

Candidates: each ``--checkpoint`` (a text head), blends ``(1 - a) I + a W`` of the first
one's linear map with the identity, and the closed-form whitening starts of the 40 training
intents (``training.head_trainer.whitening_start``) at several shrinkages, before any episode.

    .venv/bin/python benchmarks/text_transfer.py --skills SKILLS \\
        --checkpoint runs/banking77-minilm/best.pt
    .venv/bin/python benchmarks/text_transfer.py --smoke    # 3 texts per intent, 2 draws (tests)

``--smoke`` without ``--skills`` writes a small skills folder of its own (two skills, two
intents each, sentences made up here); its candidate is the bundled text head.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import smoke  # noqa: E402
from protonet.checkpoint import load_checkpoint  # noqa: E402
from protonet.model import LinearHead, build_encoder, linear_head_config  # noqa: E402
from protonet.text import base_identity, embed_base  # noqa: E402
from training.evaluate import nearest_prototype  # noqa: E402
from training.head_trainer import whitening_start  # noqa: E402
from training.skill_intents import load_skill_intents  # noqa: E402
from training.text_evaluate import SELECTION_GROUPS, draw_hits, within_train_draws  # noqa: E402
from training.textset import (  # noqa: E402
    TextSet,
    base_embeddings,
    load_banking77,
    select_embedded,
    split_intents,
)

BLENDS = (0.1, 0.25, 0.5)
SHRINKAGES = (3.0, 10.0, 30.0)
Draws = list[tuple[np.ndarray, np.ndarray]]


class Criterion:
    """One criterion: a text set, its frozen base embeddings and its draws."""

    def __init__(self, name: str, texts: TextSet, base: torch.Tensor, draws: Draws) -> None:
        self.name, self.texts, self.base, self.draws = name, texts, base, draws
        self.base_accuracies = self.accuracies(base)

    def accuracies(self, embeddings: torch.Tensor) -> np.ndarray:
        hits = draw_hits(
            nearest_prototype, (embeddings, embeddings), (self.texts, self.texts), self.draws
        )
        return np.array([correct.mean() for _, correct in hits])

    def gain(self, head: LinearHead) -> tuple[float, float]:
        """Mean paired difference to the base (points) and its 95% half-width."""
        with torch.no_grad():
            differences = self.accuracies(embed_base(head, self.base)) - self.base_accuracies
        half = 1.96 * differences.std() / math.sqrt(len(differences))
        return 100 * float(differences.mean()), 100 * float(half)


def with_map(weight: torch.Tensor, bias: torch.Tensor) -> LinearHead:
    """A linear head ``x -> weight x + bias`` (then normalised and scaled, as every head)."""
    head = build_encoder(linear_head_config(len(weight)))
    assert isinstance(head, LinearHead)
    with torch.no_grad():
        head.linear.weight.copy_(weight)
        head.linear.bias.copy_(bias)
    return head


def candidates(
    paths: list[Path], train: TextSet, train_base: torch.Tensor, intents: list[str]
) -> Iterator[tuple[str, LinearHead]]:
    heads = []
    for path in paths:
        head = load_checkpoint(path, modality="text").build_encoder()
        assert isinstance(head, LinearHead)
        heads.append(head)
        yield f"{path} (version {load_checkpoint(path, modality='text').version})", head
    if heads:
        weight = heads[0].linear.weight.detach().clone()
        bias = heads[0].linear.bias.detach().clone()
        identity = torch.eye(len(weight))
        for a in BLENDS:
            blended = with_map((1 - a) * identity + a * weight, a * bias)
            yield f"blend of the first with the identity, a = {a}", blended
    chosen, vectors = select_embedded(train, train_base, intents)
    labels = torch.from_numpy(chosen.labels)
    for shrinkage in SHRINKAGES:
        weight, bias = whitening_start(vectors, labels, shrinkage)
        yield (
            f"whitening start, shrinkage {shrinkage:g}",
            with_map(weight, bias),
        )


# --smoke without --skills: two made-up skills of two intents, 2 x 2 x 4 x 2 = 32 sentences each
SMOKE_SKILLS = {
    "skill-weather": {
        "current": "(what|how) (is|was) the (weather|sky|rain|wind) (today|now)",
        "forecast": "(will|could) it (rain|snow|freeze|clear) (tomorrow|tonight) (here|there)",
    },
    "skill-time": {
        "clock": "(what|tell me the) time (is it|it is) (here|there|now|please) (ok|then)",
        "date": "(what|which) (day|date) (is|was) it (today|yesterday) (here|there)",
    },
}


@contextmanager
def skills_folder(skills: Path | None, smoke_run: bool) -> Iterator[Path]:
    """``--skills``; in a smoke run without it, a folder of :data:`SMOKE_SKILLS`."""
    if skills is not None or not smoke_run:
        if skills is None:
            sys.exit("--skills DIR is required (unpacked OpenVoiceOS skill packages)")
        yield skills
        return
    with tempfile.TemporaryDirectory(prefix="skills-smoke-") as scratch:
        for skill, intents in SMOKE_SKILLS.items():
            locale = Path(scratch) / skill / "locale" / "en-us"
            locale.mkdir(parents=True)
            for intent, template in intents.items():
                (locale / f"{intent}.intent").write_text(template + "\n")
        yield Path(scratch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/banking77", type=Path)
    parser.add_argument("--skills", type=Path, help="unpacked OVOS skills (required)")
    parser.add_argument("--checkpoint", action="append", default=[], type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shots", type=int, default=8, help="support texts per intent")
    parser.add_argument("--draws", type=int, default=10, help="of Banking77 within-train")
    parser.add_argument("--skill-draws", type=int, default=20, help="of the skill intents")
    bundled = [ROOT / "models" / "banking77-minilm.pt"]  # --smoke: a candidate head to blend
    sizes = {"shots": 2, "draws": 2, "skill_draws": 2}
    args = smoke.parse_args(parser, {**sizes, "checkpoint": bundled})
    torch.set_num_threads(args.threads)
    spec = base_identity()
    with smoke.banking77(args.data, args.smoke, args.shots + 1) as data:
        train = load_banking77(data, "train", spec)
    train_base = base_embeddings(train, spec)
    split = split_intents(train.class_names, seed=0)
    groups = {"validation": split.validation, "held_out": split.held_out}
    query_intents = [name for group in SELECTION_GROUPS for name in groups[group]]
    with skills_folder(args.skills, args.smoke) as folder:
        skills = load_skill_intents(folder, spec)
    shots = args.shots
    criteria = [
        Criterion(
            "Banking77 within-train",
            train,
            train_base,
            within_train_draws(train, query_intents, shots, args.draws, 0),
        ),
        Criterion(
            "skill intents",
            skills,
            base_embeddings(skills, spec),
            within_train_draws(skills, skills.class_names, shots, args.skill_draws, 0),
        ),
    ]
    print(
        f"skill intents: {skills.n_classes} intents, {len(skills.texts)} sentences, "
        f"{len(set(skills.class_groups))} skills"
    )
    print(
        "| candidate | "
        + " | ".join(f"{c.name} - base (points)" for c in criteria)
        + " |\n|---|"
        + "---|" * len(criteria)
    )
    bases = " | ".join(f"{100 * c.base_accuracies.mean():.2f}%" for c in criteria)
    print(f"| frozen base (accuracy) | {bases} |")
    for name, head in candidates(args.checkpoint, train, train_base, split.train):
        cells = " | ".join(f"{m:+.2f} ± {h:.2f}" for m, h in (c.gain(head) for c in criteria))
        print(f"| {name} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
