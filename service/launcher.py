"""Run ``python -m service`` as a throwaway local process (tests, benchmarks, demos).

with local_server({"PROTONET_DATA_DIR": "/tmp/x"}) as server:
    ProtonetClient(server.url).query(...)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from service.client import ProtonetClient

REPO_ROOT = Path(__file__).resolve().parent.parent
# Where tests and benchmarks create their throwaway PostgreSQL databases (trust auth here).
POSTGRES_ADMIN_URL = "postgresql+psycopg://root@127.0.0.1:5432/postgres"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LocalServer:
    url: str
    process: subprocess.Popen[bytes]


def stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """Ctrl-C (graceful uvicorn shutdown), then kill if it hangs; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def start(
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ready_timeout: float = 120.0,
    port: int | None = None,
    log_file: Path | None = None,
) -> LocalServer:
    """Start the service on ``port`` (default: a free one) of the loopback interface with extra
    ``PROTONET_*`` variables ``env``, its output appended to ``log_file`` if given; return once
    ``/readyz`` is 200. The caller stops it (:func:`stop`, or a signal of its choice)."""
    port = port or free_port()
    variables = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "PROTONET_HOST": "127.0.0.1",
        "PROTONET_PORT": str(port),
        # A throwaway local server's clients are tests and benchmarks, which send requests as
        # fast as they can on purpose: no rate limit or concurrency cap unless ``env`` sets one.
        "PROTONET_RATE_LIMIT_PER_SECOND": "0",
        "PROTONET_AUTH_FAILURE_RATE_LIMIT_PER_SECOND": "0",
        "PROTONET_MAX_CONCURRENT_REQUESTS": "0",
        **(env or {}),
    }
    command = [sys.executable, "-m", "service"]
    with open(log_file, "ab") if log_file else nullcontext() as output:
        process = subprocess.Popen(
            command, cwd=cwd or REPO_ROOT, env=variables, stdout=output, stderr=output
        )
    server = LocalServer(f"http://127.0.0.1:{port}", process)
    try:
        with ProtonetClient(server.url) as client:
            client.wait_until_ready(ready_timeout, exited=process.poll)
    except BaseException:
        stop(process)
        raise
    return server


@contextmanager
def local_server(
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ready_timeout: float = 120.0,
    log_file: Path | None = None,
) -> Iterator[LocalServer]:
    """:func:`start` the service; yield once ``/readyz`` is 200; stop it on exit."""
    server = start(env, cwd, ready_timeout, log_file=log_file)
    try:
        yield server
    finally:
        stop(server.process)


@contextmanager
def throwaway_postgres(admin_url: str = POSTGRES_ADMIN_URL) -> Iterator[str]:
    """Create an empty PostgreSQL database through ``admin_url``; yield its URL; drop it
    (with any connections still open to it) on exit."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"protonet_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
