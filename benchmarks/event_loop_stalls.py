"""Does heavy reading stall the event loop? ``/healthz`` latency while 4 clients loop on the
expensive reads (a benchmark, not a test):

1. idle;
2. the detail of a 50,000-class collection with every class (3 MB of JSON), built and
   serialized the old way, on the event loop (a route this script adds: the handler as it was);
3. its classes as the service lists them now: pages of 1,000, in a worker thread;
4. diagnostics of a 4,000-class collection, with 4 allowed at once (as before the limit);
5. the same with the default limit of this benchmark's tenant: 1 at once (the others get 429
   diagnostics_busy and wait Retry-After, as a client should).

Everything runs in one server process started by this script (``--serve``: the app plus two
benchmark-only routes), so the phases are measured side by side on the same machine and
load. Prints p50/p99 of ``/healthz`` per phase and the ratios to idle.

    python benchmarks/event_loop_stalls.py [--seconds 4] [--classes 50000]
    python benchmarks/event_loop_stalls.py --smoke    # tiny sizes, short phases (tests)
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from fastapi import Request
from starlette.concurrency import run_in_threadpool

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT)]

from benchmarks import smoke  # noqa: E402
from benchmarks.machine import machine  # noqa: E402
from protonet.checkpoint import load_checkpoint  # noqa: E402
from service.api import schemas  # noqa: E402
from service.api.routers.collections import classes_of, summary_of  # noqa: E402
from service.edge.auth import DEFAULT_TENANT  # noqa: E402
from service.launcher import free_port, stop  # noqa: E402
from service.settings import BUNDLED_CHECKPOINT  # noqa: E402
from service.storage.repository import Storage  # noqa: E402

CLIENTS = 4
DIAGNOSTICS = "/v1/collections/diagnosed/diagnostics"


def serve(port: int) -> None:
    """The service, plus the old on-loop collection detail and a switch of the diagnostics
    limit (benchmark-only routes)."""
    import uvicorn

    from service.app import create_app

    app = create_app()

    @app.get("/bench/on-loop/{name}", response_model=schemas.CollectionDetail)
    async def detail_on_the_loop(name: str, request: Request) -> schemas.CollectionDetail:
        registry = request.app.state.service.require_registry()
        detail = await run_in_threadpool(
            functools.partial(registry.describe, name, tenant=DEFAULT_TENANT, classes_limit=10**9)
        )
        assert detail.classes is not None
        return schemas.CollectionDetail(
            **summary_of(detail, registry).model_dump(), classes=classes_of(detail.classes.items)
        )

    @app.post("/bench/diagnostics-slots/{n}")
    async def set_diagnostics_slots(n: int, request: Request) -> dict[str, int]:
        slots = request.app.state.service.require_registry().diagnostics_slots
        slots.per_process = slots.per_tenant = n
        return {"slots": n}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def store(database_url: str, big_classes: int, diagnosed_classes: int) -> None:
    """``big``: one synthetic example per class; ``diagnosed``: two per class."""
    version = load_checkpoint(BUNDLED_CHECKPOINT).version
    rng = np.random.default_rng(0)
    storage = Storage(database_url)
    for name, classes, shots in (("big", big_classes, 1), ("diagnosed", diagnosed_classes, 2)):
        collection = storage.create_collection(name, DEFAULT_TENANT)
        for start in range(0, classes, 10_000):
            labels = [f"c{i}" for i in range(start, min(classes, start + 10_000))] * shots
            pixels = np.full((len(labels), 28, 28), 255, dtype=np.uint8)
            rows = np.abs(rng.standard_normal((len(labels), 64))).astype(np.float32)
            storage.add_examples(collection.id, labels, pixels, rows, version)
    storage.close()


def percentiles(samples: list[float]) -> tuple[float, float]:
    values = np.array(samples) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def loop_clients(url: str, path: str, stop_event: threading.Event, counts: dict[int, int]):
    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while not stop_event.is_set():
                response = http.get(path)
                counts[response.status_code] = counts.get(response.status_code, 0) + 1
                if response.status_code == 429:
                    stop_event.wait(float(response.headers.get("Retry-After", "1")))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    return threads


def phase(url: str, path: str | None, seconds: float) -> tuple[float, float, dict[int, int]]:
    """``/healthz`` p50, p99 (ms) while ``CLIENTS`` clients loop on ``path`` (None: idle)."""
    done, counts = threading.Event(), {}
    threads = loop_clients(url, path, done, counts) if path else []
    time.sleep(min(0.5, seconds))  # let the load start
    latencies = []
    with httpx.Client(base_url=url, timeout=60) as http:
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            started = time.perf_counter()
            http.get("/healthz").raise_for_status()
            latencies.append(time.perf_counter() - started)
            time.sleep(0.005)
    done.set()
    for thread in threads:
        thread.join()
    return (*percentiles(latencies), counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per phase")
    parser.add_argument("--classes", type=int, default=50_000, help="of the listed collection")
    parser.add_argument("--diagnosed-classes", type=int, default=4_000)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = smoke.parse_args(parser, {"seconds": 0.2, "classes": 300, "diagnosed_classes": 40})
    if args.serve:
        serve(args.serve)
        return
    with tempfile.TemporaryDirectory() as data:
        database_url = f"sqlite:///{Path(data) / 'protonet.sqlite3'}"
        store(database_url, args.classes, args.diagnosed_classes)
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "PROTONET_DATA_DIR": data,
            "PROTONET_RATE_LIMIT_PER_SECOND": "0",
            "PROTONET_MAX_CONCURRENT_REQUESTS": "0",
        }
        command = [sys.executable, __file__, "--serve", str(port)]
        server = subprocess.Popen(command, env=env)
        try:
            run_phases(f"http://127.0.0.1:{port}", args)
        finally:
            stop(server)


def run_phases(url: str, args: argparse.Namespace) -> None:
    from service.client import ProtonetClient

    with ProtonetClient(url) as client:
        client.wait_until_ready(120)
    print(f"machine: {machine()}")
    print(f"/healthz while {CLIENTS} clients loop on a read ({args.seconds:g} s per phase)")
    print(f"{'phase':58} {'p50 ms':>8} {'p99 ms':>8}  answers")
    detail, diagnostics = f"detail of {args.classes} classes", "diagnostics"
    phases = [
        ("idle", None, None),
        (f"{detail}, on the event loop (before)", "/bench/on-loop/big", None),
        (
            f"{args.classes} classes in pages of 1000 (now)",
            "/v1/collections/big/classes?limit=1000",
            None,
        ),
        (f"{diagnostics}, 4 at once (before the limit)", DIAGNOSTICS, 4),
        (f"{diagnostics}, 1 at once (the limit)", DIAGNOSTICS, 1),
    ]
    results = {}
    for name, path, slots in phases:
        if slots is not None:
            httpx.post(f"{url}/bench/diagnostics-slots/{slots}").raise_for_status()
        p50, p99, counts = phase(url, path, args.seconds)
        results[name] = (p50, p99)
        print(f"{name:58} {p50:8.1f} {p99:8.1f}  {dict(sorted(counts.items()))}")
    names = list(results)
    for before, after in ((names[1], names[2]), (names[3], names[4])):
        (b50, b99), (a50, a99) = results[before], results[after]
        print(f"before/now: p50 {b50 / a50:.1f}x, p99 {b99 / a99:.1f}x  ({after})")


if __name__ == "__main__":
    main()
