"""Diagnostics of a support set: how well a collection classifies its own examples.

Computed from the stored embeddings alone, in one pass (nothing is re-encoded), with the
service's metric (squared Euclidean distance to class prototypes, the mean embeddings of
:func:`protonet.prototypes.compute_prototypes`):

* per class: its number of examples; its **leave-one-out accuracy** (each example classified
  against every prototype, its own class's prototype recomputed without it), for classes with
  at least two examples; its **nearest other class** and the distance between the prototypes;
* **expected accuracy**: the mean leave-one-out accuracy over every example that has one (an
  estimate of the accuracy on new drawings like the support examples, with one shot fewer);
* **confusable pairs**: the closest pairs of prototypes, best (closest) first, at most 10;
* **suspected mislabelled examples**: those closer to another class's prototype than to their
  own class's prototype without them, most suspicious first.

Leave-one-out needs no recomputed prototypes. Without example ``x``, the prototype of its class
of ``n`` examples with sum ``S`` and mean ``p`` is ``(S - x) / (n - 1)``, and
``x - (S - x) / (n - 1) = n / (n - 1) * (x - p)``: the distance to it is the distance to ``p``
times ``(n / (n - 1))^2``. Every other prototype stays as it is. So one search of each example
against the prototypes of all classes decides it.

A class with one example is not judged: without that example the class has no prototype, so
it has no leave-one-out accuracy, adds nothing to the expected accuracy and is never flagged
as mislabelled (against its prototype as is, the example itself, its distance would be 0).
Its nearest class is still reported.

Cost, for ``N`` examples in ``C`` classes of embeddings of width ``D``: time
``O(N * C * D)`` for the examples of classes with two or more examples and ``O(C^2 * D)`` for
the distances between prototypes (:func:`distances_needed` counts them; one matrix product and
a top-k per chunk, like a query), so it grows with the square of the collection when classes
grow with examples. Measured on one thread of a 2-core EPYC, D = 64: 10,000 examples in 1,000
classes 0.4 s; 200,000 in 1,000 6 s; 50,000 in 5,000 8 s; 20,000 singletons 9 s; 50,000 in
25,000 30 s (about 4e7 distances a second). Memory: the embeddings and prototypes
(``O((N + C) * D)``) plus one chunk of rows at a time, whose distance matrix is bounded by
``CHUNK_ELEMENTS`` numbers whatever the collection's size. :class:`DiagnosticsLimits` refuses
collections beyond a number of examples or of distances (the service's settings), and
:class:`DiagnosticsSlots` bounds how many run at once.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from protonet.open_set import leave_one_out_distances
from protonet.prototypes import compute_prototypes
from service.collections.exact_index import ExactIndex
from service.errors import CollectionTooLargeError, DiagnosticsBusyError
from service.storage.repository import StoredEmbeddings

MAX_CONFUSABLE_PAIRS = 10
# Candidates recomputed directly beyond the k asked for (ExactIndex.nearest): a margin for the
# rounding of the fast expansion; 32, as queries use, is 1.5x slower here for nothing.
REFINED_MARGIN = 4
# Numbers in one chunk's distance matrix (float32: 16 MiB), whatever the collection's size.
CHUNK_ELEMENTS = 1 << 22
MAX_RETRY_AFTER = 60  # seconds: a Retry-After beyond this would read as "never"


def distances_needed(class_sizes: Sequence[int]) -> int:
    """The distances :func:`diagnose` computes for classes of these sizes: every example of a
    class of two or more against every prototype, and every prototype against every other."""
    n_classes = len(class_sizes)
    judged = sum(size for size in class_sizes if size >= 2)
    return judged * n_classes + n_classes * n_classes


@dataclass(frozen=True)
class DiagnosticsLimits:
    """The largest collection diagnosed, in examples (memory: every embedding is read) and in
    distances (time: :func:`distances_needed`)."""

    max_examples: int = 200_000
    max_distances: int = 1_000_000_000
    max_concurrent: int = 2  # DiagnosticsSlots
    max_concurrent_per_tenant: int = 1

    def check(self, name: str, class_sizes: Sequence[int]) -> None:
        """:class:`CollectionTooLargeError`, naming the limit and its setting, if the
        collection ``name`` with classes of ``class_sizes`` examples is over a limit."""
        n_examples, distances = sum(class_sizes), distances_needed(class_sizes)
        if n_examples > self.max_examples:
            raise CollectionTooLargeError(
                f"collection {name!r} has {n_examples} examples; diagnostics are computed for "
                f"at most {self.max_examples} (PROTONET_DIAGNOSTICS_MAX_EXAMPLES)"
            )
        if distances > self.max_distances:
            raise CollectionTooLargeError(
                f"diagnostics of collection {name!r} ({n_examples} examples in "
                f"{len(class_sizes)} classes) would compute {distances} distances, more than "
                f"{self.max_distances} (PROTONET_DIAGNOSTICS_MAX_DISTANCES): the work grows "
                "with examples x classes"
            )


class DiagnosticsSlots:
    """At most ``per_process`` diagnostics at once in this process, and ``per_tenant`` for
    one tenant: each takes seconds of CPU on large collections, so a few clients with any
    read key could otherwise occupy every core. Beyond: :class:`DiagnosticsBusyError`, whose
    retry delay is the duration of the last diagnostics that finished (at least 1 s)."""

    def __init__(self, per_process: int = 2, per_tenant: int = 1) -> None:
        self.per_process = per_process
        self.per_tenant = per_tenant
        self._running: Counter[str] = Counter()
        self._last_seconds = 1.0
        self._lock = threading.Lock()

    @contextmanager
    def admit(self, tenant: str) -> Iterator[None]:
        """Hold a slot while the block runs; refuses at once if none is free."""
        self._take(tenant)
        started = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._running[tenant] -= 1
                if not self._running[tenant]:
                    del self._running[tenant]  # tenants come and go: keep only those running
                self._last_seconds = time.monotonic() - started

    def _take(self, tenant: str) -> None:
        with self._lock:
            if self._running.total() >= self.per_process:
                self._refuse(
                    f"{self.per_process} diagnostics are running in this process, as many as "
                    "PROTONET_DIAGNOSTICS_MAX_CONCURRENT allows"
                )
            if self._running[tenant] >= self.per_tenant:
                self._refuse(
                    f"{self.per_tenant} diagnostics of this tenant are running, as many as "
                    "PROTONET_DIAGNOSTICS_MAX_CONCURRENT_PER_TENANT allows"
                )
            self._running[tenant] += 1

    def _refuse(self, why: str) -> None:
        retry_after = min(MAX_RETRY_AFTER, max(1, math.ceil(self._last_seconds)))
        raise DiagnosticsBusyError(f"{why}: retry after {retry_after} s", retry_after)


@dataclass(frozen=True)
class ClassDiagnosis:
    """One class: ``loo_accuracy`` is None below two examples; ``nearest_class`` (and its
    squared prototype distance) None when the collection has one class."""

    label: str
    n_examples: int
    loo_accuracy: float | None
    nearest_class: str | None
    nearest_class_distance: float | None


@dataclass(frozen=True)
class ConfusablePair:
    """Two classes and the squared Euclidean distance between their prototypes."""

    labels: tuple[str, str]
    distance: float


@dataclass(frozen=True)
class SuspectedExample:
    """An example nearer another class's prototype (``distance_other``) than its own class's
    prototype computed without it (``distance_own``); distances squared Euclidean."""

    example_id: int
    label: str
    closer_to: str
    distance_own: float
    distance_other: float


@dataclass(frozen=True)
class SupportSetDiagnostics:
    n_classes: int
    n_examples: int
    expected_accuracy: float | None
    classes: list[ClassDiagnosis]
    confusable_pairs: list[ConfusablePair]
    suspected_mislabelled: list[SuspectedExample]


@dataclass(frozen=True)
class SupportSet:
    """The examples, their classes as rows ``0..C-1`` (by class id), and the prototypes.

    ``embeddings [N, D]``, ``class_rows [N]``, ``example_ids [N]``, ``labels [C]``,
    ``counts [C]``, ``prototypes [C, D]`` (also in ``index``, keyed by row).
    """

    embeddings: torch.Tensor
    class_rows: np.ndarray
    example_ids: np.ndarray
    labels: list[str]
    counts: np.ndarray
    prototypes: torch.Tensor
    index: ExactIndex


@dataclass(frozen=True)
class LeaveOneOut:
    """The judged examples (rows of the support set, in classes of two or more examples):
    ``rows [M]``, ``correct [M]``, ``own [M]`` (distance to the own prototype without the
    example), ``other [M]`` (nearest other class's row, -1 if none) and ``other_distance [M]``
    (``inf`` if none)."""

    rows: np.ndarray
    correct: np.ndarray
    own: np.ndarray
    other: np.ndarray
    other_distance: np.ndarray


def diagnose(
    stored: StoredEmbeddings, labels: Mapping[int, str], chunk_rows: int | None = None
) -> SupportSetDiagnostics:
    """Diagnostics of the examples in ``stored`` (``embeddings [N, D]``, ``class_ids [N]``,
    ``example_ids [N]``); ``labels`` maps class id -> label, and rows of classes not in it
    are left out. ``chunk_rows``: rows searched at once (default: as many as keep a chunk's
    distance matrix within ``CHUNK_ELEMENTS``); the result does not depend on it."""
    support = support_set(stored, labels)
    n_classes = len(support.labels)
    if n_classes == 0:
        return SupportSetDiagnostics(0, 0, None, [], [], [])
    rows = chunk_rows or default_chunk_rows(n_classes, support.embeddings.shape[1])
    nearest, nearest_distance = nearest_other_classes(support, rows)
    loo = leave_one_out(support, rows)
    judged = np.bincount(support.class_rows[loo.rows], minlength=n_classes)
    right = np.bincount(
        support.class_rows[loo.rows], loo.correct.astype(np.float64), minlength=n_classes
    )
    classes = [
        ClassDiagnosis(
            label,
            int(support.counts[row]),
            float(right[row] / judged[row]) if judged[row] else None,
            support.labels[nearest[row, 0]] if nearest.shape[1] else None,
            float(nearest_distance[row, 0]) if nearest.shape[1] else None,
        )
        for row, label in enumerate(support.labels)
    ]
    return SupportSetDiagnostics(
        n_classes,
        len(support.class_rows),
        float(loo.correct.mean()) if len(loo.rows) else None,
        classes,
        confusable_pairs(support.labels, nearest, nearest_distance),
        suspected_mislabelled(support, loo),
    )


def support_set(stored: StoredEmbeddings, labels: Mapping[int, str]) -> SupportSet:
    """The rows of ``stored`` whose class is in ``labels``, with their prototypes."""
    kept = np.isin(stored.class_ids, np.fromiter(labels, dtype=np.int64, count=len(labels)))
    embeddings = torch.from_numpy(np.ascontiguousarray(stored.embeddings[kept], np.float32))
    class_ids = torch.from_numpy(stored.class_ids[kept])
    prototypes, classes = compute_prototypes(embeddings, class_ids)  # classes sorted by id
    class_rows = torch.searchsorted(classes, class_ids).numpy()
    index = ExactIndex(embeddings.shape[1])
    index.upsert(np.arange(len(classes)), prototypes.numpy())
    return SupportSet(
        embeddings,
        class_rows,
        stored.example_ids[kept],
        [labels[class_id] for class_id in classes.tolist()],
        np.bincount(class_rows, minlength=len(classes)),
        prototypes,
        index,
    )


def default_chunk_rows(n_classes: int, dim: int) -> int:
    """Rows per search so that its ``[rows, C]`` distances and ``[rows, 15, D]`` candidate
    differences (at most 10 + 1 + ``REFINED_MARGIN`` candidates) stay within
    ``CHUNK_ELEMENTS`` numbers."""
    refined = MAX_CONFUSABLE_PAIRS + 1 + REFINED_MARGIN
    return max(1, CHUNK_ELEMENTS // max(n_classes, refined * dim))


def nearest_others(
    index: ExactIndex, queries: torch.Tensor, exclude: np.ndarray, k: int, chunk_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows [n, k], distances [n, k])``: the ``k`` prototypes nearest each of ``queries
    [n, D]`` other than ``exclude [n]`` (a row of the index each), nearest first; ``k`` at
    most the number of prototypes minus one."""
    found_rows, found_distances = [], []
    for start in range(0, len(queries), chunk_rows):
        chunk = queries[start : start + chunk_rows].numpy()
        # [m, k + 1]: the excluded one at most once among them
        distances, rows = index.nearest(chunk, k + 1, refined=k + 1 + REFINED_MARGIN)
        others = rows != exclude[start : start + chunk_rows, None]
        keep = np.argsort(~others, axis=1, kind="stable")[:, :k]  # the first k others, in order
        found_rows.append(np.take_along_axis(rows, keep, axis=1))
        found_distances.append(np.take_along_axis(distances, keep, axis=1))
    if not found_rows:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return np.concatenate(found_rows), np.concatenate(found_distances)


def nearest_other_classes(support: SupportSet, chunk_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows [C, k], distances [C, k])``: each class's ``k = min(10, C - 1)`` nearest other
    classes by prototype distance, nearest first (``k`` is 0 with one class)."""
    n_classes = len(support.labels)
    k = min(MAX_CONFUSABLE_PAIRS, n_classes - 1)
    if k == 0:
        return np.zeros((n_classes, 0), np.int64), np.zeros((n_classes, 0), np.float32)
    own = np.arange(n_classes)
    return nearest_others(support.index, support.prototypes, own, k, chunk_rows)


def leave_one_out(support: SupportSet, chunk_rows: int) -> LeaveOneOut:
    """Classify every example of a class with two or more examples against the prototypes,
    its own class's without it (see the module docstring for why that is a rescaling)."""
    counts = support.counts[support.class_rows]  # [N]
    rows = np.flatnonzero(counts >= 2)
    own_rows = support.class_rows[rows]
    embeddings = support.embeddings[torch.from_numpy(rows)]  # [M, D]
    own = leave_one_out_distances(  # the same held-out distance rejection adapts to
        embeddings.numpy(), own_rows, support.prototypes.numpy(), support.counts
    )
    if len(support.labels) == 1:  # nothing to confuse it with
        other = np.full(len(rows), -1)
        return LeaveOneOut(rows, np.ones(len(rows), bool), own, other, np.full(len(rows), np.inf))
    other, other_distance = nearest_others(support.index, embeddings, own_rows, 1, chunk_rows)
    other_distance = other_distance[:, 0].astype(np.float64)
    return LeaveOneOut(rows, ~(other_distance < own), own, other[:, 0], other_distance)


def confusable_pairs(
    labels: list[str], nearest: np.ndarray, distances: np.ndarray
) -> list[ConfusablePair]:
    """The closest pairs of prototypes, at most 10, closest first (ties by class age).

    ``nearest [C, k]`` holds each class's ``k`` nearest others: every one of the 10 closest
    pairs is among them (a pair outside its class's 10 nearest has 10 closer pairs)."""
    n_classes, k = nearest.shape
    first = np.repeat(np.arange(n_classes), k)
    second = nearest.ravel()
    keys = np.minimum(first, second) * n_classes + np.maximum(first, second)
    keys, at = np.unique(keys, return_index=True)  # each pair once (found from both sides)
    pair_distances = distances.ravel()[at]
    best = np.lexsort((keys, pair_distances))[:MAX_CONFUSABLE_PAIRS]
    return [
        ConfusablePair(
            (labels[keys[i] // n_classes], labels[keys[i] % n_classes]), float(pair_distances[i])
        )
        for i in best.tolist()
    ]


def suspected_mislabelled(support: SupportSet, loo: LeaveOneOut) -> list[SuspectedExample]:
    """The misclassified examples of :func:`leave_one_out`, most suspicious first: the
    smallest ratio of the other class's distance to the own class's (ties by example id)."""
    wrong = np.flatnonzero(~loo.correct)
    ratio = loo.other_distance[wrong] / loo.own[wrong]
    example_ids = support.example_ids[loo.rows[wrong]]
    order = wrong[np.lexsort((example_ids, ratio))]
    return [
        SuspectedExample(
            int(support.example_ids[loo.rows[i]]),
            support.labels[support.class_rows[loo.rows[i]]],
            support.labels[loo.other[i]],
            float(loo.own[i]),
            float(loo.other_distance[i]),
        )
        for i in order.tolist()
    ]
