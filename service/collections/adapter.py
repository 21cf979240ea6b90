"""A collection's adopted adapter, as the collection applies it: to every stored embedding
before its prototypes are made, and to every query before it is ranked
(protonet/adaptation.py has the map and how it is trained; service/collections/adaptation.py
runs the jobs that train one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from protonet.adaptation import Adapter
from service.collections.rejection import AdapterScores
from service.storage.adaptations import StoredAdapter


@dataclass(frozen=True)
class AdapterSummary:
    """What a collection's summary says of its adapter: its ``version`` (the job that made
    it), the revision of the collection it was trained on, and whether examples were added or
    deleted since (``stale``: adapt again to include them in the training)."""

    version: int
    trained_revision: int
    stale: bool


@dataclass(frozen=True)
class CollectionAdapter:
    """An adopted adapter: the map, and the held-out scores that scale rejection thresholds
    in its space."""

    version: int
    trained_change_id: int
    trained_revision: int
    adapter: Adapter
    scores: AdapterScores

    @classmethod
    def from_stored(cls, stored: StoredAdapter) -> CollectionAdapter:
        adapter = Adapter(torch.from_numpy(stored.down), torch.from_numpy(stored.up))
        return cls(
            stored.version,
            stored.trained_change_id,
            stored.trained_revision,
            adapter,
            AdapterScores(stored.scores, stored.shots),
        )

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        """``[n, dim]`` float32 -> the same in the adapted space (C-contiguous float32)."""
        mapped = self.adapter.apply(torch.from_numpy(np.ascontiguousarray(embeddings)))
        return np.ascontiguousarray(mapped.numpy(), dtype=np.float32)

    def space(self, model_version: str) -> str:
        """The embedding space's name (persisted indexes are saved per space)."""
        return f"{model_version}.adapter-{self.version}"
