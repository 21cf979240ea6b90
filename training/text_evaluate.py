"""Evaluating a text checkpoint on Banking77, in two settings.

1. Episodes over intents (by default the held-out ones, never used in meta-training): support
   from the train file, queries from the test file; 5-way and full-way, 1, 5 and 8 shots.
2. All 77 intents at once, as a user registers them: ``shots`` examples per intent drawn from
   the train file (``draws`` times), every text of the test file classified. Measured for the
   meta-learned head and, on the same draws, for the frozen base with plain prototypes and the
   frozen base with logistic regression (MTEB's few-shot classifier; needs scikit-learn).

Base embeddings are computed once per file (cached, :func:`training.textset.base_embeddings`);
the head runs over them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protonet.checkpoint import Checkpoint
from protonet.prototypes import compute_prototypes, prototype_logits
from protonet.text import TextSpec, embed_base
from training.episodes import EpisodeSampler, EpisodeShape
from training.evaluate import EvaluationResult, Queries, evaluate, mean_and_ci95
from training.textset import TextSet, base_embeddings, load_banking77, select_embedded

TEXT_SHOTS = (1, 5, 8)
INTENT_SETS = ("heldout", "all", "training")


@dataclass(frozen=True)
class EmbeddedSplit:
    """One Banking77 file: texts, frozen base embeddings ``[n, base_dim]`` and the head's
    ``[n, dim]``."""

    texts: TextSet
    base: torch.Tensor
    head: torch.Tensor

    def select(self, names: list[str]) -> EmbeddedSplit:
        texts, base = select_embedded(self.texts, self.base, names)
        _, head = select_embedded(self.texts, self.head, names)
        return EmbeddedSplit(texts, base, head)


def embed_split(
    checkpoint: Checkpoint, data_dir: Path, part: str, cache_dir: Path | None, progress: bool
) -> EmbeddedSplit:
    """``part`` ("train" or "test") of Banking77 through the checkpoint's base and head."""
    spec = _text_spec(checkpoint)
    texts = load_banking77(data_dir, part, spec)
    base = base_embeddings(texts, spec, cache_dir, progress)
    return EmbeddedSplit(texts, base, embed_base(checkpoint.build_encoder(), base))


def _text_spec(checkpoint: Checkpoint) -> TextSpec:
    if checkpoint.text_spec is None:
        raise ValueError("not a text checkpoint")
    return checkpoint.text_spec


def intents_of(checkpoint: Checkpoint, wanted: str) -> list[str] | None:
    """The intents ``wanted`` names ("heldout", "training", or None for all), from the split
    the checkpoint records."""
    intents = checkpoint.metadata.get("intents")
    if wanted == "all":
        return None
    if not intents:
        raise ValueError(f"--classes {wanted}: the checkpoint records no intent split")
    return list(intents["held_out" if wanted == "heldout" else "train"])


def episode_settings(n_intents: int, query: int) -> list[EpisodeShape]:
    """Setting 1's table: 5-way and all-way episodes at 1, 5 and 8 shots."""
    ways = sorted({min(5, n_intents), n_intents})
    return [EpisodeShape(way, shot, query) for way in ways for shot in TEXT_SHOTS]


def evaluate_episodes(
    train: EmbeddedSplit, test: EmbeddedSplit, shape: EpisodeShape, episodes: int, seed: int
) -> EvaluationResult:
    """Setting 1: support from ``train``, queries from ``test``, through the head."""
    return evaluate(
        train.head, train.texts, shape, episodes, seed, queries=Queries(test.head, test.texts)
    )


Classifier = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def prototype_classifier(
    support: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor
) -> torch.Tensor:
    """Nearest prototype: ``[n_support, dim]``, ``[n_support]``, ``[n_query, dim]`` ->
    predicted labels ``[n_query]``."""
    prototypes, classes = compute_prototypes(support, labels)
    return classes[prototype_logits(queries, prototypes).argmax(dim=1)]


def logistic_regression_classifier(
    support: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor
) -> torch.Tensor:
    """MTEB's classifier for its few-shot protocol: scikit-learn's logistic regression,
    ``max_iter=100``, on the frozen embeddings."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=100).fit(support.numpy(), labels.numpy())
    return torch.from_numpy(model.predict(queries.numpy()))


def has_sklearn() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class AllIntentsResult:
    """Setting 2 for one classifier: accuracy on the whole test file, mean over ``draws`` and
    its 95% interval, and the mean accuracy on the test texts of each intent group."""

    method: str
    shots: int
    draws: int
    n_queries: int
    accuracy: float
    ci95: float
    by_group: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "shot": self.shots,
            "draws": self.draws,
            "queries": self.n_queries,
            "accuracy": self.accuracy,
            "ci95": self.ci95,
            "accuracy_by_intents": self.by_group,
        }

    def describe(self) -> str:
        groups = ", ".join(f"{k} {100 * v:.2f}%" for k, v in self.by_group.items())
        return (
            f"all {self.method}: {self.shots} shots per intent ({self.draws} draws), "
            f"{self.n_queries} test texts: {100 * self.accuracy:.2f}% ± {100 * self.ci95:.2f}%"
            + (f" ({groups})" if groups else "")
        )


def all_intents_draws(
    train: TextSet, test: TextSet, shots: int, draws: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``draws`` seeded draws of ``shots`` train texts per intent, with the test texts as
    queries (every one where the intents hold equally many, as Banking77's 40): the episode
    sampler with one class per intent. Returns ``(support indices, query indices)`` pairs."""
    n_query = int(np.bincount(test.labels, minlength=test.n_classes).min())
    shape = EpisodeShape(train.n_classes, shots, n_query)
    sampler = EpisodeSampler(train, shape, seed, query_set=test)
    return [(e.support_indices, e.query_indices) for e in (sampler.sample() for _ in range(draws))]


