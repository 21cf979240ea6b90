"""Evaluating a text checkpoint on Banking77, in two settings.

1. Episodes over intents (by default the held-out ones, never used in meta-training): support
   from the train file, queries from the test file; 5-way and full-way, 1, 5 and 8 shots.
2. All 77 intents at once, as a user registers them: ``shots`` examples per intent drawn from
   the train file (``draws`` times), every text of the test file classified. Measured for the
   meta-learned head and, on the same draws, for the frozen base with plain prototypes and the
   frozen base with logistic regression (MTEB's few-shot classifier; needs scikit-learn).

Base embeddings are computed once per file (cached, :func:`training.textset.base_embeddings`);
the head runs over them. :func:`run_evaluate_text` is the evaluate command on a text checkpoint.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protonet.checkpoint import Checkpoint
from protonet.open_set import (
    RejectionCalibration,
    collection_scale,
    leave_one_out_distances,
    open_set_score,
)
from protonet.prototypes import compute_prototypes, squared_euclidean
from protonet.text import TextSpec, embed_base
from training.card import record
from training.checks import ClassSet
from training.episodes import EpisodeSampler, EpisodeShape
from training.evaluate import (
    Classify,
    EvaluateConfig,
    EvaluationResult,
    Queries,
    auroc,
    evaluate,
    mean_and_ci95,
    nearest_prototype,
    one_thread,
    open_set_scoring,
)
from training.textset import TextSet, base_embeddings, load_banking77, select_embedded

TEXT_SHOTS = (1, 5, 8)


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
    train: EmbeddedSplit,
    test: EmbeddedSplit,
    shape: EpisodeShape,
    episodes: int,
    seed: int,
    base: bool = False,
) -> EvaluationResult:
    """Setting 1: support from ``train``, queries from ``test``, through the head (or, with
    ``base``, the frozen base alone: the same episodes, for comparison)."""
    support, queries = (train.base, test.base) if base else (train.head, test.head)
    return evaluate(
        support, train.texts, shape, episodes, seed, queries=Queries(queries, test.texts)
    )


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
    """Setting 2 for one classifier: accuracy on the queries (the whole test file, or with
    ``query_file`` "train" those of :func:`within_train_draws`), mean over ``draws`` and its
    95% interval, and the mean accuracy on the queries of each intent group."""

    method: str
    shots: int
    draws: int
    n_queries: int
    accuracy: float
    ci95: float
    by_group: dict[str, float]
    query_file: str = "test"

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "shot": self.shots,
            "draws": self.draws,
            "queries": self.n_queries,
            "queries_from": self.query_file,
            "accuracy": self.accuracy,
            "ci95": self.ci95,
            "accuracy_by_intents": self.by_group,
        }

    def describe(self) -> str:
        groups = ", ".join(f"{k} {100 * v:.2f}%" for k, v in self.by_group.items())
        return (
            f"all {self.method}: {self.shots} shots per intent ({self.draws} draws), "
            f"{self.n_queries} {self.query_file} texts: "
            f"{100 * self.accuracy:.2f}% ± {100 * self.ci95:.2f}%"
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
    classify: Classify,
    embeddings: tuple[torch.Tensor, torch.Tensor],
    sets: tuple[TextSet, TextSet],
    draws: list[tuple[np.ndarray, np.ndarray]],
    groups: dict[str, list[str]],
    query_file: str = "test",
) -> AllIntentsResult:
    """Setting 2 for ``classify`` over ``embeddings`` (train ``[n, d]``, queries' ``[m, d]``,
    from the file ``query_file``)."""
    hits = draw_hits(classify, embeddings, sets, draws)
    train, test = sets
    accuracy, ci95 = mean_and_ci95(np.array([correct.mean() for _, correct in hits]))
    by_group = {
        name: _group_accuracy(hits, test, intents) for name, intents in groups.items() if intents
    }
    shots = len(draws[0][0]) // train.n_classes
    n_queries = len(draws[0][1])
    return AllIntentsResult(
        method, shots, len(draws), n_queries, accuracy, ci95, by_group, query_file
    )


def draw_hits(
    classify: Classify,
    embeddings: tuple[torch.Tensor, torch.Tensor],
    sets: tuple[TextSet, TextSet],
    draws: list[tuple[np.ndarray, np.ndarray]],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per draw, its query indices and whether each got its intent (``[n_query]`` bool)."""
    (train_x, test_x), (train, test) = embeddings, sets
    train_y, test_y = torch.from_numpy(train.labels), torch.from_numpy(test.labels)
    hits = []
    for support, queries in draws:
        predicted = classify(train_x[support], train_y[support], test_x[queries])
        hits.append((queries, (predicted == test_y[queries]).numpy()))
    return hits


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
        all_intents_accuracy("head prototypes", nearest_prototype, head, sets, drawn, groups),
        all_intents_accuracy("base prototypes", nearest_prototype, base, sets, drawn, groups),
    ]
    if not has_sklearn():
        return results, ["scikit-learn is not installed: no logistic regression anchor"]
    lr = all_intents_accuracy(
        "base logistic regression", logistic_regression_classifier, base, sets, drawn, groups
    )
    return [*results, lr], []


