"""Bounds on request headers (issue 25): a real ``python -m service`` process, raw sockets.

A 64 MiB header line used to be answered 200, unfinished 16 MiB headers held their memory,
and connections that never finished their headers stayed open for good.
"""

from __future__ import annotations

import json
import pickle
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from service.edge.http_limits import HeaderLimits, bounded_http_protocol
from service.launcher import local_server

MAX_HEADER_BYTES = 8192
HEADER_TIMEOUT_S = 1
WAIT_S = 60  # how long a test waits for the server at most: a bound, not a measurement


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory, checkpoint_a: Path) -> Iterator[tuple]:
    data = tmp_path_factory.mktemp("http-limits")
    env = {
        "PROTONET_CHECKPOINT": str(checkpoint_a),
        "PROTONET_DATA_DIR": str(data / "data"),
        "PROTONET_TORCH_THREADS": "1",
        "PROTONET_LOG_LEVEL": "warning",
        "PROTONET_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        "PROTONET_HEADER_TIMEOUT": str(HEADER_TIMEOUT_S),
    }
    with local_server(env, cwd=data, ready_timeout=120) as running:
        url = urlsplit(running.url)
        yield (url.hostname, url.port)


def connect(address: tuple) -> socket.socket:
    connection = socket.create_connection(address, timeout=WAIT_S)
    return connection


def request(headers: str = "") -> bytes:
    return f"GET /healthz HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode()


def read_until_closed(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except ConnectionResetError:  # closed with our unread bytes in its buffer
        pass
    return received


def status_and_body(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def test_headers_within_the_limit_are_served(address):
    with connect(address) as connection:
        connection.sendall(request(f"X-Filler: {'a' * (MAX_HEADER_BYTES - 200)}\r\n"))
        assert connection.recv(65536).startswith(b"HTTP/1.1 200 ")


def test_a_complete_header_block_over_the_limit_gets_431_and_a_close(address):
    with connect(address) as connection:
        connection.sendall(request(f"X-Filler: {'a' * MAX_HEADER_BYTES}\r\n"))
        status, body = status_and_body(read_until_closed(connection))
    assert status == 431 and body["error"] == "headers_too_large"
    assert "PROTONET_MAX_HEADER_BYTES" in body["detail"]


def test_an_endless_header_line_is_cut_off_at_the_limit(address):
    """The server answers and closes while the line is still arriving: it never holds more
    than the limit (plus one read) of it."""
    sent = 0
    with connect(address) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Filler: ")
        try:
            while sent < 64 * MAX_HEADER_BYTES:
                connection.sendall(b"a" * 1024)
                sent += 1024
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = read_until_closed(connection)
    assert sent < 64 * MAX_HEADER_BYTES or response  # stopped early, or answered
    if response:
        status, body = status_and_body(response)
        assert status == 431 and body["error"] == "headers_too_large"


def test_headers_that_never_finish_get_408_and_a_close(address):
    with connect(address) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")  # no blank line
        status, body = status_and_body(read_until_closed(connection))
    assert status == 408 and body["error"] == "header_timeout"


def test_a_connection_that_sends_nothing_is_closed(address):
    with connect(address) as connection:
        assert read_until_closed(connection) == b""


def test_the_next_request_on_a_kept_alive_connection_is_bounded_too(address):
    with connect(address) as connection:
        connection.sendall(request())
        assert connection.recv(65536).startswith(b"HTTP/1.1 200 ")
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: te")
        status, _ = status_and_body(read_until_closed(connection))
    assert status == 408


def test_the_protocol_travels_to_worker_processes():
    """PROTONET_WORKERS > 1: uvicorn pickles its configuration, protocol included."""
    protocol = bounded_http_protocol(HeaderLimits(max_bytes=100, timeout=2.0))
    assert pickle.loads(pickle.dumps(protocol)).keywords == {  # type: ignore[attr-defined]
        "limits": HeaderLimits(max_bytes=100, timeout=2.0)
    }
