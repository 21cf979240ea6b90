"""Load benchmark of the real service (a benchmark, not a test): ``make bench-serve``.

Starts ``python -m service`` on a free port over a temporary data directory that already holds
a collection of 100,000 classes (synthetic embeddings written through the storage layer), times
its start, registers 100 Omniglot characters (5 drawings each, ``images_evaluation.zip``)
through the API, then drives it with ``wrk`` (``make wrk`` installs it) and prints, measured
side by side in this one run:

1. ``GET /healthz`` requests/s at concurrency 32: the HTTP ceiling of this machine;
2. one-image ``query`` requests/s and p50/p99 latency at concurrency 1, 8, 32;
3. 64-image ``query`` images/s at concurrency 4;
4. the encoder alone, in this process, at batch 64 with the server's thread settings;
5. the ratios 2 (at 32) / 1 and 3 / 4; then one-image query p99 on the 100,000-class
   collection, the start-to-ready time and the server's memory (RSS).

    python benchmarks/serve_load.py [--duration 10] [--threads N] [--large-classes 100000]
    python benchmarks/serve_load.py --smoke    # tiny sizes, 1 s runs: the code paths (tests)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "examples")]

from omniglot_quickstart import DEFAULT_ZIP, read_characters  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from benchmarks import smoke  # noqa: E402
from benchmarks.machine import machine  # noqa: E402
from protonet.checkpoint import load_checkpoint  # noqa: E402
from protonet.model import embedding_dim  # noqa: E402
from service.client import Calls, ProtonetClient  # noqa: E402
from service.collections.encoder import load_encoder  # noqa: E402
from service.edge.auth import DEFAULT_TENANT  # noqa: E402
from service.launcher import local_server  # noqa: E402
from service.settings import BUNDLED_CHECKPOINT, Settings  # noqa: E402
from service.state import configure_threads  # noqa: E402
from service.storage.repository import Storage  # noqa: E402
from service.threads import default_threads  # noqa: E402

# wrk's Lua hooks: POST bodies read from a file (one JSON document per line), cycled through;
# without a file, plain GETs. ``done`` prints the numbers as one JSON line for this script.
WRK_SCRIPT = r"""
local bodies = {}
local position = 0
function init(args)
  if args[1] then
    for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    position = math.random(#bodies)
  end
end
function request()
  if #bodies == 0 then return wrk.format() end
  position = position % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[position])
end
function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "seconds": %f, "non_2xx": %d, "socket_errors": %d, ' ..
    '"p50_ms": %f, "p99_ms": %f}\n',
    summary.requests, summary.duration / 1e6, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3))
