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

import bisect
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from protonet.prototypes import compute_prototypes
from service.collections.adapter import AdapterSummary, CollectionAdapter
from service.collections.exact_index import ExactIndex
from service.collections.ivf_index import DEFAULT_NPROBE, IVFIndex
from service.collections.pages import Page, page_of
from service.collections.rejection import (
    AdapterScores,
    LeaveOneOutScores,
    RejectionSetting,
    Verdict,
)
from service.errors import ConflictError
from service.storage.repository import Change, StoredClass, StoredEmbeddings

logger = logging.getLogger(__name__)


IndexKind = Literal["auto", "exact", "ivf"]  # what a collection asks for
SearchKind = Literal["exact", "ivf"]  # what answers


@dataclass(frozen=True)
class ClassCount:
    """A class of a collection, and how many support examples it has."""

    label: str
    n_examples: int


@dataclass(frozen=True)
class CollectionStatus:
    """``revision``: its tenant's revision of the collection's latest change that this process
    has applied (service/storage/repository.py: revisions number each tenant's writes)."""

    name: str
    n_classes: int
    n_examples: int
    revision: int
    index: IndexKind  # chosen at creation
    index_in_use: SearchKind  # what answers queries now
    rejection_setting: RejectionSetting  # of unknown inputs, when a query does not say
    model: str  # the served model it is bound to
    adapter: AdapterSummary | None  # its adopted adapter, if it has one


@dataclass(frozen=True)
class CollectionContents(CollectionStatus):
    """The status, and a page of its classes where one was asked for."""

    classes: Page[ClassCount] | None = None


@dataclass(frozen=True)
class SupportResult:
    """How many examples a request added, and the classes it touched (in request order)."""

    n_added: int
    classes: list[ClassCount]
    revision: int


@dataclass(frozen=True)
class RankedClass:
    """One of the classes nearest to a query: its softmax probability and squared distance."""

    label: str
    probability: float
    distance: float


@dataclass(frozen=True)
class QueryAnswer:
    """The answer to one query: the best class, the ``top_k`` nearest classes ranked best first
    (so ``ranked[0]`` is ``best``), the kind of index that found them, the number of examples
    of each ranked class, the version of the adapter whose space they were found in (``None``:
    the model's own), and (when rejection applies) whether the query is known at all."""

    best: RankedClass
    ranked: list[RankedClass]
    index: str
    shots: tuple[int, ...] = ()
    verdict: Verdict | None = None
    adapter: int | None = None

    def top(self, k: int) -> QueryAnswer:
        """The same answer with only the ``k`` nearest classes."""
        return dataclasses.replace(self, ranked=self.ranked[:k], shots=self.shots[:k])


# Collections smaller than this switch to (or are rebuilt as) IVF within the write that grew
# them: it takes milliseconds. Larger builds run in the background while queries go on.
SYNCHRONOUS_BUILD_MAX = 2000


