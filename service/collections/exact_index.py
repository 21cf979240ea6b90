"""A collection's nearest-prototype index: the class prototypes in one contiguous matrix.

A query needs its squared Euclidean distance (the Prototypical Networks metric) to *every*
prototype anyway, for the softmax over all classes. So :meth:`ExactIndex.rank` computes
them with one GEMM over the contiguous ``[n_classes, dim]`` matrix (torch, with the encoder's
thread settings), takes the top-k from the same matrix and sums the normalizer in one pass. A
FAISS ``IndexFlatL2`` would compute the same GEMM for its top-k and then a second pass would be
needed for the normalizer (or a k = n_classes search, ~10x slower at 100,000 classes).

Updates never touch other classes: replacing a prototype overwrites its row, a new class is
appended (capacity doubles, amortized O(1)), removing one moves the last row into its slot.
Registering n classes therefore costs O(n) in all (FAISS ``IndexIDMap2.remove_ids`` rebuilt
its whole id map: O(n) per updated class).

Not thread-safe on its own: the owning collection serializes writers against readers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import torch

# Candidates whose distances are recomputed directly (see ``rank``); with at most this many
# classes every distance, and so the softmax, is exact.
REFINED_CANDIDATES = 32
# From this many queries on, ``|p|^2 - 2 q.p`` is computed as ``[n, c]`` rather than transposed:
# GEMM plus top-k 1.5x faster at 256 rows and 3x at 1,024 (20,000 classes, one thread), and
# about even at 32-64 (diagnostics search thousands of rows at once).
WIDE_BATCH_ROWS = 64
# exp() of arguments below this is < 2e-35: clamping them changes no float64 sum, and keeps
# torch's vectorized exp on its fast path (it slows ~10x on arguments past float32's range).
MIN_EXPONENT = -80.0


@dataclass(frozen=True)
class Ranking:
    """The ``k`` nearest classes of each of ``n`` queries, nearest first.

    ``log_normalizer`` is ``log(sum over all classes of exp(-distance))``, so the softmax
    probability of a class is ``exp(-distance - log_normalizer)``.
    """

    distances: np.ndarray  # float32 [n, k], squared Euclidean
    class_ids: np.ndarray  # int64 [n, k]
    log_normalizer: np.ndarray  # float64 [n]

    def probabilities(self) -> np.ndarray:
        """Softmax over all classes of minus the distance, for the ``k`` classes: ``[n, k]``."""
        return np.exp(-self.distances.astype(np.float64) - self.log_normalizer[:, None])


class ExactIndex:
    """Prototypes ``[n_classes, dim]`` keyed by class id; every query scans every class."""

    kind: Final = "exact"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._size = 0
        self._vectors = np.zeros((0, dim), dtype=np.float32)  # rows [0, _size) are live
        self._norms = np.zeros(0, dtype=np.float32)  # squared L2 norm of each row
        self._ids = np.zeros(0, dtype=np.int64)  # class id of each row
        self._slots: dict[int, int] = {}  # class id -> row

    def __len__(self) -> int:
        return self._size

    def __contains__(self, class_id: int) -> bool:
        return class_id in self._slots

    def _reserve(self, rows: int) -> None:
        """Grow the arrays (doubling) so ``rows`` rows fit."""
        capacity = self._vectors.shape[0]
        if rows <= capacity:
            return
        capacity = max(rows, 2 * capacity, 16)
        for name in ("_vectors", "_norms", "_ids"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            new[: self._size] = old[: self._size]
            setattr(self, name, new)

    def upsert(self, class_ids: np.ndarray, prototypes: np.ndarray) -> None:
        """Insert or replace prototypes ``[c, dim]`` for distinct ``class_ids [c]``."""
        ids = np.asarray(class_ids, dtype=np.int64).tolist()
        self._reserve(self._size + len(ids))
        slots = []
        for class_id in ids:
            slot = self._slots.get(class_id)
            if slot is None:
                slot = self._slots[class_id] = self._size
                self._size += 1
            slots.append(slot)
        rows = np.asarray(slots, dtype=np.int64)
        vectors = np.asarray(prototypes, dtype=np.float32)
        self._vectors[rows] = vectors
        self._norms[rows] = np.einsum("ij,ij->i", vectors, vectors)
        self._ids[rows] = ids

    def remove(self, class_ids: np.ndarray) -> None:
        """Drop the prototypes of ``class_ids``; unknown ids are ignored."""
        for class_id in np.asarray(class_ids, dtype=np.int64).tolist():
            slot = self._slots.pop(class_id, None)
            if slot is None:
                continue
            last = self._size - 1
            if slot != last:  # move the last row into the hole
                self._vectors[slot] = self._vectors[last]
                self._norms[slot] = self._norms[last]
                self._ids[slot] = self._ids[last]
                self._slots[int(self._ids[slot])] = slot
            self._size = last

    def prototype(self, class_id: int) -> np.ndarray:
        """The stored prototype ``[dim]`` of one class."""
        return self._vectors[self._slots[class_id]].copy()

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of every ``(class_ids [n], prototypes [n, dim])``."""
        return self._ids[: self._size].copy(), self._vectors[: self._size].copy()

    def rank(self, queries: np.ndarray, k: int) -> Ranking:
        """The ``k`` (clamped to the number of classes) nearest prototypes of ``queries
        [n, dim]``, and the softmax normalizer over all classes. Needs at least one class.

        Ranking uses ``|p|^2 - 2 q.p`` (one GEMM; ``|q|^2`` is the same for every class of a
        row, so it changes neither the order nor the softmax). That expansion loses digits when
        the norms dwarf the distance, so the nearest candidates' distances are recomputed
        directly; they are the ones reported and the ones that dominate the normalizer.
        """
        q, partial, candidates, exact = self._candidates(queries, max(k, REFINED_CANDIDATES))
        query_norms = q.pow(2).sum(dim=1, keepdim=True)  # [n, 1]
        log_normalizer = softmax_log_normalizer(partial, query_norms, candidates, exact)
        distances, class_ids = self._nearest_first(candidates, exact, k)
        return Ranking(distances, class_ids, log_normalizer.numpy())

    def nearest(
        self, queries: np.ndarray, k: int, refined: int = REFINED_CANDIDATES
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(distances [n, k] float32, class_ids [n, k] int64)``: the ``k`` (clamped to the
        number of classes) nearest prototypes of ``queries [n, dim]``, nearest first, with
        exact distances like :meth:`rank` but no softmax normalizer. ``refined``: candidates
        whose distances are recomputed directly (at least ``k``; fewer is faster, and only
        near-ties within the expansion's rounding can then be ordered differently). Needs at
        least one class."""
        _, _, candidates, exact = self._candidates(queries, max(k, refined))
        return self._nearest_first(candidates, exact, k)

    def _candidates(
        self, queries: np.ndarray, m: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(q [n, dim], partial [n, c], candidates [n, m], exact [n, m])``: the queries as a
        tensor, ``|p|^2 - 2 q.p`` of every class, the ``m`` (clamped to the number of
        classes) best rows by it and their direct squared distances."""
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))  # [n, dim]
        prototypes = torch.from_numpy(self._vectors[: self._size])  # [c, dim], no copy
        norms = torch.from_numpy(self._norms[: self._size])  # [c]
        if len(q) < WIDE_BATCH_ROWS:
            # |p|^2 - 2 q.p as ``[c, n]`` (transposed to [n, c]): with few queries, one GEMM
            # pass over the tall prototype matrix is ~25% faster than [n, c] in MKL.
            partial = torch.addmm(norms.unsqueeze(1), prototypes, q.T, alpha=-2.0).T  # [n, c]
        else:  # the top-k along the rows of the transposed matrix strides through memory
            partial = torch.addmm(norms.unsqueeze(0), q, prototypes.T, alpha=-2.0)  # [n, c]
        candidates = torch.topk(partial, min(m, self._size), dim=1, largest=False).indices
        exact = (q.unsqueeze(1) - prototypes[candidates]).pow(2).sum(dim=2)  # [n, m]
        return q, partial, candidates, exact

    def _nearest_first(
        self, candidates: torch.Tensor, exact: torch.Tensor, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest of the candidates by their direct distances: ``(distances [n, k],
        class_ids [n, k])``."""
        exact, order = exact.sort(dim=1)
        nearest = candidates.gather(1, order)[:, :k]
        return exact[:, :k].numpy(), self._ids[nearest.numpy()]


def softmax_log_normalizer(
    partial: torch.Tensor,
    query_norms: torch.Tensor,
    candidates: torch.Tensor,
    exact: torch.Tensor,
) -> torch.Tensor:
    """``log(sum over all classes of exp(-distance))``, float64 ``[n]``.

    ``partial [n, c]`` is ``distance - |q|^2`` of every class (float32; overwritten: it is a
    large temporary), ``query_norms [n, 1]`` is ``|q|^2``, and ``exact [n, m]`` holds the
    direct distances of the ``candidates [n, m]``, which are summed in float64 from those; the
    other classes come from ``partial``. Everything is shifted by the smallest distance, so
    the largest term is 1 and nothing overflows.
    """
    shift = exact.min(dim=1, keepdim=True).values  # [n, 1]: the nearest class is a candidate
    partial.scatter_(1, candidates, math.inf)  # counted from ``exact`` instead
    exponents = torch.sub(shift - query_norms, partial, out=partial)  # shift - distance
    others = exponents.clamp_(min=MIN_EXPONENT).exp_().sum(dim=1, dtype=torch.float64)
    nearest = torch.exp(shift.double() - exact.double()).sum(dim=1)  # >= 1
    return (nearest + others).log() - shift.squeeze(1).double()
