"""Restoring a snapshot (service/collections/snapshots.py) into a new collection, a batch at a
time, all or nothing.

The examples go into an invisible collection as the file is read (its name is taken
meanwhile); only once the whole file has been checked (end line, counts, checksum) does one
transaction make it visible, with a ``create`` change that every process applies. Anything
wrong on the way (a damaged or truncated file, an example the model cannot take, the client
gone, the database away) deletes what was written; a restore whose process died is deleted
by the next prune of any service process (``Storage.prune_restores``).

Two targets: :class:`ServiceRestore` (the HTTP route: embeds, for the version served here,
the examples whose embeddings the file does not carry, through the model's micro-batches,
and loads the collection) and :class:`StorageRestore` (``protonet snapshot import`` against a
database: stores the file's inputs and embeddings; a service embeds the rest when it loads
the collection).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from anyio import from_thread

from service.collections.live_collection import CollectionStatus
from service.collections.models import ModelSet, ServedModel
from service.collections.registry import CollectionRegistry
from service.collections.snapshots import SnapshotHeader, SnapshotReader
from service.errors import ConflictError, ModelMismatchError, NotFoundError
from service.storage.repository import SnapshotRow, Storage, StoredCollection

logger = logging.getLogger(__name__)

RESTORE_BATCH = 256  # examples per transaction (and per embedding request) of a restore


@dataclass
class StorageRestore:
    """A restore straight into storage: the snapshot's inputs and embeddings as they are.
    ``model``: the served model's name to bind the collection to (None: the snapshot's), and
    its ``modality`` if known (then every example must be of it)."""

    storage: Storage
    name: str
    tenant: str
    model: str | None = None
    modality: str | None = None
    collection_id: int | None = None

    def begin(self, header: SnapshotHeader) -> None:
        self.model = self.model or header.model
        self.check(header)
        self.collection_id = self.storage.begin_restore(
            self.name, self.tenant, header.index, header.rejection_setting.to_column(), self.model
        )

    def check(self, header: SnapshotHeader) -> None:
        """Refuse a header this target cannot restore (before anything is written)."""

    def store(self, rows: list[SnapshotRow]) -> None:
        assert self.collection_id is not None and self.model is not None
        if self.modality is not None:
            check_modality(rows, self.modality, self.model)
        self.storage.restore_examples(self.collection_id, self.prepared(rows))

    def prepared(self, rows: list[SnapshotRow]) -> list[SnapshotRow]:
        return rows

    def finish(self) -> StoredCollection:
        assert self.collection_id is not None
        return self.storage.finish_restore(self.collection_id)

    def abandon(self) -> None:
        """Delete what was written (if the database answers: else the prune will)."""
        if self.collection_id is None:
            return
        try:
            self.storage.abandon_restore(self.collection_id)
        except Exception:
            logger.warning("restore of %r: deleting what it wrote failed", self.name, exc_info=True)


def check_modality(rows: list[SnapshotRow], modality: str, model: str) -> None:
    """:class:`ModelMismatchError` unless every example is of ``modality``."""
    kinds = {"text" if isinstance(row.input, str) else "image" for row in rows}
    if other := kinds - {modality}:
        raise ModelMismatchError(
            f"the snapshot holds {other.pop()} examples; model {model!r} takes {modality} "
            "inputs: restore it for a model of its kind (?model=, GET /v1/models)"
        )


@dataclass
class ServiceRestore(StorageRestore):
    """A restore through a running service, bound to one of its ``models``: examples without
    an embedding by the version served here are embedded through the model's micro-batches
    (the restore runs in a worker thread; the batches on the event loop)."""

    models: ModelSet | None = None
    served: ServedModel | None = None

    def check(self, header: SnapshotHeader) -> None:
        assert self.models is not None
        self.served = served = self.models.get(self.model)  # 422 unknown_model
        served.rejection_policy(header.rejection_setting)  # 422 if the model cannot reject as asked
        self.modality = served.encoder.modality

    def prepared(self, rows: list[SnapshotRow]) -> list[SnapshotRow]:
        assert self.served is not None
        encoder = self.served.encoder
        for row in rows:
            given = row.embeddings.get(encoder.version)
            if given is not None and len(given) != 4 * encoder.embedding_dim:
                raise ModelMismatchError(
                    f"the snapshot's embeddings by model version {encoder.version} have "
                    f"{len(given) // 4} values; model {self.served.name!r} makes "
                    f"{encoder.embedding_dim}"
                )
        missing = [row for row in rows if encoder.version not in row.embeddings]
        if missing:
            batch = encoder.conform([row.input for row in missing])
            embedded = from_thread.run(self.served.pipeline.embed, batch)
            for row, vector in zip(missing, np.asarray(embedded, np.float32), strict=True):
                row.embeddings[encoder.version] = vector.tobytes()
        return rows


def restore(
    chunks: Iterable[bytes],
    reader: SnapshotReader,
    target: StorageRestore,
    batch: int | None = None,
) -> StoredCollection:
    """Read a snapshot's ``chunks`` into ``target`` in transactions of ``batch`` examples
    (default :data:`RESTORE_BATCH`); the collection once visible. Blocking. On any failure
    what was written is deleted, and the error raised."""
    batch = batch or RESTORE_BATCH
    pending: list[SnapshotRow] = []
    try:
        for chunk in chunks:
            pending += reader.feed(chunk)
            if reader.header is not None and target.collection_id is None:
                target.begin(reader.header)
            while len(pending) >= batch:
                target.store(pending[:batch])
                del pending[:batch]
        reader.finish()
        assert reader.header is not None and target.collection_id is not None
        if pending:
            target.store(pending)
        return target.finish()
    except BaseException:
        target.abandon()
        raise


def blocking(stream: AsyncIterator[bytes]) -> Iterator[bytes]:
    """An async stream (a request's body) read from a worker thread, chunk by chunk."""

    async def next_chunk() -> bytes | None:
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None

    while (chunk := from_thread.run(next_chunk)) is not None:
        if chunk:
            yield chunk


def restore_collection(
    registry: CollectionRegistry,
    name: str,
    tenant: str,
    chunks: Iterable[bytes],
    model: str | None,
    reader: SnapshotReader,
) -> CollectionStatus:
    """Restore a snapshot into the tenant's new collection ``name`` bound to the served
    ``model`` (None: the snapshot's), then load it here; its summary. Blocking: run in a
    worker thread (``chunks`` from :func:`blocking`). :class:`ConflictError` if ``name``
    exists (before any of the file is read)."""
    if registry.storage.find_collection(tenant, name) is not None:
        raise ConflictError(f"collection {name!r} already exists: restore under another name")
    target = ServiceRestore(registry.storage, name, tenant, model, models=registry.models)
    restore(chunks, reader, target)
    live = registry.sync(name, tenant)
    if live is None:  # deleted again at once, through another process
        raise NotFoundError(f"collection {name!r} does not exist")
    return live.status()
