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
from typing import Protocol, cast

import anyio
import numpy as np
from anyio import to_thread

from protonet.errors import InvalidInputError
from protonet.open_set import RejectionCalibration
from service.collections.adapter import CollectionAdapter
from service.collections.diagnostics import (
    DiagnosticsLimits,
    DiagnosticsSlots,
    SupportSetDiagnostics,
    diagnose,
)
from service.collections.encoder import Encoder, StageOneBatch
from service.collections.feedback import feedback_example, remembered_query
from service.collections.ivf_index import IndexFiles, snapshot
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
from service.collections.reembed import conform_inputs
from service.collections.rejection import (
    AppliedRejection,
    RejectionPolicy,
    RejectionSetting,
    ThresholdSource,
    judge,
)
from service.errors import (
    ConflictError,
    NotFoundError,
    RevisionNotReachedError,
    UnknownModelError,
)
from service.storage.adaptations import AdaptationStore, NewAdapter, StoredAdapter
from service.storage.repository import (
    LIVE_WITHIN,
    AddedExamples,
    Change,
    IdempotencyClaim,
    RememberLimits,
    Storage,
    StoredClass,
    StoredCollection,
    StoredEmbeddings,
)

logger = logging.getLogger(__name__)

# Classes refreshed per round trip: far below SQLite's limit of bound parameters (32766).
REFRESH_CHUNK = 5000


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
    rejection: AppliedRejection | None = None
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


