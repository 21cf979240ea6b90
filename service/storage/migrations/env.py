"""Alembic's environment: runs on the connection that :func:`upgrade_database` passes in
(inside its transaction and lock), or opens one from ``sqlalchemy.url`` for the alembic CLI."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine


def run(connection: Connection) -> None:
    # render_as_batch: SQLite cannot alter constraints in place; batch mode rebuilds tables.
    context.configure(connection=connection, target_metadata=None, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
else:  # the alembic CLI: `alembic -c service/storage/migrations/alembic.ini ...`
    with create_engine(context.config.get_main_option("sqlalchemy.url", "")).connect() as own:
        run(own)
        own.commit()
