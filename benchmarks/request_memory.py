"""Memory that hostile-but-valid-sized requests can make the real server hold (issue 11).

Starts ``python -m service`` (default limits, the bundled model), then for each kind of
worst-case request sends 32 at once while sampling the server's RSS every 5 ms and timing
``/healthz`` in a loop, and prints, per kind: status codes, peak RSS over idle, RSS after the
burst against idle, and the ``/healthz`` p99. Targets: peak <= idle + 1 GiB, no 5xx, RSS back
within 10% of idle, ``/healthz`` p99 < 100 ms. Exits 1 when a target is missed (``--smoke``:
only when an answer is a 5xx or a ``/healthz`` fails: its timings and sizes mean nothing).

    python benchmarks/request_memory.py [--concurrency 32]
    python benchmarks/request_memory.py --smoke    # small bodies, 2 at once (tests)
"""

from __future__ import annotations

import argparse
import collections
import functools
import multiprocessing
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import smoke
from service.launcher import local_server

MiB = 1024 * 1024


def pixels_query(side: int = 2800) -> tuple[str, bytes]:
    """The issue's query: one ``side`` x ``side`` array of 1s (15.7 MB at 2800)."""
    row = "[" + ",".join(["1"] * side) + "]"
    return "/v1/collections/c/query", (
        '{"queries":[{"pixels":[' + ",".join([row] * side) + "]}]}"
    ).encode()


def tiny_examples(count: int = 550_000) -> tuple[str, bytes]:
    """The issue's support request: ~16 MB of tiny examples."""
    item = '{"label":"a","pixels":[[1]]}'
    return "/v1/collections/c/support", ('{"examples":[' + ",".join([item] * count) + "]}").encode()


def largest_accepted(values: int = 256 * 1024) -> tuple[str, bytes]:
    """As many pixel values as PROTONET_MAX_PIXEL_VALUES allows, in 4 arrays: answered 200."""
    side = int((values // 4) ** 0.5)
    rng = np.random.default_rng(0)
    rows = [",".join(f"{v:.4f}" for v in row) for row in rng.random((side, side))]
    array = "[" + ",".join(f"[{row}]" for row in rows) + "]"
    return "/v1/embed", ('{"inputs":[' + ",".join([f'{{"pixels":{array}}}'] * 4) + "]}").encode()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def probe_health(url: str, stop: Any, results: Any) -> None:
    """In its own process, so the senders' threads do not hold the GIL the probe needs:
    ``/healthz`` every 10 ms until ``stop`` is set; ``(status, ms)`` pairs into ``results``."""
    timings = []
    with httpx.Client(base_url=url, timeout=30) as http:
        while not stop.is_set():
            started = time.perf_counter()
            status = http.get("/healthz").status_code
            timings.append((status, (time.perf_counter() - started) * 1000))
            time.sleep(0.01)
    results.put(timings)


class Sampler:
    """Peak RSS of ``pid`` (a thread) and ``/healthz`` latencies (a process) during a burst."""

    def __init__(self, pid: int, url: str) -> None:
        self.pid = pid
        self.peak = 0
        self.health: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._rss_thread = threading.Thread(target=self._rss)
        self._probe_stop = multiprocessing.Event()
        self._results: Any = multiprocessing.Queue()
        self._probe = multiprocessing.Process(
            target=probe_health, args=(url, self._probe_stop, self._results)
        )

    def __enter__(self) -> Sampler:
        self._rss_thread.start()
        self._probe.start()
        time.sleep(0.2)  # the probe's first requests see the idle server
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._probe_stop.set()
        self.health = self._results.get(timeout=60)
        self._probe.join()
        self._rss_thread.join()

    def _rss(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(0.005)


def burst(url: str, path: str, body: bytes, concurrency: int) -> collections.Counter[int]:
    """``concurrency`` identical POSTs at once; their status codes."""

    def send(_: int) -> int:
        headers = {"content-type": "application/json"}
        with httpx.Client(base_url=url, timeout=300) as http:
            return http.post(path, content=body, headers=headers).status_code

    with ThreadPoolExecutor(concurrency) as pool:
        return collections.Counter(pool.map(send, range(concurrency)))


def settle(pid: int, seconds: float = 3.0) -> int:
    time.sleep(seconds)
    return rss_bytes(pid)


def run(
    kinds: dict[str, Callable[[], tuple[str, bytes]]], concurrency: int, settle_s: float
) -> tuple[bool, bool]:
    """Print the table; ``(every target met, every answer correct)``: no 5xx, ``/healthz``
    always 200."""
    ok = correct = True
    env = {"PROTONET_MAX_CONCURRENT_REQUESTS": "64", "PROTONET_LOG_LEVEL": "warning"}
    with (
        tempfile.TemporaryDirectory() as data,
        local_server({**env, "PROTONET_DATA_DIR": data}) as server,
    ):
        with httpx.Client(base_url=server.url, timeout=60) as http:
            http.post("/v1/collections", json={"name": "c"}).raise_for_status()
            one = {"label": "a", "pixels": [[0.0, 1.0], [1.0, 0.0]]}
            http.post("/v1/collections/c/support", json={"examples": [one]}).raise_for_status()
        pid = server.process.pid
        idle = settle(pid, settle_s / 3)
        print(f"idle RSS {idle / MiB:.0f} MiB; {concurrency} concurrent requests per kind\n")
        print("| kind | body | statuses | peak over idle | after / idle | /healthz p99 | pass |")
        print("|---|---|---|---|---|---|---|")
        for name, make in kinds.items():
            path, body = make()
            with Sampler(pid, server.url) as sampler:
                codes = burst(server.url, path, body, concurrency)
            after = settle(pid, settle_s)
            p99 = float(np.percentile([ms for _, ms in sampler.health], 99))
            over = sampler.peak - idle
            answered = all(code < 500 for code in codes)
            answered &= {status for status, _ in sampler.health} == {200}
            passed = answered and over <= 1024 * MiB and after <= 1.10 * idle and p99 < 100
            ok &= passed
            correct &= answered
            statuses = ", ".join(f"{n}x {code}" for code, n in sorted(codes.items()))
            print(
                f"| {name} | {len(body) / 1e6:.1f} MB | {statuses} | {over / MiB:.0f} MiB | "
                f"{after / idle:.2f} | {p99:.1f} ms | {'yes' if passed else 'NO'} |"
            )
            idle = min(idle, after)
    return ok, correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--side", type=int, default=2800, help="of the query's pixel array")
    parser.add_argument("--examples", type=int, default=550_000, help="of the support request")
    parser.add_argument("--values", type=int, default=256 * 1024, help="PROTONET_MAX_PIXEL_VALUES")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after each burst")
    sizes = {"concurrency": 2, "side": 64, "examples": 500, "values": 1024, "settle": 0.3}
    args = smoke.parse_args(parser, sizes)
    side, root = args.side, int((args.values // 4) ** 0.5)
    kinds = {
        f"query, {side}x{side} pixels of 1s": functools.partial(pixels_query, side),
        f"support, {args.examples:,} tiny examples": functools.partial(
            tiny_examples, args.examples
        ),
        f"embed, 4 x {root}x{root} pixels (accepted)": functools.partial(
            largest_accepted, args.values
        ),
    }
    ok, correct = run(kinds, args.concurrency, args.settle)
    sys.exit(0 if (correct if args.smoke else ok) else 1)


if __name__ == "__main__":
    main()