# Changes to a collection's examples: after one, an adapter no longer reflects them all.
SUPPORT_CHANGES = frozenset({"support", "delete_class"})


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

    Several processes may share the database. Each write commits, then catches its collection up to
    the database (its own change and any earlier ones made elsewhere); the change feed
    (service/collections/sync.py) calls :meth:`apply_change` for changes made elsewhere. Every
    update of an index reads the classes' current rows, under the collection's write lock, so
    applying a change twice, or late, is harmless. Examples that another model version stored are
    embedded here, for the version of the collection's model in this process, before they
    count.

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
        self.min_revision_timeout = min_revision_timeout
        # Settings of every collection's index but its kind (which each collection has).
        self.index_policy = index_policy or IndexPolicy()
        self.index_files = index_files
        self.diagnostics_limits = limits = diagnostics_limits or DiagnosticsLimits()
        self.diagnostics_slots = DiagnosticsSlots(
            limits.max_concurrent, limits.max_concurrent_per_tenant
        )
        self.remember_limits = remember_limits or RememberLimits()
        self._saved_change_ids: dict[int, int] = {}  # collection id -> change id of its file
        self._collections: dict[tuple[str, str], LiveCollection] = {}
        self._lock = threading.Lock()  # guards creating and dropping collections
        # Every change up to this id is applied here (set by load_all and the change feed)...
        self.applied_through = 0
        # ... and so is every change of a tenant up to its revision here (the same position,
        # in each tenant's numbers: what min_revision is compared with).
        self.applied_revisions: dict[str, int] = {}

    @property
    def encoder(self) -> Encoder:
        """The default model's encoder."""
        return self.models.default.encoder

    def model_of(self, live: LiveCollection) -> ServedModel:
        """The served model the collection is bound to."""
        return self.models.get(live.model)

    def encoder_of(self, live: LiveCollection) -> Encoder:
        return self.models.get(live.model).encoder

    # -- loading and keeping up with the database ------------------------------------------

    def load_all(self) -> int:
        """Build every collection's index from storage (at startup). Returns the change id
        that the indexes reflect at least: the change feed starts after it."""
        # Both before reading: later changes are re-applied.
        revisions = self.storage.tenant_revisions()
        cursor = self.storage.last_change_id()
        for stored in self.storage.list_collections():
            live = self._load(stored)
            self._collections[stored.tenant, stored.name] = live
            summary = live.status()
            logger.info(
                "loaded collection %r of tenant %r: %d classes, %d examples",
                stored.name,
                stored.tenant,
                summary.n_classes,
                summary.n_examples,
            )
        self.applied_through, self.applied_revisions = cursor, revisions
        return cursor

    def reload_all(self) -> int:
        """Rebuild every index from storage (after the feed lost track); see :meth:`load_all`."""
        with self._lock:
            for key, live in list(self._collections.items()):
                self._drop(key, live)
            return self.load_all()

    def _load(self, stored: StoredCollection) -> LiveCollection:
        """A collection's index from storage, in its adapter's space if it has one; reflects at
        least ``stored.revision``."""
        live = self._new_live(stored)
        encoder = self.encoder_of(live)
        live.adapter, live.adapter_stale = self._adapter_of(live)
        self._embed_missing(encoder, collection_id=stored.id)
        classes = self.storage.list_classes(stored.id)
        if not self._load_persisted(live, classes):
            embeddings = self.storage.collection_embeddings(stored.id, encoder.version)
            live.load(classes, embeddings)
        return live

    def _new_live(self, stored: StoredCollection) -> LiveCollection:
        """:class:`UnknownModelError` if the collection's model is not served here."""
        kind = cast(IndexKind, stored.index_kind)
        policy = dataclasses.replace(self.index_policy, kind=kind)
        model = self.models.get(stored.model)
        dim = model.encoder.embedding_dim
        rejection = RejectionSetting.from_column(stored.rejection)
        return LiveCollection(
            stored.id,
            stored.name,
            dim,
            stored.revision,
            policy,
            rejection,
            model.name,
            stored.change_id,
        )

    def _adapter_of(self, live: LiveCollection) -> tuple[CollectionAdapter | None, bool]:
        """The collection's adopted adapter as stored (and whether it is stale), if it was
        trained on the embeddings of the model version served here: a process on another
        version (a rolling upgrade) answers in its model's own space until it is adapted
        again."""
        stored: StoredAdapter | None = self.adaptations.get_adapter(live.id)
        version = self.encoder_of(live).version
        if stored is None:
            return None, False
        if stored.model_version != version:
            logger.warning(
                "collection %r: its adapter %d was trained on model version %s, not %s: "
                "answering unadapted (adapt it again)",
                live.name,
                stored.version,
                stored.model_version,
                version,
            )
            return None, False
        return CollectionAdapter.from_stored(stored), stored.stale

    def _load_persisted(self, live: LiveCollection, classes: list[StoredClass]) -> bool:
        """Start from the collection's persisted IVF index, if it has a usable one: applies
        the changes made after the index's change id, then checks that the index holds exactly
        the stored classes (else: False, and the caller builds from the embeddings)."""
        if self.index_files is None or live.policy.kind == "exact":
            return False
        persisted = self.index_files.load(live.id, live.space(self.encoder_of(live).version))
        if persisted is None or persisted.revision > live.change_id:
            return False
        live.load_persisted(classes, persisted.index)
        changes = self.storage.collection_changes_after(live.id, persisted.revision)
        self._refresh(live, {i for change in changes for i in change.class_ids})
        if not persisted.index.holds_exactly(live.indexed_ids()):
            logger.warning("persisted index of %r disagrees with storage: rebuilding", live.name)
            return False
        self._saved_change_ids[live.id] = persisted.revision
        logger.info("collection %r: persisted IVF index loaded", live.name)
        return True

    def save_indexes(self) -> int:
        """Persist the IVF index of every collection changed since its last save (at
        shutdown, and now and then meanwhile); returns how many were written."""
        if self.index_files is None:
            return 0
        written = 0
        for live in list(self._collections.values()):
            with live.write_lock:  # no update between reading the change id and the index
                index, change_id = live.ivf_index(), live.change_id
                saved = self._saved_change_ids.get(live.id) == change_id
                if live.deleted or index is None or saved:
                    continue
                serialized = snapshot(index)
                space = live.space(self.encoder_of(live).version)
            self.index_files.write(live.id, space, serialized, change_id)
            self._saved_change_ids[live.id] = change_id
            written += 1
        return written

    def _embed_missing(
        self,
        encoder: Encoder,
        class_ids: list[int] | None = None,
        collection_id: int | None = None,
    ) -> None:
        """Embed, for ``encoder``'s version here, the examples (of ``class_ids``, or of a
        collection) that a process on another version stored (during a rolling upgrade)."""
        if class_ids is not None and not class_ids:
            return
        while True:
            batch = self.storage.unembedded_pixels(
                encoder.version,
                encoder.batch_size,
                class_ids=class_ids,
                collection_id=collection_id,
            )
            if not batch.example_ids:
                return
            embeddings = encoder.embed_batch(conform_inputs(batch.inputs, encoder))
            self.storage.add_embeddings(batch.example_ids, embeddings, encoder.version)

    def _refresh(self, live: LiveCollection, class_ids: set[int]) -> None:
        """Make the index's view of ``class_ids`` match storage (caller holds write_lock).
        Works in chunks, so that no statement binds more ids than SQLite allows."""
        ordered = sorted(class_ids)
        encoder = self.encoder_of(live)
        for start in range(0, len(ordered), REFRESH_CHUNK):
            chunk = ordered[start : start + REFRESH_CHUNK]
            classes = self.storage.list_classes(live.id, chunk)
            self._embed_missing(encoder, [c.id for c in classes])
            updated: list[int] = []
            if classes:
                ids = [c.id for c in classes]
                stored = self.storage.class_embeddings(ids, encoder.version)
                updated = live.update_classes({c.id: c.label for c in classes}, stored)
            live.remove_classes(set(chunk) - set(updated))

    def _catch_up(self, live: LiveCollection) -> bool:
        """Apply the collection's changes after ``live.change_id`` (caller holds write_lock).
        Returns False if the collection was deleted (``live.deleted`` is then set)."""
        changes = self.storage.collection_changes_after(live.id, live.change_id)
        if any(change.kind == "delete" for change in changes):
            live.deleted = True
            return False
        rejection = None
        if any(change.kind == "settings" for change in changes):
            stored = self.storage.get_collection(live.id)
            if stored is None:  # deleted meanwhile: its delete change comes next
                live.deleted = True
                return False
            rejection = RejectionSetting.from_column(stored.rejection)
        if any(change.kind == "adapter" for change in changes):
            self._rebuild(live)  # every class, in the new space: the changes' classes too
        elif changes:
            self._refresh(live, {i for change in changes for i in change.class_ids})
            self._note_stale(live, changes)
        if changes:
            # The setting and the revision that made it become visible together: a reader
            # never sees the new setting at an older revision, nor the revision without it.
            live.advance(changes[-1], rejection)
        return True

    def _rebuild(self, live: LiveCollection) -> None:
        """Re-read the collection's adapter and rebuild it in that space (caller holds
        write_lock): after an adapter was adopted or removed, by any process."""
        adapter, stale = self._adapter_of(live)
        encoder = self.encoder_of(live)
        self._embed_missing(encoder, collection_id=live.id)
        classes = self.storage.list_classes(live.id)
        embeddings = self.storage.collection_embeddings(live.id, encoder.version)
        live.rebuild(adapter, stale, classes, embeddings)
        logger.info(
            "collection %r: now answering %s",
            live.name,
            "unadapted" if adapter is None else f"with adapter {adapter.version}",
        )

    @staticmethod
    def _note_stale(live: LiveCollection, changes: list[Change]) -> None:
        """Mark the adapter stale once examples changed after the state it was trained on."""
        adapter = live.adapter
        if adapter is not None and any(
            change.kind in SUPPORT_CHANGES and change.id > adapter.trained_change_id
            for change in changes
        ):
            live.adapter_stale = True

    def _drop(self, key: tuple[str, str], live: LiveCollection) -> None:
        """Forget a deleted collection (caller holds the registry lock)."""
        live.deleted = True
        if self._collections.get(key) is live:
            del self._collections[key]

    def apply_change(self, change: Change) -> None:
        """Apply a change that the feed delivered (maybe made here; then it is a no-op), the
        feed's next in order: every change up to it is then applied here."""
        self._apply(change)
        self.applied_through = change.id
        self.applied_revisions[change.tenant] = change.revision

    def _apply(self, change: Change) -> None:
        key = (change.tenant, change.name)
        live = self._collections.get(key)
        if change.kind in ("create", "delete"):
            with self._lock:
                live = self._collections.get(key)
                if change.kind == "delete":
                    # The change id too: SQLite reuses a deleted collection's id, and a
                    # collection made again under the name after this deletion must stay.
                    if live is not None and live.id == change.collection_id:
                        with live.write_lock:
                            if live.change_id < change.id:
                                self._drop(key, live)
                elif live is None or live.id != change.collection_id:
                    self._sync_unless_unserved(key)
            return
        if live is None or live.id != change.collection_id or live.change_id >= change.id:
            return
        self.catch_up(key, live)

    def _sync_unless_unserved(self, key: tuple[str, str]) -> None:
        """:meth:`_sync_from_storage` for the change feed: a collection that another process
        created for a model this one does not serve is left out here (with a warning), not
        retried forever; requests for it get 422 unknown_model."""
        try:
            self._sync_from_storage(key)
        except UnknownModelError as error:
            logger.warning("collection %r of tenant %r left out: %s", key[1], key[0], error)

    def catch_up(self, key: tuple[str, str], live: LiveCollection) -> None:
        with live.write_lock:
            if live.deleted or self._catch_up(live):
                return
        with self._lock:
            self._drop(key, live)

    def _sync_from_storage(self, key: tuple[str, str]) -> LiveCollection | None:
        """Load (or drop) the collection ``key`` as storage has it now (registry lock held)."""
        stored = self.storage.find_collection(*key)
        live = self._collections.get(key)
        if live is not None and (stored is None or stored.id != live.id):
            with live.write_lock:
                self._drop(key, live)
            live = None
        if stored is not None and live is None:
            live = self._collections[key] = self._load(stored)
        return live

    def sync(self, name: str, tenant: str) -> LiveCollection | None:
        """Bring one collection up to date with storage now (blocking; for read-your-writes
        and for names this process has not heard of yet)."""
        key = (tenant, name)
        live = self._collections.get(key)
        if live is not None:
            self.catch_up(key, live)
            if not live.deleted:
                return live
        if self.storage.find_collection(tenant, name) is None:
            return None  # the common 404: answered without the registry lock
        with self._lock:
            return self._sync_from_storage(key)

    async def require_revision(self, name: str, min_revision: int | None, *, tenant: str) -> None:
        """Return once this process reflects every change of the collection up to
        ``min_revision`` (a revision some write of the tenant returned: revisions number each
        tenant's writes), catching it up from storage if needed.
        :class:`RevisionNotReachedError` if that takes longer than the timeout;
        :class:`InvalidInputError` for a revision that no write of the tenant has made yet."""
        if min_revision is None or self._reflects(name, tenant, min_revision):
            return
        with anyio.move_on_after(self.min_revision_timeout):
            synced_through = await to_thread.run_sync(
                self._sync_through, name, tenant, abandon_on_cancel=True
            )
            if min_revision > synced_through:
                raise InvalidInputError(
                    f"min_revision {min_revision} is ahead of your latest write (revision "
                    f"{synced_through}): send a revision that one of your writes returned"
                )
            return
        raise RevisionNotReachedError(
            f"collection {name!r} has not caught up to revision {min_revision} here within "
            f"{self.min_revision_timeout:g} s: retry, or drop min_revision to read what this "
            "replica has"
        )

    def _reflects(self, name: str, tenant: str, revision: int) -> bool:
        """Whether the collection (or its absence) here reflects every change of the tenant up
        to ``revision``: its own latest applied change, or the feed's position in the tenant's
        revisions, is that far."""
        live = self._collections.get((tenant, name))
        applied = self.applied_revisions.get(tenant, 0)
        return applied >= revision or (live is not None and live.revision >= revision)

    def _sync_through(self, name: str, tenant: str) -> int:
        """Catch the collection up with storage; returns the tenant's revision it now reflects
        at least (the tenant's latest in storage when the catch-up began)."""
        latest = self.storage.tenant_revision(tenant)
        self.sync(name, tenant)
        return latest

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
            live = self._collections[tenant, name] = self._new_live(stored)
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
            if self._catch_up_after_commit(live):  # applies the setting with this change
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
                self._drop((tenant, name), live)
                raise NotFoundError(f"collection {name!r} does not exist") from None
            self._drop((tenant, name), live)
            if self.index_files is not None:
                self.index_files.remove(live.id)
            return revision

    # -- adapters --------------------------------------------------------------------------

    def support_snapshot(self, live: LiveCollection) -> SupportSnapshot:
        """The collection's stored embeddings for an adaptation (blocking): its latest change
        is read first, so the embeddings reflect at least that state."""
        stored = self.storage.get_collection(live.id)
        if stored is None:
            raise NotFoundError(f"collection {live.name!r} does not exist")
        encoder = self.encoder_of(live)
        self._embed_missing(encoder, collection_id=live.id)
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
            self._catch_up_after_commit(live)
            return True

    def remove_adapter(self, name: str, *, tenant: str) -> int:
        """Return the collection to its model's own space; the write's revision.
        :class:`NotFoundError` if it has no adapter."""
        live = self._get(name, tenant)
        with live.write_lock:
            if live.deleted:
                raise NotFoundError(f"collection {name!r} does not exist")
            revision = self.adaptations.delete_adapter(live.id, name)
            self._catch_up_after_commit(live)
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
                self._catch_up_after_commit(live)
            return support_result(added, labels)

    def _catch_up_after_commit(self, live: LiveCollection) -> bool:
        """:meth:`_catch_up` after a write committed (caller holds write_lock); False if it
        failed. The write is stored whatever happens here, so a failure (the database gone
        a moment after the commit) must not make its answer an error, which would invite a
        duplicating retry. Nothing is lost: ``live.change_id`` stays below the write's change
        until the change feed applies it (its cursor passes a change only once applied), and
        reads with ``min_revision`` wait for that; queries meanwhile answer the older revision
        they do reflect."""
        try:
            return self._catch_up(live)
        except Exception:
            logger.warning(
                "collection %r: reading back a committed write failed; the change feed "
                "will apply it",
                live.name,
                exc_info=True,
            )
            return False

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
            if live.deleted or not self._catch_up(live):  # the class may be new elsewhere
                raise NotFoundError(f"collection {name!r} does not exist")
            class_id = live.class_id(label)
            if class_id is None:
                raise NotFoundError(f"class {label!r} does not exist in collection {name!r}")
            try:
                revision = self.storage.delete_class(live.id, class_id)
            except NotFoundError:
                live.deleted = True
                raise NotFoundError(f"collection {name!r} does not exist") from None
            self._catch_up_after_commit(live)
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
        return dataclasses.replace(outcome, answers=judged, rejection=applied)

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
