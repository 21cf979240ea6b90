"""The storage side of snapshots: an export reads one consistent view in batches, class by
class; a restore writes into an invisible collection that holds its name, appears with one
``create`` change, and leaves nothing behind when abandoned or pruned."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from service.errors import ConflictError, NotFoundError
from service.storage.repository import SnapshotRow, Storage

VERSION = "v1"


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path):
    """Both databases: PostgreSQL streams an export through a server-side cursor."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = Storage(url)
    yield opened
    opened.close()


def add(storage: Storage, collection_id: int, labels: list[str]) -> None:
    pixels = np.zeros((len(labels), 4, 4), dtype=np.uint8)
    vectors = np.arange(len(labels) * 2, dtype=np.float32).reshape(len(labels), 2)
    storage.add_examples(collection_id, labels, pixels, vectors, VERSION)


def test_an_export_reads_class_by_class_in_batches_and_one_consistent_view(storage):
    collection = storage.create_collection("c", "t")
    add(storage, collection.id, ["b", "a", "b", "c"])  # classes created a, b, c (sorted)
    add(storage, collection.id, ["a"])
    batches = storage.snapshot_rows(collection.id, embeddings=True, batch=2)
    first = next(batches)
    add(storage, collection.id, ["a", "d"])  # committed while the export reads
    rest = [row for batch in batches for row in batch]
    assert [len(first), len(rest)] == [2, 3]
    assert [row.label for row in first + rest] == ["a", "a", "b", "b", "c"]
    assert all(set(row.embeddings) == {VERSION} for row in first + rest)
    plain = [row for batch in storage.snapshot_rows(collection.id, False, 100) for row in batch]
    assert len(plain) == 7 and all(row.embeddings == {} for row in plain)
    assert storage.embedding_versions(collection.id) == [VERSION]


def rows(labels: list[str]) -> list[SnapshotRow]:
    return [
        SnapshotRow(label, np.full((4, 4), 7, np.uint8), {VERSION: b"\0" * 8}) for label in labels
    ]


def test_a_restore_is_invisible_until_finished_and_holds_its_name(storage):
    restoring = storage.begin_restore("r", "t", "exact", "default", "m")
    storage.restore_examples(restoring, rows(["z", "y", "z"]))
    storage.restore_examples(restoring, rows(["x", "y"]))
    assert storage.find_collection("t", "r") is None
    assert storage.get_collection(restoring) is None
    assert storage.list_collections() == [] and storage.collection_models() == {}
    with pytest.raises(ConflictError):
        storage.create_collection("r", "t")
    with pytest.raises(ConflictError):
        storage.begin_restore("r", "t", "auto", "none", "m")
    before = storage.last_change_id()
    restored = storage.finish_restore(restoring)
    assert storage.find_collection("t", "r") == restored
    assert (restored.index_kind, restored.rejection, restored.model) == ("exact", "default", "m")
    [change] = storage.changes_after(before)
    assert (change.kind, change.collection_id, change.revision) == ("create", restoring, 1)
    # Classes in the order they came (not sorted), with every example.
    assert [(c.label, c.n_examples) for c in storage.list_classes(restoring)] == [
        ("z", 2),
        ("y", 2),
        ("x", 1),
    ]
    assert storage.collection_embeddings(restoring, VERSION).embeddings.shape == (5, 2)


def test_an_abandoned_restore_leaves_nothing_and_a_stale_one_is_pruned(storage):
    kept = storage.create_collection("kept", "t")
    add(storage, kept.id, ["a"])
    abandoned = storage.begin_restore("r", "t", "auto", "none", "m")
    storage.restore_examples(abandoned, rows(["a", "b"]))
    storage.abandon_restore(abandoned)
    assert storage.count_examples() == 1
    stale = storage.begin_restore("r", "t", "auto", "none", "m")  # the name is free again
    storage.restore_examples(stale, rows(["a"]))
    assert storage.prune_restores(timedelta(hours=1)) == 0  # still writing
    assert storage.prune_restores(timedelta(0)) == 1
    assert storage.count_examples() == 1 and storage.find_collection("t", "kept") is not None
    with pytest.raises(NotFoundError, match="the restore was abandoned"):
        storage.restore_examples(stale, rows(["b"]))
    with pytest.raises(NotFoundError, match="the restore was abandoned"):
        storage.finish_restore(stale)
    storage.abandon_restore(kept.id)  # never deletes a visible collection
    assert storage.find_collection("t", "kept") is not None
