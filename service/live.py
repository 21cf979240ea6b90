"""One collection's in-memory state: its prototype index and class table, behind locks.

Two locks per collection:

* ``write_lock`` serializes writers (support, class deletion, collection deletion) from the
  database transaction through the index update, so prototypes are always computed from the
  examples that are committed.
* ``_state_lock`` guards the index and class table together and is held only briefly, by a
  writer swapping in new prototypes and by a reader searching: a query sees each class either
  before or after an update, never half-way (between ``remove_ids`` and ``add_with_ids``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from protonet.errors import ConflictError
from protonet.prototypes import compute_prototypes
from service.index import PrototypeIndex
from service.storage import StoredClass, StoredEmbeddings


@dataclass(frozen=True)
class ClassSummary:
    label: str
    n_examples: int


@dataclass(frozen=True)
class CollectionSummary:
    """``revision``: the id of the collection's latest change that this process has applied."""

    name: str
    n_classes: int
    n_examples: int
    revision: int


@dataclass(frozen=True)
class CollectionDetail(CollectionSummary):
    classes: list[ClassSummary]


@dataclass(frozen=True)
class SupportResult:
    """How many examples a request added, and the classes it touched (in request order)."""

    n_added: int
    classes: list[ClassSummary]
    revision: int


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float
    distance: float


@dataclass(frozen=True)
class QueryResult:
    """The best class and the ``top_k`` nearest (best first, so ``top_k[0]`` is ``best``)."""

    best: Prediction
    top_k: list[Prediction]


def prototypes_of(stored: StoredEmbeddings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(class_ids [c] int64, prototypes [c, dim] float32, counts [c] int64)`` of stored rows.

    The prototype of a class is the mean of its embeddings (the core's ``compute_prototypes``).
    """
    embeddings = torch.from_numpy(stored.embeddings)
    class_ids = torch.from_numpy(stored.class_ids)
    prototypes, classes = compute_prototypes(embeddings, class_ids)
    _, counts = torch.unique(class_ids, return_counts=True)  # same sorted order as ``classes``
    return classes.numpy(), prototypes.numpy(), counts.numpy()


class LiveCollection:
    """Index + class table of one collection (see the module docstring for the locking).

    ``revision`` is the id of the latest of the collection's changes applied here: the index
    reflects at least every change up to it (service/registry.py applies them).
    """

    def __init__(self, collection_id: int, name: str, dim: int, revision: int = 0) -> None:
        self.id = collection_id
        self.name = name
        self.revision = revision  # set under write_lock
        self.write_lock = threading.Lock()
        self.deleted = False  # set under write_lock when the collection is dropped
        self._state_lock = threading.Lock()
        self._index = PrototypeIndex(dim)
        self._classes: dict[int, ClassSummary] = {}
        self._ids_by_label: dict[str, int] = {}
        self._n_examples = 0  # kept up to date so summaries stay O(1) with many classes

    def class_id(self, label: str) -> int | None:
        with self._state_lock:
            return self._ids_by_label.get(label)

    def update_classes(self, labels: dict[int, str], stored: StoredEmbeddings) -> list[int]:
        """Recompute the prototypes of the classes in ``stored`` (all their embeddings) and
        swap them in. ``labels`` maps class id -> label. Returns the updated class ids."""
        if len(stored.class_ids) == 0:
            return []
        class_ids, prototypes, counts = prototypes_of(stored)
        with self._state_lock:
            self._index.upsert(class_ids, prototypes)
            for class_id, count in zip(class_ids.tolist(), counts.tolist(), strict=True):
                previous = self._classes.get(class_id)
                self._n_examples += count - (previous.n_examples if previous else 0)
                self._classes[class_id] = ClassSummary(labels[class_id], count)
                self._ids_by_label[labels[class_id]] = class_id
        return class_ids.tolist()

    def load(self, classes: list[StoredClass], stored: StoredEmbeddings) -> None:
        """Build the index from the collection's stored classes and embeddings (at startup).

        Embeddings of classes not in ``classes`` are left out: they were stored after the
        classes were listed (another process wrote meanwhile), and the change feed, which
        starts from before the listing, brings them in."""
        labels = {c.id: c.label for c in classes}
        listed = np.isin(stored.class_ids, list(labels))
        if not listed.all():
            stored = StoredEmbeddings(stored.class_ids[listed], stored.embeddings[listed])
        if classes:
            self.update_classes(labels, stored)

    def remove_classes(self, class_ids: set[int]) -> None:
        """Drop the classes of ``class_ids`` that are here (others are ignored)."""
        with self._state_lock:
            for class_id in class_ids & self._classes.keys():
                self._index.remove(np.array([class_id], dtype=np.int64))
                summary = self._classes.pop(class_id)
                del self._ids_by_label[summary.label]
                self._n_examples -= summary.n_examples

    def class_summaries(self, class_ids: list[int]) -> list[ClassSummary]:
        with self._state_lock:
            return [self._classes[class_id] for class_id in class_ids]

    def summary(self) -> CollectionSummary:
        with self._state_lock:
            return CollectionSummary(self.name, len(self._classes), self._n_examples, self.revision)

    def detail(self) -> CollectionDetail:
        """Summary plus every class, in the order they were created."""
        with self._state_lock:
            classes = [self._classes[class_id] for class_id in sorted(self._classes)]
            revision = self.revision
        n_examples = sum(c.n_examples for c in classes)
        return CollectionDetail(self.name, len(classes), n_examples, revision, classes)

    def is_empty(self) -> bool:
        """No classes right now. Lock-free (callable from the event loop while a long search
        holds the lock): a stale answer is caught by :meth:`rank` returning ``None``."""
        return len(self._index) == 0

    def no_classes_error(self) -> ConflictError:
        return ConflictError(
            f"collection {self.name!r} has no classes yet: add support examples first"
        )

    def rank(self, queries: np.ndarray, top_k: int) -> list[QueryResult] | None:
        """Nearest prototypes of ``queries [n, dim]``; ``None`` if there are no classes.

        ``probability`` is the softmax over all the collection's classes of minus the squared
        distance; ``top_k`` is clamped to the number of classes.
        """
        with self._state_lock:
            if len(self._index) == 0:
                return None
            ranking = self._index.rank(queries, top_k)
            labels = [[self._classes[i].label for i in row] for row in ranking.class_ids.tolist()]
        rows = zip(
            labels, ranking.probabilities().tolist(), ranking.distances.tolist(), strict=True
        )
        results = []
        for row_labels, probabilities, distances in rows:
            top = [
                Prediction(label, probability, distance)
                for label, probability, distance in zip(
                    row_labels, probabilities, distances, strict=True
                )
            ]
            results.append(QueryResult(top[0], top))
        return results
