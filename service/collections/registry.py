"""Domain logic: collections of labelled examples, their prototypes, and queries against them.

Every write follows the same order, so a rejected request changes nothing: validate and decode
every item, embed them all, then one database transaction, then the in-memory index update.
Synchronous methods do storage work: the HTTP layer runs them in worker threads. The async ones
(``add_support``, ``query``, ``embed``) decode and embed through the micro-batching
:class:`~service.collections.inference.InferencePipeline` of the collection's model, shared by
all concurrent requests to that model.

Each collection is bound to one served model (service/collections/models.py) when it is
created: its examples are embedded, its queries decoded and embedded, and its rejection
calibrated by that model only.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from anyio import to_thread

from protonet.open_set import RejectionCalibration
from service.collections.diagnostics import (
    DiagnosticsLimits,
    DiagnosticsSlots,
    SupportSetDiagnostics,
    diagnose,
)
from service.collections.encoder import Encoder, StageOneBatch
from service.collections.feedback import feedback_example, remembered_query
from service.collections.index_files import IndexFiles, SavedIndexes
from service.collections.live_collection import (
    ClassCount,
    CollectionContents,
    CollectionStatus,
    IndexKind,
    IndexPolicy,
    LiveCollection,
    QueryAnswer,
    SupportResult,
)
from service.collections.models import ModelSet, ServedModel
from service.collections.pages import Page, resume_after
from service.collections.payloads import InputPayload, check_item_count, check_pixel_budget
from service.collections.reembed import embed_stored_inputs
from service.collections.rejection import (
    AppliedRejection,
    RejectionPolicy,
    RejectionSetting,
    ThresholdSource,
    judge,
)
from service.collections.replication import Replication
from service.errors import (
    ConflictError,
    NotFoundError,
)
from service.storage.adaptations import AdaptationStore, NewAdapter, StoredAdapter
from service.storage.repository import (
    LIVE_WITHIN,
    AddedExamples,
    IdempotencyClaim,
    RememberLimits,
    Storage,
    StoredCollection,
    StoredEmbeddings,
)

logger = logging.getLogger(__name__)


class LabelledPayload(InputPayload, Protocol):
    """A support example as it arrives: a label plus one input."""

    @property
    def label(self) -> str: ...


@dataclass(frozen=True)
class QueryOutcome:
    """A query's answers, the collection's revision they reflect (at least), the version of
    the model that embedded the queries, and the rejection of unknowns applied to them
    (``None``: none asked)."""

    revision: int
    answers: list[QueryAnswer]
    model_version: str
    applied_rejection: AppliedRejection | None = None
    input_ids: list[int] | None = None  # where the query's inputs are remembered (feedback)

    @property
    def adapter_version(self) -> int | None:
        """The version of the adapter whose space answered (``None``: the model's own)."""
        return self.answers[0].adapter if self.answers else None


@dataclass(frozen=True)
class SupportSnapshot:
    """A collection's embeddings (by the served model's version) as of at least the change
    ``change_id`` (its tenant's ``revision``): examples written after it may be in them too."""

    change_id: int
    revision: int
    embeddings: StoredEmbeddings


@dataclass(frozen=True)
class AllTenantsSummary:
    """Totals over every tenant's collections (for the metrics, never for a tenant's view).

    ``tenants`` counts the tenants that have at least one collection.
    """

    tenants: int = 0
    collections: int = 0
    classes: int = 0
    examples: int = 0
    adapted: int = 0  # collections answering with an adapter


def support_result(added: AddedExamples, labels: list[str]) -> SupportResult:
    """The answer of a support write: the classes it touched in request order, each with its
    size after the write, at the write's own revision."""
    classes = [ClassCount(label, added.sizes[label]) for label in dict.fromkeys(labels)]
    return SupportResult(added.n_added, classes, added.revision)


class CollectionRegistry:
    """All collections: storage is the source of truth, ``LiveCollection``s serve queries.

    Collections are keyed by ``(tenant, name)``: a tenant sees only its own, and another
    tenant's collection is "does not exist", exactly like a missing one. Every method that
    acts for a tenant takes ``tenant=`` with no default, so a caller cannot fall back to the
    default tenant by omission; :meth:`summarize_all_tenants` is the one cross-tenant view.

    Several processes may share the database: ``replication``
    (service/collections/replication.py) loads the collections and keeps them up to date with
    it, after each write here and for the changes made elsewhere; ``saved_indexes``
    (service/collections/index_files.py) persists their IVF indexes.

    Locks: the registry lock (creating, loading and dropping collections) is taken before a
    collection's write lock, never after.
    """

    def __init__(
        self,
        storage: Storage,
        models: ModelSet,
        max_items_per_request: int,
        max_request_pixels: int | None = None,
        min_revision_timeout: float = 5.0,
        index_policy: IndexPolicy | None = None,
        index_files: IndexFiles | None = None,
        diagnostics_limits: DiagnosticsLimits | None = None,
        remember_limits: RememberLimits | None = None,
        adaptations: AdaptationStore | None = None,
    ) -> None:
        self.storage = storage
        self.adaptations = adaptations or AdaptationStore(storage, LIVE_WITHIN)
        self.models = models
        self.max_items = max_items_per_request
        self.max_request_pixels = max_request_pixels
        self.diagnostics_limits = limits = diagnostics_limits or DiagnosticsLimits()
        self.diagnostics_slots = DiagnosticsSlots(
            limits.max_concurrent, limits.max_concurrent_per_tenant
        )
        self.remember_limits = remember_limits or RememberLimits()
        self.saved_indexes = SavedIndexes(index_files)
        self._collections: dict[tuple[str, str], LiveCollection] = {}
        self._lock = threading.Lock()  # guards creating and dropping collections
        self.replication = Replication(
            storage,
            models,
            self.adaptations,
            self._collections,
            self._lock,
            index_policy or IndexPolicy(),
            self.saved_indexes,
            min_revision_timeout,
        )

    def model_of(self, live: LiveCollection) -> ServedModel:
        """The served model the collection is bound to."""
        return self.models.get(live.model)

    def encoder_of(self, live: LiveCollection) -> Encoder:
        return self.models.get(live.model).encoder

    # -- keeping up with the database (service/collections/replication.py) ---------------

    def sync(self, name: str, tenant: str) -> LiveCollection | None:
        """:meth:`Replication.sync`: the collection as storage has it now, or None."""
        return self.replication.sync(name, tenant)

    async def require_revision(self, name: str, min_revision: int | None, *, tenant: str) -> None:
        """:meth:`Replication.require_revision`: once this process reflects ``min_revision``."""
        await self.replication.require_revision(name, min_revision, tenant=tenant)

    def save_indexes(self) -> int:
        """Persist the IVF index of every collection changed since its last save (at
        shutdown, and now and then meanwhile); returns how many were written."""
        return self.replication.save_indexes()

    # -- the API ---------------------------------------------------------------------------

    def get(self, name: str, tenant: str) -> LiveCollection:
        """The collection (:class:`NotFoundError` if the tenant has none of that name)."""
        return self._get(name, tenant)

    def stored_collection(self, name: str, tenant: str) -> StoredCollection:
        """The collection as storage has it now (:class:`NotFoundError` if none)."""
        stored = self.storage.find_collection(tenant, name)
        if stored is None:
            raise NotFoundError(f"collection {name!r} does not exist")
        return stored

    def _get(self, name: str, tenant: str) -> LiveCollection:
        """The collection, looked up in storage too if this process has not seen it yet
        (created through another process a moment ago)."""
        live = self._collections.get((tenant, name))
        if live is None:
            live = self.sync(name, tenant)
        if live is None:
            raise NotFoundError(f"collection {name!r} does not exist")
        return live

    def calibration_of(self, model: str) -> RejectionCalibration | None:
        """The rejection calibration of the served model ``model``, if it carries one."""
        return self.models.get(model).calibration

    def create(
        self,
        name: str,
        *,
        tenant: str,
        index: IndexKind = "auto",
        rejection: RejectionSetting | None = None,
        model: str | None = None,
    ) -> CollectionStatus:
        """A new empty collection bound to the served ``model`` (None: the default), searched
        by ``index`` (auto, exact or ivf), that rejects unknown inputs as ``rejection`` says
        (default: not at all); :class:`ConflictError` if the tenant has ``name`` already, a
        422 error for a model not served or one that cannot reject as asked."""
        served = self.models.get(model)
        rejection = rejection or RejectionSetting()
        served.rejection_policy(rejection)  # refused before anything is stored
        with self._lock:
            if (tenant, name) in self._collections:
                raise ConflictError(f"collection {name!r} already exists")
            stored = self.storage.create_collection(
                name, tenant, index, rejection.to_column(), served.name
            )
            live = self._collections[tenant, name] = self.replication.new_live(stored)
        return live.status()

    def set_rejection(
        self, name: str, rejection: RejectionSetting, *, tenant: str
    ) -> CollectionStatus:
        """Change the collection's rejection of unknowns (the setting queries use when they
        name none); returns its summary at the change's revision."""
        live = self._get(name, tenant)
        self.model_of(live).rejection_policy(rejection)
        with live.write_lock:
            if live.deleted:
                raise NotFoundError(f"collection {name!r} does not exist")
            try:
                revision = self.storage.set_rejection(live.id, rejection.to_column())
            except NotFoundError:  # deleted through another process
                live.deleted = True
                raise NotFoundError(f"collection {name!r} does not exist") from None
            if self.replication.catch_up_after_commit(live):  # applies the setting with this change
                return live.status()
            # Committed, not applied here yet: the answer says what was written, with this
            # process's counts.
            return dataclasses.replace(
                live.status(), revision=revision, rejection_setting=rejection
            )

    def list_all(self, *, tenant: str) -> list[CollectionStatus]:
        """Every collection of the tenant, by name."""
        snapshot = sorted(self._collections.copy().items())
        return [live.status() for (owner, _), live in snapshot if owner == tenant]

    def summarize_all_tenants(self) -> AllTenantsSummary:
        """Totals over every tenant, from the live collections' O(1) summaries.

        Takes no registry lock (the dict is copied atomically under the GIL) and each
        collection's state lock only briefly, one at a time; a collection created or dropped
        meanwhile may or may not be counted.
        """
        tenants: set[str] = set()
        collections = classes = examples = adapted = 0
        for (tenant, _), live in self._collections.copy().items():
            if live.deleted:
                continue
            summary = live.status()
            tenants.add(tenant)
            collections += 1
            classes += summary.n_classes
            examples += summary.n_examples
            adapted += summary.adapter is not None
        return AllTenantsSummary(len(tenants), collections, classes, examples, adapted)

    def describe(
        self, name: str, *, tenant: str, classes_limit: int | None = None
    ) -> CollectionContents:
        """The collection's summary, and the first page of its classes if ``classes_limit``."""
        return self._get(name, tenant).contents(classes_limit)

    def class_page(
        self, name: str, *, tenant: str, cursor: str | None, limit: int
    ) -> tuple[int, Page[ClassCount]]:
        """The page of the collection's classes after ``cursor`` (oldest first; service/
        collections/pages.py), and the revision it reflects."""
        live = self._get(name, tenant)
        return live.class_page(resume_after(cursor, "classes", live.id), limit)

    def diagnose(self, name: str, *, tenant: str) -> tuple[int, str, SupportSetDiagnostics]:
        """Diagnostics of the collection's support set (service/collections/diagnostics.py),
        the revision they reflect at least and the model version whose embeddings they use;
        blocking (storage read, then the search).

        The classes are those of this process's table at that revision; their examples are
        read from storage afterwards (one statement), so a class created elsewhere since is
        left out, and examples added elsewhere since to a listed class count. At most
        :class:`DiagnosticsSlots` allows run at once (429 diagnostics_busy beyond)."""
        live = self._get(name, tenant)
        revision, classes = live.revision, live.class_table()
        self.diagnostics_limits.check(name, [c.n_examples for c in classes.values()])
        with self.diagnostics_slots.admit(tenant):
            version = self.encoder_of(live).version
            stored = self.storage.collection_embeddings(live.id, version)
            labels = {class_id: c.label for class_id, c in classes.items()}
            return revision, version, diagnose(stored, labels)

    def delete(self, name: str, *, tenant: str) -> int:
        """Drop a collection with all its classes and examples; returns its revision."""
        live = self._get(name, tenant)
        with self._lock, live.write_lock:  # let in-flight writes to it finish first
            if live.deleted:
                raise NotFoundError(f"collection {name!r} does not exist")
            try:
                revision = self.storage.delete_collection(live.id)
            except NotFoundError:  # deleted through another process meanwhile
                self.replication.forget((tenant, name), live)
                raise NotFoundError(f"collection {name!r} does not exist") from None
            self.replication.forget((tenant, name), live)
            self.saved_indexes.remove(live.id)
            return revision

    # -- adapters --------------------------------------------------------------------------

    def support_snapshot(self, live: LiveCollection) -> SupportSnapshot:
        """The collection's stored embeddings for an adaptation (blocking): its latest change
        is read first, so the embeddings reflect at least that state."""
        stored = self.storage.get_collection(live.id)
        if stored is None:
            raise NotFoundError(f"collection {live.name!r} does not exist")
        encoder = self.encoder_of(live)
        embed_stored_inputs(self.storage, encoder, collection_id=live.id)
        embeddings = self.storage.collection_embeddings(live.id, encoder.version)
        return SupportSnapshot(stored.change_id, stored.revision, embeddings)

    def adopt(self, live: LiveCollection, job_id: int, adapter: NewAdapter) -> bool:
        """Adopt a job's adapter for the collection, and answer with it here at once; False
        if the job was cancelled first (nothing adopted)."""
        with live.write_lock:
            if live.deleted:
                raise NotFoundError(f"collection {live.name!r} does not exist")
            if self.adaptations.adopt(job_id, adapter) is None:
                return False
            self.replication.catch_up_after_commit(live)
            return True

    def remove_adapter(self, name: str, *, tenant: str) -> int:
        """Return the collection to its model's own space; the write's revision.
        :class:`NotFoundError` if it has no adapter."""
        live = self._get(name, tenant)
        with live.write_lock:
            if live.deleted:
                raise NotFoundError(f"collection {name!r} does not exist")
            revision = self.adaptations.delete_adapter(live.id, name)
            self.replication.catch_up_after_commit(live)
            return revision

    def adapter_of(self, name: str, *, tenant: str) -> StoredAdapter:
        """The collection's adopted adapter as stored; :class:`NotFoundError` if none."""
        stored = self.adaptations.get_adapter(self.stored_collection(name, tenant).id)
        if stored is None:
            raise NotFoundError(f"collection {name!r} has no adapter")
        return stored

    async def add_support(
        self,
        name: str,
        examples: Sequence[LabelledPayload],
        *,
        tenant: str,
        claim: IdempotencyClaim | None = None,
    ) -> SupportResult:
        """Add labelled examples, creating classes as needed; all-or-nothing.

        Each affected class's prototype is recomputed from all its stored embeddings and
        replaced in the index; other classes are untouched. With an idempotency ``claim``
        whose key came with this request before, nothing is written or embedded: the first
        write's answer comes back.
        """
        live = self._get(name, tenant)
        if claim is not None:
            replay = await to_thread.run_sync(self.storage.replayed_examples, claim)
            if replay is not None:
                return support_result(replay, [example.label for example in examples])
        pipeline = self.model_of(live).pipeline
        check_item_count(len(examples), self.max_items, "examples")
        check_pixel_budget(examples, self.max_request_pixels, "examples")
        inputs = await pipeline.decode(examples, "examples")  # [n, H, W] or n texts
        embeddings = await pipeline.embed(inputs)  # [n, dim]
        labels = [example.label for example in examples]
        return await to_thread.run_sync(self._store, live, labels, inputs, embeddings, claim)

    def _store(
        self,
        live: LiveCollection,
        labels: list[str],
        inputs: StageOneBatch,
        embeddings: np.ndarray,
        claim: IdempotencyClaim | None = None,
        forget: tuple[str, int] | None = None,
    ) -> SupportResult:
        """One transaction for the examples (using up the remembered input ``forget``, if
        given), then the collection caught up to it. The answer is what the transaction
        committed (its revision, the classes' sizes), whether or not the catch-up succeeds."""
        with live.write_lock:
            if live.deleted:
                raise NotFoundError(f"collection {live.name!r} does not exist")
            try:
                version = self.encoder_of(live).version
                added = self.storage.add_examples(
                    live.id, labels, inputs, embeddings, version, claim, forget
                )
            except NotFoundError:  # deleted through another process
                live.deleted = True
                raise NotFoundError(f"collection {live.name!r} does not exist") from None
            if not added.replayed:
                self.replication.catch_up_after_commit(live)
            return support_result(added, labels)

    async def feedback(
        self,
        name: str,
        input_id: int,
        label: str,
        *,
        tenant: str,
        claim: IdempotencyClaim | None = None,
    ) -> SupportResult:
        """Add the input that a query of this collection remembered as ``input_id`` as an
        example of ``label`` (a confirmation or a correction), using it up; as
        :meth:`add_support` otherwise (idempotency keys included)."""
        live = self._get(name, tenant)
        if claim is not None:
            replay = await to_thread.run_sync(self.storage.replayed_examples, claim)
            if replay is not None:
                return support_result(replay, [label])
        model = self.model_of(live)
        inputs, embeddings = await feedback_example(self.storage, model, tenant, live.id, input_id)
        forget = (tenant, input_id)
        return await to_thread.run_sync(
            self._store, live, [label], inputs, embeddings, claim, forget
        )

    def delete_class(self, name: str, label: str, *, tenant: str) -> int:
        """Drop one class and its examples; returns its revision."""
        live = self._get(name, tenant)
        with live.write_lock:
            # Caught up first: the class may have been made elsewhere a moment ago.
            if live.deleted or not self.replication.catch_up_under_lock(live):
                raise NotFoundError(f"collection {name!r} does not exist")
            class_id = live.class_id(label)
            if class_id is None:
                raise NotFoundError(f"class {label!r} does not exist in collection {name!r}")
            try:
                revision = self.storage.delete_class(live.id, class_id)
            except NotFoundError:
                live.deleted = True
                raise NotFoundError(f"collection {name!r} does not exist") from None
            self.replication.catch_up_after_commit(live)
            return revision

    async def query(
        self,
        name: str,
        queries: Sequence[InputPayload],
        top_k: int,
        *,
        tenant: str,
        rejection: RejectionSetting | None = None,
        remember: bool = False,
    ) -> QueryOutcome:
        """Classify each query against the collection's prototypes and, when ``rejection``
        (else the collection's setting) asks for it, judge whether it is known at all; with
        ``remember``, keep the inputs for feedback (service/collections/feedback.py)."""
        live = self._get(name, tenant)
        revision = live.revision
        model = self.model_of(live)
        setting = live.rejection_setting if rejection is None else rejection
        policy = model.rejection_policy(setting)  # a 422 before decoding anything
        if live.is_empty():  # cheap check before decoding anything
            raise live.no_classes_error()
        check_item_count(len(queries), self.max_items, "queries")
        check_pixel_budget(queries, self.max_request_pixels, "queries")
        input_ids = None
        if remember:
            answers, input_ids = await remembered_query(
                self.storage, self.remember_limits, model, live, queries, top_k, tenant
            )
        else:
            answers = await model.pipeline.query(live, queries, top_k)
        outcome = QueryOutcome(revision, answers, model.encoder.version, input_ids=input_ids)
        if policy is None:
            return outcome
        return await self._judged(live, outcome, policy)

    async def _judged(
        self, live: LiveCollection, outcome: QueryOutcome, policy: RejectionPolicy
    ) -> QueryOutcome:
        """The answers with a verdict each: known, or of none of the classes."""
        scores = live.rejection_scores
        known, scale = scores.cached(policy)
        if not known:  # O(examples) once after each change: off the event loop
            scale = await to_thread.run_sync(self._collection_scale, live, policy)
        judged = [
            dataclasses.replace(
                answer,
                verdict=judge(
                    policy, [r.distance for r in answer.ranked], list(answer.shots), scale
                ),
            )
            for answer in outcome.answers
        ]
        source: ThresholdSource = "checkpoint"
        if scale is not None:
            source = "collection" if scores is live.leave_one_out else "adapter"
        applied = AppliedRejection(policy.acceptance, source)
        return dataclasses.replace(outcome, answers=judged, applied_rejection=applied)

    def _collection_scale(self, live: LiveCollection, policy: RejectionPolicy) -> float | None:
        """The collection's threshold scale (:mod:`service.collections.rejection`), its
        held-out scores first read from storage if it was loaded without them."""
        adapter = live.adapter
        if adapter is not None:
            return adapter.scores.scale(policy)
        if not live.leave_one_out.complete:
            with live.write_lock:  # no class update meanwhile: they would race the fill
                if not live.leave_one_out.complete and not live.deleted:
                    version = self.encoder_of(live).version
                    stored = self.storage.collection_embeddings(live.id, version)
                    live.fill_leave_one_out(stored)
        return live.leave_one_out.scale(policy)

    async def embed(
        self, inputs: Sequence[InputPayload], model: str | None = None
    ) -> tuple[str, np.ndarray]:
        """The version of the served ``model`` (None: the default) and its embeddings
        ``[n, dim]`` float32 of raw inputs (no collection involved)."""
        served = self.models.get(model)
        check_item_count(len(inputs), self.max_items, "inputs")
        check_pixel_budget(inputs, self.max_request_pixels, "inputs")
        embeddings = await served.pipeline.embed(await served.pipeline.decode(inputs, "inputs"))
        return served.encoder.version, embeddings
