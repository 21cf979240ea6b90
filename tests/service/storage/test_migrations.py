"""Schema migrations (Alembic): a database made before tenants (``collections.name UNIQUE``,
no ``tenant`` column) and before revisions is migrated on start: its collections move to the
``default`` tenant, its embeddings to the per-version table, nothing else changes; the newest
revision matches the ORM models exactly."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from service.errors import ConflictError
from service.settings import Settings
from service.storage.engine import create_storage_engine
from service.storage.migrations import (
    MigrationError,
    alembic_config,
    head_revision,
    schema_revision,
)
from service.storage.records import Base
from service.storage.repository import Replica, Storage
from tests.service.helpers import Drawings, make_settings, serve

pytestmark = pytest.mark.anyio

# The schema as the service created it before tenants (SQLAlchemy's DDL of that version).
OLD_SCHEMA = """
CREATE TABLE collections (
    id INTEGER NOT NULL, name VARCHAR(64) NOT NULL, created_at DATETIME NOT NULL,
    PRIMARY KEY (id), UNIQUE (name)
);
CREATE TABLE classes (
    id INTEGER NOT NULL, collection_id INTEGER NOT NULL, label VARCHAR(200) NOT NULL,
    PRIMARY KEY (id), UNIQUE (collection_id, label),
    FOREIGN KEY(collection_id) REFERENCES collections (id) ON DELETE CASCADE
);
CREATE INDEX ix_classes_collection_id ON classes (collection_id);
CREATE TABLE examples (
    id INTEGER NOT NULL, class_id INTEGER NOT NULL, pixels BLOB NOT NULL, height INTEGER NOT NULL,
    width INTEGER NOT NULL, channels INTEGER NOT NULL, embedding BLOB NOT NULL,
    model_version VARCHAR(64) NOT NULL, created_at DATETIME NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(class_id) REFERENCES classes (id) ON DELETE CASCADE
);
CREATE INDEX ix_examples_class_id ON examples (class_id);
CREATE INDEX ix_examples_model_version ON examples (model_version);
"""


def old_database(path, n_examples: int = 3) -> None:
    """Two collections, one with a class of ``n_examples`` examples, in the old schema."""
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
        db.execute("INSERT INTO collections VALUES (1, 'kept', '2025-01-01 00:00:00')")
        db.execute("INSERT INTO collections VALUES (2, 'other', '2025-01-01 00:00:00')")
        db.execute("INSERT INTO classes VALUES (7, 1, 'a')")
        for n in range(n_examples):
            db.execute(
                "INSERT INTO examples VALUES (?, 7, ?, 28, 28, 1, ?, 'old', '2025-01-01')",
                (n + 1, bytes(28 * 28), bytes(64 * 4)),
            )


def test_old_database_gains_tenants_and_keeps_everything(tmp_path):
    path = tmp_path / "old.sqlite3"
    old_database(path)
    storage = Storage(f"sqlite:///{path}")
    try:
        collections = storage.list_collections()
        assert sorted((c.tenant, c.name) for c in collections) == [
            ("default", "kept"),
            ("default", "other"),
        ]
        assert [(c.label, c.n_examples) for c in storage.list_classes(1)] == [("a", 3)]
        assert storage.create_collection("kept", "b").tenant == "b"  # unique per tenant now
        with pytest.raises(ConflictError):
            storage.create_collection("kept", "default")
        storage.delete_collection(1)  # the classes' foreign key follows the rebuilt table
        assert storage.list_classes(1) == []
    finally:
        storage.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute("SELECT count(*) FROM examples").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM classes").fetchone() == (0,)


def test_migration_runs_once_and_new_databases_need_none(tmp_path):
    path = tmp_path / "old.sqlite3"
    old_database(path)
    Storage(f"sqlite:///{path}").close()
    Storage(f"sqlite:///{path}").close()  # already migrated: a no-op
    Storage(f"sqlite:///{tmp_path / 'new.sqlite3'}").close()


def test_migrated_and_new_databases_match_the_models(tmp_path):
    path = tmp_path / "old.sqlite3"
    old_database(path)
    for url in (f"sqlite:///{path}", f"sqlite:///{tmp_path / 'new.sqlite3'}"):
        storage = Storage(url)
        try:
            assert schema_revision(storage.engine) == head_revision()
            with storage.engine.connect() as connection:
                assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        finally:
            storage.close()


def test_old_embeddings_move_to_their_model_version(tmp_path):
    path = tmp_path / "old.sqlite3"
    old_database(path, n_examples=3)
    storage = Storage(f"sqlite:///{path}")
    try:
        assert storage.count_embeddings_by_version() == {"old": 3}
        assert storage.class_embeddings([7], "old").embeddings.shape == (3, 64)
        assert storage.unembedded_inputs("new", 10).example_ids == [1, 2, 3]
    finally:
        storage.close()


def test_without_migrate_on_start_an_old_schema_is_refused(tmp_path):
    path = tmp_path / "old.sqlite3"
    old_database(path)
    with pytest.raises(MigrationError, match="python -m service migrate"):
        Storage(f"sqlite:///{path}", migrate=False)
    engine = create_storage_engine(f"sqlite:///{path}")
    assert schema_revision(engine) == "0001"  # untouched
    engine.dispose()


async def test_service_on_an_old_database_serves_its_collections(tmp_path, checkpoint_a):
    data = tmp_path / "data"
    data.mkdir()
    old_database(data / "protonet.sqlite3")
    drawings = Drawings(1)
    async with serve(make_settings(data, checkpoint_a)) as running:
        names = [c["name"] for c in await running.client.list_collections()]
        assert names == ["kept", "other"]
        assert (await running.client.get_collection("kept"))["n_examples"] == 3  # re-embedded
        result = await running.client.query("kept", [drawings.png(0)])
        assert result["results"][0]["label"] == "a"


def database_at(url: str, revision: str) -> None:
    """A database migrated only up to ``revision``, with one collection ``kept`` in it."""
    engine = create_storage_engine(url)
    try:
        with engine.connect() as connection, connection.begin():
            command.upgrade(alembic_config(connection), revision)
            connection.execute(
                text(
                    "INSERT INTO collections (tenant, name, revision, index_kind, created_at) "
                    "VALUES ('default', 'kept', 0, 'exact', '2025-01-01 00:00:00')"
                )
            )
    finally:
        engine.dispose()


def check_rejection_migrated(url: str) -> None:
    """A 0004 database gains ``collections.rejection``: 'none' for the collections it has,
    which can then be changed (a settings change)."""
    database_at(url, "0004")
    storage = Storage(url)
    try:
        assert schema_revision(storage.engine) == head_revision()
        with storage.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        [kept] = storage.list_collections()
        assert (kept.name, kept.index_kind, kept.rejection) == ("kept", "exact", "none")
        revision = storage.set_rejection(kept.id, "0.99")
        assert storage.get_collection(kept.id).rejection == "0.99"
        assert [(c.kind, c.id) for c in storage.changes_after(0)] == [("settings", revision)]
        assert storage.create_collection("new", "default").rejection == "none"
    finally:
        storage.close()


async def test_a_0004_database_gains_the_rejection_setting(tmp_path, checkpoint_a):
    data = tmp_path / "data"
    check_rejection_migrated(f"sqlite:///{data / 'protonet.sqlite3'}")
    async with serve(make_settings(data, checkpoint_a)) as running:
        listed = {c["name"]: c["rejection"] for c in await running.client.list_collections()}
        assert listed == {
            "kept": {"mode": "calibrated", "acceptance": 0.99},  # as set above
            "new": {"mode": "none"},
        }


def check_models_migrated(url: str) -> None:
    """A 0005 database gains ``collections.model`` (its collections bound to the default
    model of the migrating process), ``examples.text`` and room for several versions per
    process in ``replicas``."""
    database_at(url, "0005")
    storage = Storage(url, default_model="omniglot")
    try:
        assert schema_revision(storage.engine) == head_revision()
        with storage.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        [kept] = storage.list_collections()
        assert (kept.name, kept.model) == ("kept", "omniglot")
        assert storage.collection_models() == {"omniglot": 1}
        texts = storage.create_collection("faq", "default", model="intents")
        assert texts.model == "intents"
        storage.add_examples(texts.id, ["a"], ["a text"], np.zeros((1, 4), np.float32), "v")
        assert storage.stored_input_kinds("intents") == {"text"}
        assert storage.unembedded_inputs("w", 10, model="intents").inputs == ["a text"]
        assert storage.unembedded_inputs("w", 10, model="omniglot").inputs == []
        storage.heartbeat(Replica("r", ",".join(["0123456789abcdef"] * 8), "h", 1, True, None))
        storage.delete_collection(texts.id)
    finally:
        storage.close()


async def test_a_0005_database_binds_its_collections_to_the_default_model(tmp_path, checkpoint_a):
    data = tmp_path / "data"
    check_models_migrated(f"sqlite:///{data / 'protonet.sqlite3'}")
    settings = Settings(models=f"omniglot={checkpoint_a}", data_dir=data, torch_threads=1)
    async with serve(settings) as running:
        [kept] = await running.client.list_collections()
        assert (kept["name"], kept["model"]) == ("kept", "omniglot")


def check_tenant_revisions_migrated(url: str) -> None:
    """A 0006 database, with changes of two tenants, gains revisions per tenant: what clients
    were shown stays (a change's or a collection's revision is its old, global number) and
    each existing tenant counts on from the highest one, so no revision a client remembers is
    "ahead" after the upgrade; a new tenant counts from 1."""
    database_at(url, "0006")
    engine = create_storage_engine(url)
    with engine.begin() as connection:
        for tenant, name, kind in [
            ("default", "kept", "create"),
            ("other", "gone", "create"),
            ("default", "kept", "support"),
            ("other", "gone", "delete"),
        ]:
            connection.execute(
                text(
                    "INSERT INTO changes (collection_id, tenant, name, kind, class_ids, "
                    "created_at) VALUES (1, :tenant, :name, :kind, '[]', '2025-01-01')"
                ),
                {"tenant": tenant, "name": name, "kind": kind},
            )
        connection.execute(text("UPDATE collections SET revision = 3 WHERE name = 'kept'"))
    engine.dispose()
    storage = Storage(url)
    try:
        with storage.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        assert [(c.id, c.revision) for c in storage.changes_after(0)] == [
            (1, 1),
            (2, 2),
            (3, 3),
            (4, 4),
        ]
        [kept] = storage.list_collections()
        assert (kept.revision, kept.change_id) == (3, 3)
        assert storage.tenant_revisions() == {"default": 4, "other": 4}
        assert storage.set_rejection(kept.id, "default") == 5
        assert storage.create_collection("new", "other").revision == 5
        assert storage.create_collection("first", "newcomer").revision == 1
    finally:
        storage.close()


def test_a_0006_database_numbers_revisions_per_tenant(tmp_path):
    check_tenant_revisions_migrated(f"sqlite:///{tmp_path / 'protonet.sqlite3'}")
