"""Adapting the prototype classifier to one support set: a small linear map on the embeddings.

A collection's examples are already embedded; what is learnt here is a residual linear map
``y = x + (x @ down) @ up`` (``down [dim, rank]``, ``up [rank, dim]``, ``up`` starting at zero,
so training starts from the identity: the unadapted classifier). Prototypes, queries and
rejection scores are then all taken in the mapped space. It costs no encoder pass, neither to
train nor to store: training draws prototypical episodes from the stored embeddings (each class
split at random into support and queries at every step, every class in every episode as the
collection is queried, up to ``way`` classes), and a query costs one more small matrix product.

Whether to adopt it is decided on held-out examples (:func:`adapt`): the support set is cut
into folds (each class's examples spread over them), an adapter is trained without each fold,
and the fold's examples are classified against the other examples' prototypes with and without
it. The adapter is adopted only if it wins there by the margin of :class:`AdaptationConfig`;
then it is trained again on every example. The held-out examples' distances in the adapted
space are what a new known query's distance looks like there (for rejection thresholds): the
training examples' own distances would be too small, the map having pulled them in.

Shared by the service (per collection, in a background job) and benchmarks; torch only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from protonet.errors import InvalidInputError
from protonet.prototypes import compute_prototypes
from protonet.threads import one_thread

# Held-out rows classified at once (their distances to every prototype: [rows, classes]).
CLASSIFY_ROWS = 1024
# (steps done, steps in all, examples processed so far); it may raise to stop the work.
Progress = Callable[[int, int, int], None]


@dataclass(frozen=True)
class AdaptationConfig:
    """How an adapter is trained and judged.

    ``rank``: of the map's update (capped at the embedding width, where it is a full map);
    ``steps``: Adam steps of one training, each one episode over the whole support set, with
    ``query_fraction`` of each class's examples as queries (at least one, at most all but one);
    ``decay``: weight of the squared Frobenius norm of the update (the pull towards the
    identity); ``way``: classes per episode: all of them, or in a larger collection this many
    drawn at random (of those with 2 examples or more) at every step, which bounds a step's
    cost. ``folds``: held-out folds (fewer where no class has that many examples).
    Adopted only if the adapter classifies at least ``margin`` (a fraction) more of the
    held-out examples correctly, and at least ``min_gain`` more examples.
    """

    rank: int = 64
    steps: int = 150
    learning_rate: float = 0.01
    decay: float = 0.01
    query_fraction: float = 0.5
    way: int = 256
    folds: int = 5
    margin: float = 0.01
    min_gain: int = 2
    seed: int = 0


@dataclass(frozen=True)
class Adapter:
    """The map ``x -> x + (x @ down) @ up``: ``down [dim, rank]``, ``up [rank, dim]``."""

    down: torch.Tensor
    up: torch.Tensor

    @property
    def dim(self) -> int:
        return int(self.down.shape[0])

    def apply(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``[n, dim]`` -> ``[n, dim]``, in the embeddings' dtype."""
        down, up = self.down.to(embeddings.dtype), self.up.to(embeddings.dtype)
        return embeddings + (embeddings @ down) @ up


@dataclass(frozen=True)
class HeldOut:
    """How adapted and unadapted classified the held-out examples of every fold.

    ``scores [m]``: each held-out example's squared distance, in the adapted space, to its own
    class's prototype made of the fold's other examples; ``shots [m]``: that prototype's size.
    """

    examples: int
    folds: int
    unadapted_correct: int
    adapted_correct: int
    scores: torch.Tensor
    shots: torch.Tensor

    @property
    def unadapted_accuracy(self) -> float:
        return self.unadapted_correct / self.examples

    @property
    def adapted_accuracy(self) -> float:
        return self.adapted_correct / self.examples

    def adapter_wins(self, config: AdaptationConfig) -> bool:
        """Whether the adapter wins by the configured margin (both of its parts)."""
        gain = self.adapted_correct - self.unadapted_correct
        return gain >= config.min_gain and gain >= config.margin * self.examples


@dataclass(frozen=True)
class Adaptation:
    """The held-out comparison, and the adapter trained on every example if it won (else
    ``None``: keep the collection unadapted)."""

    held_out: HeldOut
    adapter: Adapter | None


def why_not_adaptable(labels: torch.Tensor) -> str | None:
    """Why a support set with ``labels [n]`` cannot be adapted (``None``: it can). It needs 2
    classes or more, one of them with 2 examples or more: else nothing can be held out to
    judge an adapter on."""
    _, counts = torch.unique(labels, return_counts=True)
    largest = int(counts.max()) if len(counts) else 0
    if len(counts) >= 2 and largest >= 2:
        return None
    return (
        f"adaptation needs at least 2 classes, one of them with at least 2 examples (there "
        f"are {len(counts)} classes of at most {largest} examples): add support examples first"
    )


