"""A collection's nearest-prototype index: FAISS ``IndexIDMap2`` over ``IndexFlatL2``.

Vectors are class prototypes and ids are the classes' database ids. ``IndexFlatL2`` returns
squared Euclidean distances, the Prototypical Networks metric. Updating a class replaces just its
vector (``remove_ids`` + ``add_with_ids``), never the whole index.

Not thread-safe on its own: the owning collection serializes writers against readers.
"""

from __future__ import annotations

import faiss
import numpy as np


class PrototypeIndex:
    """Prototypes ``[n_classes, dim]`` keyed by class id."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatL2(dim))
        self._ids: set[int] = set()

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __contains__(self, class_id: int) -> bool:
        return class_id in self._ids

    def upsert(self, class_ids: np.ndarray, prototypes: np.ndarray) -> None:
        """Insert or replace prototypes ``[c, dim]`` for ``class_ids [c]``."""
        class_ids = np.ascontiguousarray(class_ids, dtype=np.int64)
        present = np.array([i for i in class_ids.tolist() if i in self._ids], dtype=np.int64)
        if present.size:  # brand-new classes skip remove_ids' scan of the whole index
            self._index.remove_ids(faiss.IDSelectorBatch(present))
        self._index.add_with_ids(np.ascontiguousarray(prototypes, dtype=np.float32), class_ids)
        self._ids.update(class_ids.tolist())

    def remove(self, class_ids: np.ndarray) -> None:
        """Drop the prototypes of ``class_ids``; unknown ids are ignored."""
        class_ids = np.ascontiguousarray(class_ids, dtype=np.int64)
        self._index.remove_ids(faiss.IDSelectorBatch(class_ids))
        self._ids.difference_update(class_ids.tolist())

    def prototype(self, class_id: int) -> np.ndarray:
        """The stored prototype ``[dim]`` of one class."""
        return np.asarray(self._index.reconstruct(class_id))

    def search_all(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distances to every prototype, nearest first: ``(distances [n, c], class_ids [n, c])``.

        Squared Euclidean distances, clipped at 0 (FAISS's batched ``|a|^2 - 2ab + |b|^2`` form
        can go a hair negative).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        distances, class_ids = self._index.search(queries, len(self))
        return np.maximum(distances, 0.0), class_ids