SELECTION_GROUPS = ("validation", "held_out")


def within_train_draws(
    train: TextSet, query_intents: list[str], shots: int, draws: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Setting 2 inside the train file: ``draws`` seeded draws of ``shots`` texts for every
    intent (the episode sampler, one class per intent), and as queries every other text of
    ``query_intents``. Returns ``(support indices, query indices)`` pairs, both into
    ``train``."""
    sampler = EpisodeSampler(train, EpisodeShape(train.n_classes, shots, 1), seed)
    ids = [train.class_names.index(name) for name in query_intents]
    wanted = np.flatnonzero(np.isin(train.labels, ids))
    episodes = [sampler.sample() for _ in range(draws)]
    return [(e.support_indices, np.setdiff1d(wanted, e.support_indices)) for e in episodes]


def evaluate_within_train(
    train: EmbeddedSplit, checkpoint: Checkpoint, shots: int = 8, draws: int = 10, seed: int = 0
) -> list[AllIntentsResult]:
    """The criterion for choices between models that must not see the test file: setting 2
    with support and queries both from the train file, all intents as support, and as queries
    the texts of the validation and held-out intents only (the meta-training intents' texts
    trained the head). For the head and, on the same draws, the frozen base."""
    split = checkpoint.metadata.get("intents") or {}
    groups = {name: list(split.get(name, [])) for name in SELECTION_GROUPS}
    if not all(groups.values()):
        raise ValueError("--within-train: the checkpoint records no intent split")
    query_intents = [name for intents in groups.values() for name in intents]
    drawn = within_train_draws(train.texts, query_intents, shots, draws, seed)
    sets = (train.texts, train.texts)
    embeddings = {"head": (train.head, train.head), "base": (train.base, train.base)}
    return [
        all_intents_accuracy(
            f"{name} prototypes", nearest_prototype, pair, sets, drawn, groups, "train"
        )
        for name, pair in embeddings.items()
    ]


@dataclass(frozen=True)
class TextEvaluation:
    """What ``python -m training evaluate`` measures on a text checkpoint."""

    intents: list[str]
    classes: str
    episodes: list[EvaluationResult]
    base_episodes: list[EvaluationResult]
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
    results, base_results = (
        [
            evaluate_episodes(chosen_train, chosen_test, shape, n_episodes, seed, base)
            for shape in shapes
        ]
        for base in (False, True)
    )
    if not table:
        return TextEvaluation(intents, classes, results, base_results, [], [])
    all_results, notes = evaluate_all_intents(train, test, checkpoint, seed=seed)
    return TextEvaluation(intents, classes, results, base_results, all_results, notes)


def validation_intents(
    checkpoint: Checkpoint, data_dir: Path, progress: bool = False
) -> tuple[ClassSet, torch.Tensor]:
    """The intents a text checkpoint held out for validation, with their train-file texts
    through its head ``[n, dim]``: all a rejection calibration may read (never the held-out
    intents, never the test file). Each intent is its own group, so the calibration's
    thresholds are cross-validated over intents, as an image model's are over alphabets."""
    intents = (checkpoint.metadata.get("intents") or {}).get("validation")
    if not intents:
        raise ValueError(
            "the checkpoint records no validation intents: calibration needs the intents it "
            "held out for validation (train it with --split banking77)"
        )
    train = embed_split(checkpoint, data_dir, "train", None, progress).select(list(intents))
    texts = replace(train.texts, class_groups=list(train.texts.class_names))
    origin = f"Banking77 train.csv: the checkpoint's {len(intents)} validation intents"
    return ClassSet(texts, "the validation intents", origin), train.head


# Out-of-scope draws: this many of the checkpoint's held-out intents are unknown (half of
# them where fewer are held out), every other intent is registered.
UNKNOWN_INTENTS = 10
THRESHOLD_SOURCES = ("checkpoint", "collection")


@dataclass(frozen=True)
class Rejected:
    """What thresholds did to one draw's queries: the share of known queries accepted, of
    unknown ones rejected, and of known ones accepted *and* given their intent (in-scope
    accuracy with rejection on)."""

    known_accepted: float
    unknown_rejected: float
    in_scope_accuracy: float


@dataclass(frozen=True)
class TextOpenSetResult:
    """Out-of-scope draws: ``n_known`` intents registered with ``shots`` train texts each,
    every test text queried, those of ``n_unknown`` held-out intents being out of scope.
    Closed-set accuracy on the known queries, AUROC of the served score, and at the default
    threshold (``acceptance``) the shares by threshold source: the checkpoint's, and scaled
    to the collection from its support set as the service does."""

    shots: int
    draws: int
    n_known: int
    n_unknown: int
    accuracy: float
    ci95: float
    auroc: float
    auroc_ci95: float
    acceptance: float
    rejected: dict[str, Rejected]
    known_accepted_by_intents: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "shot": self.shots,
            "draws": self.draws,
            "known_intents": self.n_known,
            "unknown_intents": self.n_unknown,
            "accuracy": self.accuracy,
            "ci95": self.ci95,
            "auroc": self.auroc,
            "auroc_ci95": self.auroc_ci95,
            "acceptance": self.acceptance,
            **{f"{source}_thresholds": vars(r) for source, r in self.rejected.items()},
            "known_accepted_by_intents": self.known_accepted_by_intents,
        }

    def describe(self) -> str:
        lines = [
            f"open set: {self.n_known} intents x {self.shots} shots registered, test texts of "
            f"{self.n_unknown} held-out intents out of scope ({self.draws} draws): accuracy "
            f"{100 * self.accuracy:.2f}% ± {100 * self.ci95:.2f}%, AUROC {self.auroc:.3f} ± "
            f"{self.auroc_ci95:.3f}"
        ]
        for source, r in self.rejected.items():
            lines.append(
                f"  at {100 * self.acceptance:g}% acceptance, {source} thresholds: known "
                f"accepted {100 * r.known_accepted:.1f}%, unknown rejected "
                f"{100 * r.unknown_rejected:.1f}%, in-scope accuracy "
                f"{100 * r.in_scope_accuracy:.1f}%"
            )
        groups = ", ".join(f"{k} {100 * v:.1f}%" for k, v in self.known_accepted_by_intents.items())
        lines.append(f"  known accepted by intents (collection thresholds): {groups}")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Draw:
    """One draw's per-query outcomes (test texts): unknown or not, right intent or not, score,
    accepted by each threshold source."""

    unknown: np.ndarray
    correct: np.ndarray
    scores: np.ndarray
    accepted: dict[str, np.ndarray]