@dataclass(frozen=True)
class IndexPolicy:
    """Which search a collection uses: ``exact`` (one matrix, every class), ``ivf`` (FAISS,
    approximate) or ``auto``: exact up to ``exact_max_classes`` classes, IVF above."""

    kind: IndexKind = "auto"
    exact_max_classes: int = 20_000
    nprobe: int = DEFAULT_NPROBE

    def wants_ivf(self, n_classes: int) -> bool:
        if self.kind == "ivf":
            return n_classes > 0
        return self.kind == "auto" and n_classes > self.exact_max_classes


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

    ``change_id`` is the id of the latest of the collection's changes applied here: the index
    reflects at least every change up to it (service/collections/replication.py applies them);
    ``revision`` is that change's revision, the number its tenant's clients see.

    With an adopted ``adapter`` every embedding is mapped before it counts: stored ones before
    prototypes and held-out scores are made, queries before they are ranked. The adapter and
    the index built in its space are swapped together (:meth:`rebuild`).
    """

    def __init__(
        self,
        collection_id: int,
        name: str,
        dim: int,
        revision: int = 0,
        policy: IndexPolicy | None = None,
        rejection_setting: RejectionSetting | None = None,
        model: str = "default",
        change_id: int = 0,
    ) -> None:
        self.id = collection_id
        self.name = name
        self.dim = dim
        self.model = model  # the served model's name: fixed at creation
        # Both set under write_lock and the state lock (advance).
        self.revision = revision
        self.change_id = change_id
        self.policy = policy or IndexPolicy()
        # Replaced (not mutated) under write_lock and the state lock (advance).
        self.rejection_setting = rejection_setting or RejectionSetting()
        # Held-out scores of the support set, to adapt rejection thresholds to it.
        self.leave_one_out = LeaveOneOutScores()
        self.write_lock = threading.Lock()
        self.deleted = False  # set under write_lock when the collection is dropped
        self._state_lock = threading.Lock()
        self._index: ExactIndex | IVFIndex = ExactIndex(dim)
        # While a background build runs: the updates made meanwhile, replayed onto the new
        # index before it replaces the old one (None when no build runs).
        self._journal: list[tuple[np.ndarray, np.ndarray | None]] | None = None
        self._classes: dict[int, ClassCount] = {}
        self._ids_by_label: dict[str, int] = {}
        # The class ids in ascending order (creation order), for pages of classes: kept
        # sorted as classes come and go, so a page costs a bisection, not a sort.
        self._order: list[int] = []
        self._n_examples = 0  # kept up to date so summaries stay O(1) with many classes
        # Replaced with the index (rebuild); ``adapter_stale`` set by the registry under
        # write_lock when examples change after the state the adapter was trained on.
        self.adapter: CollectionAdapter | None = None
        self.adapter_stale = False

    def class_id(self, label: str) -> int | None:
        with self._state_lock:
            return self._ids_by_label.get(label)

    def update_classes(self, labels: dict[int, str], stored: StoredEmbeddings) -> list[int]:
        """Recompute the prototypes of the classes in ``stored`` (all their embeddings) and
        swap them in. ``labels`` maps class id -> label. Returns the updated class ids."""
        if len(stored.class_ids) == 0:
            return []
        class_ids, prototypes, counts = prototypes_of(self._in_space(stored))
        self.leave_one_out.update(class_ids, counts, prototypes, stored)
        with self._state_lock:
            self._upsert(class_ids, prototypes)
            for class_id, count in zip(class_ids.tolist(), counts.tolist(), strict=True):
                previous = self._classes.get(class_id)
                self._n_examples += count - (previous.n_examples if previous else 0)
                self._classes[class_id] = ClassCount(labels[class_id], count)
                self._ids_by_label[labels[class_id]] = class_id
                if previous is None:
                    self._add_to_order(class_id)
        self._adapt_index()
        return class_ids.tolist()

    def load(self, classes: list[StoredClass], stored: StoredEmbeddings) -> None:
        """Build the index from the collection's stored classes and embeddings (at startup).

        Embeddings of classes not in ``classes`` are left out: they were stored after the
        classes were listed (another process wrote meanwhile), and the change feed, which
        starts from before the listing, brings them in."""
        labels = {c.id: c.label for c in classes}
        listed = np.isin(stored.class_ids, list(labels))
        if not listed.all():
            stored = StoredEmbeddings(
                stored.class_ids[listed], stored.embeddings[listed], stored.example_ids[listed]
            )
        if classes:
            self.update_classes(labels, stored)

    def load_persisted(self, classes: list[StoredClass], index: IVFIndex) -> None:
        """Take a persisted index as it is, and the class table from storage (at startup);
        the caller then refreshes the classes changed after the index's change id."""
        self.leave_one_out.complete = False  # no embeddings read: filled in when needed
        with self._state_lock:
            self._index = index
            for stored_class in classes:
                summary = ClassCount(stored_class.label, stored_class.n_examples)
                self._classes[stored_class.id] = summary
                self._ids_by_label[stored_class.label] = stored_class.id
                self._n_examples += stored_class.n_examples
            self._order = sorted(self._classes)

    def fill_leave_one_out(self, stored: StoredEmbeddings) -> None:
        """Held-out scores of every class here from the collection's ``stored`` embeddings
        (after a load from a persisted index, which reads none); caller holds write_lock."""
        listed = np.isin(stored.class_ids, list(self.indexed_ids()))
        if not listed.all():  # classes stored elsewhere since: the change feed brings them
            stored = StoredEmbeddings(
                stored.class_ids[listed], stored.embeddings[listed], stored.example_ids[listed]
            )
        if len(stored.class_ids):
            stored = self._in_space(stored)
            class_ids, prototypes, counts = prototypes_of(stored)
            self.leave_one_out.update(class_ids, counts, prototypes, stored)
        self.leave_one_out.complete = True

    def _in_space(self, stored: StoredEmbeddings) -> StoredEmbeddings:
        """Stored embeddings mapped by the collection's adapter (as they are without one)."""
        if self.adapter is None:
            return stored
        mapped = self.adapter.apply(stored.embeddings)
        return StoredEmbeddings(stored.class_ids, mapped, stored.example_ids)

    def rebuild(
        self,
        adapter: CollectionAdapter | None,
        stale: bool,
        classes: list[StoredClass],
        stored: StoredEmbeddings,
    ) -> None:
        """Everything again in ``adapter``'s space (``None``: the model's own) from the
        collection's stored classes and embeddings (caller holds write_lock). Built aside, then
        swapped in with the adapter in one step: queries meanwhile answer in the old space."""
        self.wait_for_build()  # a background build would replace the new index when done
        fresh = LiveCollection(self.id, self.name, self.dim, policy=self.policy)
        fresh.adapter = adapter
        fresh.load(classes, stored)
        fresh.wait_for_build()
        with self._state_lock:
            self._index, self._classes = fresh._index, fresh._classes
            self._ids_by_label, self._n_examples = fresh._ids_by_label, fresh._n_examples
            self._order = fresh._order
            self.leave_one_out, self.adapter = fresh.leave_one_out, adapter
            self.adapter_stale = stale

    @property
    def rejection_scores(self) -> LeaveOneOutScores | AdapterScores:
        """The held-out scores that scale rejection thresholds to this collection: its
        adaptation's if it has an adapter, else its own leave-one-out scores."""
        adapter = self.adapter
        return self.leave_one_out if adapter is None else adapter.scores

    def space(self, model_version: str) -> str:
        """The name of the space the index lives in (persisted indexes are kept per space)."""
        adapter = self.adapter
        return model_version if adapter is None else adapter.space(model_version)

    def adapter_summary(self) -> AdapterSummary | None:
        adapter = self.adapter
        if adapter is None:
            return None
        return AdapterSummary(adapter.version, adapter.trained_revision, self.adapter_stale)

    def indexed_ids(self) -> set[int]:
        """The class ids in the table (to check a persisted index against)."""
        with self._state_lock:
            return set(self._classes)

    def remove_classes(self, class_ids: set[int]) -> None:
        """Drop the classes of ``class_ids`` that are here (others are ignored)."""
        with self._state_lock:
            gone = np.array(sorted(class_ids & self._classes.keys()), dtype=np.int64)
            self._remove(gone)
            for class_id in gone.tolist():
                summary = self._classes.pop(class_id)
                del self._ids_by_label[summary.label]
                self._n_examples -= summary.n_examples
                del self._order[bisect.bisect_left(self._order, class_id)]
        self.leave_one_out.remove(class_ids)

    def _add_to_order(self, class_id: int) -> None:
        """A new class id into ``_order`` (caller holds the state lock): usually the largest
        yet, appended; one created elsewhere and applied late is inserted in its place."""
        if not self._order or class_id > self._order[-1]:
            self._order.append(class_id)
        else:
            bisect.insort(self._order, class_id)

    # -- the index and its kind ------------------------------------------------------------

    def _upsert(self, class_ids: np.ndarray, prototypes: np.ndarray) -> None:
        self._index.upsert(class_ids, prototypes)
        if self._journal is not None:
            self._journal.append((class_ids.copy(), np.array(prototypes, copy=True)))

    def _remove(self, class_ids: np.ndarray) -> None:
        if len(class_ids):
            self._index.remove(class_ids)
            if self._journal is not None:
                self._journal.append((class_ids.copy(), None))

    @property
    def index_in_use(self) -> SearchKind:
        return self._index.kind

    def ivf_index(self) -> IVFIndex | None:
        index = self._index
        return index if isinstance(index, IVFIndex) else None

    def _adapt_index(self) -> None:
        """Switch to IVF when the policy asks for it, or rebuild an IVF index that has grown
        4x past what it was clustered on: in the write for small collections, else in a
        background thread (queries go on against the current index meanwhile)."""
        n = len(self._index)
        if self._journal is not None or not self.policy.wants_ivf(n):
            return
        index = self._index
        if isinstance(index, IVFIndex) and n < 4 * max(index.trained_size, 1):
            return
        if n <= SYNCHRONOUS_BUILD_MAX:
            with self._state_lock:
                ids, vectors = self._index.export()
                if len(ids):
                    self._index = IVFIndex.build(ids, vectors, self.policy.nprobe)
            return
        with self._state_lock:
            ids, vectors = self._index.export()
            self._journal = []
        thread = threading.Thread(
            target=self._build_in_background, args=(ids, vectors), name="protonet-ivf-build"
        )
        thread.daemon = True
        thread.start()

    def _build_in_background(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        started = time.monotonic()
        try:
            built = IVFIndex.build(ids, vectors, self.policy.nprobe)
        except Exception:
            logger.exception("building the IVF index of collection %r failed", self.name)
            with self._state_lock:
                self._journal = None
            return
        with self._state_lock:
            for class_ids, prototypes in self._journal or []:
                if prototypes is None:
                    built.remove(class_ids)
                else:
                    built.upsert(class_ids, prototypes)
            self._index, self._journal = built, None
        logger.info(
            "collection %r: IVF index of %d classes built in %.1f s",
            self.name,
            len(ids),
            time.monotonic() - started,
        )

    def wait_for_build(self, timeout: float = 600.0) -> bool:
        """Block until no background build runs (tests, benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._journal is not None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def class_table(self) -> dict[int, ClassCount]:
        """A copy of the class table: ``class id -> (label, number of examples)``."""
        with self._state_lock:
            return dict(self._classes)

    def advance(self, latest: Change, rejection_setting: RejectionSetting | None = None) -> None:
        """Move to the change ``latest`` (applied) and, where it changed one, its rejection
        setting, as one step for readers (who read both under the state lock). Caller holds
        write_lock."""
        with self._state_lock:
            if rejection_setting is not None:
                self.rejection_setting = rejection_setting
            self.change_id, self.revision = latest.id, latest.revision

    def status(self) -> CollectionStatus:
        with self._state_lock:
            return self._status()

    def _status(self) -> CollectionStatus:
        return CollectionStatus(
            self.name,
            len(self._classes),
            self._n_examples,
            self.revision,
            self.policy.kind,
            self._index.kind,
            self.rejection_setting,
            self.model,
            self.adapter_summary(),
        )

    def contents(self, classes_limit: int | None = None) -> CollectionContents:
        """The status, with the first page of up to ``classes_limit`` classes if given (one
        view: the page is of the status's revision)."""
        with self._state_lock:
            status = self._status()
            page = None if classes_limit is None else self._class_page(0, classes_limit)
        return CollectionContents(**vars(status), classes=page)

    def class_page(self, after: int, limit: int) -> tuple[int, Page[ClassCount]]:
        """Up to ``limit`` classes with ids above ``after``, oldest first, and the revision
        they reflect."""
        with self._state_lock:
            return self.revision, self._class_page(after, limit)

    def _class_page(self, after: int, limit: int) -> Page[ClassCount]:
        start = bisect.bisect_right(self._order, after)
        ids = self._order[start : start + limit + 1]
        return page_of([(i, self._classes[i]) for i in ids], limit, "classes", self.id)

    def is_empty(self) -> bool:
        """No classes right now. Lock-free (callable from the event loop while a long search
        holds the lock): a stale answer is caught by :meth:`rank` returning ``None``."""
        return len(self._index) == 0

    def no_classes_error(self) -> ConflictError:
        return ConflictError(
            f"collection {self.name!r} has no classes yet: add support examples first"
        )

    def rank(self, queries: np.ndarray, top_k: int) -> list[QueryAnswer] | None:
        """Nearest prototypes of ``queries [n, dim]``; ``None`` if there are no classes.

        ``probability`` is the softmax over all the collection's classes of minus the squared
        distance; ``top_k`` is clamped to the number of classes. Queries are mapped by the
        adapter that the index was built with (outside the lock, unless it changed meanwhile).
        """
        adapter = self.adapter
        mapped = queries if adapter is None else adapter.apply(queries)
        with self._state_lock:
            if len(self._index) == 0:
                return None
            if self.adapter is not adapter:  # swapped meanwhile: map again, in the new space
                adapter = self.adapter
                mapped = queries if adapter is None else adapter.apply(queries)
            ranking = self._index.rank(mapped, top_k)
            kind = self._index.kind
            ranked = [[self._classes[i] for i in row] for row in ranking.class_ids.tolist()]
        rows = zip(
            ranked, ranking.probabilities().tolist(), ranking.distances.tolist(), strict=True
        )
        results = []
        for classes, probabilities, distances in rows:
            top = [
                RankedClass(c.label, probability, distance)
                for c, probability, distance in zip(classes, probabilities, distances, strict=True)
            ]
            shots = tuple(c.n_examples for c in classes)
            version = None if adapter is None else adapter.version
            results.append(QueryAnswer(top[0], top, kind, shots, adapter=version))
        return results
