"""The database engine: SQLite (embedded default) or PostgreSQL, and how transactions begin.

On SQLite the driver runs in autocommit mode and every transaction is begun here, so that a
write transaction can take the write lock up front (``BEGIN IMMEDIATE``): connections with the
:data:`WRITE` execution option set begin that way. Both the repository and the migrations
open write transactions with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError

from service.errors import StorageUnavailableError

# Execution option of write transactions: ``engine.execution_options(**{WRITE: True})``.
WRITE = "protonet_write"


def _enable_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver level: transactions are begun by ``_begin_sqlite`` instead, so
    # that write transactions can start with BEGIN IMMEDIATE (SQLAlchemy's documented recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")  # for ON DELETE CASCADE
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    # FULL: a commit is on disk (WAL fsynced) before it returns, so an acknowledged write
    # survives a crash of the process or of the machine. NORMAL may lose the last commits on
    # power loss.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _begin_sqlite(connection: Any) -> None:
    """Write transactions take SQLite's write lock up front (BEGIN IMMEDIATE). A deferred one
    that reads first and writes later fails at once with "database is locked" when another
    process wrote in between; an immediate one waits (busy timeout) for its turn instead."""
    write = connection.get_execution_options().get(WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def create_storage_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get their directory, pragmas and transaction mode."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", _enable_sqlite_pragmas)
    event.listen(engine, "begin", _begin_sqlite)
    return engine


@contextmanager
def reported_as_unavailable(url: str) -> Iterator[None]:
    """Opening the database at ``url``: a failure to reach or create it (server down, wrong
    credentials, a data directory that cannot be written) becomes a
    :class:`StorageUnavailableError` that names the database, without its password, and the
    cause, in one line."""
    try:
        yield
    except (OperationalError, OSError) as error:
        cause = error.orig if isinstance(error, OperationalError) else error
        where = make_url(url).render_as_string(hide_password=True)
        reason = " ".join(str(cause).split())  # drivers add indented hint lines
        raise StorageUnavailableError(f"cannot open the database {where}: {reason}") from error
