"""A real ``python -m service`` that cannot start says why in one line and exits non-zero:
invalid settings (exit 2, before anything loads), a model that does not load, a database it
cannot open, a busy port (exit 3); its commands print no libraries' chatter."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import uvicorn

import service.__main__ as entry
from service.launcher import REPO_ROOT, free_port

STARTUP_FAILURE = 3
UNREADABLE = "is not a readable checkpoint (corrupt or truncated?)"


def run_service(cwd: Path, env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    """``python -m service [command]`` run to its end on a free port, with ``env`` added."""
    variables = {k: v for k, v in os.environ.items() if not k.startswith("PROTONET_")}
    variables.update(
        PYTHONPATH=str(REPO_ROOT),
        PROTONET_HOST="127.0.0.1",
        PROTONET_PORT=str(free_port()),
        PROTONET_TORCH_THREADS="1",
        PROTONET_DATA_DIR=str(cwd / "data"),
    )
    variables.update(env)
    return subprocess.run(
        [sys.executable, "-m", "service", *command],
        cwd=cwd,
        env=variables,
        capture_output=True,
        text=True,
        timeout=300,
    )


def startup_failures(stderr: str) -> list[str]:
    """The messages of the ``startup failed`` log lines, JSON or text."""
    messages = []
    for line in stderr.splitlines():
        message = json.loads(line)["message"] if line.startswith("{") else line.partition("]: ")[2]
        if message.startswith("startup failed"):
            messages.append(message)
    return messages


@pytest.mark.parametrize(
    ("variable", "fault", "log_format"),
    [
        ("PROTONET_MODELS", "missing", "text"),
        ("PROTONET_CHECKPOINT", "truncated", "json"),
        ("PROTONET_CHECKPOINT", "garbage", "text"),
    ],
)
def test_a_model_that_does_not_load_is_named_with_its_path_and_fault(
    tmp_path: Path, bundled_model: Path, variable: str, fault: str, log_format: str
) -> None:
    path = tmp_path / "model.pt"
    if fault == "truncated":
        path.write_bytes(bundled_model.read_bytes()[:5000])
    elif fault == "garbage":
        path.write_text("garbage")
    name, value = (
        ("omniglot", f"omniglot={path}")
        if variable == "PROTONET_MODELS"
        else ("default", str(path))
    )
    result = run_service(tmp_path, {variable: value, "PROTONET_LOG_FORMAT": log_format})
    assert result.returncode == STARTUP_FAILURE
    [message] = startup_failures(result.stderr)
    cause = "checkpoint not found" if fault == "missing" else UNREADABLE
    assert message.startswith(f"startup failed: model '{name}' ({path}): ")
    assert cause in message
    assert "Traceback" not in result.stderr


def test_a_replica_started_while_the_database_is_down_says_so_and_exits(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: a database server that is down
    url = f"postgresql+psycopg://root:hunter2@127.0.0.1:{port}/protonet"
    result = run_service(tmp_path, {"PROTONET_DATABASE_URL": url, "PROTONET_LOG_FORMAT": "text"})
    assert result.returncode == STARTUP_FAILURE
    [message] = startup_failures(result.stderr)
    where = f"postgresql+psycopg://root:***@127.0.0.1:{port}/protonet"
    assert message.startswith(f"startup failed: cannot open the database {where}: ")
    assert "Connection refused" in message
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_a_busy_port_is_found_before_anything_loads(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_service(tmp_path, {"PROTONET_PORT": str(port), "PROTONET_LOG_FORMAT": "text"})
    assert result.returncode == STARTUP_FAILURE
    [message] = startup_failures(result.stderr)
    assert message.startswith(f"startup failed: cannot listen on 127.0.0.1:{port}: ")
    assert "in use" in message
    assert "loaded image model" not in result.stderr  # logged at INFO once a model loads
    assert not (tmp_path / "data").exists()


def test_several_workers_that_fail_to_start_exit_non_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's supervisor stops when a worker fails to start, and returns as after a clean
    stop (a real run takes a minute: each worker imports torch, then a ping times out)."""

    class FailedSupervisor:
        def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
            self.processes = [SimpleNamespace(exitcode=-15), SimpleNamespace(exitcode=3)]

        def run(self) -> None:
            pass

    monkeypatch.setattr(entry, "Multiprocess", FailedSupervisor)
    config = SimpleNamespace(workers=2)
    with socket.socket() as listener:
        assert entry.serve_on(listener, config) == STARTUP_FAILURE  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"PROTONET_MODELS": "runs/mine/best.pt"},
            "error: PROTONET_MODELS: model entry 'runs/mine/best.pt' is not name=path",
        ),
        (
            {"PROTONET_MODELS": "a=a.pt", "PROTONET_CHECKPOINT": "b.pt"},
            "error: set PROTONET_MODELS or PROTONET_CHECKPOINT, not both",
        ),
    ],
)
def test_invalid_settings_are_one_line_and_exit_2(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = run_service(tmp_path, env)
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1


def test_migrate_and_embeddings_print_no_library_chatter(tmp_path: Path) -> None:
    migrated = run_service(tmp_path, {}, "migrate")
    listed = run_service(tmp_path, {}, "embeddings")
    assert migrated.returncode == listed.returncode == 0, migrated.stderr + listed.stderr
    assert migrated.stdout.startswith("schema migrated to revision")
    assert "migrating the database schema from empty" in migrated.stderr  # our own progress
    for result in (migrated, listed):
        for chatter in ("setup plugin", "Context impl", "Loading faiss", "ModuleNotFoundError"):
            assert chatter not in result.stderr


def test_migrate_without_its_database_says_which_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql+psycopg://root:hunter2@127.0.0.1:{port}/protonet"
    result = run_service(tmp_path, {"PROTONET_DATABASE_URL": url}, "migrate")
    assert result.returncode == 1
    where = f"postgresql+psycopg://root:***@127.0.0.1:{port}/protonet"
    assert result.stderr.startswith(f"error: cannot open the database {where}: ")
    assert len(result.stderr.strip().splitlines()) == 1 and "hunter2" not in result.stderr
