"""Adaptation jobs and adapters in the repository, on SQLite and on PostgreSQL: one running job
per collection, jobs of a gone process fail, an adoption is one transaction (adapter, job
outcome, ``adapter`` change) that a cancellation beats, and writes to the examples make the
adapter stale."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from service.errors import ConflictError, NotFoundError
from service.storage.adaptations import (
    ORPHANED,
    STALLED,
    STALLED_AFTER,
    AdaptationStore,
    JobStart,
    NewAdapter,
)
from service.storage.records import AdaptationJobRecord
from service.storage.repository import Replica, Storage

LIVE = Replica("replica-live", "v", "host", 1, True, None)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    storage = Storage(url)
    storage.heartbeat(LIVE)
    yield storage
    storage.close()


@pytest.fixture
def store(storage: Storage) -> AdaptationStore:
    return AdaptationStore(storage, timedelta(seconds=30))


def collection_with_examples(storage: Storage) -> tuple[int, int]:
    """A collection of 2 classes of 2 examples; its id and its latest change's id."""
    collection = storage.create_collection("c", "t")
    pixels, embeddings = np.zeros((4, 28, 28), np.uint8), np.ones((4, 4), np.float32)
    storage.add_examples(collection.id, ["a", "a", "b", "b"], pixels, embeddings, "v")
    return collection.id, storage.last_change_id()


def start(store: AdaptationStore, collection_id: int, change_id: int, replica: str = LIVE.id):
    return store.start_job(JobStart(collection_id, replica, "v", change_id, 2, 4, 2))


def new_adapter() -> NewAdapter:
    down, up = np.arange(8, dtype=np.float32).reshape(4, 2), np.ones((2, 4), np.float32)
    scores, shots = np.array([1.5, 2.5], np.float32), np.array([1, 1], np.int32)
    return NewAdapter(down, up, scores, shots, {"examples": 2})


def test_one_running_job_per_collection(store, storage):
    collection_id, change_id = collection_with_examples(storage)
    job = start(store, collection_id, change_id)
    assert job.status == "running" and job.progress == 0.0
    with pytest.raises(ConflictError, match=f"adaptation {job.id} of this collection"):
        start(store, collection_id, change_id)
    store.finish_job(job.id, "failed", error="boom")
    assert start(store, collection_id, change_id).id > job.id


def test_a_job_whose_process_is_gone_shows_failed_and_frees_the_collection(store, storage):
    collection_id, change_id = collection_with_examples(storage)
    orphan = start(store, collection_id, change_id, replica="gone")
    shown = store.get_job(collection_id, orphan.id)
    assert shown is not None and shown.status == "failed" and shown.error == ORPHANED
    start(store, collection_id, change_id)  # no conflict: the orphan is written failed
    [_, written] = store.list_jobs(collection_id, 10)
    assert written.id == orphan.id and written.status == "failed"


def test_progress_reports_say_when_to_stop(store, storage):
    collection_id, change_id = collection_with_examples(storage)
    job = start(store, collection_id, change_id)
    assert store.report_progress(job.id, 0.5, 100.0) is False
    assert store.request_cancel(collection_id, job.id).cancel_requested
    assert store.report_progress(job.id, 0.6, 100.0) is True
    assert store.request_cancel(collection_id + 1, job.id) is None  # another collection's


def test_an_adoption_stores_the_adapter_and_records_a_change(store, storage):
    collection_id, change_id = collection_with_examples(storage)
    job = start(store, collection_id, change_id)
    revision = store.adopt(job.id, new_adapter())
    assert revision is not None
    [change] = storage.changes_after(change_id)
    assert change.kind == "adapter" and change.revision == revision
    adopted = store.get_adapter(collection_id)
    assert adopted is not None and adopted.version == job.id and not adopted.stale
    np.testing.assert_array_equal(adopted.down, new_adapter().down)
    np.testing.assert_array_equal(adopted.shots, [1, 1])
    assert adopted.result == {"examples": 2}
    finished = store.get_job(collection_id, job.id)
    assert finished is not None
    assert (finished.status, finished.decision, finished.revision) == (
        "completed",
        "adopted",
        revision,
    )


def test_a_cancellation_before_the_adoption_wins(store, storage):
    collection_id, change_id = collection_with_examples(storage)
    job = start(store, collection_id, change_id)
    store.request_cancel(collection_id, job.id)
    assert store.adopt(job.id, new_adapter()) is None
    assert store.get_adapter(collection_id) is None
    assert storage.changes_after(change_id) == []
    assert store.get_job(collection_id, job.id).status == "cancelled"


def test_writes_to_the_examples_make_the_adapter_stale(store, storage):
    collection_id, change_id = collection_with_examples(storage)
    during = start(store, collection_id, change_id)
    pixels, embeddings = np.zeros((1, 28, 28), np.uint8), np.ones((1, 4), np.float32)
    storage.add_examples(collection_id, ["c"], pixels, embeddings, "v")  # while it trains
    store.adopt(during.id, new_adapter())
    assert store.get_adapter(collection_id).stale
    after = start(store, collection_id, storage.last_change_id())
    store.adopt(after.id, new_adapter())
    assert not store.get_adapter(collection_id).stale  # the newer one replaced it
    storage.set_rejection(collection_id, "default")  # a setting: not the examples
    assert not store.get_adapter(collection_id).stale
    class_id = storage.list_classes(collection_id)[0].id
    storage.delete_class(collection_id, class_id)
    assert store.get_adapter(collection_id).stale


def test_removing_an_adapter_is_a_change_and_needs_one(store, storage):
    collection_id, change_id = collection_with_examples(storage)
    with pytest.raises(NotFoundError, match="'c' has no adapter"):
        store.delete_adapter(collection_id, "c")
    job = start(store, collection_id, change_id)
    adopted = store.adopt(job.id, new_adapter())
    removed = store.delete_adapter(collection_id, "c")
    assert removed > adopted and store.get_adapter(collection_id) is None
    assert storage.changes_after(change_id)[-1].kind == "adapter"


def test_a_stopping_process_fails_its_jobs(store, storage):
    collection_id, change_id = collection_with_examples(storage)
    job = start(store, collection_id, change_id)
    assert store.fail_jobs_of(LIVE.id, "stopped") == 1
    failed = store.get_job(collection_id, job.id)
    assert failed.status == "failed" and failed.error == "stopped"
    store.finish_job(job.id, "completed")  # a finished job stays as it is
    assert store.get_job(collection_id, job.id).status == "failed"


def test_jobs_and_adapters_go_with_their_collection(store, storage):
    collection_id, change_id = collection_with_examples(storage)
    job = start(store, collection_id, change_id)
    store.adopt(job.id, new_adapter())
    storage.delete_collection(collection_id)
    assert store.get_adapter(collection_id) is None
    assert store.get_job(collection_id, job.id) is None
    assert store.report_progress(job.id, 1.0, 1.0) is True


def test_a_job_that_stopped_reporting_progress_shows_failed(store, storage):
    collection_id, change_id = collection_with_examples(storage)
    job = start(store, collection_id, change_id)
    with storage.writing() as session:
        record = session.get(AdaptationJobRecord, job.id)
        record.updated_at = record.updated_at - STALLED_AFTER - timedelta(seconds=1)
    shown = store.get_job(collection_id, job.id)
    assert shown.status == "failed" and shown.error == STALLED
    start(store, collection_id, change_id)  # it no longer holds the collection