end
"""


LARGE = "large collection"  # how the tables name the collection of --large-classes classes


@dataclass(frozen=True)
class LoadResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    mean_batch: float  # mean rows per encoder batch during the run (server metrics)


def find_wrk() -> str:
    """Path of ``wrk`` (``make bench-serve`` installs it first)."""
    return shutil.which("wrk") or sys.exit(
        "wrk is not installed: make wrk (apt-get install -y wrk), then run again"
    )


def encoder_batches(base_url: str) -> tuple[float, float]:
    """``(sum, count)`` of the server's encode-stage batch-size histogram (all models)."""
    text = httpx.get(f"{base_url}/metrics").text
    values = {"sum": 0.0, "count": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            kind = sample.name.removeprefix("protonet_batch_size_")
            if kind in values and sample.labels.get("stage") == "encode":
                values[kind] += sample.value
    return values["sum"], values["count"]


@dataclass(frozen=True)
class Wrk:
    """How to run wrk against one server."""

    executable: str
    base_url: str
    script: Path
    seconds: float  # per measured run; wrk counts whole seconds
    warm_up: float  # seconds of the unmeasured run before each (0: none)

    def run(self, path: str, connections: int, bodies: Path | None = None) -> LoadResult:
        """One run (1 wrk thread: it shares the cores with the server); exits on any error."""
        before = encoder_batches(self.base_url)
        command = [self.executable, "-t1", f"-c{connections}", f"-d{round(self.seconds)}s"]
        command += ["-s", str(self.script), self.base_url + path]
        command += ["--", str(bodies)] if bodies is not None else []
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        stats = json.loads(next(x for x in output.splitlines() if x.startswith("WRK "))[4:])
        if stats["non_2xx"] or stats["socket_errors"]:
            sys.exit(f"wrk saw errors on {path} (c={connections}): {stats}\n{output}")
        after = encoder_batches(self.base_url)
        batches = after[1] - before[1]
        mean_batch = (after[0] - before[0]) / batches if batches else float("nan")
        rate = stats["requests"] / stats["seconds"]
        return LoadResult(rate, stats["p50_ms"], stats["p99_ms"], mean_batch)

    def warm_and_run(self, path: str, connections: int, bodies: Path | None = None) -> LoadResult:
        """A short unmeasured run first (connections, caches, allocator), then the real one."""
        if self.warm_up:
            warm = Wrk(self.executable, self.base_url, self.script, self.warm_up, 0)
            warm.run(path, connections, bodies)
        return self.run(path, connections, bodies)


def write_bodies(path: Path, collection: str, images: list[bytes], per_request: int) -> Path:
    """Query bodies (the client's own encoding), ``per_request`` images each, one per line."""
    with path.open("w") as out:
        for start in range(0, len(images) - per_request + 1, per_request):
            call = Calls.query(collection, images[start : start + per_request], top_k=5)
            out.write(json.dumps(call.json) + "\n")
    return path


def store_large_collection(database_url: str, n_classes: int, dim: int, version: str) -> float:
    """A collection ``large`` of ``n_classes`` classes with one synthetic example each, written
    through the storage layer in chunks; returns the seconds it took."""
    rng = np.random.default_rng(0)
    storage = Storage(database_url)
    started = time.perf_counter()
    collection = storage.create_collection("large", DEFAULT_TENANT)
    for start in range(0, n_classes, 10_000):
        count = min(10_000, n_classes - start)
        labels = [f"class{i}" for i in range(start, start + count)]
        pixels = np.full((count, 28, 28), 255, dtype=np.uint8)
        # Non-negative, like the encoder's ReLU + max-pool outputs.
        embeddings = np.abs(rng.standard_normal((count, dim))).astype(np.float32)
        storage.add_examples(collection.id, labels, pixels, embeddings, version)
    storage.close()
    return time.perf_counter() - started


def rss_mib(pid: int) -> tuple[float, float]:
    """``(current, peak)`` resident memory of a process, MiB (Linux /proc)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def encoder_images_per_s(threads: int, images: list[bytes], seconds: float) -> float:
    """The encoder alone, in this process, at batch 64 on real decoded drawings, with the
    server's thread count: the limit of what the query endpoint can reach."""
    configure_threads(threads)
    settings = Settings()
    encoder = load_encoder("default", BUNDLED_CHECKPOINT, "cpu", settings.embed_batch_size, 4096**2)
    pixels = np.stack([encoder.to_pixels(png) for png in images[:64]])  # [64, 28, 28]
    for _ in range(5):
        encoder.embed_pixels(pixels)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        encoder.embed_pixels(pixels)
        done += len(pixels)
    return done / (time.perf_counter() - started)


def register_omniglot(url: str, support: dict[str, list[bytes]]) -> float:
    """Register the characters through the API, 20 per request; returns the seconds taken."""
    labels = sorted(support)
    started = time.perf_counter()
    with ProtonetClient(url, timeout=120) as client:
        client.create_collection("omniglot")
        for start in range(0, len(labels), 20):
            client.add_support("omniglot", {c: support[c] for c in labels[start : start + 20]})
    return time.perf_counter() - started


def measure_load(wrk: Wrk, workdir: Path, queries: list[bytes]) -> dict[str, LoadResult]:
    """Every wrk run of the benchmark, by row name."""
    single = write_bodies(workdir / "single.jsonl", "omniglot", queries, 1)
    batch = write_bodies(workdir / "batch64.jsonl", "omniglot", queries, 64)
    large = write_bodies(workdir / "large.jsonl", "large", queries, 1)
    query, large_query = "/v1/collections/omniglot/query", "/v1/collections/large/query"
    results = {"GET /healthz, c=32": wrk.warm_and_run("/healthz", 32)}
    for connections in (1, 8, 32):
        results[f"query 1 image, c={connections}"] = wrk.warm_and_run(query, connections, single)
    results["query 64 images, c=4"] = wrk.warm_and_run(query, 4, batch)
    for connections in (1, 8):
        name = f"query 1 image, {LARGE}, c={connections}"
        results[name] = wrk.warm_and_run(large_query, connections, large)
    return results


@dataclass(frozen=True)
class Startup:
    store_s: float  # writing the large collection through the storage layer
    ready_s: float  # process start to /readyz 200
    register_s: float  # --characters Omniglot characters x 5 drawings through the API
    rss_ready_mib: float
    rss_peak_mib: float


def print_load_table(results: dict[str, LoadResult], encoder_rate: float) -> None:
    print("| measurement | requests/s | images/s | p50 ms | p99 ms | mean encoder batch |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, result in results.items():
        images = 64 if "64 images" in name else 0 if "healthz" in name else 1
        rate = f"{result.requests_per_s * images:,.0f}" if images else ""
        batch = "" if np.isnan(result.mean_batch) else f"{result.mean_batch:.1f}"
        print(
            f"| {name} | {result.requests_per_s:,.0f} | {rate} | {result.p50_ms:.2f} "
            f"| {result.p99_ms:.2f} | {batch} |"
        )
    print(f"| encoder alone, in-process, batch 64 | | {encoder_rate:,.0f} | | | 64 |")


def print_targets(results: dict[str, LoadResult], encoder_rate: float, start: Startup) -> None:
    ceiling = results["GET /healthz, c=32"].requests_per_s
    single = results["query 1 image, c=32"].requests_per_s / ceiling
    batch = results["query 64 images, c=4"].requests_per_s * 64 / encoder_rate
    rows = [
        ("query 1 image c=32 / healthz c=32", f"{single:.2f}", ">= 0.5", single >= 0.5),
        ("query 64 images c=4 / encoder alone", f"{batch:.2f}", ">= 0.8", batch >= 0.8),
    ]
    for key in ("query 1 image, c=8", f"query 1 image, {LARGE}, c=8"):
        p99 = results[key].p99_ms
        rows.append((f"p99 of {key}", f"{p99:.1f} ms", "<= 25 ms", p99 <= 25))
    rss, ready = f"{start.rss_peak_mib:,.0f} MiB", f"{start.ready_s:.1f} s"
    rows.append((f"server peak RSS, {LARGE}", rss, "<= 1024 MiB", start.rss_peak_mib <= 1024))
    rows.append((f"process start to ready, {LARGE}", ready, "<= 5 s", start.ready_s <= 5))
    print("\n| target | measured | wanted | met |\n|---|---:|---:|---|")
    for name, measured, wanted, met in rows:
        print(f"| {name} | {measured} | {wanted} | {'yes' if met else 'NO'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, help="PROTONET_TORCH_THREADS (default: service's)")
    parser.add_argument("--large-classes", type=int, default=100_000)
    parser.add_argument("--warm-up", type=float, default=2.0, help="seconds before each run")
    parser.add_argument("--characters", type=int, default=100, help="registered, 5 drawings each")
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="images_evaluation.zip")
    args = smoke.parse_args(
        parser, {"duration": 1.0, "warm_up": 0.0, "large_classes": 200, "characters": 5}
    )
    executable = find_wrk()
    characters = read_characters(args.zip, args.characters, seed=0)
    support = {label: pngs[:5] for label, pngs in characters.items()}
    queries = [png for pngs in characters.values() for png in pngs[5:]]  # 15 per character
    threads = args.threads or default_threads()
    with tempfile.TemporaryDirectory() as workdir:
        results, start = run_server(Path(workdir), executable, args, threads, support, queries)
    encoder_rate = encoder_images_per_s(threads, queries, args.duration)  # server gone: idle
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n{stamp}; {machine()}; torch {torch.__version__}, {threads} torch thread(s);")
    print(f"wrk 1 thread, {args.duration:g} s per run after a {args.warm_up:g} s warm-up.\n")
    print_load_table(results, encoder_rate)
    print_targets(results, encoder_rate, start)
    print(
        f"\nstoring {args.large_classes:,} classes through the storage layer: "
        f"{start.store_s:.1f} s; registering {args.characters} characters x 5 drawings through "
        f"the API: "
        f"{start.register_s:.1f} s; RSS when ready: {start.rss_ready_mib:,.0f} MiB"
    )


def run_server(
    workdir: Path,
    executable: str,
    args: argparse.Namespace,
    threads: int,
    support: dict[str, list[bytes]],
    queries: list[bytes],
) -> tuple[dict[str, LoadResult], Startup]:
    """Store the large collection, start the service, register Omniglot, run the load."""
    checkpoint = load_checkpoint(BUNDLED_CHECKPOINT)
    dim = embedding_dim(checkpoint.encoder_config, checkpoint.input_spec.image_size)
    settings = Settings(data_dir=workdir / "data")
    url = settings.resolved_database_url()
    store_s = store_large_collection(url, args.large_classes, dim, checkpoint.version)
    env = {
        "PROTONET_DATA_DIR": str(workdir / "data"),
        "PROTONET_TORCH_THREADS": str(threads),
        "PROTONET_LOG_LEVEL": "warning",
    }
    started = time.perf_counter()
    with local_server(env) as server:
        ready_s = time.perf_counter() - started
        rss_ready, _ = rss_mib(server.process.pid)
        register_s = register_omniglot(server.url, support)
        script = workdir / "wrk.lua"
        script.write_text(WRK_SCRIPT)
        wrk = Wrk(executable, server.url, script, args.duration, args.warm_up)
        results = measure_load(wrk, workdir, queries)
        _, rss_peak = rss_mib(server.process.pid)
    return results, Startup(store_s, ready_s, register_s, rss_ready, rss_peak)


if __name__ == "__main__":
    main()
