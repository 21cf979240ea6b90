"""Persisted IVF indexes, for a quick start: clustering a large collection again takes long.

One file per collection and space (model version, or adapter in it): a JSON header (the change
id it reflects, model version, checksum) and the FAISS index. The file is written to a
temporary file and renamed, so a reader sees an old file or a new one, never half; a file that
does not check out is ignored and the index rebuilt from the database, which stays the truth.
:class:`SavedIndexes` is what the registry keeps of them: which collections' files are
current, loading one at startup and writing the changed ones now and then.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.collections.ivf_index import IVFIndex, faiss
from service.collections.live_collection import LiveCollection
from service.storage.repository import StoredClass

logger = logging.getLogger(__name__)

MAGIC = b"PROTONET-IVF-1\n"
# The header's key for the change id. Files written before the name settled say "revision";
# the key stays, so that they still load.
CHANGE_ID_KEY = "revision"

Snapshot = tuple[np.ndarray, int, int]  # serialized index (uint8), classes, trained size


def snapshot(index: IVFIndex) -> Snapshot:
    """The index serialized in memory (fast: hold the collection's lock only for this)."""
    return index.serialize(), len(index), index.trained_size


@dataclass(frozen=True)
class PersistedIndex:
    index: IVFIndex
    change_id: int  # the id of the collection's latest change that it reflects (at least)


class IndexFiles:
    """Persisted IVF indexes in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, collection_id: int, model_version: str) -> Path:
        return self.directory / f"collection-{collection_id}.{model_version}.ivf"

    def save(self, collection_id: int, model_version: str, index: IVFIndex, change_id: int) -> Path:
        return self.write(collection_id, model_version, snapshot(index), change_id)

    def write(
        self, collection_id: int, model_version: str, serialized: Snapshot, change_id: int
    ) -> Path:
        """Write a :func:`snapshot` (hashing and disk I/O: no lock needed meanwhile)."""
        data, classes, trained_size = serialized
        header = {
            CHANGE_ID_KEY: change_id,
            "model_version": model_version,
            "classes": classes,
            "trained_size": trained_size,
            "sha256": hashlib.sha256(data.data).hexdigest(),
        }
        path = self.path(collection_id, model_version)
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        with open(temporary, "wb") as file:
            file.write(MAGIC + json.dumps(header).encode() + b"\n")
            file.write(data.data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        return path

    def load(self, collection_id: int, model_version: str) -> PersistedIndex | None:
        """The persisted index, or ``None`` if there is none or it is damaged (logged)."""
        path = self.path(collection_id, model_version)
        if not path.exists():
            return None
        try:
            return self._read(path, model_version)
        except Exception as error:  # any damage means: rebuild from the database
            logger.warning("ignoring persisted index %s (%s): rebuilding it", path, error)
            return None

    @staticmethod
    def _read(path: Path, model_version: str) -> PersistedIndex:
        # One copy of the index's bytes in memory (then FAISS's own), not several.
        with open(path, "rb") as file:
            if file.read(len(MAGIC)) != MAGIC:
                raise ValueError("not a protonet index file")
            header = json.loads(file.readline())
            if header["model_version"] != model_version:
                raise ValueError(f"made by model {header['model_version']}")
            data = np.fromfile(file, dtype=np.uint8)
        if hashlib.sha256(data.data).hexdigest() != header["sha256"]:
            raise ValueError("checksum mismatch")
        index = faiss.deserialize_index(data)
        del data
        if not isinstance(index, faiss.IndexIVFFlat):
            raise ValueError(f"unexpected index type {type(index).__name__}")
        ivf = IVFIndex.from_faiss(index, int(header["trained_size"]))
        if len(ivf) != header["classes"]:
            raise ValueError("class count does not match its header")
        return PersistedIndex(ivf, int(header[CHANGE_ID_KEY]))

    def remove(self, collection_id: int) -> None:
        for path in self.directory.glob(f"collection-{collection_id}.*.ivf"):
            path.unlink(missing_ok=True)


# Applies a collection's changes after a change id to its index (caller holds write_lock).
ApplyChangesAfter = Callable[[LiveCollection, int], None]


class SavedIndexes:
    """The collections' persisted IVF indexes (none without ``files``): loading one at
    startup, and writing those that changed since their file was written."""

    def __init__(self, files: IndexFiles | None = None) -> None:
        self.files = files
        self.change_ids: dict[int, int] = {}  # collection id -> change id of its file

    def load(
        self,
        live: LiveCollection,
        classes: list[StoredClass],
        model_version: str,
        apply_changes_after: ApplyChangesAfter,
    ) -> bool:
        """Start ``live`` from its persisted IVF index, if it has a usable one: applies the
        changes made after the index's change id, then checks that the index holds exactly
        the stored ``classes`` (else: False, and the caller builds from the embeddings)."""
        if self.files is None or live.policy.kind == "exact":
            return False
        persisted = self.files.load(live.id, live.space(model_version))
        if persisted is None or persisted.change_id > live.change_id:
            return False
        live.load_persisted(classes, persisted.index)
        apply_changes_after(live, persisted.change_id)
        if not persisted.index.holds_exactly(live.indexed_ids()):
            logger.warning("persisted index of %r disagrees with storage: rebuilding", live.name)
            return False
        self.change_ids[live.id] = persisted.change_id
        logger.info("collection %r: persisted IVF index loaded", live.name)
        return True

    def save(
        self, collections: Iterable[LiveCollection], model_version: Callable[[LiveCollection], str]
    ) -> int:
        """Persist the IVF index of every collection changed since its last save (at
        shutdown, and now and then meanwhile); returns how many were written."""
        if self.files is None:
            return 0
        written = 0
        for live in collections:
            with live.write_lock:  # no update between reading the change id and the index
                index, change_id = live.ivf_index(), live.change_id
                saved = self.change_ids.get(live.id) == change_id
                if live.deleted or index is None or saved:
                    continue
                serialized = snapshot(index)
                space = live.space(model_version(live))
            self.files.write(live.id, space, serialized, change_id)
            self.change_ids[live.id] = change_id
            written += 1
        return written

    def remove(self, collection_id: int) -> None:
        """Delete a deleted collection's files."""
        self.change_ids.pop(collection_id, None)
        if self.files is not None:
            self.files.remove(collection_id)