def evaluate_text_open_set(
    train: EmbeddedSplit,
    test: EmbeddedSplit,
    checkpoint: Checkpoint,
    calibration: RejectionCalibration,
    acceptance: float | None = None,
    shots: int = 8,
    draws: int = 100,
    seed: int = 0,
) -> TextOpenSetResult:
    """Out-of-scope draws over the head's embeddings (see :class:`TextOpenSetResult`); the
    unknown intents are drawn from the checkpoint's held-out ones (never trained, selected
    or calibrated on), a new set each draw."""
    held_out = intents_of(checkpoint, "heldout") or []
    n_unknown = min(UNKNOWN_INTENTS, len(held_out) // 2)
    if n_unknown < 1:
        raise ValueError("--open-set needs 2 or more held-out intents, to leave some unknown")
    wanted = calibration.default_acceptance if acceptance is None else acceptance
    rng = np.random.default_rng(seed)
    names = train.texts.class_names
    outcomes = []
    for _ in range(draws):
        unknown = [names.index(n) for n in rng.choice(held_out, n_unknown, replace=False)]
        known = [c for c in range(len(names)) if c not in unknown]
        support = np.concatenate(
            [
                rng.choice(np.flatnonzero(train.texts.labels == c), shots, replace=False)
                for c in known
            ]
        )
        outcomes.append(_open_set_draw(train, test, support, unknown, calibration, wanted))
    return _summarize(outcomes, checkpoint, test.texts, shots, n_unknown, wanted)


def _open_set_draw(
    train: EmbeddedSplit,
    test: EmbeddedSplit,
    support: np.ndarray,
    unknown: list[int],
    calibration: RejectionCalibration,
    acceptance: float,
) -> _Draw:
    """Every test text against the prototypes of ``support``: scored, classified and judged
    by the checkpoint's threshold and by it scaled to this collection."""
    with one_thread():
        vectors = train.head[support]
        labels = torch.from_numpy(train.texts.labels[support])
        prototypes, classes = compute_prototypes(vectors, labels)
        counts = torch.bincount(torch.searchsorted(classes, labels))
        distances = squared_euclidean(test.head, prototypes)
        scores = open_set_score(distances, counts, calibration.method).numpy()
        predicted = classes[distances.argmin(dim=1)].numpy()
    rows_class = np.searchsorted(classes.numpy(), labels.numpy())
    held_out = leave_one_out_distances(
        vectors.numpy(), rows_class, prototypes.numpy(), counts.numpy()
    )
    by_class = [held_out[rows_class == c] for c in range(len(classes))]
    scale = collection_scale(by_class, calibration, acceptance) or 1.0
    limit = calibration.threshold(int(counts.min()), acceptance)
    return _Draw(
        unknown=np.isin(test.texts.labels, unknown),
        correct=predicted == test.texts.labels,
        scores=scores,
        accepted={"checkpoint": scores <= limit, "collection": scores <= limit * scale},
    )


def _summarize(
    outcomes: list[_Draw],
    checkpoint: Checkpoint,
    test: TextSet,
    shots: int,
    n_unknown: int,
    acceptance: float,
) -> TextOpenSetResult:
    def mean(values: list[float]) -> float:
        return float(np.mean(values))

    rejected = {
        source: Rejected(
            known_accepted=mean([d.accepted[source][~d.unknown].mean() for d in outcomes]),
            unknown_rejected=1.0 - mean([d.accepted[source][d.unknown].mean() for d in outcomes]),
            in_scope_accuracy=mean(
                [(d.accepted[source] & d.correct)[~d.unknown].mean() for d in outcomes]
            ),
        )
        for source in THRESHOLD_SOURCES
    }
    accuracy, ci95 = mean_and_ci95(np.array([d.correct[~d.unknown].mean() for d in outcomes]))
    area, area_ci95 = mean_and_ci95(
        np.array([auroc(d.scores[~d.unknown], d.scores[d.unknown]) for d in outcomes])
    )
    split = checkpoint.metadata.get("intents") or {}
    by_group = {}
    for name in ("train", "validation", "held_out"):
        ids = np.isin(test.labels, [test.class_names.index(i) for i in split.get(name, [])])
        shares = [d.accepted["collection"][ids & ~d.unknown].mean() for d in outcomes]
        if ids.any():
            by_group[name] = mean(shares)
    return TextOpenSetResult(
        shots,
        len(outcomes),
        test.n_classes - n_unknown,
        n_unknown,
        accuracy,
        ci95,
        area,
        area_ci95,
        acceptance,
        rejected,
        by_group,
    )


def run_evaluate_text(config: EvaluateConfig, checkpoint: Checkpoint) -> int:
    """The evaluate command on a text checkpoint: Banking77 episodes over (by default) the
    held-out intents, queries from the test file; with ``table``, 5-way and all-way at 1, 5
    and 8 shots, and all 77 intents at 8 shots. ``open_set`` and ``within_train`` are their
    own settings."""
    image_only = {"--split": config.split, "--within-alphabet": config.within_alphabet}
    for name, given in image_only.items():
        if given:
            raise ValueError(f"{name} is for image checkpoints; {config.checkpoint} is text")
    if config.within_train:
        return _run_within_train(config, checkpoint)
    if config.open_set:
        return _run_text_open_set(config, checkpoint)
    shapes = None if config.table else [EpisodeShape(config.way, config.shot, config.query)]
    classes = config.classes or "heldout"
    evaluation = evaluate_text_checkpoint(
        checkpoint,
        Path(config.data),
        classes,
        shapes,
        config.episodes,
        config.seed,
        config.shows_progress,
    )
    for note in evaluation.notes:
        print(f"note: {note}", file=sys.stderr)
    results = [r.as_dict() for r in evaluation.episodes]
    base_results = [r.as_dict() for r in evaluation.base_episodes]
    all_intents = [r.as_dict() for r in evaluation.all_intents]
    summary: dict[str, Any] = {
        "checkpoint": str(config.checkpoint),
        "model_version": checkpoint.version,
        "modality": "text",
        "data": str(config.data),
        "classes": evaluation.classes,
        "n_classes": len(evaluation.intents),
        "seed": config.seed,
        "results": results,
        "base_results": base_results,
        "all_intents": all_intents,
        "accuracy": results[0]["accuracy"],
        "ci95": results[0]["ci95"],
    }
    if config.write_card:
        key = f"banking77-{evaluation.classes}"
        entries = {key: results, f"{key}-frozen-base": base_results}
        if all_intents:
            entries["banking77-all-intents"] = all_intents
        record(checkpoint, config.checkpoint, entries)
    if config.json:
        print(json.dumps(summary))
        return 0
    print(f"intents: {evaluation.classes} ({len(evaluation.intents)}), queries from the test file")
    lines = [f"head: {r.describe()}" for r in evaluation.episodes]
    lines += [f"frozen base: {r.describe()}" for r in evaluation.base_episodes]
    print("\n".join(lines + [r.describe() for r in evaluation.all_intents]))
    return 0


def _run_text_open_set(config: EvaluateConfig, checkpoint: Checkpoint) -> int:
    """``open_set`` on a text checkpoint: 10 of its held-out intents out of scope, every other
    intent registered with ``shot`` train texts, every test text queried (``episodes`` draws)."""
    if config.table or config.classes:
        raise ValueError("--open-set on text has its own setting: leave out --table and --classes")
    method, calibration = open_set_scoring(config, checkpoint)
    if calibration is None:
        raise ValueError(
            f"{config.checkpoint} holds no rejection calibration for {method}: run protonet "
            f"calibrate --checkpoint {config.checkpoint} --data {config.data} --write first"
        )
    progress = config.shows_progress
    train = embed_split(checkpoint, Path(config.data), "train", None, progress)
    test = embed_split(checkpoint, Path(config.data), "test", None, progress)
    result = evaluate_text_open_set(
        train,
        test,
        checkpoint,
        calibration,
        config.acceptance,
        config.shot,
        config.episodes,
        config.seed,
    )
    if config.write_card:
        record(checkpoint, config.checkpoint, {"banking77-open-set": [result.as_dict()]})
    if config.json:
        summary = {"checkpoint": str(config.checkpoint), "model_version": checkpoint.version}
        print(json.dumps({**summary, "open_set": result.as_dict()}))
    else:
        print(result.describe())
    return 0


def _run_within_train(config: EvaluateConfig, checkpoint: Checkpoint) -> int:
    """``within_train``: the train-file-only criterion for choosing between text models (reads
    train.csv, never test.csv)."""
    if config.table or config.classes:
        raise ValueError("--within-train has its own setting: leave out --table and --classes")
    train = embed_split(checkpoint, Path(config.data), "train", None, config.shows_progress)
    results = evaluate_within_train(train, checkpoint, seed=config.seed)
    if config.write_card:
        entries = {"banking77-within-train": [r.as_dict() for r in results]}
        record(checkpoint, config.checkpoint, entries)
    if config.json:
        print(
            json.dumps(
                {
                    "checkpoint": str(config.checkpoint),
                    "model_version": checkpoint.version,
                    "within_train": [r.as_dict() for r in results],
                }
            )
        )
    else:
        print("\n".join(r.describe() for r in results))
    return 0
