"""Schema migrations of existing databases, run when storage opens (before ``create_all``).

One so far: databases made before tenants have ``collections.name UNIQUE`` and no ``tenant``
column. Their collections move to the ``default`` tenant (where requests act when auth is
off), and uniqueness becomes ``(tenant, name)``. SQLite cannot drop a constraint in place, so
the table is rebuilt, in one transaction, with foreign keys off so that dropping the old table
neither cascades to the classes nor breaks their references (the documented SQLite procedure).
Other databases get a message with the statements to run by hand.
"""

from __future__ import annotations

import logging

from sqlalchemy import MetaData, Table, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.schema import CreateTable

logger = logging.getLogger(__name__)

MANUAL_TENANT_MIGRATION = """\
ALTER TABLE collections ADD COLUMN tenant VARCHAR(64) NOT NULL DEFAULT 'default';
-- drop the unique constraint on collections.name (its name depends on the database), then:
ALTER TABLE collections ADD CONSTRAINT uq_collections_tenant_name UNIQUE (tenant, name);"""


class MigrationError(RuntimeError):
    """The database needs a migration this service cannot do by itself."""


def migrate(engine: Engine) -> None:
    """Bring an existing database up to the current schema; a new one needs nothing."""
    inspector = inspect(engine)
    if not inspector.has_table("collections"):
        return
    if "tenant" in {column["name"] for column in inspector.get_columns("collections")}:
        return
    if engine.dialect.name != "sqlite":
        raise MigrationError(
            "the database predates tenants: run these statements, then start again:\n"
            + MANUAL_TENANT_MIGRATION
        )
    add_tenant_to_sqlite(engine)


def add_tenant_to_sqlite(engine: Engine) -> None:
    from service.storage import CollectionRecord  # storage imports this module

    table: Table = CollectionRecord.__table__  # type: ignore[assignment]
    staged = table.to_metadata(MetaData(), name="collections_migrating")
    create = str(CreateTable(staged).compile(engine)).strip()
    script = f"""
        PRAGMA foreign_keys=OFF;
        BEGIN;
        {create};
        INSERT INTO collections_migrating (id, tenant, name, created_at)
            SELECT id, 'default', name, created_at FROM collections;
        DROP TABLE collections;
        ALTER TABLE collections_migrating RENAME TO collections;
        COMMIT;
        PRAGMA foreign_keys=ON;
    """
    connection = engine.raw_connection()
    try:
        connection.driver_connection.executescript(script)  # type: ignore[union-attr]
    except Exception:
        # Discard the connection: it may hold the open transaction or foreign_keys=OFF. The
        # transaction was not committed, so the database is as it was.
        connection.invalidate()
        raise
    connection.close()
    logger.info("migrated the collections table: added tenants (existing ones: 'default')")