def fold_of(labels: torch.Tensor, folds: int, generator: torch.Generator) -> torch.Tensor:
    """``[n]`` fold of each example: each class's examples, in random order, go round the
    folds from a random one, so a class of ``n >= 2`` examples keeps at least one out of every
    fold; a class of one example is never held out (fold ``-1``)."""
    order = _shuffled_by_class(labels, generator)
    position = _position_in_class(labels[order])
    classes, index, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    start = torch.randint(folds, (len(classes),), generator=generator)
    fold = torch.empty_like(labels)
    fold[order] = (position + start[index[order]]) % folds
    fold[counts[index] < 2] = -1
    return fold


def _shuffled_by_class(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A permutation that groups examples by label, in random order within each label."""
    keys = torch.rand(len(labels), generator=generator, dtype=torch.float64)
    _, classes = torch.unique(labels, return_inverse=True)
    return torch.argsort(classes.double() + keys)


def _position_in_class(sorted_labels: torch.Tensor) -> torch.Tensor:
    """For labels grouped in runs: each one's position in its run (0, 1, ...)."""
    _, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(len(sorted_labels)) - torch.repeat_interleave(starts, counts)


def episode_rows(labels: torch.Tensor, way: int, generator: torch.Generator) -> torch.Tensor:
    """The rows of one episode's classes: every row, or where there are more than ``way``
    classes, the rows of ``way`` classes of 2 examples or more drawn at random."""
    classes, counts = torch.unique(labels, return_counts=True)
    if len(classes) <= way:
        return torch.arange(len(labels))
    eligible = classes[counts >= 2]
    chosen = eligible[torch.randperm(len(eligible), generator=generator)[:way]]
    return torch.nonzero(torch.isin(labels, chosen)).squeeze(1)


def episode_split(
    labels: torch.Tensor, query_fraction: float, generator: torch.Generator
) -> torch.Tensor:
    """``[n]`` bool, True for the queries of one episode: ``query_fraction`` of each class's
    examples at random, rounded, at least one and at most all but one (a class of one example
    is only support)."""
    order = _shuffled_by_class(labels, generator)
    position = _position_in_class(labels[order])
    _, index, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    wanted = (counts.double() * query_fraction).round().long().clamp(min=1)
    wanted = torch.minimum(wanted, counts - 1)
    is_query = torch.zeros(len(labels), dtype=torch.bool)
    is_query[order] = position < wanted[index[order]]
    return is_query


class _Steps:
    """Counts training steps across the trainings of one adaptation, for progress reports."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.examples = total, 0, 0
        self.progress = progress

    def step(self, examples: int) -> None:
        self.done += 1
        self.examples += examples
        if self.progress is not None:
            self.progress(self.done, self.total, self.examples)

    def skip_to_end(self) -> None:
        self.done = self.total
        if self.progress is not None:
            self.progress(self.done, self.total, self.examples)


def train_adapter(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    config: AdaptationConfig,
    generator: torch.Generator,
    steps: _Steps | None = None,
) -> Adapter:
    """An adapter fitted to ``embeddings [n, dim]`` float32 with ``labels [n]`` int64 (any
    values; classes of one example take part as support only) by ``config.steps`` episodes,
    on one torch thread (:func:`~protonet.threads.one_thread`)."""
    with one_thread():
        return _train(embeddings.float(), labels, config, generator, steps)


def _train(
    x: torch.Tensor,
    labels: torch.Tensor,
    config: AdaptationConfig,
    generator: torch.Generator,
    steps: _Steps | None,
) -> Adapter:
    dim = x.shape[1]
    rank = min(config.rank, dim)
    down = (torch.randn(dim, rank, generator=generator) / math.sqrt(dim)).requires_grad_()
    up = torch.zeros(rank, dim, requires_grad=True)
    optimizer = torch.optim.Adam([down, up], lr=config.learning_rate)
    trainable = bool((torch.unique(labels, return_counts=True)[1] >= 2).any())
    for _ in range(config.steps if trainable else 0):
        rows = episode_rows(labels, config.way, generator)
        is_query = episode_split(labels[rows], config.query_fraction, generator)
        mapped = x[rows] + (x[rows] @ down) @ up
        loss = _episode_loss(mapped, labels[rows], is_query)
        update = down @ up
        loss = loss + config.decay * update.pow(2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if steps is not None:
            steps.step(len(labels))
    return Adapter(down.detach().clone(), up.detach().clone())


def _episode_loss(
    mapped: torch.Tensor, labels: torch.Tensor, is_query: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the queries against every class's prototype of its support rows."""
    prototypes, classes = compute_prototypes(mapped[~is_query], labels[~is_query])
    targets = torch.searchsorted(classes, labels[is_query])
    logits = -_squared_distances(mapped[is_query], prototypes)
    return F.cross_entropy(logits, targets)


def _squared_distances(queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``[m, c]`` squared distances by the ``|q|^2 - 2 q.p + |p|^2`` expansion: one matrix
    product, where the core's direct difference (``protonet.prototypes.squared_euclidean``)
    would hold and differentiate an ``[m, c, dim]`` tensor at every step (150 x 8 texts:
    500 MB)."""
    products = queries @ prototypes.T
    norms = queries.pow(2).sum(1, keepdim=True) + prototypes.pow(2).sum(1)
    return (norms - 2 * products).clamp(min=0)


def _classify(
    train: torch.Tensor, train_labels: torch.Tensor, held: torch.Tensor, held_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Held-out rows against the training rows' prototypes: ``(correct [m] bool, distance to
    the own class's prototype [m], that prototype's size [m])``."""
    prototypes, classes = compute_prototypes(train, train_labels)
    own = torch.searchsorted(classes, held_labels)
    nearest, scores = [], []
    for start in range(0, len(held), CLASSIFY_ROWS):  # bounded memory: [rows, classes]
        distances = _squared_distances(held[start : start + CLASSIFY_ROWS], prototypes)
        nearest.append(distances.argmin(dim=1))
        mine = own[start : start + CLASSIFY_ROWS]
        scores.append(distances[torch.arange(len(mine)), mine])
    correct = classes[torch.cat(nearest)] == held_labels
    sizes = torch.bincount(torch.searchsorted(classes, train_labels), minlength=len(classes))
    return correct, torch.cat(scores), sizes[own]


def adapt(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    config: AdaptationConfig | None = None,
    progress: Progress | None = None,
) -> Adaptation:
    """Judge an adapter for ``embeddings [n, dim]`` with ``labels [n]`` on held-out folds, and
    train the adopted one on every example if it wins (module docstring). ``progress`` is
    called after every training step; whatever it raises ends the work and propagates.
    :class:`InvalidInputError` for a support set that :func:`why_not_adaptable` refuses."""
    config = config or AdaptationConfig()
    if (problem := why_not_adaptable(labels)) is not None:
        raise InvalidInputError(problem)
    with one_thread():
        return _adapt(embeddings.float(), labels, config, progress)


def _adapt(
    x: torch.Tensor, labels: torch.Tensor, config: AdaptationConfig, progress: Progress | None
) -> Adaptation:
    generator = torch.Generator().manual_seed(config.seed)
    largest = int(torch.unique(labels, return_counts=True)[1].max())
    folds = max(2, min(config.folds, largest))
    fold = fold_of(labels, folds, generator)
    steps = _Steps((folds + 1) * config.steps, progress)
    held_out = _compare(x, labels, fold, folds, config, generator, steps)
    if not held_out.adapter_wins(config):
        steps.skip_to_end()
        return Adaptation(held_out, None)
    return Adaptation(held_out, train_adapter(x, labels, config, generator, steps))


def _compare(
    x: torch.Tensor,
    labels: torch.Tensor,
    fold: torch.Tensor,
    folds: int,
    config: AdaptationConfig,
    generator: torch.Generator,
    steps: _Steps,
) -> HeldOut:
    """Train without each fold and classify the fold, with and without the adapter."""
    plain_correct = adapted_correct = examples = 0
    scores, shots = [], []
    for f in range(folds):
        held, train = fold == f, fold != f
        if not held.any():
            continue
        adapter = train_adapter(x[train], labels[train], config, generator, steps)
        plain, _, _ = _classify(x[train], labels[train], x[held], labels[held])
        mapped_train, mapped_held = adapter.apply(x[train]), adapter.apply(x[held])
        with torch.no_grad():
            adapted, score, size = _classify(mapped_train, labels[train], mapped_held, labels[held])
        plain_correct += int(plain.sum())
        adapted_correct += int(adapted.sum())
        examples += int(held.sum())
        scores.append(score)
        shots.append(size)
    return HeldOut(
        examples, folds, plain_correct, adapted_correct, torch.cat(scores), torch.cat(shots)
    )
