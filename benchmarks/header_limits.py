"""Header bounds (issue 25): what header abuse costs the real server, and what the bounds cost.

1. Against ``python -m service`` (defaults: PROTONET_MAX_HEADER_BYTES 64 KiB,
   PROTONET_HEADER_TIMEOUT 10 s, the bundled model): 8 connections each sending an unfinished
   16 MiB header line (the server's RSS growth), then ``--idle`` connections with incomplete
   headers (how many are still open 5 s after the timeout: half of ``--header-timeout``;
   before: all, past 70 s).
2. The server CPU per request of uvicorn's httptools protocol, of the bounded one, and of
   uvicorn's h11 protocol (whose ``h11_max_incomplete_event_size`` bounds header bytes), side
   by side on a trivial ASGI app (so the protocol is most of the cost): sequential keep-alive
   GETs. CPU time rather than a rate, which a loaded machine would skew.

    python benchmarks/header_limits.py [--idle 1000] [--rounds 3] [--requests 20000]
    python benchmarks/header_limits.py --smoke    # tiny sizes, a 1 s header timeout (tests)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import smoke
from service.launcher import free_port, local_server

MiB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def unfinished_headers(address: tuple[str, int], pid: int, connections: int = 8) -> None:
    idle = rss_bytes(pid)
    sockets, sent = [], []
    for _ in range(connections):
        connection = socket.create_connection(address, timeout=5)
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: ")
        total = 0
        try:
            while total < 16 * MiB:
                connection.sendall(b"a" * 65536)
                total += 65536
        except OSError:
            pass
        sockets.append(connection)
        sent.append(total)
    grown = rss_bytes(pid) - idle
    print(
        f"{connections} unfinished 16 MiB header lines: the server took {min(sent) // 1024}-"
        f"{max(sent) // 1024} KiB of each before closing; RSS +{grown / MiB:.1f} MiB"
    )
    for connection in sockets:
        connection.close()


def incomplete_headers(address: tuple[str, int], count: int, timeout: float) -> None:
    """``count`` connections that never finish their headers: how many are still open half the
    server's header timeout after it has passed."""
    sockets = []
    for _ in range(count):
        connection = socket.create_connection(address, timeout=5)
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        connection.setblocking(False)
        sockets.append(connection)
    waited = timeout * 1.5
    time.sleep(waited)
    still_open = 0
    for connection in sockets:
        try:
            connection.recv(1, socket.MSG_PEEK)  # b"" (closed) or the 408: answered
        except BlockingIOError:
            still_open += 1  # nothing received, and not closed
        except OSError:
            pass  # reset: closed
        connection.close()
    print(f"{count} connections with incomplete headers: {still_open} open {waited:g} s on")


async def tiny_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def serve_tiny(port: int, kind: str) -> None:
    import uvicorn

    protocol: Any = kind
    if kind == "bounded":  # imported here: uvicorn's own protocols need none of the service
        from service.edge.http_limits import HeaderLimits, bounded_http_protocol

        protocol = bounded_http_protocol(HeaderLimits(max_bytes=65536, timeout=10.0))
    uvicorn.run(tiny_app, port=port, http=protocol, log_level="error", lifespan="off")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (a load-independent cost, unlike a rate)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_per_request(port: int, pid: int, requests: int) -> float:
    """Microseconds of the server's CPU per sequential keep-alive GET."""
    request = b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        before = cpu_seconds(pid)
        for _ in range(requests):
            connection.sendall(request)
            if not connection.recv(4096):
                raise RuntimeError("closed")
        return (cpu_seconds(pid) - before) / requests * 1e6


KINDS = ("httptools", "bounded", "h11")  # h11: uvicorn's option with a header byte limit


def protocol_cost(rounds: int, requests: int) -> None:
    costs: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(rounds):
        for kind in KINDS:
            port = free_port()
            process = multiprocessing.get_context("spawn").Process(
                target=serve_tiny, args=(port, kind)
            )
            process.start()
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            assert process.pid is not None
            costs[kind].append(server_cpu_per_request(port, process.pid, requests))
            process.terminate()
            process.join()
    best = {kind: min(values) for kind, values in costs.items()}
    unit = best["httptools"] or float("nan")  # 0 when a run took less than a clock tick
    print(
        f"server CPU per keep-alive GET of a trivial app (best of {rounds} x {requests}): "
        + ", ".join(
            f"{kind} {best[kind]:.1f} us ({best[kind] / unit:.2f} x httptools)" for kind in KINDS
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=int, default=1000, help="connections left incomplete")
    parser.add_argument(
        "--header-timeout", type=float, default=10.0, help="PROTONET_HEADER_TIMEOUT, seconds"
    )
    parser.add_argument("--rounds", type=int, default=3, help="of the protocols' CPU cost")
    parser.add_argument("--requests", type=int, default=20_000, help="per round and protocol")
    args = smoke.parse_args(
        parser, {"idle": 20, "header_timeout": 1.0, "rounds": 1, "requests": 2000}
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.idle)), hard))
    with tempfile.TemporaryDirectory() as directory:
        env = {
            "PROTONET_DATA_DIR": directory,
            "PROTONET_LOG_LEVEL": "warning",
            "PROTONET_HEADER_TIMEOUT": str(args.header_timeout),
        }
        with local_server(env, cwd=Path(directory)) as running:
            address = ("127.0.0.1", int(running.url.rsplit(":", 1)[1]))
            unfinished_headers(address, running.process.pid)
            incomplete_headers(address, args.idle, args.header_timeout)
    protocol_cost(args.rounds, args.requests)


if __name__ == "__main__":
    main()
