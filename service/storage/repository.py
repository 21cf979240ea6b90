"""The repository over the tables (:class:`Storage`): every public method is one transaction.

SQLite (embedded default) or PostgreSQL (shared by several service processes;
docs/scaling.md). Each collection is bound to one served model, by name. Each example keeps its
stage-1 input: an image's ``uint8`` pixels (bytes plus shape), a text's normalized text; its
embeddings are stored per model version, so processes on an old and a new model serve side by
side during an upgrade and a new model can embed everything without the original uploads.
Deletes cascade in the database.

Every write also appends a row to ``changes`` in the same transaction and sets the collection's
``change_id`` (its column is named ``revision``) to that row's id: the change feed that keeps
every process's in-memory indexes in sync (service/collections/sync.py). Change ids are handed
out and committed in one order across all writers (a transaction-scoped advisory lock on
PostgreSQL; SQLite has one writer at a time), so a reader that has seen change ``n`` has seen
every change before it. Change ids are global and stay internal: what a write returns, and
clients see, is its tenant's revision (``tenant_revisions``: each tenant numbers its own writes
1, 2, 3..., handed out under the same lock, so they follow the change ids' order). ``replicas``
lists live processes and the model version each serves.

A write sent with an idempotency key (:class:`IdempotencyClaim`) stores its answer in its own
transaction, so a retry finds that answer if and only if the write committed, and gets it again
instead of writing twice; answers are kept for ``idempotency_retention``.

A snapshot's restore (service/collections/restore.py) writes into a collection that is not
visible yet (``restore_heartbeat`` set): no listing or lookup returns it and it has no changes
until :meth:`Storage.finish_restore` makes it visible with one ``create`` change; an abandoned
one is deleted.

Opening a :class:`Storage` migrates the schema (service/storage/migrations) or checks that it
is current. Methods are synchronous; callers run them off the event loop.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.errors import (
    ConflictError,
    ForgottenInputError,
    IdempotencyKeyReusedError,
    NotFoundError,
    RememberLimitError,
)
from service.storage.engine import WRITE, create_storage_engine, reported_as_unavailable
from service.storage.migrations import check_schema_current, upgrade_database
from service.storage.records import (
    AdapterRecord,
    Base,
    ChangeRecord,
    ClassRecord,
    CollectionRecord,
    EmbeddingRecord,
    ExampleRecord,
    IdempotencyKeyRecord,
    RememberedInputRecord,
    ReplicaRecord,
    TenantRevisionRecord,
    utcnow,
)

CHANGES_CHANNEL = "protonet_changes"  # PostgreSQL NOTIFY channel of new changes
CHANGE_ORDER_LOCK = 0x70726F7431  # advisory lock that orders change ids with commits
IDEMPOTENCY_RETENTION = timedelta(hours=24)
REMEMBER_LOCK = 0x72656D65  # advisory lock (with the tenant's hash): one tenant's limit at a time
INPUT_IDS = 2**53 - 1  # remembered inputs' random ids: exact in every JSON reader
# A process whose heartbeat is older than this is not live (no longer serves its version, and
# its adaptation jobs have failed).
LIVE_WITHIN = timedelta(seconds=30)


@dataclass(frozen=True)
class StoredCollection:
    """``revision``: its tenant's revision of the collection's latest change (what clients
    see); ``change_id``: that change's id (global, for the change feed)."""

    id: int
    name: str
    tenant: str
    revision: int = 0
    index_kind: str = "auto"
    rejection: str = "none"  # service/collections/rejection.py RejectionSetting.to_column
    model: str = "default"  # the served model's name
    change_id: int = 0


@dataclass(frozen=True)
class StoredClass:
    id: int
    label: str
    n_examples: int


@dataclass(frozen=True)
class StoredExample:
    """One stored example: its id, its class's label, and its text (None for an image)."""

    id: int
    label: str
    text: str | None = None


@dataclass(frozen=True)
class StoredEmbeddings:
    """Embeddings ``[m, dim]`` float32, and the class id ``[m]`` int64 and example id ``[m]``
    int64 (``ExampleRecord.id``) of each row, by example id."""

    class_ids: np.ndarray
    embeddings: np.ndarray
    example_ids: np.ndarray


StoredInput = np.ndarray | str  # an image's stage-1 pixels, or a text's normalized text


@dataclass(frozen=True)
class StoredInputs:
    """A batch of examples' ids ``[m]`` and stage-1 inputs (a list: shapes may differ)."""

    example_ids: list[int]
    inputs: list[StoredInput]


@dataclass(frozen=True)
class Change:
    """One committed write, as the change feed delivers it: ``id`` orders every change,
    ``revision`` is the tenant's number of it (what clients see)."""

    id: int
    collection_id: int
    tenant: str
    name: str
    kind: str  # create | support | delete_class | settings | adapter | delete
    class_ids: tuple[int, ...]
    revision: int


@dataclass(frozen=True)
class IdempotencyClaim:
    """A write's idempotency key (per tenant) and the fingerprint of the request it came
    with (a hex SHA-256: the same key with another request is refused)."""

    tenant: str
    key: str
    fingerprint: str


@dataclass(frozen=True)
class AddedExamples:
    """What one :meth:`Storage.add_examples` committed: ``label -> class id`` and ``label ->
    the class's number of examples`` after it, how many examples it added, and its revision
    (its tenant's number of the write).
    ``replayed``: the answer of an earlier write with the same idempotency key (nothing was
    written this time)."""

    class_ids: dict[str, int]
    sizes: dict[str, int]
    n_added: int
    revision: int
    replayed: bool = False

    def to_json(self) -> str:
        fields = {"class_ids": self.class_ids, "sizes": self.sizes, "n_added": self.n_added}
        return json.dumps({**fields, "revision": self.revision})

    @classmethod
    def replay(cls, answer: str) -> AddedExamples:
        return cls(**json.loads(answer), replayed=True)


