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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from service.client import ProtonetClient

REPO_ROOT = Path(__file__).resolve().parent.parent


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


@contextmanager
def local_server(
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ready_timeout: float = 120.0,
) -> Iterator[LocalServer]:
    """Start the service on a free loopback port with extra ``PROTONET_*`` variables ``env``;
    yield once ``/readyz`` is 200; stop it on exit."""
    port = free_port()
    variables = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "PROTONET_HOST": "127.0.0.1",
        "PROTONET_PORT": str(port),
        **(env or {}),
    }
    command = [sys.executable, "-m", "service"]
    process = subprocess.Popen(command, cwd=cwd or REPO_ROOT, env=variables)
    server = LocalServer(f"http://127.0.0.1:{port}", process)
    try:
        with ProtonetClient(server.url) as client:
            client.wait_until_ready(ready_timeout, exited=process.poll)
        yield server
    finally:
        stop(process)
