"""The storage layer on a real PostgreSQL server: migrations (also of a database made before
tenants), several processes' migrations at once, the change feed, and the app end to end."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import anyio
import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.storage.migrations import head_revision, schema_revision
from service.storage.records import Base
from service.storage.repository import Storage
from tests.service.helpers import Drawings, make_settings, serve
from tests.service.storage.test_migrations import (
    check_models_migrated,
    check_rejection_migrated,
    check_tenant_revisions_migrated,
)

pytestmark = pytest.mark.anyio

# What the service's models created on PostgreSQL before tenants (PostgreSQL names the
# unique constraint collections_name_key itself).
PRE_TENANT_SCHEMA = [
    """CREATE TABLE collections (id SERIAL PRIMARY KEY, name VARCHAR(64) NOT NULL UNIQUE,
       created_at TIMESTAMP NOT NULL)""",
    """CREATE TABLE classes (id SERIAL PRIMARY KEY, collection_id INTEGER NOT NULL
       REFERENCES collections (id) ON DELETE CASCADE, label VARCHAR(200) NOT NULL,
       UNIQUE (collection_id, label))""",
    "CREATE INDEX ix_classes_collection_id ON classes (collection_id)",
    """CREATE TABLE examples (id SERIAL PRIMARY KEY, class_id INTEGER NOT NULL
       REFERENCES classes (id) ON DELETE CASCADE, pixels BYTEA NOT NULL, height INTEGER NOT NULL,
       width INTEGER NOT NULL, channels INTEGER NOT NULL, embedding BYTEA NOT NULL,
       model_version VARCHAR(64) NOT NULL, created_at TIMESTAMP NOT NULL)""",
    "CREATE INDEX ix_examples_class_id ON examples (class_id)",
    "CREATE INDEX ix_examples_model_version ON examples (model_version)",
    "INSERT INTO collections (id, name, created_at) VALUES (1, 'kept', now())",
    "INSERT INTO classes (id, collection_id, label) VALUES (7, 1, 'a')",
    """INSERT INTO examples (class_id, pixels, height, width, channels, embedding,
       model_version, created_at) SELECT 7, '\\x00', 1, 1, 1, decode(repeat('00', 256), 'hex'),
       'old', now() FROM generate_series(1, 3)""",
    "SELECT setval('collections_id_seq', 1)",
]


def matches_the_models(storage: Storage) -> bool:
    with storage.engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_a_pre_tenant_database_is_migrated(postgres_url):
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        for statement in PRE_TENANT_SCHEMA:
            connection.execute(text(statement))
    engine.dispose()
    storage = Storage(postgres_url)
    try:
        assert schema_revision(storage.engine) == head_revision()
        assert matches_the_models(storage)
        [kept] = storage.list_collections()
        assert (kept.tenant, kept.name) == ("default", "kept")
        assert storage.count_embeddings_by_version() == {"old": 3}
        assert storage.create_collection("kept", "other").tenant == "other"  # per tenant now
    finally:
        storage.close()


def test_a_0004_database_gains_the_rejection_setting(postgres_url):
    check_rejection_migrated(postgres_url)


def test_a_0005_database_binds_its_collections_to_the_default_model(postgres_url):
    check_models_migrated(postgres_url)


def test_replicas_starting_together_migrate_once(postgres_url):
    with ThreadPoolExecutor(4) as pool:
        storages = list(pool.map(Storage, [postgres_url] * 4))
    try:
        assert all(schema_revision(s.engine) == head_revision() for s in storages)
        assert matches_the_models(storages[0])
    finally:
        for storage in storages:
            storage.close()


def test_a_0006_database_numbers_revisions_per_tenant(postgres_url):
    check_tenant_revisions_migrated(postgres_url)


def test_sqlite_processes_starting_together_migrate_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    with ThreadPoolExecutor(4) as pool:
        storages = list(pool.map(Storage, [url] * 4))
    try:
        assert all(schema_revision(s.engine) == head_revision() for s in storages)
    finally:
        for storage in storages:
            storage.close()


def test_changes_are_recorded_with_each_write(postgres_url):
    storage = Storage(postgres_url)
    try:
        collection = storage.create_collection("c", "t")
        pixels, embeddings = np.zeros((2, 28, 28), np.uint8), np.ones((2, 4), np.float32)
        added = storage.add_examples(collection.id, ["a", "b"], pixels, embeddings, "v")
        class_ids, revision = added.class_ids, added.revision
        deleted = storage.delete_class(collection.id, class_ids["a"])
        setting = storage.set_rejection(collection.id, "default")
        gone = storage.delete_collection(collection.id)
        kinds = [(c.kind, c.class_ids) for c in storage.changes_after(0)]
        assert kinds == [
            ("create", ()),
            ("support", tuple(sorted(class_ids.values()))),
            ("delete_class", (class_ids["a"],)),
            ("settings", ()),
            ("delete", ()),
        ]
        assert collection.revision < revision < deleted < setting < gone
        assert gone == storage.last_change_id()
    finally:
        storage.close()


async def test_the_service_runs_on_postgresql(tmp_path, checkpoint_a, postgres_url):
    drawings = Drawings(2)
    settings = make_settings(tmp_path, checkpoint_a, database_url=postgres_url)
    async with serve(settings) as running:
        client = running.client
        await client.create_collection("letters")
        await client.add_support("letters", [("x", drawings.png(0)), ("y", drawings.png(1))])
        answer = await client.query("letters", [drawings.png(1)], top_k=2)
        assert answer["results"][0]["label"] == "y"
        await client.delete_class("letters", "x")
    async with serve(settings) as running:  # restart: everything is in PostgreSQL
        detail = await running.client.get_collection("letters", classes=True)
        assert [c["label"] for c in detail["classes"]] == ["y"]
    assert not (tmp_path / "protonet.sqlite3").exists()


@contextmanager
def database_refusing_connections(url: str) -> Iterator[None]:
    """The database goes away: it refuses new connections and its open ones are cut
    (pg_terminate_backend); it comes back on exit."""
    name = make_url(url).database
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
        yield
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


async def test_a_replica_whose_database_is_down_stays_ready_and_says_so(
    tmp_path, checkpoint_a, postgres_url
):
    drawings = Drawings(1)
    settings = make_settings(tmp_path, checkpoint_a, database_url=postgres_url)
    async with serve(settings) as running:
        client, http, probe = running.client, running.http, running.state.database
        await client.create_collection("c")
        await client.add_support("c", [("a", drawings.png(0))])
        with database_refusing_connections(postgres_url):
            assert not await anyio.to_thread.run_sync(probe.check_now)
            ready = await http.get("/readyz")
            assert ready.status_code == 200 and ready.json()["database"] == "down"
            strict = await http.get("/readyz", params={"require": "database"})
            assert strict.status_code == 503 and strict.json()["status"] == "ready"
            assert "protonet_database_up 0.0" in (await http.get("/metrics")).text
            query = {"queries": [{"pixels": drawings.pixels(0).tolist()}]}
            assert (await http.post("/v1/collections/c/query", json=query)).status_code == 200
            example = {"label": "b", "pixels": drawings.pixels(0).tolist()}
            write = await http.post("/v1/collections/c/support", json={"examples": [example]})
            assert write.status_code == 503 and write.json()["error"] == "database_unavailable"
        assert await anyio.to_thread.run_sync(probe.check_now)
        strict = await http.get("/readyz", params={"require": "database"})
        assert strict.status_code == 200 and strict.json()["database"] == "up"