@dataclass(frozen=True)
class SnapshotRow:
    """One example as a snapshot carries it: its class's label, its stage-1 input, and its
    embeddings by model version (float32 bytes; those that were stored)."""

    label: str
    input: StoredInput
    embeddings: dict[str, bytes]


@dataclass(frozen=True)
class RememberedInput:
    """A query's input kept for feedback: stage 1, and its embedding by ``model_version``."""

    input: StoredInput
    model_version: str
    vector: bytes


@dataclass(frozen=True)
class RememberLimits:
    """How long a tenant's remembered inputs are kept, and how many (and bytes) at most."""

    keep: timedelta = timedelta(hours=1)
    max_inputs: int = 10_000
    max_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class Replica:
    id: str
    model_version: str
    host: str
    pid: int
    ready: bool
    seen_at: datetime | None  # None until written


def input_to_columns(item: StoredInput) -> dict[str, Any]:
    """Pixels ``uint8 [H, W]`` or ``[H, W, C]``, or a text -> the example's input columns (a
    text's pixel columns are empty)."""
    if isinstance(item, str):
        return {"pixels": b"", "height": 0, "width": 0, "channels": 0, "text": item}
    return pixels_to_columns(item)


def columns_to_input(row: Any) -> StoredInput:
    """Inverse of :func:`input_to_columns` (``row`` has the five columns)."""
    if row.text is not None:
        return str(row.text)
    return columns_to_pixels(row.pixels, row.height, row.width, row.channels)


def pixels_to_columns(pixels: np.ndarray) -> dict[str, Any]:
    """``uint8 [H, W]`` or ``[H, W, C]`` -> the example's pixel columns."""
    height, width = pixels.shape[:2]
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    data = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return {"pixels": data, "height": height, "width": width, "channels": channels}


def columns_to_pixels(data: bytes, height: int, width: int, channels: int) -> np.ndarray:
    """Inverse of :func:`pixels_to_columns`."""
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.frombuffer(data, dtype=np.uint8).reshape(shape).copy()


def _vectors(rows: Iterable[bytes]) -> np.ndarray:
    vectors = [np.frombuffer(row, dtype=np.float32) for row in rows]
    return np.stack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)


