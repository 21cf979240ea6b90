"""Pages of a very large collection's classes through the real service (a benchmark, not a
test): the target is the first page of a 1,000,000-class collection in <= 50 ms.

    python benchmarks/class_pages.py [--classes 1000000] [--requests 200] [--workdir DIR]
    python benchmarks/class_pages.py --smoke    # 2,500 classes, 3 requests of each kind (tests)

Fills a SQLite database through the storage layer (one synthetic example per class, the bundled
model's version, so nothing is re-embedded), starts ``python -m service`` on it, and times,
side by side on one server, sequential requests of each kind over loopback:

1. ``GET /v1/collections/big``: the summary (counts), whatever the size;
2. ``GET .../classes?limit=100``: the first page (the target);
3. ``GET .../classes?limit=1000``: the largest page;
4. ``GET .../classes?limit=100&cursor=...``: a page from the middle of the listing;
5. ``GET /v1/collections/big?classes=true``: the summary with the first page;

then walks every class with the client (pages of 1,000) and reports its throughput, and prints
the server's RSS. Run it alone: the figures are latencies.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks import smoke  # noqa: E402
from benchmarks.machine import machine  # noqa: E402
from protonet.checkpoint import load_checkpoint  # noqa: E402
from service.client import ProtonetClient  # noqa: E402
from service.collections.pages import encode_cursor  # noqa: E402
from service.launcher import local_server  # noqa: E402
from service.settings import BUNDLED_CHECKPOINT  # noqa: E402
from service.storage.repository import Storage  # noqa: E402

NAME = "big"
CHUNK = 10_000  # classes per storage transaction while filling
TARGET_MS = 50.0


def fill(database_url: str, classes: int) -> tuple[int, int]:
    """``classes`` one-example classes in collection ``big``; its id and its middle class id."""
    version = load_checkpoint(BUNDLED_CHECKPOINT).version
    rng = np.random.default_rng(0)
    storage = Storage(database_url)
    try:
        collection = storage.create_collection(NAME, "default")
        middle = 0
        for start in range(0, classes, CHUNK):
            labels = [f"class-{i:07}" for i in range(start, min(classes, start + CHUNK))]
            pixels = np.full((len(labels), 28, 28), 255, dtype=np.uint8)
            rows = np.abs(rng.standard_normal((len(labels), 64))).astype(np.float32)
            added = storage.add_examples(collection.id, labels, pixels, rows, version)
            if start <= classes // 2 < start + CHUNK:
                middle = added.class_ids[f"class-{classes // 2:07}"]
        return collection.id, middle
    finally:
        storage.close()


def timed(http: httpx.Client, path: str, requests: int) -> tuple[float, float, int]:
    """p50 and p99 (ms) of ``requests`` sequential GETs of ``path``, and the body's size."""
    http.get(path).raise_for_status()  # warm
    latencies, size = [], 0
    for _ in range(requests):
        started = time.perf_counter()
        response = http.get(path)
        latencies.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        size = len(response.content)
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)), size


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(url: str, collection_id: int, middle: int, requests: int) -> list[tuple[str, ...]]:
    middle_cursor = encode_cursor("classes", collection_id, middle)
    cases = [
        ("summary (counts)", f"/v1/collections/{NAME}"),
        ("first page, limit=100", f"/v1/collections/{NAME}/classes?limit=100"),
        ("first page, limit=1000", f"/v1/collections/{NAME}/classes?limit=1000"),
        ("middle page, limit=100", f"/v1/collections/{NAME}/classes?cursor={middle_cursor}"),
        ("summary + first page", f"/v1/collections/{NAME}?classes=true&limit=100"),
    ]
    rows = []
    with httpx.Client(base_url=url, timeout=120) as http:
        for name, path in cases:
            p50, p99, size = timed(http, path, requests)
            rows.append((name, f"{p50:.1f}", f"{p99:.1f}", f"{size:,}"))
    return rows


def walk(url: str, classes: int) -> tuple[float, int]:
    """Seconds to list every class with the client, and how many it listed."""
    started = time.perf_counter()
    with ProtonetClient(url, timeout=120) as client:
        listed = sum(1 for _ in client.iter_classes(NAME))
    return time.perf_counter() - started, listed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="per kind of request")
    parser.add_argument("--workdir", type=Path, help="scratch space (default: a temporary one)")
    args = smoke.parse_args(parser, {"classes": 2500, "requests": 3})
    with tempfile.TemporaryDirectory(dir=args.workdir) as data:
        started = time.perf_counter()
        collection_id, middle = fill(f"sqlite:///{Path(data) / 'protonet.sqlite3'}", args.classes)
        print(f"machine: {machine()}")
        print(f"filled {args.classes:,} classes in {time.perf_counter() - started:.0f} s")
        env = {"PROTONET_DATA_DIR": data, "PROTONET_LOG_LEVEL": "warning"}
        started = time.perf_counter()
        with local_server(env, ready_timeout=3600) as server:
            print(f"ready {time.perf_counter() - started:.0f} s after start")
            rows = measure(server.url, collection_id, middle, args.requests)
            seconds, listed = walk(server.url, args.classes)
            rss = rss_mib(server.process.pid)
    print(f"\n{args.requests} sequential requests of each kind, {args.classes:,} classes")
    print("| request | p50 ms | p99 ms | body bytes |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nevery class through the client (pages of 1000): {listed:,} in {seconds:.1f} s")
    print(f"server RSS after the runs: {rss:.0f} MiB")
    first = float(rows[1][1])
    verdict = "met" if first <= TARGET_MS else "NOT met"
    print(f"target: first page p50 {first:.1f} ms <= {TARGET_MS:g} ms: {verdict}")
    if listed != args.classes:
        raise SystemExit(f"listed {listed} classes, not {args.classes}")


if __name__ == "__main__":
    main()
