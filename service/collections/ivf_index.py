"""Approximate nearest-prototype search for large collections: FAISS IVF-Flat.

Why IVF-Flat (measured in benchmarks/large_collections.py; docs/performance.md): at a million
64-d prototypes it trains and fills in well under a minute on two cores, searches a query in
under a millisecond at ``nprobe`` 32 with recall@1 of 1.0 against exact search on clustered
embeddings, stores the vectors as they are (so candidates' distances are exact, not
quantized), and removes ids in place through a hash-table direct map, so moving or deleting a
class needs no tombstones. HNSW would search as fast but builds several times slower, cannot
remove ids (tombstones and rebuilds), and needs more memory for its graph.

Answers keep their meaning: the ``k`` nearest candidates' distances are exact squared Euclidean
distances (IVF-Flat compares raw vectors), so the best class, its distance and the ranked
nearest classes equal exact search whenever the nearest classes are among the lists probed. The
softmax normalizer is the exact sum of ``exp(-distance)`` over the ``CANDIDATES`` nearest
classes found, plus an estimate of the other classes' terms from a uniform random sample of the
prototypes (:class:`TailSample`). The other classes cannot simply be left out: Omniglot
embeddings sit close together (nearest other prototype ~4, a query ~3 from its own, in squared
distance), so at a million classes the far ones hold most of the normalizer
(docs/performance.md measures both).

Not thread-safe for writers: the owning collection serializes writes against searches
(concurrent searches are safe).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Final

import faiss as faiss_module
import numpy as np

from service.collections.exact_index import Ranking

logger = logging.getLogger(__name__)

# FAISS's bundled type stubs miss several SWIG members used here (DirectMap, search params,
# inverted lists): typed as Any rather than ignored line by line.
faiss: Any = faiss_module

CANDIDATES = 256  # nearest classes fetched per query: the top-k and the softmax's exact terms
TAIL_SAMPLE = 4096  # prototypes sampled to estimate the softmax terms of all the others
DEFAULT_NPROBE = 32  # inverted lists scanned per query
TRAINING_POINTS_PER_LIST = 64  # k-means sample: FAISS wants >= 39 per centroid


def list_count(n: int) -> int:
    """Inverted lists for ``n`` prototypes: ~4 sqrt(n) (FAISS's guidance for IVF), and at
    least 39 training points per list."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39, 16384))


class IVFIndex:
    """Prototypes ``[n_classes, dim]`` keyed by class id, in a FAISS IVF-Flat index."""

    kind: Final = "ivf"

    def __init__(self, index: Any, ids: np.ndarray, tail: TailSample, trained_size: int) -> None:
        """Wrap a filled FAISS index that holds the prototypes of ``ids [n]``."""
        self.dim = index.d
        self._index = index
        self._ids = set(np.asarray(ids, dtype=np.int64).tolist())
        self._tail = tail
        self.trained_size = trained_size  # prototypes it was clustered on (rebuild when 4x)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, nprobe: int = DEFAULT_NPROBE) -> IVFIndex:
        """Cluster ``vectors [n, dim]`` (n >= 1) and add them under ``ids [n]``."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        lists = list_count(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, lists, faiss.METRIC_L2)
        index.cp.min_points_per_centroid = 1  # small collections: fewer points is fine
        rng = np.random.default_rng(0)
        sample = min(n, TRAINING_POINTS_PER_LIST * lists)
        index.train(vectors[rng.choice(n, sample, replace=False)] if sample < n else vectors)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # remove_ids by id, in place
        index.nprobe = min(nprobe, lists)
        index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
        return cls(index, ids, TailSample.draw(ids, vectors), n)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, class_id: int) -> bool:
        return class_id in self._ids

    def holds_exactly(self, class_ids: set[int]) -> bool:
        return self._ids == class_ids

    @property
    def nprobe(self) -> int:
        return int(self._index.nprobe)

    def upsert(self, class_ids: np.ndarray, prototypes: np.ndarray) -> None:
        """Insert or replace prototypes ``[c, dim]`` for distinct ``class_ids [c]``."""
        ids = np.asarray(class_ids, dtype=np.int64)
        self.remove(ids)
        vectors = np.ascontiguousarray(prototypes, dtype=np.float32)
        self._index.add_with_ids(vectors, ids)
        self._ids.update(ids.tolist())
        self._tail.update(ids, vectors)

    def remove(self, class_ids: np.ndarray) -> None:
        """Drop the prototypes of ``class_ids``; unknown ids are ignored."""
        present = [i for i in np.asarray(class_ids, dtype=np.int64).tolist() if i in self._ids]
        if present:
            self._index.remove_ids(faiss.IDSelectorArray(np.asarray(present, dtype=np.int64)))
            self._ids.difference_update(present)
            self._tail.remove(present)

    def serialize(self) -> np.ndarray:
        """The FAISS index as bytes ``[n]`` uint8 (in memory: fast)."""
        return faiss.serialize_index(self._index)

    @classmethod
    def from_faiss(cls, index: Any, trained_size: int) -> IVFIndex:
        """Wrap a filled FAISS IVF-Flat index (a deserialized one), its ids read back from its
        inverted lists."""
        ids = list_ids(index)
        return cls(index, ids, TailSample.draw_from(index, ids), trained_size)

    def prototype(self, class_id: int) -> np.ndarray:
        return np.asarray(self._index.reconstruct(int(class_id)))

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        """Every ``(class_ids [n], prototypes [n, dim])``, read from the inverted lists."""
        return export_lists(self._index)

    def rank(self, queries: np.ndarray, k: int) -> Ranking:
        """The ``k`` (clamped to the number of classes) nearest prototypes found for
        ``queries [n, dim]``, and the softmax normalizer over the candidates found."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self))
        distances, ids = self._index.search(q, min(max(k, CANDIDATES), len(self)))
        short = (ids[:, :k] < 0).any(axis=1)
        if short.any():  # the probed lists held fewer than k classes: scan them all
            every = faiss.SearchParametersIVF(nprobe=self._index.nlist)
            distances[short], ids[short] = self._index.search(
                q[short], distances.shape[1], params=every
            )
        found = np.where(ids >= 0, distances, np.inf).astype(np.float64)
        nearest = found[:, :1]  # shift: the largest term is 1
        candidates = np.exp(nearest - found).sum(axis=1)
        radius = np.where(ids >= 0, distances, -np.inf).max(axis=1)  # farthest candidate
        rest = self._tail.estimate(q, radius, nearest, len(self))
        log_normalizer = np.log(candidates + rest) - nearest[:, 0]
        return Ranking(distances[:, :k], ids[:, :k], log_normalizer)


class TailSample:
    """A uniform random sample of the prototypes (at most ``TAIL_SAMPLE``), kept up to date
    with moves and removals, to estimate the softmax terms of the classes a search did not
    return: those beyond the farthest candidate, ``n / sample size`` times the sum of the
    sampled terms beyond it. With at most ``TAIL_SAMPLE`` classes the sample is every class
    and the sum is exact."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.ids = np.asarray(ids, dtype=np.int64).copy()
        self.vectors = np.asarray(vectors, dtype=np.float32).copy()  # [s, dim]
        self.norms = np.einsum("ij,ij->i", self.vectors, self.vectors)  # [s]
        self.alive = np.ones(len(self.ids), dtype=bool)
        self.rows = {class_id: row for row, class_id in enumerate(self.ids.tolist())}

    @classmethod
    def draw(cls, ids: np.ndarray, vectors: np.ndarray, size: int = TAIL_SAMPLE) -> TailSample:
        if len(ids) <= size:
            return cls(ids, vectors)
        rows = np.random.default_rng(0).choice(len(ids), size, replace=False)
        return cls(np.asarray(ids)[rows], np.asarray(vectors)[rows])

    @classmethod
    def draw_from(cls, index: Any, ids: np.ndarray, size: int = TAIL_SAMPLE) -> TailSample:
        """A sample of a filled index's prototypes, read by id (no copy of the whole index)."""
        if len(ids) > size:
            ids = np.asarray(ids)[np.random.default_rng(0).choice(len(ids), size, replace=False)]
        vectors = np.stack([index.reconstruct(int(i)) for i in ids]) if len(ids) else None
        return cls(ids, vectors if vectors is not None else np.zeros((0, index.d), np.float32))

    def update(self, class_ids: np.ndarray, vectors: np.ndarray) -> None:
        for class_id, vector in zip(class_ids.tolist(), vectors, strict=True):
            row = self.rows.get(class_id)
            if row is not None:
                self.vectors[row], self.alive[row] = vector, True
                self.norms[row] = float(np.dot(vector, vector))

    def remove(self, class_ids: list[int]) -> None:
        for class_id in class_ids:
            row = self.rows.get(class_id)
            if row is not None:
                self.alive[row] = False

    def estimate(
        self, queries: np.ndarray, radius: np.ndarray, shift: np.ndarray, n_classes: int
    ) -> np.ndarray:
        """Sum of ``exp(shift - distance)`` over the classes farther than ``radius [n]`` from
        each of ``queries [n, dim]`` (of ``n_classes`` in all), estimated; ``[n]``."""
        # float32 is plenty here: these are the far terms, and beyond the radius.
        q_norms = np.einsum("ij,ij->i", queries, queries)[:, None]
        distances = q_norms + self.norms - 2.0 * (queries @ self.vectors.T)  # [n, s]
        # The margin: a returned class computed here in float32 must not count twice.
        beyond = self.alive & (distances > (radius + 1e-3 + 1e-4 * np.abs(radius))[:, None])
        exponents = np.where(beyond, shift - distances, -np.inf)  # float64 (shift is)
        terms = np.exp(np.minimum(exponents, 0.0)).sum(axis=1)
        return terms * (n_classes / max(int(self.alive.sum()), 1))


def list_ids(index: Any) -> np.ndarray:
    """The ids ``[n]`` stored in an IVF index's inverted lists."""
    lists = index.invlists
    ids = [
        faiss.rev_swig_ptr(lists.get_ids(number), lists.list_size(number)).copy()
        for number in range(lists.nlist)
        if lists.list_size(number)
    ]
    return np.concatenate(ids) if ids else np.zeros(0, np.int64)


def export_lists(index: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(ids [n], vectors [n, dim])`` stored in an IVF-Flat index's inverted lists."""
    lists, dim = index.invlists, index.d
    ids, vectors = [], []
    for number in range(lists.nlist):
        size = lists.list_size(number)
        if size:
            ids.append(faiss.rev_swig_ptr(lists.get_ids(number), size).copy())
            codes = faiss.rev_swig_ptr(lists.get_codes(number), size * dim * 4)
            vectors.append(np.frombuffer(codes.copy(), dtype=np.float32).reshape(size, dim))
    if not ids:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    return np.concatenate(ids), np.concatenate(vectors)
