"""The tables, as SQLAlchemy ORM classes: ``collections`` -> ``classes`` -> ``examples`` ->
``embeddings``, plus ``changes`` (the change feed), ``tenant_revisions`` (each tenant's count of
its writes), ``replicas`` (live processes), ``idempotency_keys`` (first answers of keyed
writes), ``remembered_inputs`` (query inputs kept for feedback), and per collection its
``adaptation_jobs`` and its adopted ``adapters``.

The schema itself is made by the migrations (service/storage/migrations); these classes
describe it, and a test checks that the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

BIG_ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # naive UTC: the columns have no zone


class Base(DeclarativeBase):
    pass


class CollectionRecord(Base):
    __tablename__ = "collections"
    __table_args__ = (UniqueConstraint("tenant", "name", name="uq_collections_tenant_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Rows made before tenants existed were put in tenant "default" (migration 0002).
    tenant: Mapped[str] = mapped_column(String(64), server_default="default")
    name: Mapped[str] = mapped_column(String(64))
    # The id of its latest change (global: the change feed's order, internal). The column is
    # named "revision" (migration 0003, from before tenants had revisions of their own).
    change_id: Mapped[int] = mapped_column("revision", BigInteger, default=0, server_default="0")
    # The tenant's revision of that change: what clients see (migration 0007).
    tenant_revision: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # exact | ivf | auto: the search index (service/collections/live_collection.py IndexPolicy)
    index_kind: Mapped[str] = mapped_column(String(8), default="auto", server_default="auto")
    # none | default | an acceptance such as 0.99: the rejection of unknown inputs
    # (service/collections/rejection.py RejectionSetting)
    rejection: Mapped[str] = mapped_column(String(32), default="none", server_default="none")
    # The served model it is bound to, by name (PROTONET_MODELS); rows made before models had
    # names were bound to the default model of the migrating process (migration 0006).
    model: Mapped[str] = mapped_column(String(64), server_default="default")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # While a snapshot is restored into it: the time of the restore's latest write, and the
    # collection is invisible (no listing, lookup or change feed sees it); NULL once visible
    # (migration 0011). A restore abandoned for long is deleted (Storage.prune_restores).
    restore_heartbeat: Mapped[datetime | None] = mapped_column(default=None)


class ClassRecord(Base):
    __tablename__ = "classes"
    __table_args__ = (UniqueConstraint("collection_id", "label"),)

    id: Mapped[int] = mapped_column(primary_key=True)  # also the class id in the prototype index
    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(String(200))  # service/collections/labels.py MAX_LENGTH


class ExampleRecord(Base):
    __tablename__ = "examples"

    id: Mapped[int] = mapped_column(primary_key=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"), index=True)
    pixels: Mapped[bytes] = mapped_column(LargeBinary)  # stage-1 uint8, C order
    height: Mapped[int]
    width: Mapped[int]
    channels: Mapped[int]
    # A text model's example: its normalized text (stage 1), with empty pixels and zero
    # sizes; None for an image.
    text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EmbeddingRecord(Base):
    __tablename__ = "embeddings"

    example_id: Mapped[int] = mapped_column(
        ForeignKey("examples.id", ondelete="CASCADE"), primary_key=True
    )
    model_version: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32 [dim]


class ChangeRecord(Base):
    """One write: ``kind`` is create, support, delete_class, settings (of the collection: its
    rejection) or delete (the collection)."""

    __tablename__ = "changes"
    __table_args__ = (
        Index("ix_changes_collection_id", "collection_id", "id"),
        {"sqlite_autoincrement": True},  # ids are never reused, even after pruning
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    collection_id: Mapped[int]  # no foreign key: the change of a deletion outlives its row
    tenant: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    class_ids: Mapped[str] = mapped_column(Text)  # JSON list of the classes it touched
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # The tenant's number of this write (1, 2, 3... per tenant): the revision clients see.
    tenant_revision: Mapped[int] = mapped_column(BigInteger, server_default="0")


class TenantRevisionRecord(Base):
    """Each tenant's latest revision: incremented by every write of the tenant, in the
    write's transaction, so a tenant's revisions tell nothing of other tenants' writes."""

    __tablename__ = "tenant_revisions"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)


