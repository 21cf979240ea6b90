"""Domain logic: collections of labelled examples, their prototypes, and queries against them.

Every write follows the same order, so a rejected request changes nothing: validate and decode
every item, embed them all, then one database transaction, then the in-memory index update.
Synchronous methods do storage work: the HTTP layer runs them in worker threads. The async ones
(``add_support``, ``query``, ``embed``) decode and embed through the micro-batching
:class:`~service.inference.InferencePipeline`, shared by all concurrent requests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from anyio import to_thread

from protonet.errors import ConflictError, NotFoundError
from service.encoder import Encoder
from service.inference import InferencePipeline
from service.inputs import InputPayload, check_item_count, check_pixel_budget
from service.live import (
    CollectionDetail,
    CollectionSummary,
    LiveCollection,
    QueryResult,
    SupportResult,
)
from service.storage import Storage

logger = logging.getLogger(__name__)


class LabelledPayload(InputPayload, Protocol):
    """A support example as it arrives: a label plus one input."""

    @property
    def label(self) -> str: ...


@dataclass(frozen=True)
class AllTenantsSummary:
    """Totals over every tenant's collections (for the metrics, never for a tenant's view).

    ``tenants`` counts the tenants that have at least one collection.
    """

    tenants: int = 0
    collections: int = 0
    classes: int = 0
    examples: int = 0


class CollectionRegistry:
    """All collections: storage is the source of truth, ``LiveCollection``s serve queries.

    Collections are keyed by ``(tenant, name)``: a tenant sees only its own, and another
    tenant's collection is "does not exist", exactly like a missing one. Every method that
    acts for a tenant takes ``tenant=`` with no default, so a caller cannot fall back to the
    default tenant by omission; :meth:`summarize_all_tenants` is the one cross-tenant view.
    """

    def __init__(
        self,
        storage: Storage,
        encoder: Encoder,
        max_items_per_request: int,
        pipeline: InferencePipeline,
        max_request_pixels: int | None = None,
    ) -> None:
        self.storage = storage
        self.encoder = encoder
        self.pipeline = pipeline
        self.max_items = max_items_per_request
        self.max_request_pixels = max_request_pixels
        self._collections: dict[tuple[str, str], LiveCollection] = {}
        self._lock = threading.Lock()  # guards creating and dropping collections

    def load_all(self) -> None:
        """Rebuild every collection's index from stored embeddings (at startup)."""
        for stored in self.storage.list_collections():
            live = LiveCollection(stored.id, stored.name, self.encoder.embedding_dim)
            live.load(
                self.storage.list_classes(stored.id),
                self.storage.collection_embeddings(stored.id),
            )
            self._collections[stored.tenant, stored.name] = live
            summary = live.summary()
            logger.info(
                "loaded collection %r of tenant %r: %d classes, %d examples",
                stored.name,
                stored.tenant,
                summary.n_classes,
                summary.n_examples,
            )

    def _get(self, name: str, tenant: str) -> LiveCollection:
        live = self._collections.get((tenant, name))
        if live is None:
            raise NotFoundError(f"collection {name!r} does not exist")
        return live

    def create(self, name: str, *, tenant: str) -> CollectionSummary:
        """A new empty collection; :class:`ConflictError` if the tenant has ``name`` already."""
        with self._lock:
            if (tenant, name) in self._collections:
                raise ConflictError(f"collection {name!r} already exists")
            stored = self.storage.create_collection(name, tenant)
            live = LiveCollection(stored.id, name, self.encoder.embedding_dim)
            self._collections[tenant, name] = live
        return live.summary()

    def list_all(self, *, tenant: str) -> list[CollectionSummary]:
        """Every collection of the tenant, by name."""
        snapshot = sorted(self._collections.copy().items())
        return [live.summary() for (owner, _), live in snapshot if owner == tenant]

    def summarize_all_tenants(self) -> AllTenantsSummary:
        """Totals over every tenant, from the live collections' O(1) summaries.

        Takes no registry lock (the dict is copied atomically under the GIL) and each
        collection's state lock only briefly, one at a time; a collection created or dropped
        meanwhile may or may not be counted.
        """
        tenants: set[str] = set()
        collections = classes = examples = 0
        for (tenant, _), live in self._collections.copy().items():
            if live.deleted:
                continue
            summary = live.summary()
            tenants.add(tenant)
            collections += 1
            classes += summary.n_classes
            examples += summary.n_examples
        return AllTenantsSummary(len(tenants), collections, classes, examples)

    def describe(self, name: str, *, tenant: str) -> CollectionDetail:
        return self._get(name, tenant).detail()

    def delete(self, name: str, *, tenant: str) -> None:
        """Drop a collection with all its classes and examples."""
        with self._lock:
            live = self._get(name, tenant)
            with live.write_lock:  # let in-flight writes to it finish first
                self.storage.delete_collection(live.id)
                live.deleted = True
                del self._collections[tenant, name]

    async def add_support(
        self, name: str, examples: Sequence[LabelledPayload], *, tenant: str
    ) -> SupportResult:
        """Add labelled examples, creating classes as needed; all-or-nothing.

        Each affected class's prototype is recomputed from all its stored embeddings and
        replaced in the index; other classes are untouched.
        """
        live = self._get(name, tenant)
        check_item_count(len(examples), self.max_items, "examples")
        check_pixel_budget(examples, self.max_request_pixels, "examples")
        pixels = await self.pipeline.decode(examples, "examples")  # [n, H, W]
        embeddings = await self.pipeline.embed(pixels)  # [n, dim]
        labels = [example.label for example in examples]
        return await to_thread.run_sync(self._store, live, labels, pixels, embeddings)

    def _store(
        self, live: LiveCollection, labels: list[str], pixels: np.ndarray, embeddings: np.ndarray
    ) -> SupportResult:
        """One transaction for the examples, then their classes' new prototypes."""
        with live.write_lock:
            if live.deleted:
                raise NotFoundError(f"collection {live.name!r} does not exist")
            class_ids = self.storage.add_examples(
                live.id, labels, pixels, embeddings, self.encoder.version
            )
            stored = self.storage.class_embeddings(sorted(class_ids.values()))
            live.update_classes({i: label for label, i in class_ids.items()}, stored)
            in_request_order = [class_ids[label] for label in dict.fromkeys(labels)]
            return SupportResult(len(labels), live.class_summaries(in_request_order))

    def delete_class(self, name: str, label: str, *, tenant: str) -> None:
        """Drop one class and its examples."""
        live = self._get(name, tenant)
        with live.write_lock:
            if live.deleted:
                raise NotFoundError(f"collection {name!r} does not exist")
            class_id = live.class_id(label)
            if class_id is None:
                raise NotFoundError(f"class {label!r} does not exist in collection {name!r}")
            self.storage.delete_class(class_id)
            live.remove_class(class_id)

    async def query(
        self,
        name: str,
        queries: Sequence[InputPayload],
        top_k: int,
        *,
        tenant: str,
    ) -> list[QueryResult]:
        """Classify each query against the collection's prototypes."""
        live = self._get(name, tenant)
        if live.is_empty():  # cheap check before decoding anything
            raise live.no_classes_error()
        check_item_count(len(queries), self.max_items, "queries")
        check_pixel_budget(queries, self.max_request_pixels, "queries")
        return await self.pipeline.query(live, queries, top_k)

    async def embed(self, inputs: Sequence[InputPayload]) -> np.ndarray:
        """Embeddings ``[n, dim]`` float32 of raw inputs (no collection involved)."""
        check_item_count(len(inputs), self.max_items, "inputs")
        check_pixel_budget(inputs, self.max_request_pixels, "inputs")
        return await self.pipeline.embed(await self.pipeline.decode(inputs, "inputs"))
