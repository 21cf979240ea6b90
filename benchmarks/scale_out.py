"""Scale-out benchmark of the real service (a benchmark, not a test): several ``python -m
service`` processes on one database, measured side by side in one run.

1. write-to-visible latency on another replica, p50 / p99: for each of ``--writes`` writes
   through replica A (a new class each), B's collection GET without ``min_revision`` is polled
   in a tight loop until the class is there; from the write's response to the first GET that
   shows it. Two rows: two replicas on PostgreSQL (LISTEN/NOTIFY wakes the change feed) and
   two processes on one SQLite file (the feed polls every 50 ms);
2. ``--pairs`` write-then-query pairs on the same two processes, each write through one and
   its query and collection GET through the other with ``min_revision`` (one logical client,
   shared revisions): stale answers (an older revision, or a class count that misses the
   write; the write adds an example to one of 20 classes in turn);
3. one-image query throughput, and ``/healthz`` throughput (the HTTP stack's ceiling), with
   ``PROTONET_WORKERS=1`` and ``=2`` on one stored SQLite collection, ``--concurrency`` 8
   (asyncio + httpx in this process, which shares the cores with the server), and the
   2-vs-1 ratio;
4. a model upgrade under continuous one-image queries at ``--concurrency``: a process on model A
   with ``--upgrade-examples`` stored examples answers; a process on model B (the bundled
   weights, perturbed) starts beside it on the same PostgreSQL database and embeds them all
   in the background; once its /readyz is 200 the load moves to it (as a proxy would) and A
   gets SIGTERM. Failed answers over the whole window, p99 before / during / after, and how
   long B took to become ready;
5. ``--kills`` SIGKILLs of one of 3 PostgreSQL replicas (replica i % 3) under writes of unique
   labels through all of them (back to back, or ``--write-pause`` apart), each restarted on
   its port; then every acknowledged label is looked for on every replica (``min_revision`` =
   the highest acknowledged revision).

Then a summary table of every number and its target, and the warnings and errors that the
servers logged. Every process is stopped and every throwaway database dropped on the way out,
errors included. PROTONET_* variables of the caller's environment are ignored (PostgreSQL:
``service.launcher.POSTGRES_ADMIN_URL``, trust auth); others, e.g. ``OMP_NUM_THREADS``, reach
the servers. The servers' logs (level warning) go to ``--log-dir`` if given.

    python benchmarks/scale_out.py [--writes 200] [--pairs 1000] [--duration 10]
        [--upgrade-examples 6000] [--kills 10] [--sections 1,2,3,4,5] [--log-dir DIR]
    python benchmarks/scale_out.py --smoke    # every section at tiny sizes (tests)
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image, ImageDraw

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from benchmarks import smoke  # noqa: E402
from benchmarks.machine import machine  # noqa: E402
from protonet.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from service.client import Calls, ProtonetAPIError, ProtonetClient  # noqa: E402
from service.launcher import LocalServer, start, stop, throwaway_postgres  # noqa: E402
from service.settings import BUNDLED_CHECKPOINT  # noqa: E402
from service.storage.repository import LIVE_WITHIN, Storage  # noqa: E402

STARTUP_S = 300.0  # longest wait for a process's /readyz (the upgraded one embeds first)
VISIBLE_TIMEOUT_S = 5.0  # a write not visible on the other replica by then counts as missing
JSON_HEADERS = {"Content-Type": "application/json"}


# -- images ---------------------------------------------------------------------------------


class Drawings:
    """Synthetic classes: each a few random strokes; each drawing a jittered copy (PNG)."""

    def __init__(self, n_classes: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.templates = [rng.integers(10, 95, size=(3, 4)) for _ in range(n_classes)]
        self.rng = np.random.default_rng(seed + 1000)

    def png(self, class_index: int) -> bytes:
        template = self.templates[class_index % len(self.templates)]
        image = Image.new("L", (105, 105), 255)
        pen = ImageDraw.Draw(image)
        for stroke in template + self.rng.integers(-4, 5, size=template.shape):
            pen.line(tuple(int(v) for v in stroke), fill=0, width=int(self.rng.integers(4, 8)))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()


def query_bodies(drawings: Drawings, collection: str, count: int, top_k: int = 5) -> list[bytes]:
    """``count`` one-image query bodies, JSON-encoded once (the client's own encoding)."""
    calls = [Calls.query(collection, [drawings.png(i)], top_k) for i in range(count)]
    return [json.dumps(call.json).encode() for call in calls]


def write_perturbed_checkpoint(path: Path, scale: float = 0.01, seed: int = 1) -> Path:
    """The bundled model with every float weight nudged: same shapes, another version."""
    checkpoint = load_checkpoint(BUNDLED_CHECKPOINT)
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in checkpoint.state_dict.items():
        if tensor.is_floating_point():
            noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            checkpoint.state_dict[name] = tensor + scale * noise * tensor.abs().mean().clamp_min(
                1e-3
            )
    checkpoint.metadata = {**checkpoint.metadata, "benchmark": "perturbed for scale_out.py"}
    return save_checkpoint(checkpoint, path)


# -- processes ------------------------------------------------------------------------------


def labels_of(collection: Mapping[str, Any]) -> dict[str, int]:
    return {c["label"]: c["n_examples"] for c in collection["classes"]}


def percentile_ms(seconds: Sequence[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000, q)) if len(seconds) else float("nan")


class Fleet:
    """The service processes of one measurement (restarted ones too), each logging to its own
    file under ``log_dir``; leaving the ``with`` block stops every one still running, so
    enter it after (inside) the database it uses: processes stop before it is dropped."""

    def __init__(self, log_dir: Path, workdir: Path) -> None:
        self.log_dir = log_dir
        self.workdir = workdir
        self.processes: list[LocalServer] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def env(
        self, checkpoint: Path, database_url: str | None, data_dir: Path, **extra: str
    ) -> dict[str, str]:
        variables = {
            "PROTONET_CHECKPOINT": str(checkpoint),
            "PROTONET_DATA_DIR": str(data_dir),
            "PROTONET_LOG_LEVEL": "warning",
            "PROTONET_LOG_FORMAT": "text",
            **extra,
        }
        if database_url:
            variables["PROTONET_DATABASE_URL"] = database_url
        return variables

    def start(self, name: str, env: Mapping[str, str], port: int | None = None) -> LocalServer:
        log = self.log_dir / f"{name}.log"
        server = start(env, self.workdir, STARTUP_S, port=port, log_file=log)
        with self._lock:
            self.processes.append(server)
        return server

    def start_many(self, names: Sequence[str], env: Mapping[str, str]) -> list[LocalServer]:
        """Processes started together (they migrate one at a time under the schema lock)."""
        with ThreadPoolExecutor(len(names)) as pool:
            futures = [pool.submit(self.start, name, env) for name in names]
            return [future.result() for future in futures]

    def close(self) -> None:
        for server in self.processes:
            stop(server.process)


def wait_for_workers(database_url: str, server: LocalServer, count: int) -> None:
    """Until ``count`` processes of ``server`` are ready in ``replicas`` (every worker, not
    just the one that answered /readyz)."""
    storage = Storage(database_url, migrate=False)
    try:
        deadline, timeout = time.monotonic() + STARTUP_S, STARTUP_S

        def ready() -> int:
            ours = set(process_tree(server.process.pid))
            return sum(r.ready and r.pid in ours for r in storage.live_replicas(LIVE_WITHIN))

        while ready() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} ready processes after {timeout} s")
            time.sleep(0.2)
    finally:
        storage.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (uvicorn's worker processes)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return [pid, *sorted(children)]


# -- 1. write-to-visible latency ------------------------------------------------------------


@dataclass(frozen=True)
class Visibility:
    latencies_s: np.ndarray  # one per write that became visible
    missing: int  # writes not visible within VISIBLE_TIMEOUT_S
    get_round_trip_s: float  # median GET on B: the resolution of the measurement


def measure_visibility(
    a: LocalServer, b: LocalServer, writes: int, drawings: Drawings
) -> Visibility:
    name = "visibility"
    latencies: list[float] = []
    round_trips: list[float] = []
    missing = 0
    with ProtonetClient(a.url, timeout=60) as writer, httpx.Client(base_url=b.url) as reader:
        writer.create_collection(name)
        path = f"/v1/collections/{name}"
        deadline = time.monotonic() + 30
        while reader.get(path).status_code != 200:  # B learns of the collection
            if time.monotonic() > deadline:
                raise TimeoutError("collection never appeared on the other replica")
            time.sleep(0.01)
        for n in range(writes):
            label = f"v{n}"
            writer.add_support(name, [(label, drawings.png(n))])
            written_at = time.perf_counter()
            while True:
                sent = time.perf_counter()
                response = reader.get(path)
                now = time.perf_counter()
                round_trips.append(now - sent)
                response.raise_for_status()
                # Each write adds a class: the summary's count (no listing since pages) shows it.
                if response.json()["n_classes"] > n:
                    latencies.append(now - written_at)
                    break
                if now - written_at > VISIBLE_TIMEOUT_S:
                    missing += 1
                    break
    return Visibility(np.array(latencies), missing, float(np.median(round_trips)))


# -- 2. read-your-writes across replicas ----------------------------------------------------


@dataclass(frozen=True)
class Consistency:
    pairs: int
    stale: int
    errors: int  # requests that failed (e.g. 503 revision_not_reached)
    examples: list[str] = field(default_factory=list)  # the first few stale or failed pairs


def measure_read_your_writes(
    servers: Sequence[LocalServer], pairs: int, drawings: Drawings, n_classes: int = 20
) -> Consistency:
    name = "consistency"
    clients = [ProtonetClient(server.url, timeout=60) for server in servers]
    for other in clients[1:]:
        other.revisions = clients[0].revisions  # one logical client behind a load balancer
    stale = errors = 0
    examples: list[str] = []
    try:
        clients[0].create_collection(name)
        clients[0].add_support(name, [(f"c{i}", drawings.png(i)) for i in range(n_classes)])
        expected = {f"c{i}": 1 for i in range(n_classes)}
        for n in range(pairs):
            writer, reader = clients[n % 2], clients[(n + 1) % 2]
            label = f"c{n % n_classes}"
            try:
                written = writer.add_support(name, [(label, drawings.png(n))])["revision"]
                expected[label] += 1
                answer = reader.query(name, [drawings.png(n + 1)], top_k=n_classes)
                collection = reader.get_collection(name, classes=True)
            except (ProtonetAPIError, httpx.TransportError) as error:
                errors += 1
                if len(examples) < 5:
                    examples.append(f"pair {n}: {type(error).__name__}: {error}")
                continue
            problems = []
            if answer["revision"] < written:
                problems.append(f"query revision {answer['revision']} < written {written}")
            if len(answer["results"][0]["top_k"]) != n_classes:
                problems.append(f"query top_k has {len(answer['results'][0]['top_k'])} classes")
            if collection["revision"] < written:
                problems.append(f"GET revision {collection['revision']} < written {written}")
            if labels_of(collection).get(label) != expected[label]:
                seen = labels_of(collection).get(label)
                problems.append(f"GET {label} has {seen} examples, wrote {expected[label]}")
            if problems:
                stale += 1
                if len(examples) < 5:
                    examples.append(f"pair {n}: " + "; ".join(problems))
    finally:
        for client in clients:
            client.close()
    return Consistency(pairs, stale, errors, examples)


# -- load generation (3. and 4.) ------------------------------------------------------------

# (sent at perf_counter, latency s, status or 0 for a transport error, base URL)
Sample = tuple[float, float, int, str]


async def generate_load(
    target: Callable[[], str],
    path: str,
    bodies: Sequence[bytes] | None,
    concurrency: int,
    finished: Callable[[], bool],
) -> list[Sample]:
    """``concurrency`` closed-loop clients: POST ``bodies`` in turn (GET without bodies) to
    ``target() + path`` until ``finished()``. ``target`` is read before each request, so the
    load can move to another process while it runs."""
    samples: list[Sample] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def client(index: int) -> None:
            n = index
            while not finished():
                base = target()
                sent = time.perf_counter()
                try:
                    if bodies:
                        body = bodies[n % len(bodies)]
                        response = await http.post(base + path, content=body, headers=JSON_HEADERS)
                    else:
                        response = await http.get(base + path)
                    status = response.status_code
                except httpx.TransportError:
                    status = 0
                samples.append((sent, time.perf_counter() - sent, status, base))
                if status == 0:
                    await asyncio.sleep(0.01)  # do not spin on a refused connection
                n += concurrency

        await asyncio.gather(*(client(i) for i in range(concurrency)))
    return samples


@dataclass(frozen=True)
class Rate:
    per_s: float
    failed: int  # non-2xx answers and transport errors
    p50_ms: float
    p99_ms: float
    client_cpu_share: float  # CPU time of this process (the load generator) / wall time


def fixed_duration_load(
    url: str, path: str, bodies: Sequence[bytes] | None, seconds: float, concurrency: int
) -> Rate:
    """A warm-up (2 s, at most ``seconds``) unmeasured, then ``seconds`` measured, at
    ``concurrency``."""
    for duration, measured in ((min(2.0, seconds), False), (seconds, True)):
        deadline = time.perf_counter() + duration
        cpu_before, started = time.process_time(), time.perf_counter()
        samples = asyncio.run(
            generate_load(
                lambda: url, path, bodies, concurrency, lambda d=deadline: time.perf_counter() > d
            )
        )
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        if not measured:
            continue
        latencies = [latency for _, latency, _, _ in samples]
        failed = sum(not 200 <= status < 300 for _, _, status, _ in samples)
        return Rate(
            len(samples) / wall,
            failed,
            percentile_ms(latencies, 50),
            percentile_ms(latencies, 99),
            cpu / wall,
        )
    raise AssertionError("unreachable")


# -- 3. throughput by worker count ----------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    queries: Rate
    healthz: Rate
    server_cpu_s: list[float]  # CPU seconds of each server process during the query run


def measure_throughput(
    fleet: Fleet, drawings: Drawings, seconds: float, concurrency: int, workers: Sequence[int]
) -> dict[int, Throughput]:
    data_dir = fleet.workdir / "throughput"
    name, path = "throughput", "/v1/collections/throughput/query"
    bodies = query_bodies(drawings, name, 64)
    database_url = f"sqlite:///{(data_dir / 'protonet.sqlite3').resolve()}"
    results: dict[int, Throughput] = {}
    for count in workers:
        env = fleet.env(BUNDLED_CHECKPOINT, None, data_dir, PROTONET_WORKERS=str(count))
        server = fleet.start(f"throughput-workers{count}", env)
        try:
            wait_for_workers(database_url, server, count)
            if not results:  # the first run stores the collection that every run queries
                with ProtonetClient(server.url, timeout=120) as client:
                    client.create_collection(name)
                    support = [(f"k{c}", drawings.png(c)) for c in range(20) for _ in range(5)]
                    client.add_support(name, support)
            pids = process_tree(server.process.pid)
            before = [cpu_seconds(pid) for pid in pids]
            queries = fixed_duration_load(server.url, path, bodies, seconds, concurrency)
            used = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
            healthz = fixed_duration_load(server.url, "/healthz", None, seconds, concurrency)
            results[count] = Throughput(queries, healthz, used)
        finally:
            stop(server.process)
    return results


# -- 4. model upgrade under queries ---------------------------------------------------------


@dataclass(frozen=True)
class Upgrade:
    examples: int
    failed: int  # non-2xx answers and transport errors over the whole window
    statuses: dict[int, int]  # every status seen (0 = transport error) -> count
    requests: dict[str, int]  # by phase
    p99_ms: dict[str, float]  # by phase
    ready_s: float  # B: process start to /readyz 200
    old_exit: int  # A's exit status after SIGTERM
    old_stop_s: float  # SIGTERM to exit
    versions: tuple[str, str]
    new_examples: int  # examples in the collection as B serves it after the switch
    new_answers_version: set[str]


def store_examples(url: str, name: str, drawings: Drawings, count: int, n_classes: int) -> None:
    with ProtonetClient(url, timeout=300) as client:
        client.create_collection(name)
        for first in range(0, count, 250):
            chunk = range(first, min(count, first + 250))
            client.add_support(name, [(f"u{i % n_classes}", drawings.png(i)) for i in chunk])


def measure_upgrade(
    fleet: Fleet,
    database_url: str,
    checkpoint_b: Path,
    drawings: Drawings,
    examples: int,
    baseline_s: float,
    after_s: float,
    concurrency: int,
) -> Upgrade:
    name, path = "upgrade", "/v1/collections/upgrade/query"
    data_dir = fleet.workdir / "upgrade"
    old = fleet.start("upgrade-old", fleet.env(BUNDLED_CHECKPOINT, database_url, data_dir))
    store_examples(old.url, name, drawings, examples, n_classes=100)
    with ProtonetClient(old.url) as client:
        version_a = client.model()["version"]
    bodies = query_bodies(drawings, name, 64)
    target = [old.url]
    finished = threading.Event()
    outcome: list[list[Sample]] = []

    def load() -> None:
        outcome.append(
            asyncio.run(
                generate_load(lambda: target[0], path, bodies, concurrency, finished.is_set)
            )
        )

    loader = threading.Thread(target=load, name="upgrade-load")
    loader.start()
    try:
        time.sleep(baseline_s)
        upgrade_started = time.perf_counter()
        new = fleet.start("upgrade-new", fleet.env(checkpoint_b, database_url, data_dir))
        switched = time.perf_counter()
        target[0] = new.url  # what a proxy does once the new process is ready
        old.process.send_signal(signal.SIGTERM)  # graceful: finishes requests in flight
        old_exit = old.process.wait(60)
        old_stop_s = time.perf_counter() - switched
        time.sleep(after_s)
    finally:
        finished.set()
        loader.join()
    samples = outcome[0] if outcome else []
    with ProtonetClient(new.url) as client:
        version_b = client.model()["version"]
        served = client.get_collection(name)["n_examples"]
        answers = {client.query(name, [drawings.png(i)])["model_version"] for i in range(3)}
    phases: dict[str, list[float]] = {"before": [], "during": [], "first": [], "after": []}
    for sent, latency, _, _ in samples:
        if sent < switched:
            phase = "before" if sent < upgrade_started else "during"
        else:  # B's first second apart: a process that has just turned ready
            phase = "first" if sent < switched + 1.0 else "after"
        phases[phase].append(latency)
    statuses = Counter(status for _, _, status, _ in samples)
    return Upgrade(
        examples=examples,
        failed=sum(count for status, count in statuses.items() if not 200 <= status < 300),
        statuses=dict(statuses),
        requests={phase: len(values) for phase, values in phases.items()},
        p99_ms={phase: percentile_ms(values, 99) for phase, values in phases.items()},
        ready_s=switched - upgrade_started,
        old_exit=old_exit,
        old_stop_s=old_stop_s,
        versions=(version_a, version_b),
        new_examples=served,
        new_answers_version=answers,
    )


# -- 5. SIGKILL under writes ----------------------------------------------------------------


@dataclass(frozen=True)
class Kills:
    kills: int
    acknowledged: int
    lost: dict[str, int]  # replica -> acknowledged labels missing there
    lost_examples: list[str]
    failed_writes: int  # writes that got an error or no answer (not acknowledged)
    failure_kinds: dict[str, int]
    unacknowledged_present: int  # labels stored although their write was not acknowledged
    restart_ready_s: list[float]
    failed_starts: list[str]  # restarts that did not become ready (retried), and why


def measure_kills(
    fleet: Fleet,
    database_url: str,
    drawings: Drawings,
    kills: int,
    interval_s: float,
    pause_s: float,
) -> Kills:
    name = "kills"
    env = fleet.env(BUNDLED_CHECKPOINT, database_url, fleet.workdir / "kills")
    servers = fleet.start_many([f"kill-replica{i}" for i in range(3)], env)
    with ProtonetClient(servers[0].url) as client:
        client.create_collection(name)
    acknowledged: list[tuple[str, int]] = []
    attempted: list[str] = []
    failures: Counter[str] = Counter()
    stop_writing = threading.Event()
    lock = threading.Lock()

    def write(index: int) -> None:
        with ProtonetClient(servers[index].url, timeout=30) as client:  # same port throughout
            n = 0
            while not stop_writing.is_set():
                label = f"w{index}-{n}"
                n += 1
                with lock:
                    attempted.append(label)
                try:
                    done = client.add_support(name, [(label, drawings.png(n))])
                except (httpx.TransportError, ProtonetAPIError) as error:
                    kind = type(error).__name__
                    if isinstance(error, ProtonetAPIError):
                        kind = f"{error.status_code} {error.error}"
                    with lock:
                        failures[kind] += 1
                    time.sleep(0.05)
                    continue
                with lock:
                    acknowledged.append((label, done["revision"]))
                if pause_s:
                    stop_writing.wait(pause_s)

    writers = [threading.Thread(target=write, args=(i,), name=f"writer{i}") for i in range(3)]
    for thread in writers:
        thread.start()
    restart_ready: list[float] = []
    failed_starts: list[str] = []

    def restart(name: str, port: int, attempts: int = 3) -> LocalServer:
        """Start on ``port`` again; a start that fails is recorded and tried again."""
        for attempt in range(1, attempts + 1):
            try:
                return fleet.start(f"{name}-try{attempt}" if attempt > 1 else name, env, port)
            except (RuntimeError, TimeoutError) as error:
                failed_starts.append(f"{name} (log {name}.log): {error}")
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    try:
        for i in range(kills):
            time.sleep(interval_s)
            k = i % 3
            port = int(servers[k].url.rsplit(":", 1)[1])
            servers[k].process.send_signal(signal.SIGKILL)
            servers[k].process.wait()
            started = time.perf_counter()
            servers[k] = restart(f"kill-replica{k}-restart{i}", port)
            restart_ready.append(time.perf_counter() - started)
        time.sleep(interval_s)
    finally:
        stop_writing.set()
        for thread in writers:
            thread.join()
    expected = {label for label, _ in acknowledged}
    last = max((revision for _, revision in acknowledged), default=0)
    lost: dict[str, int] = {}
    lost_examples: list[str] = []
    present_everywhere: set[str] = set()
    for index, server in enumerate(servers):
        with ProtonetClient(server.url, timeout=60) as client:
            if last:
                client.revisions.last_written[name] = last
            present = set(labels_of(client.get_collection(name, classes=True)))
        missing = sorted(expected - present)
        lost[f"replica {index}"] = len(missing)
        lost_examples += [f"replica {index}: {label}" for label in missing[:3]]
        present_everywhere = present if index == 0 else present_everywhere & present
    unacknowledged = (set(attempted) - expected) & present_everywhere
    return Kills(
        kills=kills,
        acknowledged=len(acknowledged),
        lost=lost,
        lost_examples=lost_examples,
        failed_writes=sum(failures.values()),
        failure_kinds=dict(failures),
        unacknowledged_present=len(unacknowledged),
        restart_ready_s=restart_ready,
        failed_starts=failed_starts,
    )


# -- the run --------------------------------------------------------------------------------


@dataclass
class Results:
    visibility: dict[str, Visibility] = field(default_factory=dict)
    consistency: dict[str, Consistency] = field(default_factory=dict)
    throughput: dict[int, Throughput] = field(default_factory=dict)
    upgrade: Upgrade | None = None
    kills: Kills | None = None
    failed_sections: dict[str, str] = field(default_factory=dict)


POSTGRES, SQLITE = "PostgreSQL, 2 replicas (LISTEN/NOTIFY)", "SQLite, 2 processes (polling)"


def run_section(results: Results, title: str, body: Callable[[], None]) -> None:
    """Run one measurement; a failure is reported (and makes the exit status 1), and the
    other measurements still run."""
    print(f"[{datetime.now(UTC):%H:%M:%S}] {title} ...", flush=True)
    started = time.perf_counter()
    try:
        body()
    except Exception as error:
        traceback.print_exc()
        results.failed_sections[title] = f"{type(error).__name__}: {error}"
    print(
        f"[{datetime.now(UTC):%H:%M:%S}] {title}: {time.perf_counter() - started:.0f} s", flush=True
    )


def replica_pair_sections(
    results: Results, args: argparse.Namespace, dirs: tuple[Path, Path], postgres: bool
) -> None:
    """1. and 2. on two processes of one database."""
    backend = POSTGRES if postgres else SQLITE
    log_dir, workdir = dirs
    drawings = Drawings(200)
    with ExitStack() as stack:
        url = stack.enter_context(throwaway_postgres()) if postgres else None
        fleet = stack.enter_context(Fleet(log_dir, workdir))
        data_dir = workdir / ("pair-postgres" if postgres else "pair-sqlite")
        env = fleet.env(BUNDLED_CHECKPOINT, url, data_dir)
        prefix = "pg" if postgres else "sqlite"
        a, b = fleet.start_many([f"{prefix}-a", f"{prefix}-b"], env)
        if 1 in args.sections:
            results.visibility[backend] = measure_visibility(a, b, args.writes, drawings)
        if 2 in args.sections:
            results.consistency[backend] = measure_read_your_writes([a, b], args.pairs, drawings)


def run(args: argparse.Namespace, workdir: Path, log_dir: Path) -> Results:
    """Every measurement in turn; each stops its processes and drops its database (errors
    included) before the next one starts."""
    results = Results()
    dirs = (log_dir, workdir)
    drawings = Drawings(200)
    for postgres in (True, False):
        if args.sections & {1, 2}:
            title = f"1-2. visibility and read-your-writes, {POSTGRES if postgres else SQLITE}"
            run_section(
                results, title, lambda p=postgres: replica_pair_sections(results, args, dirs, p)
            )

    def throughput() -> None:
        with Fleet(log_dir, workdir) as fleet:
            results.throughput = measure_throughput(
                fleet, drawings, args.duration, args.concurrency, (1, 2)
            )

    def upgrade() -> None:
        checkpoint_b = write_perturbed_checkpoint(workdir / "model-b.pt")
        with throwaway_postgres() as url, Fleet(log_dir, workdir) as fleet:
            results.upgrade = measure_upgrade(
                fleet,
                url,
                checkpoint_b,
                drawings,
                args.upgrade_examples,
                args.baseline,
                args.after,
                args.concurrency,
            )

    def kills() -> None:
        with throwaway_postgres() as url, Fleet(log_dir, workdir) as fleet:
            results.kills = measure_kills(
                fleet, url, drawings, args.kills, args.kill_interval, args.write_pause
            )

    if 3 in args.sections:
        run_section(results, "3. query throughput by PROTONET_WORKERS", throughput)
    if 4 in args.sections:
        run_section(results, "4. model upgrade under queries", upgrade)
    if 5 in args.sections:
        run_section(results, "5. SIGKILL of replicas under writes", kills)
    return results


# -- output ---------------------------------------------------------------------------------


def met(ok: bool) -> str:
    return "yes" if ok else "NO"


def print_details(results: Results, args: argparse.Namespace) -> None:
    if results.visibility:
        print(f"\n1. write-to-visible latency on the other replica ({args.writes} writes)\n")
        print("| backend | p50 ms | p99 ms | max ms | not visible in 5 s | GET round trip ms |")
        print("|---|---:|---:|---:|---:|---:|")
        for backend, v in results.visibility.items():
            worst = v.latencies_s.max() * 1000 if len(v.latencies_s) else float("nan")
            print(
                f"| {backend} | {percentile_ms(v.latencies_s, 50):.1f} "
                f"| {percentile_ms(v.latencies_s, 99):.1f} | {worst:.1f} | {v.missing} "
                f"| {v.get_round_trip_s * 1000:.2f} |"
            )
    if results.consistency:
        print("\n2. write through one replica, then query + GET through the other with")
        print("   min_revision (shared client revisions; 20 classes, one example added each)\n")
        print("| backend | pairs | stale | failed requests |\n|---|---:|---:|---:|")
        for backend, c in results.consistency.items():
            print(f"| {backend} | {c.pairs} | {c.stale} | {c.errors} |")
            for example in c.examples:
                print(f"  {backend}: {example}")
    if results.throughput:
        print(
            f"\n3. one-image queries and GET /healthz, concurrency {args.concurrency}, "
            f"{args.duration:g} s each after {min(2.0, args.duration):g} s warm-up (SQLite; "
            "20 classes x 5 shots).\n"
            "   The load generator (asyncio + httpx, this process) shares the cores with the "
            "server:\n   its CPU share is what it took of them.\n"
        )
        print(
            "| PROTONET_WORKERS | queries/s | p50 ms | p99 ms | failed | healthz/s "
            "| load generator CPU (queries) | server CPU s per process (queries) |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---|")
        for count, t in results.throughput.items():
            q, h = t.queries, t.healthz
            per_process = ", ".join(f"{s:.1f}" for s in t.server_cpu_s)
            print(
                f"| {count} | {q.per_s:,.0f} | {q.p50_ms:.1f} | {q.p99_ms:.1f} "
                f"| {q.failed + h.failed} | {h.per_s:,.0f} | {q.client_cpu_share:.0%} "
                f"| {per_process} |"
            )
        if {1, 2} <= set(results.throughput):
            one, two = results.throughput[1], results.throughput[2]
            print(
                f"\nWORKERS=2 / WORKERS=1: queries {two.queries.per_s / one.queries.per_s:.2f}, "
                f"healthz {two.healthz.per_s / one.healthz.per_s:.2f}; query/healthz: "
                f"{one.queries.per_s / one.healthz.per_s:.2f} (1 worker), "
                f"{two.queries.per_s / two.healthz.per_s:.2f} (2 workers)"
            )
    if results.upgrade:
        u = results.upgrade
        print(
            f"\n4. model upgrade under one-image queries at concurrency {args.concurrency} "
            f"({u.examples:,} stored examples; model {u.versions[0]} -> {u.versions[1]})\n"
        )
        print("| phase | requests | p99 ms |\n|---|---:|---:|")
        labels = {
            "before": f"before (on A, {args.baseline:g} s baseline)",
            "during": "during (on A while B embeds)",
            "first": "B's first second after the switch (A stopping)",
            "after": f"after that (on B, A stopped; until {args.after:g} s after the switch)",
        }
        for phase, label in labels.items():
            print(f"| {label} | {u.requests[phase]:,} | {u.p99_ms[phase]:.1f} |")
        statuses = ", ".join(
            f"{s or 'transport error'}: {n:,}" for s, n in sorted(u.statuses.items())
        )
        print(
            f"\nstatuses: {statuses}; B start to ready: {u.ready_s:.1f} s; A after SIGTERM: "
            f"exit {u.old_exit} in {u.old_stop_s:.2f} s; B serves {u.new_examples:,} examples, "
            f"answers with model {', '.join(sorted(u.new_answers_version))}"
        )
    if results.kills:
        k = results.kills
        print(f"\n5. {k.kills} SIGKILLs of one of 3 PostgreSQL replicas under writes\n")
        lost = ", ".join(f"{replica}: {n}" for replica, n in k.lost.items())
        kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(k.failure_kinds.items())) or "none"
        ready = np.array(k.restart_ready_s)
        print(
            f"acknowledged writes: {k.acknowledged:,}; lost (acknowledged but missing): {lost}\n"
            f"failed writes (not acknowledged): {k.failed_writes:,} ({kinds}); of those stored "
            f"anyway: {k.unacknowledged_present}\nrestart to ready: median "
            f"{np.median(ready) if len(ready) else float('nan'):.1f} s, "
            f"max {ready.max() if len(ready) else float('nan'):.1f} s"
        )
        for example in k.lost_examples:
            print(f"  lost: {example}")
        for failure in k.failed_starts:
            print(f"  restart failed (retried): {failure}")