class ReplicaRecord(Base):
    """A live service process (heartbeats), and the model version it serves."""

    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(1024))  # every served one, by commas
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    ready: Mapped[bool]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyKeyRecord(Base):
    """The first answer of a write sent with an ``Idempotency-Key`` (per tenant), stored in
    the write's own transaction: a retry finds it if and only if the write committed."""

    __tablename__ = "idempotency_keys"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the request, hex
    answer: Mapped[str] = mapped_column(Text)  # JSON, as the repository wrote it
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class RememberedInputRecord(Base):
    """A query's input kept for feedback (``"remember": true``) until ``expires_at``: its
    stage-1 input (the columns of an example), its size in bytes (for the tenant's limit) and
    its embedding by the version that answered. ``id`` is random: it tells nothing of other
    tenants' queries (migration 0012)."""

    __tablename__ = "remembered_inputs"
    __table_args__ = (Index("ix_remembered_inputs_tenant_expires_at", "tenant", "expires_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    tenant: Mapped[str] = mapped_column(String(64))
    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), index=True
    )
    pixels: Mapped[bytes] = mapped_column(LargeBinary)
    height: Mapped[int]
    width: Mapped[int]
    channels: Mapped[int]
    text: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int]
    model_version: Mapped[str] = mapped_column(String(64))
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AdaptationJobRecord(Base):
    """One adaptation of a collection (service/collections/adaptation.py), run by the process
    ``replica_id``: ``status`` running, completed, cancelled or failed; a completed one's
    ``decision`` is adopted or kept_unadapted, and ``result`` holds its held-out figures."""

    __tablename__ = "adaptation_jobs"
    __table_args__ = ({"sqlite_autoincrement": True},)  # a job's id is its adapter's version

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), index=True
    )
    replica_id: Mapped[str] = mapped_column(String(36))
    model_version: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str | None] = mapped_column(String(16))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The collection as trained: its latest change's id (global) and revision (its tenant's).
    trained_change_id: Mapped[int] = mapped_column(BigInteger)
    trained_revision: Mapped[int] = mapped_column(BigInteger)
    n_examples: Mapped[int]
    n_classes: Mapped[int]
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    examples_per_second: Mapped[float] = mapped_column(Float, default=0.0)
    result: Mapped[str | None] = mapped_column(Text)  # JSON: the held-out figures
    error: Mapped[str | None] = mapped_column(Text)
    # The revision of the ``adapter`` change that adopted its adapter (null: none adopted).
    revision: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class AdapterRecord(Base):
    """A collection's adopted adapter (at most one): the map ``x + (x @ down) @ up`` on the
    embeddings of ``model_version``, ``down [dim, rank]`` and ``up [rank, dim]`` float32, made by
    the job ``version``; ``scores`` float32 and ``shots`` int32 ``[m]`` are its held-out
    distances (for rejection thresholds in the adapted space). ``stale``: examples were added
    or deleted after the collection state it was trained on."""

    __tablename__ = "adapters"

    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(BigInteger)
    model_version: Mapped[str] = mapped_column(String(64))
    trained_change_id: Mapped[int] = mapped_column(BigInteger)
    trained_revision: Mapped[int] = mapped_column(BigInteger)
    stale: Mapped[bool] = mapped_column(Boolean, default=False)
    dim: Mapped[int]
    rank: Mapped[int]
    down: Mapped[bytes] = mapped_column(LargeBinary)
    up: Mapped[bytes] = mapped_column(LargeBinary)
    scores: Mapped[bytes] = mapped_column(LargeBinary)
    shots: Mapped[bytes] = mapped_column(LargeBinary)
    result: Mapped[str] = mapped_column(Text)  # JSON: the job's held-out figures
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
