"""Keeping this process's collections in step with the database, which is the truth.

Several processes may share the database. Each write commits, then catches its collection up to
the database (its own change and any earlier ones made elsewhere); the change feed
(service/collections/sync.py) hands :meth:`Replication.apply_change` the changes made
elsewhere. Every update of an index reads the classes' current rows, under the collection's
write lock, so applying a change twice, or late, is harmless. Examples that another model
version stored are embedded here, for the version of the collection's model in this process,
before they count (:func:`~service.collections.reembed.embed_stored_inputs`).

Two numbers place a change: its change id, global, which orders every change (the feed's cursor,
``LiveCollection.change_id``), and its revision, its tenant's number of it (what clients see
and send as ``min_revision``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import cast

import anyio
from anyio import to_thread

from protonet.errors import InvalidInputError
from service.collections.adapter import CollectionAdapter
from service.collections.encoder import Encoder
from service.collections.index_files import SavedIndexes
from service.collections.live_collection import IndexKind, IndexPolicy, LiveCollection
from service.collections.models import ModelSet
from service.collections.reembed import embed_stored_inputs
from service.collections.rejection import RejectionSetting
from service.errors import RevisionNotReachedError, UnknownModelError
from service.storage.adaptations import AdaptationStore, StoredAdapter
from service.storage.repository import Change, Storage, StoredCollection

logger = logging.getLogger(__name__)

# Classes refreshed per round trip: far below SQLite's limit of bound parameters (32766).
REFRESH_CHUNK = 5000

# Changes to a collection's examples: after one, an adapter no longer reflects them all.
SUPPORT_CHANGES = frozenset({"support", "delete_class"})

Key = tuple[str, str]  # (tenant, name)


class Replication:
    """Loads the registry's collections from storage and keeps them up to date with it.

    ``collections`` and ``lock`` are the registry's (the table of live collections by
    ``(tenant, name)``, and the lock that guards creating, loading and dropping them): the
    registry serves requests from the table, this class fills it and keeps it current. Locks:
    the registry lock is taken before a collection's write lock, never after.
    """

    def __init__(
        self,
        storage: Storage,
        models: ModelSet,
        adaptations: AdaptationStore,
        collections: dict[Key, LiveCollection],
        lock: threading.Lock,
        index_policy: IndexPolicy,
        saved_indexes: SavedIndexes,
        min_revision_timeout: float = 5.0,
    ) -> None:
        self.storage = storage
        self.models = models
        self.adaptations = adaptations
        self.collections = collections
        self.lock = lock
        # Settings of every collection's index but its kind (which each collection has).
        self.index_policy = index_policy
        self.saved_indexes = saved_indexes
        self.min_revision_timeout = min_revision_timeout
        # Every change up to this id is applied here (set by load_all and the change feed)...
        self.applied_through = 0
        # ... and so is every change of a tenant up to its revision here (the same position,
        # in each tenant's numbers: what min_revision is compared with).
        self.applied_revisions: dict[str, int] = {}

    def encoder_of(self, live: LiveCollection) -> Encoder:
        return self.models.get(live.model).encoder

    # -- loading ---------------------------------------------------------------------------

    def load_all(self) -> int:
        """Build every collection's index from storage (at startup). Returns the change id
        that the indexes reflect at least: the change feed starts after it."""
        # Both before reading: later changes are re-applied.
        revisions = self.storage.tenant_revisions()
        cursor = self.storage.last_change_id()
        for stored in self.storage.list_collections():
            live = self.load(stored)
            self.collections[stored.tenant, stored.name] = live
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
        with self.lock:
            for key, live in list(self.collections.items()):
                self.forget(key, live)
            return self.load_all()

    def load(self, stored: StoredCollection) -> LiveCollection:
        """A collection's index from storage, in its adapter's space if it has one; reflects at
        least ``stored.change_id``."""
        live = self.new_live(stored)
        encoder = self.encoder_of(live)
        live.adapter, live.adapter_stale = self._adapter_of(live)
        embed_stored_inputs(self.storage, encoder, collection_id=stored.id)
        classes = self.storage.list_classes(stored.id)
        if not self.saved_indexes.load(live, classes, encoder.version, self._apply_changes_after):
            embeddings = self.storage.collection_embeddings(stored.id, encoder.version)
            live.load(classes, embeddings)
        return live

    def new_live(self, stored: StoredCollection) -> LiveCollection:
        """An empty live collection as ``stored`` describes it; :class:`UnknownModelError` if
        its model is not served here."""
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

    def forget(self, key: Key, live: LiveCollection) -> None:
        """Forget a deleted collection (caller holds the registry lock)."""
        live.deleted = True
        if self.collections.get(key) is live:
            del self.collections[key]

    # -- catching one collection up --------------------------------------------------------

    def _apply_changes_after(self, live: LiveCollection, change_id: int) -> None:
        """Refresh the classes that the collection's changes after ``change_id`` touched
        (caller holds write_lock): a persisted index brought up to storage."""
        changes = self.storage.collection_changes_after(live.id, change_id)
        self._refresh(live, {i for change in changes for i in change.class_ids})

    def _refresh(self, live: LiveCollection, class_ids: set[int]) -> None:
        """Make the index's view of ``class_ids`` match storage (caller holds write_lock).
        Works in chunks, so that no statement binds more ids than SQLite allows."""
        ordered = sorted(class_ids)
        encoder = self.encoder_of(live)
        for start in range(0, len(ordered), REFRESH_CHUNK):
            chunk = ordered[start : start + REFRESH_CHUNK]
            classes = self.storage.list_classes(live.id, chunk)
            embed_stored_inputs(self.storage, encoder, class_ids=[c.id for c in classes])
            updated: list[int] = []
            if classes:
                ids = [c.id for c in classes]
                stored = self.storage.class_embeddings(ids, encoder.version)
                updated = live.update_classes({c.id: c.label for c in classes}, stored)
            live.remove_classes(set(chunk) - set(updated))

    def catch_up_under_lock(self, live: LiveCollection) -> bool:
        """Apply the collection's changes after ``live.change_id``; the caller holds its
        write_lock (and keeps the collection in the table whatever happens). Returns False if
        the collection was deleted (``live.deleted`` is then set)."""
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

    def catch_up_or_forget(self, key: Key, live: LiveCollection) -> None:
        """:meth:`catch_up_under_lock`, taking the collection's write lock itself; a collection
        found deleted is then dropped from the table (under the registry lock)."""
        with live.write_lock:
            if live.deleted or self.catch_up_under_lock(live):
                return
        with self.lock:
            self.forget(key, live)

    def catch_up_after_commit(self, live: LiveCollection) -> bool:
        """:meth:`catch_up_under_lock` after a write committed (caller holds write_lock);
        False if it failed. The write is stored whatever happens here, so a failure (the
        database gone a moment after the commit) must not make its answer an error, which
        would invite a duplicating retry. Nothing is lost: ``live.change_id`` stays below the
        write's change until the change feed applies it (its cursor passes a change only once
        applied), and reads with ``min_revision`` wait for that; queries meanwhile answer the
        older revision they do reflect."""
        try:
            return self.catch_up_under_lock(live)
        except Exception:
            logger.warning(
                "collection %r: reading back a committed write failed; the change feed "
                "will apply it",
                live.name,
                exc_info=True,
            )
            return False

    def _rebuild(self, live: LiveCollection) -> None:
        """Re-read the collection's adapter and rebuild it in that space (caller holds
        write_lock): after an adapter was adopted or removed, by any process."""
        adapter, stale = self._adapter_of(live)
        encoder = self.encoder_of(live)
        embed_stored_inputs(self.storage, encoder, collection_id=live.id)
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

    # -- the change feed -------------------------------------------------------------------

    def apply_change(self, change: Change) -> None:
        """Apply a change that the feed delivered (maybe made here; then it is a no-op), the
        feed's next in order: every change up to it is then applied here."""
        self._apply(change)
        self.applied_through = change.id
        self.applied_revisions[change.tenant] = change.revision

    def _apply(self, change: Change) -> None:
        key = (change.tenant, change.name)
        live = self.collections.get(key)
        if change.kind in ("create", "delete"):
            with self.lock:
                live = self.collections.get(key)
                if change.kind == "delete":
                    # The change id too: SQLite reuses a deleted collection's id, and a
                    # collection made again under the name after this deletion must stay.
                    if live is not None and live.id == change.collection_id:
                        with live.write_lock:
                            if live.change_id < change.id:
                                self.forget(key, live)
                elif live is None or live.id != change.collection_id:
                    self._sync_unless_unserved(key)
            return
        if live is None or live.id != change.collection_id or live.change_id >= change.id:
            return
        self.catch_up_or_forget(key, live)

    def _sync_unless_unserved(self, key: Key) -> None:
        """:meth:`_sync_from_storage` for the change feed: a collection that another process
        created for a model this one does not serve is left out here (with a warning), not
        retried forever; requests for it get 422 unknown_model."""
        try:
            self._sync_from_storage(key)
        except UnknownModelError as error:
            logger.warning("collection %r of tenant %r left out: %s", key[1], key[0], error)

    # -- reads that must see the database now ----------------------------------------------

    def _sync_from_storage(self, key: Key) -> LiveCollection | None:
        """Load (or drop) the collection ``key`` as storage has it now (registry lock held)."""
        stored = self.storage.find_collection(*key)
        live = self.collections.get(key)
        if live is not None and (stored is None or stored.id != live.id):
            with live.write_lock:
                self.forget(key, live)
            live = None
        if stored is not None and live is None:
            live = self.collections[key] = self.load(stored)
        return live

    def sync(self, name: str, tenant: str) -> LiveCollection | None:
        """Bring one collection up to date with storage now (blocking; for read-your-writes
        and for names this process has not heard of yet)."""
        key = (tenant, name)
        live = self.collections.get(key)
        if live is not None:
            self.catch_up_or_forget(key, live)
            if not live.deleted:
                return live
        if self.storage.find_collection(tenant, name) is None:
            return None  # the common 404: answered without the registry lock
        with self.lock:
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
        live = self.collections.get((tenant, name))
        applied = self.applied_revisions.get(tenant, 0)
        return applied >= revision or (live is not None and live.revision >= revision)

    def _sync_through(self, name: str, tenant: str) -> int:
        """Catch the collection up with storage; returns the tenant's revision it now reflects
        at least (the tenant's latest in storage when the catch-up began)."""
        latest = self.storage.tenant_revision(tenant)
        self.sync(name, tenant)
        return latest

    def save_indexes(self) -> int:
        """Persist the changed collections' IVF indexes (service/collections/index_files.py);
        returns how many were written."""
        collections = list(self.collections.values())
        return self.saved_indexes.save(collections, lambda live: self.encoder_of(live).version)