class Storage:
    """Repository over the tables; every public method is one transaction.

    ``migrate``: bring the schema to the newest revision on open (under a lock, so processes
    that start together do not race); if false, refuse an outdated schema instead.
    """

    def __init__(
        self,
        url: str,
        migrate: bool = True,
        default_model: str = "default",
        idempotency_retention: timedelta = IDEMPOTENCY_RETENTION,
    ) -> None:
        self.idempotency_retention = idempotency_retention
        with reported_as_unavailable(url):
            self.engine = create_storage_engine(url)
            if migrate:  # collections made before models had names go to ``default_model``
                upgrade_database(self.engine, default_model)
            else:
                check_schema_current(self.engine)
        self.dialect = self.engine.dialect.name
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        writer = self.engine.execution_options(**{WRITE: True})
        self._writes = sessionmaker(writer, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def reading(self) -> Session:
        """A session for reads (for the storage package's other repositories)."""
        return self._sessions()

    def writing(self) -> AbstractContextManager[Session]:
        """A write transaction, committed at its end (for the other repositories)."""
        return self._writes.begin()

    def ping(self) -> None:
        """One round trip to the database; raises (``OperationalError``) if it is away."""
        with self._sessions() as session:
            session.execute(text("SELECT 1"))

    # -- the change feed -------------------------------------------------------------------

    def record_change(
        self,
        session: Session,
        collection: CollectionRecord,
        kind: str,
        class_ids: Sequence[int] = (),
    ) -> int:
        """Append the change of this transaction's write; returns its tenant's revision (the
        write's revision, as clients see it).

        Call last in the transaction, after the collection's row is locked: on PostgreSQL the
        advisory lock then orders change ids and tenant revisions like commits without waiting
        on any row lock.
        """
        if self.dialect == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHANGE_ORDER_LOCK})
        revision = self._next_revision(session, collection.tenant)
        change = ChangeRecord(
            collection_id=collection.id,
            tenant=collection.tenant,
            name=collection.name,
            kind=kind,
            class_ids=json.dumps(sorted(class_ids)),
            tenant_revision=revision,
        )
        session.add(change)
        session.flush()
        if kind != "delete":
            collection.change_id = change.id
            collection.tenant_revision = revision
        if self.dialect == "postgresql":  # delivered to listeners at commit
            session.execute(
                text("SELECT pg_notify(:channel, :id)"),
                {"channel": CHANGES_CHANNEL, "id": str(change.id)},
            )
        return revision

    def _next_revision(self, session: Session, tenant: str) -> int:
        """Count one more write of ``tenant``; returns the count (its first write: 1)."""
        table = TenantRevisionRecord
        upsert = (
            _dialect_insert(self.dialect, table)
            .values(tenant=tenant, revision=1)
            .on_conflict_do_update(
                index_elements=[table.tenant], set_={"revision": table.revision + 1}
            )
            .returning(table.revision)
        )
        return int(session.scalars(upsert).one())

    def last_change_id(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.max(ChangeRecord.id))) or 0)

    def tenant_revision(self, tenant: str) -> int:
        """The revision of the tenant's latest write (0: none yet)."""
        query = select(TenantRevisionRecord.revision).where(TenantRevisionRecord.tenant == tenant)
        with self._sessions() as session:
            return int(session.scalar(query) or 0)

    def tenant_revisions(self) -> dict[str, int]:
        """``tenant -> revision of its latest write``, for every tenant that wrote."""
        query = select(TenantRevisionRecord.tenant, TenantRevisionRecord.revision)
        with self._sessions() as session:
            return {tenant: int(revision) for tenant, revision in session.execute(query)}

    def changes_after(self, change_id: int, limit: int = 1000) -> list[Change]:
        """Changes with ids above ``change_id``, oldest first."""
        query = (
            select(ChangeRecord)
            .where(ChangeRecord.id > change_id)
            .order_by(ChangeRecord.id)
            .limit(limit)
        )
        return self._changes(query)

    def collection_changes_after(self, collection_id: int, change_id: int) -> list[Change]:
        """One collection's changes with ids above ``change_id``, oldest first."""
        query = (
            select(ChangeRecord)
            .where(ChangeRecord.collection_id == collection_id, ChangeRecord.id > change_id)
            .order_by(ChangeRecord.id)
        )
        return self._changes(query)

    def _changes(self, query: Any) -> list[Change]:
        with self._sessions() as session:
            return [
                Change(
                    r.id,
                    r.collection_id,
                    r.tenant,
                    r.name,
                    r.kind,
                    tuple(json.loads(r.class_ids)),
                    r.tenant_revision,
                )
                for r in session.scalars(query)
            ]

    def prune_changes(self, older_than: timedelta) -> int:
        """Forget changes older than ``older_than`` (every live process has applied them)."""
        return self._delete(
            delete(ChangeRecord).where(ChangeRecord.created_at < utcnow() - older_than)
        )

    def _delete(self, statement: Any) -> int:
        """Run one DELETE in its own transaction; returns how many rows it removed."""
        with self._writes.begin() as session:
            return int(session.execute(statement).rowcount or 0)  # type: ignore[attr-defined]

    # -- collections and classes -----------------------------------------------------------

    def create_collection(
        self,
        name: str,
        tenant: str,
        index_kind: str = "auto",
        rejection: str = "none",
        model: str = "default",
    ) -> StoredCollection:
        """Insert a collection bound to ``model``; :class:`ConflictError` if the tenant has one
        of that name."""
        try:
            with self._writes.begin() as session:
                record = CollectionRecord(
                    name=name,
                    tenant=tenant,
                    index_kind=index_kind,
                    rejection=rejection,
                    model=model,
                )
                session.add(record)
                session.flush()
                self.record_change(session, record, "create")
                return _stored(record)
        except IntegrityError:
            raise ConflictError(f"collection {name!r} already exists") from None

    def delete_collection(self, collection_id: int) -> int:
        """Drop a collection with its classes and examples; returns the write's revision."""
        with self._writes.begin() as session:
            record = self.locked_collection(session, collection_id)
            revision = self.record_change(session, record, "delete")
            session.execute(delete(CollectionRecord).where(CollectionRecord.id == collection_id))
            return revision

    def set_rejection(self, collection_id: int, rejection: str) -> int:
        """Change a collection's rejection setting; returns the write's revision (a
        ``settings`` change, so other processes re-read the setting)."""
        with self._writes.begin() as session:
            record = self.locked_collection(session, collection_id)
            record.rejection = rejection
            return self.record_change(session, record, "settings")

    @staticmethod
    def locked_collection(session: Session, collection_id: int) -> CollectionRecord:
        """The collection's row, locked until the transaction ends (no-op lock on SQLite,
        whose write transactions hold the whole database)."""
        record = session.get(CollectionRecord, collection_id, with_for_update=True)
        if record is None:
            raise NotFoundError(f"collection {collection_id} no longer exists")
        return record

    def list_collections(self) -> list[StoredCollection]:
        """Every visible collection (not one being restored)."""
        query = select(CollectionRecord).where(VISIBLE)
        with self._sessions() as session:
            return [_stored(record) for record in session.scalars(query)]

    def get_collection(self, collection_id: int) -> StoredCollection | None:
        with self._sessions() as session:
            record = session.get(CollectionRecord, collection_id)
            visible = record is not None and record.restore_heartbeat is None
            return _stored(record) if record is not None and visible else None

    def find_collection(self, tenant: str, name: str) -> StoredCollection | None:
        query = select(CollectionRecord).where(
            CollectionRecord.tenant == tenant, CollectionRecord.name == name, VISIBLE
        )
        with self._sessions() as session:
            record = session.scalars(query).first()
            return _stored(record) if record is not None else None

    def list_classes(
        self, collection_id: int, class_ids: Sequence[int] | None = None
    ) -> list[StoredClass]:
        """Classes of one collection (or those of ``class_ids`` that still exist) with their
        example counts, by class id."""
        query = (
            select(ClassRecord.id, ClassRecord.label, func.count(ExampleRecord.id))
            .join(ExampleRecord, ExampleRecord.class_id == ClassRecord.id)
            .where(ClassRecord.collection_id == collection_id)
            .group_by(ClassRecord.id, ClassRecord.label)
            .order_by(ClassRecord.id)
        )
        if class_ids is not None:
            query = query.where(ClassRecord.id.in_(list(class_ids)))
        with self._sessions() as session:
            return [StoredClass(i, label, n) for i, label, n in session.execute(query)]

    def collection_models(self) -> dict[str, int]:
        """``model name -> number of collections bound to it``."""
        query = (
            select(CollectionRecord.model, func.count())
            .where(VISIBLE)
            .group_by(CollectionRecord.model)
        )
        with self._sessions() as session:
            return {model: count for model, count in session.execute(query)}

    def stored_input_kinds(self, model: str) -> set[str]:
        """The kinds of input ("image", "text") stored in the collections bound to ``model``."""
        is_text = ExampleRecord.text.is_not(None)
        query = select(is_text).where(_of_model(model)).distinct()
        with self._sessions() as session:
            return {"text" if text else "image" for text in session.scalars(query)}

    def list_examples(
        self,
        collection_id: int,
        label: str | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[StoredExample]:
        """One collection's examples (of the class ``label`` only, if given) with ids above
        ``after_id``, by id; at most ``limit`` of them (keyset pagination)."""
        query = (
            select(ExampleRecord.id, ClassRecord.label, ExampleRecord.text)
            .join(ClassRecord, ClassRecord.id == ExampleRecord.class_id)
            .where(ClassRecord.collection_id == collection_id, ExampleRecord.id > after_id)
            .order_by(ExampleRecord.id)
            .limit(limit)
        )
        if label is not None:
            query = query.where(ClassRecord.label == label)
        with self._sessions() as session:
            return [StoredExample(i, label, text) for i, label, text in session.execute(query)]

    def example_input(self, collection_id: int, example_id: int) -> StoredInput | None:
        """The stage-1 input (pixels ``uint8 [H, W]`` or ``[H, W, C]``, or a text) of one
        example of the collection; ``None`` if it has no example ``example_id``."""
        query = (
            select(*INPUT_COLUMNS)
            .join(ClassRecord, ClassRecord.id == ExampleRecord.class_id)
            .where(ExampleRecord.id == example_id, ClassRecord.collection_id == collection_id)
        )
        with self._sessions() as session:
            row = session.execute(query).first()
        return None if row is None else columns_to_input(row)

    def add_examples(
        self,
        collection_id: int,
        labels: Sequence[str],
        inputs: np.ndarray | Sequence[str],
        embeddings: np.ndarray,
        model_version: str,
        claim: IdempotencyClaim | None = None,
        forget: tuple[str, int] | None = None,
    ) -> AddedExamples:
        """Store examples (stage-1 ``inputs``: pixels ``[n, ...]`` uint8 or ``n`` texts;
        ``embeddings [n, dim]`` float32 made by ``model_version``) in one transaction, creating
        missing classes; the answer carries the write's (tenant) revision. With a ``claim``
        whose key came with this request before, nothing is written: the first write's answer
        comes back (:class:`IdempotencyKeyReusedError` if the key came with another request).
        ``forget``: the ``(tenant, id)`` of a remembered input that this write uses up (feedback;
        :class:`ForgottenInputError`, and nothing written, if it is not remembered)."""
        try:
            return self._add_examples(
                collection_id, labels, inputs, embeddings, model_version, claim, forget
            )
        except IntegrityError:
            # A concurrent request with the same key committed first (other collections do
            # not wait on this one's lock): answer as it did.
            replay = None if claim is None else self.replayed_examples(claim)
            if replay is None:
                raise
            return replay

    def _add_examples(
        self,
        collection_id: int,
        labels: Sequence[str],
        inputs: np.ndarray | Sequence[str],
        embeddings: np.ndarray,
        model_version: str,
        claim: IdempotencyClaim | None,
        forget: tuple[str, int] | None = None,
    ) -> AddedExamples:
        with self._writes.begin() as session:
            collection = self.locked_collection(session, collection_id)
            remembered = None
            if claim is not None:
                if (answer := self._recall(session, claim)) is not None:
                    return AddedExamples.replay(answer)
                # Claimed before the change-order lock: a duplicate waits here, holding none.
                remembered = self._claim(session, claim)
            if forget is not None:
                self._forget(session, collection_id, *forget)
            class_ids = self._class_ids_for(session, collection_id, sorted(set(labels)))
            rows = [
                {"class_id": class_ids[label], **input_to_columns(item)}
                for label, item in zip(labels, inputs, strict=True)
            ]
            example_ids = session.scalars(
                insert(ExampleRecord).returning(ExampleRecord.id, sort_by_parameter_order=True),
                rows,
            )
            vectors = [
                {"example_id": example_id, "model_version": model_version, "vector": v.tobytes()}
                for example_id, v in zip(
                    example_ids.all(), np.asarray(embeddings, np.float32), strict=True
                )
            ]
            session.execute(insert(EmbeddingRecord), vectors)
            sizes = self._class_sizes(session, class_ids)
            _adapter_now_stale(session, collection_id)
            revision = self.record_change(session, collection, "support", list(class_ids.values()))
            added = AddedExamples(class_ids, sizes, len(labels), revision)
            if remembered is not None:
                remembered.answer = added.to_json()  # written at the commit
            return added

    @staticmethod
    def _class_sizes(session: Session, class_ids: dict[str, int]) -> dict[str, int]:
        """``label -> number of examples`` of the given classes, in this transaction."""
        counts = dict(
            session.execute(
                select(ExampleRecord.class_id, func.count())
                .where(ExampleRecord.class_id.in_(list(class_ids.values())))
                .group_by(ExampleRecord.class_id)
            ).all()
        )
        return {label: int(counts.get(class_id, 0)) for label, class_id in class_ids.items()}

    # -- idempotency keys ------------------------------------------------------------------

    def replayed_examples(self, claim: IdempotencyClaim) -> AddedExamples | None:
        """The answer of the write that ``claim``'s key came with before, if it committed
        within the retention (:class:`IdempotencyKeyReusedError` for another request)."""
        with self._sessions() as session:
            answer = self._recall(session, claim)
        return None if answer is None else AddedExamples.replay(answer)

    def _recall(self, session: Session, claim: IdempotencyClaim) -> str | None:
        row = session.execute(
            select(IdempotencyKeyRecord.fingerprint, IdempotencyKeyRecord.answer).where(
                IdempotencyKeyRecord.tenant == claim.tenant,
                IdempotencyKeyRecord.key == claim.key,
                IdempotencyKeyRecord.created_at >= utcnow() - self.idempotency_retention,
            )
        ).first()
        if row is None:
            return None
        if row.fingerprint != claim.fingerprint:
            raise IdempotencyKeyReusedError(
                f"Idempotency-Key {claim.key!r} was sent before with another request (body or "
                "collection): send a new key for a new request"
            )
        return str(row.answer)

    def _claim(self, session: Session, claim: IdempotencyClaim) -> IdempotencyKeyRecord:
        """Insert the key's row (its answer is set before the commit); an expired row of the
        same key, not purged yet, goes first. A live row committed meanwhile by another
        request stays: the insert then fails (IntegrityError) and that request's answer counts."""
        session.execute(
            delete(IdempotencyKeyRecord).where(
                IdempotencyKeyRecord.tenant == claim.tenant,
                IdempotencyKeyRecord.key == claim.key,
                IdempotencyKeyRecord.created_at < utcnow() - self.idempotency_retention,
            )
        )
        record = IdempotencyKeyRecord(
            tenant=claim.tenant, key=claim.key, fingerprint=claim.fingerprint, answer=""
        )
        session.add(record)
        session.flush()
        return record

    def prune_idempotency_keys(self) -> int:
        """Forget answers older than the retention; returns how many."""
        cutoff = utcnow() - self.idempotency_retention
        return self._delete(
            delete(IdempotencyKeyRecord).where(IdempotencyKeyRecord.created_at < cutoff)
        )

    @staticmethod
    def _class_ids_for(
        session: Session, collection_id: int, labels: Sequence[str]
    ) -> dict[str, int]:
        """``label -> class id``, inserting the classes that do not exist yet in the order of
        ``labels`` (their ids, and so their listing order, follow it)."""
        wanted = list(dict.fromkeys(labels))
        existing = session.execute(
            select(ClassRecord.label, ClassRecord.id).where(
                ClassRecord.collection_id == collection_id, ClassRecord.label.in_(wanted)
            )
        )
        class_ids: dict[str, int] = {label: class_id for label, class_id in existing}
        new_records = [
            ClassRecord(collection_id=collection_id, label=label)
            for label in wanted
            if label not in class_ids
        ]
        session.add_all(new_records)
        session.flush()
        class_ids.update({record.label: record.id for record in new_records})
        return class_ids

    def delete_class(self, collection_id: int, class_id: int) -> int:
        """Drop one class with its examples; returns the write's revision."""
        with self._writes.begin() as session:
            collection = self.locked_collection(session, collection_id)
            session.execute(delete(ClassRecord).where(ClassRecord.id == class_id))
            _adapter_now_stale(session, collection_id)
            return self.record_change(session, collection, "delete_class", [class_id])

    # -- embeddings by model version -------------------------------------------------------

    def class_embeddings(self, class_ids: Sequence[int], model_version: str) -> StoredEmbeddings:
        """The given classes' embeddings made by ``model_version``, by example id."""
        return self._embeddings(ExampleRecord.class_id.in_(list(class_ids)), model_version)

    def collection_embeddings(self, collection_id: int, model_version: str) -> StoredEmbeddings:
        """One collection's embeddings made by ``model_version``, by example id."""
        in_collection = select(ClassRecord.id).where(ClassRecord.collection_id == collection_id)
        return self._embeddings(
            ExampleRecord.class_id.in_(in_collection.scalar_subquery()), model_version
        )

    def _embeddings(self, condition: Any, model_version: str) -> StoredEmbeddings:
        query = (
            select(ExampleRecord.id, ExampleRecord.class_id, EmbeddingRecord.vector)
            .join(EmbeddingRecord, EmbeddingRecord.example_id == ExampleRecord.id)
            .where(condition, EmbeddingRecord.model_version == model_version)
            .order_by(ExampleRecord.id)
        )
        with self._sessions() as session:
            rows = session.execute(query).all()
        class_ids = np.array([row.class_id for row in rows], dtype=np.int64)
        example_ids = np.array([row.id for row in rows], dtype=np.int64)
        return StoredEmbeddings(class_ids, _vectors(row.vector for row in rows), example_ids)

    def count_examples(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.count(ExampleRecord.id))) or 0)

    def count_unembedded(self, model_version: str, model: str | None = None) -> int:
        """Examples (of the collections bound to ``model``, if given) with no embedding by
        ``model_version`` (one statement: one snapshot)."""
        query = select(func.count(ExampleRecord.id)).where(_not_embedded_by(model_version))
        if model is not None:
            query = query.where(_of_model(model))
        with self._sessions() as session:
            return int(session.scalar(query) or 0)

    def count_embeddings_by_version(self) -> dict[str, int]:
        """``model version -> number of stored embeddings``."""
        query = select(EmbeddingRecord.model_version, func.count()).group_by(
            EmbeddingRecord.model_version
        )
        with self._sessions() as session:
            return {version: count for version, count in session.execute(query)}

    def unembedded_inputs(
        self,
        model_version: str,
        limit: int,
        after_id: int = 0,
        class_ids: Sequence[int] | None = None,
        collection_id: int | None = None,
        model: str | None = None,
    ) -> StoredInputs:
        """The ids and stored stage-1 inputs (pixels or normalized text, whatever the model's
        modality) of up to ``limit`` examples with ids above ``after_id`` (of ``class_ids``, of
        one collection, or of the collections bound to ``model``, if given) that have no
        embedding by ``model_version``, by id (keyset pagination)."""
        query = (
            select(ExampleRecord.id, *INPUT_COLUMNS)
            .where(ExampleRecord.id > after_id, _not_embedded_by(model_version))
            .order_by(ExampleRecord.id)
            .limit(limit)
        )
        if class_ids is not None:
            query = query.where(ExampleRecord.class_id.in_(list(class_ids)))
        if collection_id is not None:
            in_collection = select(ClassRecord.id).where(ClassRecord.collection_id == collection_id)
            query = query.where(ExampleRecord.class_id.in_(in_collection.scalar_subquery()))
        if model is not None:
            query = query.where(_of_model(model))
        with self._sessions() as session:
            rows = session.execute(query).all()
        return StoredInputs([row.id for row in rows], [columns_to_input(row) for row in rows])

    def add_embeddings(
        self, example_ids: Sequence[int], embeddings: np.ndarray, model_version: str
    ) -> int:
        """Store ``model_version``'s embeddings (``[m, dim]`` float32) of examples; those that
        were deleted meanwhile, or that have one already (another process of the same
        version), are skipped. Returns how many were stored."""
        vectors = dict(zip(example_ids, np.asarray(embeddings, np.float32), strict=True))
        with self._writes.begin() as session:
            # KEY SHARE: a concurrent deletion waits until this transaction ends.
            alive = session.scalars(
                select(ExampleRecord.id)
                .where(ExampleRecord.id.in_(list(vectors)))
                .with_for_update(key_share=True)
            ).all()
            done = set(
                session.scalars(
                    select(EmbeddingRecord.example_id).where(
                        EmbeddingRecord.example_id.in_(alive),
                        EmbeddingRecord.model_version == model_version,
                    )
                )
            )
            rows = [
                {"example_id": i, "model_version": model_version, "vector": vectors[i].tobytes()}
                for i in alive
                if i not in done
            ]
            if rows:
                session.execute(_insert_new(self.dialect), rows)
            return len(rows)

    def drop_embeddings(self, model_versions: Sequence[str]) -> int:
        """Delete every embedding made by ``model_versions``; returns how many."""
        return self._delete(
            delete(EmbeddingRecord).where(EmbeddingRecord.model_version.in_(model_versions))
        )

    # -- remembered query inputs (feedback) ------------------------------------------------

    def remember_inputs(
        self,
        tenant: str,
        collection_id: int,
        inputs: Sequence[StoredInput],
        embeddings: np.ndarray,
        model_version: str,
        limits: RememberLimits,
    ) -> list[int]:
        """Keep a query's stage-1 ``inputs`` and their ``embeddings`` for ``limits.keep``;
        their (random) ids. :class:`RememberLimitError` if the tenant would keep more than its
        limits (its expired inputs are forgotten first), :class:`NotFoundError` if the
        collection was deleted meanwhile."""
        now = utcnow()
        rows = [
            {**input_to_columns(item), "model_version": model_version, "vector": v.tobytes()}
            for item, v in zip(inputs, np.asarray(embeddings, np.float32), strict=True)
        ]
        for row in rows:
            row.setdefault("text", None)  # an image's columns have none
            row["size"] = len(row["pixels"]) + len((row["text"] or "").encode())
            row.update(
                id=secrets.randbelow(INPUT_IDS) + 1, tenant=tenant, expires_at=now + limits.keep
            )
            row.update(collection_id=collection_id)
        try:
            with self._writes.begin() as session:
                self._check_remember_limits(session, tenant, rows, limits, now)
                session.execute(insert(RememberedInputRecord), rows)
        except IntegrityError:
            raise NotFoundError("the collection does not exist") from None
        return [row["id"] for row in rows]

    def _check_remember_limits(
        self,
        session: Session,
        tenant: str,
        rows: list[dict[str, Any]],
        limits: RememberLimits,
        now: datetime,
    ) -> None:
        """Forget the tenant's expired inputs; :class:`RememberLimitError` if ``rows`` would
        take it past its limits (one tenant's check at a time: PostgreSQL's writers do not
        otherwise wait for each other)."""
        if self.dialect == "postgresql":
            lock = text("SELECT pg_advisory_xact_lock(:key, hashtext(:tenant))")
            session.execute(lock, {"key": REMEMBER_LOCK, "tenant": tenant})
        mine = RememberedInputRecord.tenant == tenant
        session.execute(
            delete(RememberedInputRecord).where(mine, RememberedInputRecord.expires_at <= now)
        )
        count, size, oldest = session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(RememberedInputRecord.size), 0),
                func.min(RememberedInputRecord.expires_at),
            ).where(mine)
        ).one()
        adding = sum(row["size"] for row in rows)
        if count + len(rows) <= limits.max_inputs and size + adding <= limits.max_bytes:
            return
        wait = math.ceil((oldest - now).total_seconds()) if oldest else 1
        raise RememberLimitError(
            f"tenant {tenant!r} keeps {count} remembered inputs ({size} bytes); "
            f"{len(rows)} more ({adding} bytes) would pass PROTONET_REMEMBER_MAX_INPUTS "
            f"({limits.max_inputs}) or PROTONET_REMEMBER_MAX_BYTES ({limits.max_bytes}): send "
            "feedback on them, query without remember, or retry once the oldest expire",
            retry_after=max(1, wait),
        )

    def remembered_input(self, tenant: str, collection_id: int, input_id: int) -> RememberedInput:
        """The remembered input ``input_id`` of the tenant's collection;
        :class:`ForgottenInputError` if there is none (or it expired)."""
        record = RememberedInputRecord
        query = select(
            record.pixels,
            record.height,
            record.width,
            record.channels,
            record.text,
            record.model_version,
            record.vector,
        ).where(*_remembered(tenant, collection_id, input_id))
        with self._sessions() as session:
            row = session.execute(query).first()
        if row is None:
            raise _forgotten(input_id)
        return RememberedInput(columns_to_input(row), row.model_version, row.vector)

    @staticmethod
    def _forget(session: Session, collection_id: int, tenant: str, input_id: int) -> None:
        """Use up a remembered input in this transaction (:class:`ForgottenInputError`)."""
        gone = session.execute(
            delete(RememberedInputRecord).where(*_remembered(tenant, collection_id, input_id))
        )
        if not gone.rowcount:  # type: ignore[attr-defined]
            raise _forgotten(input_id)

    def prune_remembered(self) -> int:
        """Forget every expired remembered input; returns how many."""
        expired = RememberedInputRecord.expires_at <= utcnow()
        return self._delete(delete(RememberedInputRecord).where(expired))

    # -- snapshots (service/collections/snapshots.py) --------------------------------------

    def embedding_versions(self, collection_id: int) -> list[str]:
        """The model versions that embedded any of the collection's examples."""
        in_collection = select(ClassRecord.id).where(ClassRecord.collection_id == collection_id)
        query = (
            select(EmbeddingRecord.model_version)
            .join(ExampleRecord, ExampleRecord.id == EmbeddingRecord.example_id)
            .where(ExampleRecord.class_id.in_(in_collection.scalar_subquery()))
            .distinct()
        )
        with self._sessions() as session:
            return sorted(session.scalars(query))

    def snapshot_rows(
        self, collection_id: int, embeddings: bool, batch: int
    ) -> Iterator[list[SnapshotRow]]:
        """The collection's examples class by class (oldest first), by id within a class,
        with their embeddings if asked, in batches of at least ``batch`` (but the last).

        One statement reads them all, streamed (a server-side cursor on PostgreSQL): a view
        of one moment however long the export takes, holding about one batch in memory."""
        columns: list[Any] = [ExampleRecord.id, ClassRecord.label, *INPUT_COLUMNS]
        query = select(*columns, *(EMBEDDING_COLUMNS if embeddings else ())).join(
            ClassRecord, ClassRecord.id == ExampleRecord.class_id
        )
        if embeddings:
            query = query.outerjoin(EmbeddingRecord, EmbeddingRecord.example_id == ExampleRecord.id)
        query = query.where(ClassRecord.collection_id == collection_id).order_by(
            ExampleRecord.class_id, ExampleRecord.id
        )
        with self._sessions() as session:
            pending: list[SnapshotRow] = []
            last_id = None
            for row in session.execute(query.execution_options(yield_per=batch)):
                if row.id != last_id:  # an example's rows (one per version) are adjacent
                    if len(pending) >= batch:
                        yield pending
                        pending = []
                    pending.append(SnapshotRow(row.label, columns_to_input(row), {}))
                    last_id = row.id
                if embeddings and row.model_version is not None:
                    pending[-1].embeddings[row.model_version] = row.vector
            if pending:
                yield pending

    def begin_restore(
        self, name: str, tenant: str, index_kind: str, rejection: str, model: str
    ) -> int:
        """An invisible collection to restore a snapshot into (its name taken: another
        collection of that name is refused meanwhile); returns its id. :class:`ConflictError`
        if the tenant has ``name`` already."""
        try:
            with self._writes.begin() as session:
                record = CollectionRecord(
                    name=name,
                    tenant=tenant,
                    index_kind=index_kind,
                    rejection=rejection,
                    model=model,
                    restore_heartbeat=utcnow(),
                )
                session.add(record)
                session.flush()
                return record.id
        except IntegrityError:
            raise ConflictError(f"collection {name!r} already exists") from None

    def restore_examples(self, collection_id: int, rows: Sequence[SnapshotRow]) -> None:
        """Store a batch of a restore's examples (classes created in the order they come)
        with their embeddings; :class:`NotFoundError` if the restore was abandoned."""
        with self._writes.begin() as session:
            self._restoring(session, collection_id).restore_heartbeat = utcnow()
            class_ids = self._class_ids_for(session, collection_id, [row.label for row in rows])
            example_ids = session.scalars(
                insert(ExampleRecord).returning(ExampleRecord.id, sort_by_parameter_order=True),
                [{"class_id": class_ids[row.label], **input_to_columns(row.input)} for row in rows],
            ).all()
            vectors = [
                {"example_id": example_id, "model_version": version, "vector": vector}
                for example_id, row in zip(example_ids, rows, strict=True)
                for version, vector in row.embeddings.items()
            ]
            if vectors:
                session.execute(insert(EmbeddingRecord), vectors)

    def finish_restore(self, collection_id: int) -> StoredCollection:
        """Make a restored collection visible: a ``create`` change, so every process loads it."""
        with self._writes.begin() as session:
            record = self._restoring(session, collection_id)
            record.restore_heartbeat = None
            self.record_change(session, record, "create")
            return _stored(record)

    def abandon_restore(self, collection_id: int) -> None:
        """Delete what a restore wrote (it was never visible)."""
        self._delete(delete(CollectionRecord).where(CollectionRecord.id == collection_id, ~VISIBLE))

    def prune_restores(self, older_than: timedelta) -> int:
        """Delete restores that wrote nothing for ``older_than`` (their process died, or their
        client stalled); returns how many."""
        cutoff = utcnow() - older_than
        return self._delete(
            delete(CollectionRecord).where(CollectionRecord.restore_heartbeat < cutoff)
        )

    @staticmethod
    def _restoring(session: Session, collection_id: int) -> CollectionRecord:
        """A restore's collection, locked; :class:`NotFoundError` once it was abandoned."""
        record = session.get(CollectionRecord, collection_id, with_for_update=True)
        if record is None or record.restore_heartbeat is None:
            raise NotFoundError(
                "the restore was abandoned (nothing written for too long): send the snapshot again"
            )
        return record

    # -- live processes --------------------------------------------------------------------

    def heartbeat(self, replica: Replica) -> None:
        """Insert or refresh this process's row in ``replicas``."""
        values = {
            "model_version": replica.model_version,
            "host": replica.host,
            "pid": replica.pid,
            "ready": replica.ready,
            "seen_at": utcnow(),
        }
        with self._writes.begin() as session:
            updated = session.execute(
                update(ReplicaRecord).where(ReplicaRecord.id == replica.id).values(**values)
            )
            if not updated.rowcount:  # type: ignore[attr-defined]
                session.execute(insert(ReplicaRecord).values(id=replica.id, **values))

    def prune_replicas(self, older_than: timedelta) -> int:
        """Forget processes not seen for ``older_than`` (killed ones never remove their row)."""
        return self._delete(
            delete(ReplicaRecord).where(ReplicaRecord.seen_at < utcnow() - older_than)
        )

    def remove_replica(self, replica_id: str) -> None:
        with self._writes.begin() as session:
            session.execute(delete(ReplicaRecord).where(ReplicaRecord.id == replica_id))

    def live_replicas(self, seen_within: timedelta) -> list[Replica]:
        """Processes whose last heartbeat is more recent than ``seen_within``."""
        query = select(ReplicaRecord).where(ReplicaRecord.seen_at >= utcnow() - seen_within)
        with self._sessions() as session:
            return [
                Replica(r.id, r.model_version, r.host, r.pid, r.ready, r.seen_at)
                for r in session.scalars(query.order_by(ReplicaRecord.started_at))
            ]


