"""Snapshots of a large image collection through the real service (a benchmark, not a test).

    python benchmarks/snapshots.py [--examples 100000] [--per-class 10] [--queries 1000]
    python benchmarks/snapshots.py --smoke    # 300 examples, 40 queries (tests)

Targets (issue 30): export then import of a 100,000-example image collection with the
service's peak RSS at most 256 MiB over idle both ways; throughput reported; the restored
collection answers identically (labels and distances) on 1,000 queries.

Fills a SQLite database through the storage layer with ``--examples`` synthetic drawings
(blocky stroke patterns, ``--per-class`` per class, jittered) embedded by the bundled model, as
a service would have stored them; starts ``python -m service`` on it (server A) and a second
one on an empty database (server B), then measures, side by side:

1. export from A (``GET .../snapshot``, streamed by the client into a file);
2. restore into B (``POST .../snapshot``, streamed from the file): the embeddings travel;
3. export from A without embeddings, restored into B under another name: every example is
   embedded again by B (the cost of a restore on another model version);

each with its time, examples per second, MB per second, and the server's peak RSS over its
idle RSS (sampled every 10 ms from /proc); then 1,000 queries against the original and both
copies, comparing the top-5 labels and distances. Run it alone: the figures are times.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks import smoke  # noqa: E402
from benchmarks.machine import machine  # noqa: E402
from service.client import ProtonetClient  # noqa: E402
from service.collections.encoder import load_encoder  # noqa: E402
from service.launcher import LocalServer, start, stop  # noqa: E402
from service.settings import BUNDLED_CHECKPOINT  # noqa: E402
from service.storage.repository import Storage  # noqa: E402

MiB = 1024 * 1024
NAME = "big"
TARGET_MIB = 256
CHUNK = 2000  # examples per storage transaction while filling
HEADING = (
    "| step | seconds | examples/s | MB/s | idle RSS MiB | peak RSS MiB "
    "| over idle MiB (target <= 256) |\n|---|---|---|---|---|---|---|"
)


def drawings(n: int, per_class: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """``n`` 28x28 drawings (ink 0 on paper 255), ``per_class`` per class: each class a blocky
    7x7 pattern scaled up, each drawing it shifted by a pixel or two."""
    classes = (n + per_class - 1) // per_class
    patterns = rng.random((classes, 7, 7)) < 0.3
    labels, images = [], np.full((n, 28, 28), 255, dtype=np.uint8)
    for i in range(n):
        pattern = np.kron(patterns[i // per_class], np.ones((4, 4), dtype=bool))
        shifted = np.roll(pattern, tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
        images[i][shifted] = 0
        labels.append(f"class-{i // per_class:06}")
    return labels, images


def fill(database_url: str, examples: int, per_class: int) -> None:
    encoder = load_encoder("default", BUNDLED_CHECKPOINT, "cpu", 256, 4096 * 4096)
    rng = np.random.default_rng(0)
    storage = Storage(database_url)
    try:
        collection = storage.create_collection(NAME, "default")
        for start_at in range(0, examples, CHUNK):
            count = min(CHUNK, examples - start_at)
            labels, images = drawings(count, per_class, rng)
            labels = [f"{label}-{start_at // per_class}" for label in labels]  # unique classes
            vectors = encoder.embed_pixels(images)
            storage.add_examples(collection.id, labels, images, vectors, encoder.version)
    finally:
        storage.close()


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def measured(pid: int, work: Callable[[], object]) -> tuple[float, int]:
    """Seconds ``work`` takes, and the process's peak RSS meanwhile (bytes)."""
    peak, done = [rss(pid)], threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], rss(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        work()
    finally:
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    return seconds, peak[0]


def idle_rss(server: LocalServer) -> int:
    time.sleep(1.0)  # let start-up settle
    return rss(server.process.pid)


def row(what: str, seconds: float, examples: int, size: int, peak: int, idle: int) -> str:
    over = (peak - idle) / MiB
    verdict = "met" if over <= TARGET_MIB else "NOT met"
    return (
        f"| {what} | {seconds:.1f} | {examples / seconds:,.0f} | {size / MiB / seconds:.1f} | "
        f"{idle / MiB:.0f} | {peak / MiB:.0f} | {over:+.0f} ({verdict}) |"
    )


def agreement(a: ProtonetClient, b: ProtonetClient, names: tuple[str, str], queries: list) -> str:
    """How many of the queries get the same top-5 labels, and the same distances (exactly,
    and within a relative 1e-5)."""
    same_labels = exact = close = 0
    for start_at in range(0, len(queries), 100):
        batch = queries[start_at : start_at + 100]
        mine = a.query(names[0], batch, top_k=5)["results"]
        theirs = b.query(names[1], batch, top_k=5)["results"]
        for m, t in zip(mine, theirs, strict=True):
            labels = [p["label"] for p in m["top_k"]] == [p["label"] for p in t["top_k"]]
            distances = np.array([[p["distance"] for p in r["top_k"]] for r in (m, t)])
            same_labels += labels
            exact += labels and bool((distances[0] == distances[1]).all())
            close += labels and np.allclose(distances[0], distances[1], rtol=1e-5, atol=0)
    n = len(queries)
    return (
        f"same top-5 labels {same_labels}/{n}, distances equal {exact}/{n}, within 1e-5 {close}/{n}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, help="scratch space (default: a temporary one)")
    args = smoke.parse_args(parser, {"examples": 300, "queries": 40})
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        work = Path(scratch)
        started = time.perf_counter()
        fill(f"sqlite:///{work / 'a' / 'protonet.sqlite3'}", args.examples, args.per_class)
        print(f"machine: {machine()}")
        print(f"filled {args.examples:,} examples in {time.perf_counter() - started:.0f} s")
        env = {"PROTONET_LOG_LEVEL": "warning"}
        a = start({**env, "PROTONET_DATA_DIR": str(work / "a")}, work, 3600)
        b = start({**env, "PROTONET_DATA_DIR": str(work / "b")}, work, 3600)
        try:
            run(args, work, a, b)
        finally:
            stop(a.process)
            stop(b.process)


def run(args: argparse.Namespace, work: Path, a: LocalServer, b: LocalServer) -> None:
    rows = []
    with ProtonetClient(a.url, timeout=3600) as ca, ProtonetClient(b.url, timeout=3600) as cb:
        idle_a, idle_b = idle_rss(a), idle_rss(b)
        full, plain = work / "full.jsonl", work / "plain.jsonl"
        seconds, peak = measured(a.process.pid, lambda: ca.export_snapshot(NAME, full))
        rows.append(
            row("export (embeddings)", seconds, args.examples, full.stat().st_size, peak, idle_a)
        )
        seconds, peak = measured(b.process.pid, lambda: cb.restore_snapshot("copy", full))
        rows.append(
            row("restore (embeddings)", seconds, args.examples, full.stat().st_size, peak, idle_b)
        )
        seconds, peak = measured(a.process.pid, lambda: ca.export_snapshot(NAME, plain, False))
        rows.append(
            row(
                "export (no embeddings)", seconds, args.examples, plain.stat().st_size, peak, idle_a
            )
        )
        seconds, peak = measured(b.process.pid, lambda: cb.restore_snapshot("embedded", plain))
        rows.append(
            row(
                "restore, embedding every example",
                seconds,
                args.examples,
                plain.stat().st_size,
                peak,
                idle_b,
            )
        )
        _, images = drawings(args.queries, 1, np.random.default_rng(1))
        queries = list(images[:, :, :].astype(np.uint8))
        print(
            f"\n{args.examples:,} examples, {args.examples // args.per_class:,} classes; "
            f"files: {full.stat().st_size / MiB:.0f} MiB with embeddings, "
            f"{plain.stat().st_size / MiB:.0f} MiB without"
        )
        print(HEADING)
        print("\n".join(rows))
        print(
            f"\n{args.queries} queries, original against the restored copy: "
            f"{agreement(ca, cb, (NAME, 'copy'), queries)}"
        )
        embedded = agreement(ca, cb, (NAME, "embedded"), queries)
        print(f"original against the re-embedded copy: {embedded}")


if __name__ == "__main__":
    main()
