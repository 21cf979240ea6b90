"""Persistence through SQLAlchemy 2: SQLite by default, any SQLAlchemy URL later.

Tables: ``collections`` -> ``classes`` -> ``examples``. Each example keeps its stage-1 pixels
(``uint8`` bytes plus shape) and its embedding (float32 bytes) with the model version that made
it, so a model upgrade can re-embed everything without the original uploads. Deletes cascade in
the database. Methods are synchronous; callers run them off the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    ForeignKey,
    LargeBinary,
    String,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from protonet.errors import ConflictError, NotFoundError
from service.migrations import migrate

logger = logging.getLogger(__name__)

DEFAULT_TENANT = "default"  # where collections live when auth is off (and pre-tenant data)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class CollectionRecord(Base):
    __tablename__ = "collections"
    __table_args__ = (UniqueConstraint("tenant", "name"),)  # names are per tenant

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), server_default=DEFAULT_TENANT)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)


class ClassRecord(Base):
    __tablename__ = "classes"
    __table_args__ = (UniqueConstraint("collection_id", "label"),)

    id: Mapped[int] = mapped_column(primary_key=True)  # also the class id in the prototype index
    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(String(200))


class ExampleRecord(Base):
    __tablename__ = "examples"

    id: Mapped[int] = mapped_column(primary_key=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"), index=True)
    pixels: Mapped[bytes] = mapped_column(LargeBinary)  # stage-1 uint8, C order
    height: Mapped[int]
    width: Mapped[int]
    channels: Mapped[int]
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32 [dim]
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)


@dataclass(frozen=True)
class StoredCollection:
    id: int
    name: str
    tenant: str = DEFAULT_TENANT


@dataclass(frozen=True)
class StoredClass:
    id: int
    label: str
    n_examples: int


@dataclass(frozen=True)
class StoredEmbeddings:
    """Embeddings ``[m, dim]`` float32 and the class id ``[m]`` int64 of each row, by example id."""

    class_ids: np.ndarray
    embeddings: np.ndarray


@dataclass(frozen=True)
class StoredPixels:
    """A batch of examples' ids ``[m]`` and stage-1 pixels (a list: shapes may differ)."""

    example_ids: list[int]
    pixels: list[np.ndarray]


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


def _enable_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")  # for ON DELETE CASCADE
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    # FULL: a commit is on disk (WAL fsynced) before it returns, so an acknowledged write
    # survives a crash of the process or of the machine. NORMAL may lose the last commits on
    # power loss.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def create_storage_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get their directory, pragmas and thread settings."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", _enable_sqlite_pragmas)
    return engine