def print_summary(results: Results, concurrency: int) -> None:
    rows: list[tuple[str, str, str, str]] = []
    for backend, v in results.visibility.items():
        p99 = percentile_ms(v.latencies_s, 99)
        ok = p99 <= 100 and v.missing == 0
        rows.append((f"write-to-visible p99, {backend}", f"{p99:.1f} ms", "<= 100 ms", met(ok)))
        if v.missing:
            rows.append((f"writes never visible, {backend}", f"{v.missing}", "0", met(False)))
    for backend, c in results.consistency.items():
        measured = f"{c.stale} of {c.pairs}" + (f" ({c.errors} failed)" if c.errors else "")
        rows.append(
            (
                f"stale reads with min_revision, {backend}",
                measured,
                "0",
                met(c.stale + c.errors == 0),
            )
        )
    if {1, 2} <= set(results.throughput):
        one, two = results.throughput[1], results.throughput[2]
        for count in (1, 2):
            t = results.throughput[count]
            rows.append(
                (
                    f"query/s (healthz/s), PROTONET_WORKERS={count}, c={concurrency}",
                    f"{t.queries.per_s:,.0f} ({t.healthz.per_s:,.0f})",
                    "reported",
                    "",
                )
            )
        ratio = two.queries.per_s / one.queries.per_s
        rows.append(
            ("query/s WORKERS=2 / WORKERS=1 (2 cores, shared)", f"{ratio:.2f}", "reported", "")
        )
    if results.upgrade:
        u = results.upgrade
        rows.append(
            ("failed answers during the model upgrade", f"{u.failed}", "0", met(u.failed == 0))
        )
        rows.append(
            (
                "query p99 before / during the upgrade / B's first second",
                f"{u.p99_ms['before']:.1f} / {u.p99_ms['during']:.1f} / {u.p99_ms['first']:.1f} ms",
                "reported",
                "",
            )
        )
        rows.append(
            (f"new model ready ({u.examples:,} examples)", f"{u.ready_s:.1f} s", "reported", "")
        )
    if results.kills:
        k = results.kills
        lost = sum(k.lost.values())
        rows.append(
            (
                f"acknowledged writes lost after {k.kills} SIGKILLs",
                f"{lost} of {k.acknowledged:,}",
                "0",
                met(lost == 0 and k.acknowledged > 0),
            )
        )
        failed = len(k.failed_starts)
        rows.append(
            (
                f"replica restarts that failed to start ({k.kills} restarts)",
                f"{failed}",
                "0",
                met(not failed),
            )
        )
    for title, error in results.failed_sections.items():
        rows.append((f"section failed: {title}", error[:120], "runs", met(False)))
    print("\n| measurement | measured | target | met |\n|---|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def print_server_logs(log_dir: Path) -> None:
    """Warnings and errors the servers logged (level warning and above only is logged)."""
    print(f"\nserver logs ({log_dir}): warnings and errors")
    quiet = True
    for log in sorted(log_dir.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        flagged = [
            line
            for line in lines
            if any(word in line for word in (" WARNING ", " ERROR ", " CRITICAL ", "Traceback"))
        ]
        if not flagged:
            continue
        quiet = False
        kinds = Counter(line.split(": ", 1)[-1][:100] for line in flagged)
        print(f"  {log.name}: {len(flagged)} lines")
        for message, count in kinds.most_common(5):
            print(f"    {count} x {message}")
    if quiet:
        print("  none")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=200, help="1: writes timed to visibility")
    parser.add_argument("--pairs", type=int, default=1000, help="2: write-then-query pairs")
    parser.add_argument("--duration", type=float, default=10.0, help="3: seconds per run")
    parser.add_argument("--upgrade-examples", type=int, default=6000, help="4: stored examples")
    parser.add_argument("--baseline", type=float, default=5.0, help="4: seconds of load before")
    parser.add_argument("--after", type=float, default=5.0, help="4: seconds of load on B after")
    parser.add_argument("--kills", type=int, default=10, help="5: SIGKILLs")
    parser.add_argument("--kill-interval", type=float, default=2.0, help="5: seconds between")
    parser.add_argument("--concurrency", type=int, default=8, help="3, 4: clients of the load")
    parser.add_argument("--write-pause", type=float, default=0.0, help="5: s between writes")
    parser.add_argument(
        "--sections", default="1,2,3,4,5", help="which measurements to run, e.g. 1,2"
    )
    parser.add_argument("--log-dir", type=Path, help="keep the server logs here")
    sizes = {"writes": 3, "pairs": 4, "upgrade_examples": 20, "kills": 1, "concurrency": 2}
    durations = {"duration": 0.3, "baseline": 0.5, "after": 0.5, "kill_interval": 0.5}
    args = smoke.parse_args(parser, {**sizes, **durations, "write_pause": 0.1})
    args.sections = {int(part) for part in args.sections.split(",") if part.strip()}
    return args


def main() -> int:
    args = parse_args()
    for name in list(os.environ):  # this run's processes get only the settings it chooses
        if name.upper().startswith("PROTONET_"):
            del os.environ[name]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scale-out-") as temp:
        workdir = Path(temp)
        log_dir = args.log_dir or workdir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        results = run(args, workdir, log_dir)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(
            f"\n{stamp}; {machine()}, torch {torch.__version__}; "
            f"{time.perf_counter() - started:.0f} s in all"
        )
        print_details(results, args)
        print_summary(results, args.concurrency)
        print_server_logs(log_dir)
    return 1 if results.failed_sections else 0


if __name__ == "__main__":
    sys.exit(main())
