"""A database that cannot be opened (server down, a data directory that cannot be made) is a
``StorageUnavailableError`` naming the database, without its password, and the cause in one
line: a service that cannot start says where it looked and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import StorageUnavailableError
from service.launcher import free_port
from service.storage.repository import Storage


def test_a_database_server_that_is_down_is_named_without_the_password() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(StorageUnavailableError) as refused:
        Storage(f"postgresql+psycopg://root:hunter2@127.0.0.1:{port}/protonet")
    message = str(refused.value)
    where = f"postgresql+psycopg://root:***@127.0.0.1:{port}/protonet"
    assert message.startswith(f"cannot open the database {where}: ")
    assert "Connection refused" in message
    assert "hunter2" not in message and "\n" not in message


def test_a_data_directory_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data directory should be")
    database = blocker / "protonet.sqlite3"
    with pytest.raises(StorageUnavailableError, match="cannot open the database sqlite:///"):
        Storage(f"sqlite:///{database}")