class Storage:
    """Repository over the three tables; every public method is one transaction."""

    def __init__(self, url: str) -> None:
        self.engine = create_storage_engine(url)
        migrate(self.engine)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def create_collection(self, name: str, tenant: str = DEFAULT_TENANT) -> StoredCollection:
        """Insert a collection; :class:`ConflictError` if the tenant has one of that name."""
        try:
            with self._sessions.begin() as session:
                record = CollectionRecord(name=name, tenant=tenant)
                session.add(record)
                session.flush()
                return StoredCollection(record.id, record.name, record.tenant)
        except IntegrityError:
            raise ConflictError(f"collection {name!r} already exists") from None

    def delete_collection(self, collection_id: int) -> None:
        with self._sessions.begin() as session:
            session.execute(delete(CollectionRecord).where(CollectionRecord.id == collection_id))

    def list_collections(self) -> list[StoredCollection]:
        with self._sessions() as session:
            rows = session.execute(
                select(CollectionRecord.id, CollectionRecord.name, CollectionRecord.tenant)
            )
            return [StoredCollection(row.id, row.name, row.tenant) for row in rows]

    def list_classes(self, collection_id: int) -> list[StoredClass]:
        """Classes of one collection with their example counts, by class id."""
        query = (
            select(ClassRecord.id, ClassRecord.label, func.count(ExampleRecord.id))
            .join(ExampleRecord, ExampleRecord.class_id == ClassRecord.id)
            .where(ClassRecord.collection_id == collection_id)
            .group_by(ClassRecord.id, ClassRecord.label)
            .order_by(ClassRecord.id)
        )
        with self._sessions() as session:
            return [StoredClass(i, label, n) for i, label, n in session.execute(query)]

    def add_examples(
        self,
        collection_id: int,
        labels: Sequence[str],
        pixels: np.ndarray,
        embeddings: np.ndarray,
        model_version: str,
    ) -> dict[str, int]:
        """Store examples (``pixels [n, ...]`` uint8, ``embeddings [n, dim]`` float32) in one
        transaction, creating missing classes. Returns ``label -> class id`` for ``labels``."""
        with self._sessions.begin() as session:
            if session.get(CollectionRecord, collection_id) is None:
                raise NotFoundError(f"collection {collection_id} no longer exists")
            class_ids = self._class_ids_for(session, collection_id, set(labels))
            rows = [
                {
                    "class_id": class_ids[label],
                    "embedding": np.asarray(embedding, dtype=np.float32).tobytes(),
                    "model_version": model_version,
                    **pixels_to_columns(image),
                }
                for label, image, embedding in zip(labels, pixels, embeddings, strict=True)
            ]
            session.execute(insert(ExampleRecord), rows)
            return class_ids

    @staticmethod
    def _class_ids_for(session: Session, collection_id: int, labels: set[str]) -> dict[str, int]:
        """``label -> class id``, inserting the classes that do not exist yet."""
        existing = session.execute(
            select(ClassRecord.label, ClassRecord.id).where(
                ClassRecord.collection_id == collection_id, ClassRecord.label.in_(sorted(labels))
            )
        )
        class_ids: dict[str, int] = {label: class_id for label, class_id in existing}
        new_records = [
            ClassRecord(collection_id=collection_id, label=label)
            for label in sorted(labels - class_ids.keys())
        ]
        session.add_all(new_records)
        session.flush()
        class_ids.update({record.label: record.id for record in new_records})
        return class_ids

    def delete_class(self, class_id: int) -> None:
        with self._sessions.begin() as session:
            session.execute(delete(ClassRecord).where(ClassRecord.id == class_id))

    def class_embeddings(self, class_ids: Sequence[int]) -> StoredEmbeddings:
        """Every stored embedding of the given classes, by example id."""
        return self._embeddings(ExampleRecord.class_id.in_(list(class_ids)))

    def collection_embeddings(self, collection_id: int) -> StoredEmbeddings:
        """Every stored embedding of one collection, by example id."""
        in_collection = select(ClassRecord.id).where(ClassRecord.collection_id == collection_id)
        return self._embeddings(ExampleRecord.class_id.in_(in_collection.scalar_subquery()))

    def _embeddings(self, condition: Any) -> StoredEmbeddings:
        query = (
            select(ExampleRecord.class_id, ExampleRecord.embedding)
            .where(condition)
            .order_by(ExampleRecord.id)
        )
        with self._sessions() as session:
            rows = session.execute(query).all()
        class_ids = np.array([row.class_id for row in rows], dtype=np.int64)
        vectors = [np.frombuffer(row.embedding, dtype=np.float32) for row in rows]
        embeddings = np.stack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
        return StoredEmbeddings(class_ids, embeddings)

    def count_examples_by_version(self) -> dict[str, int]:
        """``model version -> number of stored examples`` (one entry once fully upgraded)."""
        query = select(ExampleRecord.model_version, func.count()).group_by(
            ExampleRecord.model_version
        )
        with self._sessions() as session:
            return {version: count for version, count in session.execute(query)}

    def stale_pixels(self, model_version: str, limit: int, after_id: int = 0) -> StoredPixels:
        """Up to ``limit`` examples with ids above ``after_id`` not embedded by
        ``model_version``, by id (keyset pagination: each batch is a primary-key range scan)."""
        query = (
            select(
                ExampleRecord.id,
                ExampleRecord.pixels,
                ExampleRecord.height,
                ExampleRecord.width,
                ExampleRecord.channels,
            )
            .where(ExampleRecord.id > after_id, ExampleRecord.model_version != model_version)
            .order_by(ExampleRecord.id)
            .limit(limit)
        )
        with self._sessions() as session:
            rows = session.execute(query).all()
        return StoredPixels(
            [row.id for row in rows],
            [columns_to_pixels(row.pixels, row.height, row.width, row.channels) for row in rows],
        )

    def replace_embeddings(
        self, example_ids: Sequence[int], embeddings: np.ndarray, model_version: str
    ) -> None:
        """Overwrite examples' embeddings (``[m, dim]`` float32) and their model version."""
        rows = [
            {
                "id": example_id,
                "embedding": vector.astype(np.float32).tobytes(),
                "model_version": model_version,
            }
            for example_id, vector in zip(example_ids, embeddings, strict=True)
        ]
        with self._sessions.begin() as session:
            session.execute(update(ExampleRecord), rows)  # ORM bulk update by primary key
