"""Idempotency keys in the repository: a keyed write is stored once however often (and through
however many processes) it is sent, its first answer comes back, another request with the same
key is refused, and keys expire after the retention. On SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update

from service.errors import IdempotencyKeyReusedError
from service.storage.records import IdempotencyKeyRecord
from service.storage.repository import IdempotencyClaim, Storage


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite3'}"
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture
def replicas(database_url: str) -> Iterator[tuple[Storage, Storage]]:
    """Two processes' storages on one database."""
    first, second = Storage(database_url), Storage(database_url)
    yield first, second
    first.close()
    second.close()


def add(storage: Storage, collection_id: int, labels: list[str], claim: IdempotencyClaim | None):
    n = len(labels)
    pixels, embeddings = np.zeros((n, 28, 28), np.uint8), np.ones((n, 4), np.float32)
    return storage.add_examples(collection_id, labels, pixels, embeddings, "v", claim)


def test_a_key_sent_again_through_another_replica_writes_nothing(replicas):
    first, second = replicas
    collection = first.create_collection("c", "t")
    claim = IdempotencyClaim("t", "key-1", "f" * 64)
    written = add(first, collection.id, ["a", "a", "b"], claim)
    again = add(second, collection.id, ["a", "a", "b"], claim)
    assert not written.replayed and again.replayed
    assert (again.class_ids, again.sizes, again.n_added, again.revision) == (
        written.class_ids,
        {"a": 2, "b": 1},
        3,
        written.revision,
    )
    assert second.replayed_examples(claim) == again
    assert first.count_examples() == 3
    assert first.last_change_id() == written.revision  # no second change either


def test_a_key_with_another_request_is_refused_and_writes_nothing(replicas):
    first, second = replicas
    collection = first.create_collection("c", "t")
    add(first, collection.id, ["a"], IdempotencyClaim("t", "key-1", "1" * 64))
    with pytest.raises(IdempotencyKeyReusedError, match="'key-1' was sent before"):
        add(second, collection.id, ["b"], IdempotencyClaim("t", "key-1", "2" * 64))
    assert first.count_examples() == 1
    # Keys are per tenant: another tenant's same key is its own.
    other = first.create_collection("c", "u")
    assert not add(first, other.id, ["b"], IdempotencyClaim("u", "key-1", "2" * 64)).replayed


def test_concurrent_sends_of_one_key_write_once(replicas):
    first, second = replicas
    collection = first.create_collection("c", "t")
    claim = IdempotencyClaim("t", "key-1", "f" * 64)
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda i: add((first, second)[i % 2], collection.id, ["a"], claim), range(8))
        )
    assert sum(not answer.replayed for answer in answers) == 1
    assert {answer.revision for answer in answers} == {answers[0].revision}
    assert first.count_examples() == 1


def test_a_key_older_than_the_retention_is_forgotten_and_pruned(replicas):
    first, _ = replicas
    collection = first.create_collection("c", "t")
    claim = IdempotencyClaim("t", "key-1", "f" * 64)
    add(first, collection.id, ["a"], claim)
    with first._writes.begin() as session:  # as if sent two days ago
        session.execute(
            update(IdempotencyKeyRecord).values(
                created_at=IdempotencyKeyRecord.created_at - timedelta(days=2)
            )
        )
    assert first.replayed_examples(claim) is None
    assert not add(first, collection.id, ["a"], claim).replayed  # a new write, a new answer
    assert first.count_examples() == 2
    assert first.prune_idempotency_keys() == 0  # the fresh row of the second write stays
    with first._writes.begin() as session:
        session.execute(
            update(IdempotencyKeyRecord).values(
                created_at=IdempotencyKeyRecord.created_at - timedelta(days=2)
            )
        )
    assert first.prune_idempotency_keys() == 1