EMBEDDING_COLUMNS = (EmbeddingRecord.model_version, EmbeddingRecord.vector)
# A collection that no restore is writing into (service/collections/snapshots.py).
VISIBLE = CollectionRecord.restore_heartbeat.is_(None)
INPUT_COLUMNS = (
    ExampleRecord.pixels,
    ExampleRecord.height,
    ExampleRecord.width,
    ExampleRecord.channels,
    ExampleRecord.text,
)


def _remembered(tenant: str, collection_id: int, input_id: int) -> list[Any]:
    """The conditions "the tenant's live remembered input ``input_id`` of this collection"."""
    record = RememberedInputRecord
    return [
        record.id == input_id,
        record.tenant == tenant,
        record.collection_id == collection_id,
        record.expires_at > utcnow(),
    ]


def _forgotten(input_id: int) -> ForgottenInputError:
    return ForgottenInputError(
        f"input_id {input_id} is not remembered for this collection: never was (another "
        "collection's?), expired (PROTONET_REMEMBER_SECONDS), or was used for feedback "
        'already; query it again with "remember": true'
    )


def _adapter_now_stale(session: Session, collection_id: int) -> None:
    """The collection's examples change: its adapter (if any) no longer reflects them."""
    session.execute(
        update(AdapterRecord).where(AdapterRecord.collection_id == collection_id).values(stale=True)
    )


