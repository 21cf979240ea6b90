"""Schema migrations through Alembic, for SQLite and PostgreSQL alike.

:func:`upgrade_database` brings any database made by this service (or an empty one) to the
newest revision, in one transaction, while holding a lock that makes concurrent starters wait:

* PostgreSQL: a session advisory lock, so replicas that start together migrate one at a time
  (the second finds the schema current and does nothing); DDL is transactional there.
* SQLite: ``BEGIN IMMEDIATE`` (one writer at a time) with foreign keys off for the duration,
  the documented way to rebuild a table without cascading deletes to the tables that
  reference it; ``PRAGMA foreign_key_check`` must come back empty before the commit.

Databases made before Alembic have no ``alembic_version`` table: they are stamped with the
revision their tables match (pre-tenant or tenant schema), then upgraded.

New revision (developers): ``alembic -c service/storage/migrations/alembic.ini revision -m "..."``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine

from protonet.errors import ProtonetError
from service.storage.engine import WRITE

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
# Any constant works; it only has to be the same in every process of this service.
MIGRATION_LOCK_KEY = 0x70726F746F  # "proto"
PRE_TENANT_REVISION = "0001"
TENANT_REVISION = "0002"


class MigrationError(ProtonetError):
    """The database schema is not what this service can run on (and was not migrated)."""


# The model of collections made before models had names (migration 0006), unless the caller
# names the configured default model.
UNNAMED_MODEL = "default"


def alembic_config(
    connection: Connection | None = None, default_model: str = UNNAMED_MODEL
) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    config.attributes["default_model"] = default_model
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def legacy_revision(connection: Connection) -> str | None:
    """The revision a database made before Alembic matches (``None``: an empty database)."""
    inspector = inspect(connection)
    if not inspector.has_table("collections"):
        return None
    columns = {column["name"] for column in inspector.get_columns("collections")}
    return TENANT_REVISION if "tenant" in columns else PRE_TENANT_REVISION


def schema_revision(engine: Engine) -> str | None:
    """The database's revision now (``None`` for an empty database), without changing it."""
    with engine.connect() as connection:
        return current_revision(connection) or legacy_revision(connection)


def check_schema_current(engine: Engine) -> None:
    """:class:`MigrationError` unless the schema is at the newest revision."""
    revision, head = schema_revision(engine), head_revision()
    if revision != head:
        raise MigrationError(
            f"the database schema is at revision {revision or 'none (empty database)'}, this "
            f"service needs {head}: run `python -m service migrate` (or start with "
            "PROTONET_MIGRATE_ON_START=true)"
        )


def upgrade_database(engine: Engine, default_model: str = UNNAMED_MODEL) -> bool:
    """Migrate to the newest revision; returns whether anything was done. Collections made
    before models had names are bound to ``default_model`` (the configured default)."""
    if engine.dialect.name == "sqlite":
        return _upgrade_sqlite(engine, default_model)
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
        try:
            with connection.begin():
                return _upgrade(connection, default_model)
        finally:
            if engine.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
                connection.commit()


def _upgrade_sqlite(engine: Engine, default_model: str) -> bool:
    connection = engine.connect()
    try:
        # Outside any transaction (foreign_keys cannot change inside one): the engine
        # (service/storage/engine.py) runs SQLite in autocommit mode and begins transactions.
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        with connection.execution_options(**{WRITE: True}).begin():
            changed = _upgrade(connection, default_model)
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise MigrationError(f"migration broke foreign keys: {broken[:5]}")
        return changed
    finally:
        connection.invalidate()  # never reuse a connection with foreign keys off
        connection.close()


def _upgrade(connection: Connection, default_model: str) -> bool:
    """Stamp a pre-Alembic database, then upgrade to head; in the caller's transaction."""
    config = alembic_config(connection, default_model)
    revision = current_revision(connection)
    if revision is None and (legacy := legacy_revision(connection)) is not None:
        logger.info("database made before schema revisions: it matches revision %s", legacy)
        command.stamp(config, legacy)
        revision = legacy
    head = head_revision()
    if revision == head:
        return False
    logger.info("migrating the database schema from %s to %s", revision or "empty", head)
    command.upgrade(config, "head")
    return True