def all_intents_accuracy(
    method: str,
    classify: Classifier,
    embeddings: tuple[torch.Tensor, torch.Tensor],
    sets: tuple[TextSet, TextSet],
    draws: list[tuple[np.ndarray, np.ndarray]],
    groups: dict[str, list[str]],
) -> AllIntentsResult:
    """Setting 2 for ``classify`` over ``embeddings`` (train ``[n, d]``, test ``[m, d]``)."""
    (train_x, test_x), (train, test) = embeddings, sets
    train_y, test_y = torch.from_numpy(train.labels), torch.from_numpy(test.labels)
    accuracies, hits = [], []
    for support, queries in draws:
        predicted = classify(train_x[support], train_y[support], test_x[queries])
        correct = (predicted == test_y[queries]).numpy()
        accuracies.append(correct.mean())
        hits.append((queries, correct))
    accuracy, ci95 = mean_and_ci95(np.array(accuracies))
    by_group = {
        name: _group_accuracy(hits, test, intents) for name, intents in groups.items() if intents
    }
    shots = len(draws[0][0]) // train.n_classes
    return AllIntentsResult(method, shots, len(draws), len(draws[0][1]), accuracy, ci95, by_group)


def _group_accuracy(
    hits: list[tuple[np.ndarray, np.ndarray]], test: TextSet, intents: list[str]
) -> float:
    """Mean accuracy, over all draws, on the test texts of ``intents``."""
    wanted = np.isin(test.labels, [test.class_names.index(name) for name in intents])
    return float(np.mean([correct[wanted[queries]].mean() for queries, correct in hits]))


def evaluate_all_intents(
    train: EmbeddedSplit,
    test: EmbeddedSplit,
    checkpoint: Checkpoint,
    shots: int = 8,
    draws: int = 10,
    seed: int = 0,
) -> tuple[list[AllIntentsResult], list[str]]:
    """Setting 2 for the head, the frozen base with prototypes and (with scikit-learn) with
    logistic regression, on the same draws; and notes."""
    sets = (train.texts, test.texts)
    drawn = all_intents_draws(train.texts, test.texts, shots, draws, seed)
    split = checkpoint.metadata.get("intents") or {}
    groups = {name: list(split.get(name, [])) for name in ("train", "validation", "held_out")}
    head, base = (train.head, test.head), (train.base, test.base)
    results = [
        all_intents_accuracy("head prototypes", prototype_classifier, head, sets, drawn, groups),
        all_intents_accuracy("base prototypes", prototype_classifier, base, sets, drawn, groups),
    ]
    if not has_sklearn():
        return results, ["scikit-learn is not installed: no logistic regression anchor"]
    lr = all_intents_accuracy(
        "base logistic regression", logistic_regression_classifier, base, sets, drawn, groups
    )
    return [*results, lr], []


@dataclass(frozen=True)
class TextEvaluation:
    """What ``python -m training evaluate`` measures on a text checkpoint."""

    intents: list[str]
    classes: str
    episodes: list[EvaluationResult]
    all_intents: list[AllIntentsResult]
    notes: list[str]


def evaluate_text_checkpoint(
    checkpoint: Checkpoint,
    data_dir: Path,
    classes: str,
    shapes: list[EpisodeShape] | None,
    n_episodes: int,
    seed: int,
    progress: bool = False,
) -> TextEvaluation:
    """Setting 1 on the intents ``classes`` names, for ``shapes`` (None: the table of
    :func:`episode_settings`, and then setting 2 as well)."""
    train = embed_split(checkpoint, data_dir, "train", None, progress)
    test = embed_split(checkpoint, data_dir, "test", None, progress)
    intents = intents_of(checkpoint, classes) or train.texts.class_names
    chosen_train, chosen_test = train.select(intents), test.select(intents)
    table = shapes is None
    if shapes is None:
        smallest = int(np.bincount(chosen_test.texts.labels).min())
        shapes = episode_settings(len(intents), min(15, smallest))
    results = [
        evaluate_episodes(chosen_train, chosen_test, shape, n_episodes, seed) for shape in shapes
    ]
    if not table:
        return TextEvaluation(intents, classes, results, [], [])
    all_results, notes = evaluate_all_intents(train, test, checkpoint, seed=seed)
    return TextEvaluation(intents, classes, results, all_results, notes)