def _of_model(model: str) -> Any:
    """The condition "this example is in a collection bound to ``model``"."""
    classes = (
        select(ClassRecord.id)
        .join(CollectionRecord, CollectionRecord.id == ClassRecord.collection_id)
        .where(CollectionRecord.model == model, VISIBLE)
    )
    return ExampleRecord.class_id.in_(classes.scalar_subquery())


def _not_embedded_by(model_version: str) -> Any:
    """The condition "this example has no embedding by ``model_version``"."""
    embedded = select(EmbeddingRecord.example_id).where(
        EmbeddingRecord.example_id == ExampleRecord.id,
        EmbeddingRecord.model_version == model_version,
    )
    return ~embedded.exists()


def _stored(record: CollectionRecord) -> StoredCollection:
    return StoredCollection(
        record.id,
        record.name,
        record.tenant,
        record.tenant_revision,
        record.index_kind,
        record.rejection,
        record.model,
        record.change_id,
    )


def _insert_new(dialect: str) -> Any:
    """An INSERT into ``embeddings`` that skips rows another process inserted meanwhile."""
    return _dialect_insert(dialect, EmbeddingRecord).on_conflict_do_nothing()


def _dialect_insert(dialect: str, record: type[Base]) -> Any:
    """The dialect's INSERT into ``record``'s table (it has ``ON CONFLICT`` clauses)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(record)
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(record)
    raise NotImplementedError(f"database {dialect!r}: the service runs on SQLite or PostgreSQL")
