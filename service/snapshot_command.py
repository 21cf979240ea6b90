"""``protonet snapshot export|import``: snapshots against the database itself, for backups
without a running service (the database of ``PROTONET_DATABASE_URL`` / ``PROTONET_DATA_DIR``,
as the service would open it). The file is the one ``GET .../snapshot`` writes and
``POST .../snapshot`` reads (service/collections/snapshots.py).

An import stores the file's inputs and embeddings as they are, in a collection bound to a
model this configuration serves (``PROTONET_MODELS``); a service whose model version the file
carries no embeddings of embeds the examples when it loads the collection (at start, or when
the change feed brings it), before answering for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from protonet.checkpoint import load_checkpoint
from service.collections.restore import StorageRestore, restore
from service.collections.snapshots import SnapshotHeader, SnapshotReader, export_chunks
from service.errors import NotFoundError, UnknownModelError
from service.settings import Settings
from service.storage.repository import Storage

CHUNK = 1024 * 1024  # bytes read from a snapshot file at a time


def export_snapshot(
    settings: Settings, name: str, tenant: str, out: Path | None, embeddings: bool
) -> None:
    """Write the tenant's collection ``name`` to ``out`` (None: stdout). The file appears
    only once complete (written beside it, then renamed)."""
    storage = Storage(settings.resolved_database_url(), migrate=False)
    try:
        stored = storage.find_collection(tenant, name)
        if stored is None:
            raise NotFoundError(f"collection {name!r} of tenant {tenant!r} does not exist")
        chunks = export_chunks(storage, stored, embeddings)
        if out is None:
            written = write_all(chunks, sys.stdout.buffer)
        else:
            partial = out.with_name(out.name + ".partial")
            with partial.open("wb") as file:
                written = write_all(chunks, file)
            os.replace(partial, out)
        where = "stdout" if out is None else str(out)
        print(
            f"exported collection {name!r} of tenant {tenant!r} to {where}: {written}",
            file=sys.stderr,
        )
    finally:
        storage.close()


def write_all(chunks: Iterator[bytes], file: BinaryIO) -> str:
    size = 0
    for chunk in chunks:
        file.write(chunk)
        size += len(chunk)
    return f"{size} bytes"


@dataclass
class ConfiguredRestore(StorageRestore):
    """A restore bound to a model of this configuration (checked, with its modality)."""

    settings: Settings | None = None

    def check(self, header: SnapshotHeader) -> None:
        assert self.settings is not None and self.model is not None
        served = self.settings.served_models()
        if self.model not in served:
            raise UnknownModelError(
                f"model {self.model!r} (the snapshot's, or --model) is not served by this "
                f"configuration: {', '.join(served)} (PROTONET_MODELS); pass --model NAME"
            )
        self.modality = load_checkpoint(served[self.model], modality=None).modality


def import_snapshot(
    settings: Settings, path: Path, name: str, tenant: str, model: str | None
) -> None:
    """Restore the snapshot at ``path`` (``-``: stdin) into the tenant's new collection."""
    storage = Storage(settings.resolved_database_url(), migrate=settings.migrate_on_start)
    try:
        target = ConfiguredRestore(storage, name, tenant, model, settings=settings)
        reader = SnapshotReader(settings.max_body_bytes)
        with sys.stdin.buffer if str(path) == "-" else path.open("rb") as file:
            stored = restore(iter(lambda: file.read(CHUNK), b""), reader, target)
        print(
            f"restored collection {name!r} of tenant {tenant!r}: {reader.classes} classes, "
            f"{reader.examples} examples, bound to model {stored.model!r}, revision "
            f"{stored.revision}",
            file=sys.stderr,
        )
    finally:
        storage.close()
