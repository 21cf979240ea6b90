"""Large collections (a benchmark, not a test): exact search against FAISS IVF at 10,000 to
1,000,000 classes, in process and through the real service.

    python benchmarks/large_collections.py [--sizes 10000,100000,1000000] [--queries 1000]
        [--http-seconds 10] [--nprobes 16,32,64] [--workdir DIR] [--keep]
    python benchmarks/large_collections.py --smoke    # 1,000 classes, 40 characters (tests)

Geometry (not uniform noise): the bundled encoder embeds ``images_background`` drawings
(``--drawings`` per character for the 964 real prototypes; the other drawings are held out as
real queries). A collection of N classes is N real prototypes drawn at random plus Gaussian
noise shaped like the prototypes' per-dimension spread, clipped at 0 (the encoder ends in a
ReLU), scaled so that the median nearest-neighbour distance between the N prototypes equals
the real one; a synthetic query is a prototype plus noise shaped like the within-class spread,
scaled so that its median distance to its prototype equals a held-out drawing's to its
character's prototype. ``images_evaluation`` is never read.

Prints, measured side by side in this one run:

1. the geometry: real and synthetic nearest-neighbour and query distances;
2. the crossover: one query (and a batch of 16) in process, ExactIndex against IVFIndex, from
   100 to 100,000 classes, with the service's thread count (PROTONET_EXACT_MAX_CLASSES);
3. per size, in process: IVF build time, recall@1 / recall@5 against exact search (synthetic
   queries; recall@1 also for real held-out drawings) and time per query for each nprobe;
4. per size: the softmax under IVF against the exact one (IVF's normalizer sums its 256
   candidates exactly and estimates the other classes from a sample of 4,096 prototypes): the
   top class's probability both ways, the relative error of the probability and of the
   normalizer, and the share of the exact normalizer beyond the candidates (what a
   candidates-only normalizer would leave out); also on the 964 real prototypes with real
   held-out drawings;
5. per size and index kind, through HTTP (one SQLite database and server per kind, filled
   through the storage layer with one example per class): start-to-ready time (IVF: first
   start, when the IVF index is in use, and a restart with the persisted index), one-image
   query p50 / p99 at concurrency 1 and 8 (PNG of a real held-out drawing), the server's peak
   RSS, whether the answers agree with in-process exact search, and where the server's time
   goes at concurrency 8 (its pipeline metrics: decode, encode, rank);
6. the issue's targets, met or not.

The server runs as the service does by default (PROTONET_TORCH_THREADS unset: all cores but
one, so 1 on two cores; PROTONET_IVF_NPROBE and PROTONET_EXACT_MAX_CLASSES as set). This
machine may be shared: every timed measurement first waits for other processes to go quiet
and reports the CPU share they used meanwhile ("other CPU"). Scratch data (about 1.4 GB per
database at 1,000,000 classes) goes to a temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import faiss
import httpx
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from benchmarks import smoke  # noqa: E402
from benchmarks.machine import machine  # noqa: E402
from protonet.checkpoint import load_checkpoint  # noqa: E402
from service.client import Calls, ProtonetClient  # noqa: E402
from service.collections.encoder import ImageEncoder, load_encoder  # noqa: E402
from service.collections.exact_index import ExactIndex, Ranking  # noqa: E402
from service.collections.ivf_index import CANDIDATES, TAIL_SAMPLE, IVFIndex, list_count  # noqa: E402
from service.edge.auth import DEFAULT_TENANT  # noqa: E402
from service.launcher import LocalServer, start, stop  # noqa: E402
from service.settings import BUNDLED_CHECKPOINT, Settings  # noqa: E402
from service.state import configure_threads  # noqa: E402
from service.storage.repository import Storage  # noqa: E402
from service.threads import default_threads  # noqa: E402

DEFAULT_ZIP = REPO_ROOT.parent / "shared" / "data" / "omniglot" / "images_background.zip"
# --smoke: 20 characters of two background alphabets instead of all 964.
SAMPLE = {"Alphabet_of_the_Magi": 20, "Anglo-Saxon_Futhorc": 20}
COLLECTION = "large"
FILL_CHUNK = 20_000  # rows per add_examples call (one transaction)
TOP_K = 5
NN_SAMPLE = 1000  # prototypes whose nearest neighbour is measured (calibration, table)
READY_TIMEOUT = 900.0
GIB = 2**30


def log(message: str) -> None:
    """Progress on stderr (the tables go to stdout at the end)."""
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentiles(values: np.ndarray, points: tuple[float, ...] = (5, 50, 95)) -> str:
    return " / ".join(f"{v:.2f}" for v in np.percentile(values, points))


# -- other processes: this machine may be shared, and its two cores are all there is ----------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
QUIET = 0.10  # most CPU share of other processes before a timed measurement starts


@dataclass
class Timing:
    """How timed measurements run: each waits up to ``patience`` seconds for a quiet machine
    (other processes under ``QUIET``) and is taken again, up to ``tries`` times, while it was
    not; a time per query is the median of at least ``calls`` calls over about ``seconds``."""

    patience: float = 180.0
    tries: int = 3
    seconds: float = 0.5
    calls: int = 20


TIMING = Timing()  # --smoke: no waiting, a few calls (main sets it)


def machine_busy_ticks() -> int:
    """CPU time used on the whole machine, all cores (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq + steal


def process_ticks(pid: int) -> int:
    """CPU time used by one process, all its threads (utime + stime)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


class OtherProcesses:
    """Share of the machine's CPU that processes other than this one and ``pids`` (the
    server) used since creation (or :meth:`reset`): measurements taken while other work ran
    on the same two cores are not this code's numbers."""

    def __init__(self, pids: tuple[int, ...] = ()) -> None:
        self.pids = (os.getpid(), *pids)
        self.reset()

    def reset(self) -> None:
        self.began = time.monotonic()
        self.busy = machine_busy_ticks()
        self.ours = sum(process_ticks(pid) for pid in self.pids)

    def share(self, started: tuple[int, ...] = ()) -> float:
        """``started``: processes started since (counted whole, as ours)."""
        elapsed = (time.monotonic() - self.began) * CLOCK_TICKS * CORES
        ours = sum(process_ticks(pid) for pid in self.pids) - self.ours
        ours += sum(process_ticks(pid) for pid in started)
        return max(0.0, machine_busy_ticks() - self.busy - ours) / max(elapsed, 1e-9)


def wait_until_quiet(pids: tuple[int, ...] = ()) -> None:
    """Wait (at most ``TIMING.patience`` s) for a second in which other processes used under
    ``QUIET`` of the machine's CPU."""
    if not TIMING.patience:
        return
    deadline = time.monotonic() + TIMING.patience
    while time.monotonic() < deadline:
        others = OtherProcesses(pids)
        time.sleep(1.0)
        if (share := others.share()) < QUIET:
            return
        log(f"  other processes use {share:.0%} of the CPU: waiting")
    log(f"  still busy after {TIMING.patience:.0f} s: measuring anyway (see 'other CPU')")


T = TypeVar("T")


def quietly(measure: Callable[[], T], pids: tuple[int, ...] = ()) -> tuple[T, float]:
    """``(result, other processes' CPU share meanwhile)`` of ``measure()``, run once other
    processes are quiet; again (up to ``TIMING.tries`` times) while they were not, keeping the
    quietest run."""
    best: tuple[T, float] | None = None
    for _ in range(TIMING.tries):
        wait_until_quiet(pids)
        others = OtherProcesses(pids)
        result = measure()
        share = others.share()
        if best is None or share < best[1]:
            best = (result, share)
        if share < QUIET:
            break
    assert best is not None
    return best


# -- geometry: real Omniglot embeddings, and synthetic prototypes like them -----------------


@dataclass(frozen=True)
class Geometry:
    """What the bundled encoder makes of ``images_background``."""

    prototypes: np.ndarray  # [964, dim]: mean of each character's first drawings
    prototype_std: np.ndarray  # [dim]: spread of the prototypes around their mean
    within_std: np.ndarray  # [dim]: RMS of held-out drawing - its character's prototype
    nn_sq: np.ndarray  # [964]: squared distance of each prototype to its nearest other one
    query_sq: np.ndarray  # [m]: squared distance of each held-out drawing to its prototype
    queries: np.ndarray  # [q, dim]: held-out drawings' embeddings (shuffled)
    query_characters: np.ndarray  # [q]: their character
    query_pngs: list[bytes]  # [q]: the drawings themselves


def read_background(zip_path: Path) -> list[list[bytes]]:
    """Every character's drawings (PNG bytes, sorted by file name), characters sorted."""
    with zipfile.ZipFile(zip_path) as archive:
        members: dict[str, list[str]] = {}
        for name in archive.namelist():  # images_background/<Alphabet>/<character>/<id>.png
            parts = name.split("/")
            if len(parts) == 4 and parts[3].endswith(".png"):
                members.setdefault(f"{parts[1]}/{parts[2]}", []).append(name)
        return [[archive.read(m) for m in sorted(members[c])] for c in sorted(members)]


def embed_pngs(encoder: ImageEncoder, pngs: list[bytes]) -> np.ndarray:
    return encoder.embed_pixels(np.stack([encoder.to_pixels(png) for png in pngs]))


def nearest_sq(points: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Squared distance from each of ``points[sample]`` to its nearest other point."""
    index = faiss.IndexFlatL2(points.shape[1])
    index.add(np.ascontiguousarray(points, dtype=np.float32))
    distances, ids = index.search(np.ascontiguousarray(points[sample]), 2)
    return np.where(ids[:, 0] == sample, distances[:, 1], distances[:, 0])


def measure_geometry(
    encoder: ImageEncoder, zip_path: Path, shots: int, rng: np.random.Generator
) -> Geometry:
    characters = read_background(zip_path)
    support = [png for drawings in characters for png in drawings[:shots]]
    owners = np.repeat(np.arange(len(characters)), [len(d[:shots]) for d in characters])
    held_out = [(c, png) for c, drawings in enumerate(characters) for png in drawings[shots:]]
    embeddings = embed_pngs(encoder, support)
    prototypes = np.stack([embeddings[owners == c].mean(0) for c in range(len(characters))])
    order = rng.permutation(len(held_out))
    query_characters = np.array([held_out[i][0] for i in order], dtype=np.int64)
    query_pngs = [held_out[i][1] for i in order]
    queries = embed_pngs(encoder, query_pngs)
    residuals = queries - prototypes[query_characters]
    every = np.arange(len(prototypes))
    return Geometry(
        prototypes=prototypes.astype(np.float32),
        prototype_std=prototypes.std(0).astype(np.float32),
        within_std=np.sqrt((residuals**2).mean(0)).astype(np.float32),
        nn_sq=nearest_sq(prototypes, every),
        query_sq=(residuals**2).sum(1),
        queries=queries,
        query_characters=query_characters,
        query_pngs=query_pngs,
    )


@dataclass(frozen=True)
class Synthetic:
    prototypes: np.ndarray  # [n, dim]
    scale: float  # noise = scale * prototype_std per dimension
    nn_sq: np.ndarray  # [<= NN_SAMPLE] nearest-neighbour squared distances of a sample


def synthesize(n: int, geometry: Geometry, rng: np.random.Generator) -> Synthetic:
    """``n`` prototypes: real ones drawn at random plus noise shaped like the prototypes'
    spread, clipped at 0, scaled (a few fixed-point steps) so that the median
    nearest-neighbour distance matches the real prototypes'."""
    real, dim = geometry.prototypes, geometry.prototypes.shape[1]
    parents = rng.integers(len(real), size=n)
    noise = rng.standard_normal((n, dim), dtype=np.float32) * geometry.prototype_std
    target = float(np.median(geometry.nn_sq))
    sample = rng.choice(n, min(n, NN_SAMPLE), replace=False)
    scale = math.sqrt(target / (2 * float((geometry.prototype_std**2).sum())))
    for _ in range(8):
        prototypes = np.maximum(real[parents] + scale * noise, 0.0)
        nn = nearest_sq(prototypes, sample)
        measured = float(np.median(nn))
        if abs(measured / target - 1) < 0.01:
            break
        scale *= math.sqrt(target / measured)
    return Synthetic(prototypes, scale, nn)


def synthetic_queries(
    prototypes: np.ndarray, count: int, geometry: Geometry, rng: np.random.Generator
) -> tuple[np.ndarray, float, np.ndarray]:
    """``count`` queries: a random prototype plus noise shaped like the within-class spread,
    clipped at 0, scaled so that the median distance to that prototype matches a held-out
    drawing's to its character's prototype. Returns ``(queries, scale, squared distance of
    each to its prototype)``."""
    centers = prototypes[rng.integers(len(prototypes), size=count)]
    noise = rng.standard_normal(centers.shape, dtype=np.float32) * geometry.within_std
    target = float(np.median(geometry.query_sq))
    scale = 1.0
    for _ in range(8):
        queries = np.maximum(centers + scale * noise, 0.0)
        distances = ((queries - centers) ** 2).sum(1)
        measured = float(np.median(distances))
        if abs(measured / target - 1) < 0.01:
            break
        scale *= math.sqrt(target / measured)
    return queries.astype(np.float32), scale, distances


# -- in-process measurements -------------------------------------------------------------


def exact_index(prototypes: np.ndarray) -> ExactIndex:
    index = ExactIndex(prototypes.shape[1])
    index.upsert(np.arange(len(prototypes)), prototypes)
    return index


def rank_in_chunks(index: ExactIndex | IVFIndex, queries: np.ndarray, k: int) -> Ranking:
    """``index.rank`` 100 queries at a time (exact search holds an [n_queries, n] matrix)."""
    parts = [index.rank(queries[i : i + 100], k) for i in range(0, len(queries), 100)]
    return Ranking(
        np.concatenate([p.distances for p in parts]),
        np.concatenate([p.class_ids for p in parts]),
        np.concatenate([p.log_normalizer for p in parts]),
    )


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean share of ``truth``'s first ``k`` ids among ``found``'s first ``k``."""
    pairs = zip(found.tolist(), truth.tolist(), strict=True)
    hits = [len(set(f[:k]) & set(t[:k])) for f, t in pairs]
    return float(np.mean(hits)) / k


def ms_per_query(index: ExactIndex | IVFIndex, queries: np.ndarray, batch: int) -> float:
    """Median milliseconds per query of ``index.rank`` on batches of ``batch`` queries
    (at least ``TIMING.calls`` calls and about ``TIMING.seconds``, after 3 unmeasured ones)."""
    batches = [queries[i : i + batch] for i in range(0, len(queries) - batch + 1, batch)]
    for rows in batches[:3]:
        index.rank(rows, TOP_K)
    times: list[float] = []
    deadline = time.perf_counter() + TIMING.seconds
    for rows in itertools.cycle(batches):
        began = time.perf_counter()
        index.rank(rows, TOP_K)
        times.append(time.perf_counter() - began)
        if len(times) >= TIMING.calls and time.perf_counter() > deadline:
            break
    return float(np.median(times)) * 1000 / batch


def set_nprobe(index: IVFIndex, nprobe: int) -> None:
    """Change the lists scanned per query in place (IVFIndex fixes it at build time)."""
    index._index.nprobe = min(nprobe, index._index.nlist)


@dataclass(frozen=True)
class Crossover:
    n: int
    exact_ms: float
    ivf_ms: float
    exact_ms_16: float  # per query, in batches of 16 (the micro-batch limit)
    ivf_ms_16: float
    recall_1: float
    others: float  # CPU share of other processes during the timings


def measure_crossover(
    n: int, geometry: Geometry, nprobe: int, threads: int, rng: np.random.Generator
) -> Crossover:
    prototypes = synthesize(n, geometry, rng).prototypes
    queries, _, _ = synthetic_queries(prototypes, 320, geometry, rng)
    configure_threads(threads)
    exact = exact_index(prototypes)
    ivf = IVFIndex.build(np.arange(n), prototypes, nprobe)
    truth = exact.rank(queries, 1).class_ids
    timings, share = quietly(
        lambda: [ms_per_query(index, queries, b) for b in (1, 16) for index in (exact, ivf)]
    )
    return Crossover(n, *timings, recall(ivf.rank(queries, 1).class_ids, truth, 1), share)


@dataclass(frozen=True)
class ProbeResult:
    nprobe: int
    recall_1: float
    recall_5: float
    recall_1_real: float  # real held-out drawings as queries
    ms: float  # one query, in process


@dataclass(frozen=True)
class Softmax:
    """How the IVF normalizer (candidates + sampled estimate) compares with the exact one."""

    n: int
    queries: str
    p_exact: np.ndarray  # each query's top class's probability, exact normalizer
    p_ivf: np.ndarray  # the same with IVF's (what the service answers under IVF)
    relative_p: np.ndarray  # |p_ivf / p_exact - 1| of each query's top class
    relative_z: np.ndarray  # |Z_ivf / Z_exact - 1|: the normalizer's relative error
    beyond: np.ndarray  # share of the exact normalizer beyond the candidates


def softmax_gap(
    n: int, name: str, exact: ExactIndex, ivf: IVFIndex, queries: np.ndarray
) -> Softmax:
    full = rank_in_chunks(exact, queries, 1)
    found = ivf.rank(queries, CANDIDATES)
    p_exact = np.exp(-full.distances[:, 0].astype(np.float64) - full.log_normalizer)
    p_ivf = np.exp(-found.distances[:, 0].astype(np.float64) - found.log_normalizer)
    candidates = np.log(np.exp(-found.distances.astype(np.float64)).sum(axis=1))
    return Softmax(
        n,
        name,
        p_exact,
        p_ivf,
        np.abs(p_ivf / p_exact - 1),
        np.abs(np.expm1(found.log_normalizer - full.log_normalizer)),
        -np.expm1(candidates - full.log_normalizer),
    )


@dataclass
class InProcess:
    n: int
    lists: int
    build_s: float
    exact_ms: float
    probes: list[ProbeResult]
    others: float  # CPU share of other processes during the build and the timings
    softmax: list[Softmax]
    synthetic: Synthetic
    query_scale: float
    query_sq: np.ndarray  # squared distance of each synthetic query to its prototype
    truth_real: np.ndarray  # exact top-1 class of each real held-out drawing


def measure_in_process(
    n: int,
    synthetic: Synthetic,
    geometry: Geometry,
    args: argparse.Namespace,
    threads: int,
    rng: np.random.Generator,
) -> InProcess:
    prototypes = synthetic.prototypes
    queries, query_scale, query_sq = synthetic_queries(prototypes, args.queries, geometry, rng)
    real = geometry.queries[: args.queries]
    exact = exact_index(prototypes)
    configure_threads(threads)  # the service's: what its background build gets
    wait_until_quiet()
    others = OtherProcesses()
    began = time.perf_counter()
    ivf = IVFIndex.build(np.arange(n), prototypes, args.settings.ivf_nprobe)
    build_s = time.perf_counter() - began
    shares = [others.share()]
    log(f"{n:,} classes: IVF built in {build_s:.1f} s; exact search of the queries")
    configure_threads(os.cpu_count() or 1)  # bulk exact rankings: not timed
    truth = rank_in_chunks(exact, queries, TOP_K).class_ids
    truth_real = rank_in_chunks(exact, real, TOP_K).class_ids
    probes = []
    for nprobe in args.nprobes:
        set_nprobe(ivf, nprobe)
        configure_threads(os.cpu_count() or 1)
        found = ivf.rank(queries, TOP_K).class_ids
        found_real = ivf.rank(real, 1).class_ids
        configure_threads(threads)
        ms, share = quietly(lambda: ms_per_query(ivf, queries, 1))
        shares.append(share)
        recalls = [recall(found, truth, 1), recall(found, truth, TOP_K)]
        probes.append(ProbeResult(nprobe, *recalls, recall(found_real, truth_real, 1), ms))
    set_nprobe(ivf, args.settings.ivf_nprobe)
    exact_ms, share = quietly(lambda: ms_per_query(exact, queries[:64], 1))
    shares.append(share)
    configure_threads(os.cpu_count() or 1)
    softmax = [
        softmax_gap(n, "synthetic", exact, ivf, queries),
        softmax_gap(n, "real drawings", exact, ivf, real),
    ]
    return InProcess(
        n,
        list_count(n),
        build_s,
        exact_ms,
        probes,
        max(shares),
        softmax,
        synthetic,
        query_scale,
        query_sq,
        truth_real[:, 0],
    )


# -- through HTTP ---------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection, as lean as a Python client gets: the client shares
    the two cores with the server, so it should cost it as little as possible."""

    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port))
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one request; ``(status, body)`` of its response (which has Content-Length)."""
        self.socket.sendall(request)
        data = self.pending
        while (end := data.find(b"\r\n\r\n")) < 0:
            data += self._receive()
        head = data[:end].decode("latin-1").split("\r\n")
        length = next(
            int(line.split(":", 1)[1]) for line in head if line.lower().startswith("content-length")
        )
        begin = end + 4
        while len(data) < begin + length:
            data += self._receive()
        self.pending = data[begin + length :]
        return int(head[0].split(" ", 2)[1]), data[begin : begin + length]

    def _receive(self) -> bytes:
        chunk = self.socket.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.socket.close()


def http_request(method: str, path: str, body: dict | None = None) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    return head.encode() + b"\r\n" + payload


@dataclass(frozen=True)
class Exchange:
    request: int  # position in the request list
    status: int
    body: bytes
    ms: float


@dataclass(frozen=True)
class Stage:
    """One stage of the server's query pipeline (decode, encode, rank) over a load."""

    batches: float
    rows: float
    seconds: float

    def __sub__(self, other: Stage) -> Stage:
        return Stage(
            self.batches - other.batches, self.rows - other.rows, self.seconds - other.seconds
        )


def pipeline_stages(port: int) -> dict[str, Stage]:
    """Batches, rows and seconds so far of each stage, from the server's metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            stage = sample.labels.get("stage")
            if stage and sample.name in (
                "protonet_batch_size_sum",
                "protonet_batch_size_count",
                "protonet_batch_duration_seconds_sum",
            ):
                values[stage, sample.name] = sample.value
    stages = {stage for stage, _ in values}
    return {
        stage: Stage(
            values.get((stage, "protonet_batch_size_count"), 0.0),
            values.get((stage, "protonet_batch_size_sum"), 0.0),
            values.get((stage, "protonet_batch_duration_seconds_sum"), 0.0),
        )
        for stage in stages
    }


@dataclass(frozen=True)
class Load:
    concurrency: int
    exchanges: list[Exchange]
    seconds: float
    others: float  # CPU share of other processes meanwhile
    server_cores: float  # the server's CPU time / wall time
    stages: dict[str, Stage]  # the server's pipeline stages meanwhile (its /metrics)

    @property
    def p50(self) -> float:
        return float(np.percentile([e.ms for e in self.exchanges], 50))

    @property
    def p99(self) -> float:
        return float(np.percentile([e.ms for e in self.exchanges], 99))

    @property
    def rate(self) -> float:
        return len(self.exchanges) / self.seconds


def drive(
    port: int, requests: list[bytes], concurrency: int, seconds: float, most: int, pid: int
) -> Load:
    """``concurrency`` threads, one connection each, send ``requests`` in turn (cycled) for
    ``seconds`` or ``most`` requests, whichever comes first, to the server ``pid``."""
    counter = itertools.count()  # next() on it is atomic under the GIL
    deadline = time.perf_counter() + seconds
    done: list[list[Exchange]] = [[] for _ in range(concurrency)]
    failures: list[BaseException] = []

    def worker(results: list[Exchange]) -> None:
        connection = Connection(port)
        try:
            while time.perf_counter() < deadline and (i := next(counter)) < most:
                began = time.perf_counter()
                status, body = connection.exchange(requests[i % len(requests)])
                results.append(Exchange(i, status, body, (time.perf_counter() - began) * 1000))
        except BaseException as error:
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(d,)) for d in done]
    stages = pipeline_stages(port)
    others = OtherProcesses((pid,))
    server_ticks = process_ticks(pid)
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    cores = (process_ticks(pid) - server_ticks) / CLOCK_TICKS / elapsed
    share = others.share()
    if failures:
        raise failures[0]
    after = pipeline_stages(port)
    stages = {name: after[name] - stages.get(name, Stage(0, 0, 0)) for name in after}
    return Load(concurrency, [e for d in done for e in d], elapsed, share, cores, stages)


def rss_mib(pid: int) -> tuple[float, float]:
    """``(current, peak)`` resident memory of a process, MiB (VmRSS, VmHWM)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@dataclass
class Served:
    n: int
    kind: str
    fill_s: float = 0.0
    database_mib: float = 0.0
    ready_s: float = 0.0  # first start: process start to /readyz 200
    in_use_after_s: float | None = None  # IVF: process start to index_in_use == ivf
    peak_first_mib: float = 0.0  # VmHWM of the first start (IVF: with its background build)
    stop_s: float | None = None  # IVF: SIGINT to exit (saves the index)
    index_file_mib: float | None = None
    ready_persisted_s: float | None = None  # IVF: restart with the persisted index
    in_use_at_ready: str = ""  # index_in_use right after ready (restart for IVF)
    loads: list[Load] = field(default_factory=list)
    peak_serving_mib: float = 0.0  # VmHWM of the server that answered the queries
    rss_serving_mib: float = 0.0
    agreement: float = 0.0  # HTTP top-1 == in-process exact top-1
    wrong_index: int = 0  # answers whose "index" was not the collection's kind
    errors: int = 0  # non-200 answers
    floor: list[Load] = field(default_factory=list)  # GET /healthz, same client
    others_start: float = 0.0  # CPU share of other processes during the starts (most)
    failure: str = ""  # what went wrong, if anything did


def fill_database(data_dir: Path, kind: str, prototypes: np.ndarray, version: str) -> float:
    """One collection of one example per class (zero pixels, the prototype as embedding)."""
    storage = Storage(Settings(data_dir=data_dir).resolved_database_url())
    began = time.perf_counter()
    try:
        collection = storage.create_collection(COLLECTION, DEFAULT_TENANT, index_kind=kind)
        for first in range(0, len(prototypes), FILL_CHUNK):
            rows = prototypes[first : first + FILL_CHUNK]
            labels = [f"c{i:07d}" for i in range(first, first + len(rows))]
            pixels = np.zeros((len(rows), 28, 28), dtype=np.uint8)
            storage.add_examples(collection.id, labels, pixels, rows, version)
    finally:
        storage.close()
    return time.perf_counter() - began


def index_in_use(url: str) -> str:
    with ProtonetClient(url) as client:
        return str(client.list_collections()[0]["index_in_use"])


def start_server(
    data_dir: Path, log_file: Path, served: Served
) -> tuple[LocalServer, float, float]:
    """Start the service once other processes are quiet: ``(server, start time, seconds
    from process start to /readyz 200)``."""
    env = {"PROTONET_DATA_DIR": str(data_dir), "PROTONET_LOG_LEVEL": "warning"}
    wait_until_quiet()
    others = OtherProcesses()
    began = time.perf_counter()
    server = start(env, REPO_ROOT, READY_TIMEOUT, log_file=log_file)
    ready = time.perf_counter() - began
    served.others_start = max(served.others_start, others.share((server.process.pid,)))
    return server, began, ready


def serve(
    n: int,
    kind: str,
    prototypes: np.ndarray,
    geometry: Geometry,
    truth_real: np.ndarray,
    args: argparse.Namespace,
    measure_floor: bool,
) -> Served:
    """Fill a database, start the service on it (IVF: wait for the index, restart with it
    persisted), measure queries and memory, stop it."""
    served = Served(n, kind)
    data_dir = args.workdir / f"{n}-{kind}"
    log_file = args.workdir / f"server-{n}-{kind}.log"
    served.fill_s = fill_database(data_dir, kind, prototypes, args.version)
    served.database_mib = sum(f.stat().st_size for f in data_dir.iterdir()) / 2**20
    log(f"{n:,} classes, {kind}: database filled in {served.fill_s:.1f} s; starting the server")
    server, began, served.ready_s = start_server(data_dir, log_file, served)
    try:
        if kind == "ivf":
            while index_in_use(server.url) != "ivf":
                if time.perf_counter() - began > READY_TIMEOUT:
                    raise TimeoutError(f"IVF index not in use after {READY_TIMEOUT} s")
                time.sleep(0.2)
            served.in_use_after_s = time.perf_counter() - began
            served.peak_first_mib = rss_mib(server.process.pid)[1]
            log(f"  ivf in use {served.in_use_after_s:.1f} s after start; restarting")
            stopping = time.perf_counter()
            code = stop(server.process, timeout=600)
            served.stop_s = time.perf_counter() - stopping
            if code != 0:
                raise RuntimeError(f"the server exited with {code} on SIGINT (see {log_file})")
            files = list((data_dir / "indexes").glob("*.ivf"))
            served.index_file_mib = sum(f.stat().st_size for f in files) / 2**20
            server, began, served.ready_persisted_s = start_server(data_dir, log_file, served)
            served.in_use_at_ready = index_in_use(server.url)
        else:
            served.in_use_at_ready = index_in_use(server.url)
            served.peak_first_mib = rss_mib(server.process.pid)[1]
        log(f"  ready; index in use: {served.in_use_at_ready}; queries")
        measure_queries(served, server, geometry, truth_real, args, measure_floor)
        served.rss_serving_mib, served.peak_serving_mib = rss_mib(server.process.pid)
    finally:
        stop(server.process, timeout=600)
    if not args.keep:
        shutil.rmtree(data_dir)
    return served


def measure_queries(
    served: Served,
    server: LocalServer,
    geometry: Geometry,
    truth_real: np.ndarray,
    args: argparse.Namespace,
    measure_floor: bool,
) -> None:
    port, pid = int(server.url.rsplit(":", 1)[1]), server.process.pid
    count = min(len(truth_real), len(geometry.query_pngs))
    path = f"/v1/collections/{COLLECTION}/query"
    requests = [
        http_request("POST", path, Calls.query(COLLECTION, [png], TOP_K).json)
        for png in geometry.query_pngs[:count]
    ]
    if measure_floor:
        health = [http_request("GET", "/healthz")]
        wait_until_quiet((pid,))
        seconds, most = min(2.0, args.http_seconds), min(2000, args.http_requests)
        served.floor = [drive(port, health, c, seconds, most, pid) for c in (1, 8)]
    agree = total = 0
    for concurrency in (1, 8):
        drive(port, requests, concurrency, 1.0, 8 * concurrency, pid)  # warm-up, not measured
        load, _ = quietly(
            lambda c=concurrency: drive(
                port, requests, c, args.http_seconds, args.http_requests, pid
            ),
            (pid,),
        )
        served.loads.append(load)
        for exchange in load.exchanges:
            if exchange.status != 200:
                served.errors += 1
                continue
            answer = json.loads(exchange.body)
            served.wrong_index += answer["index"] != served.kind
            label = answer["results"][0]["label"]
            agree += int(label[1:]) == truth_real[exchange.request % count]
            total += 1
    served.agreement = agree / max(total, 1)
    if served.errors:
        log(f"  {served.errors} answers were not 200: see the server's log")


# -- the report ------------------------------------------------------------------------------


def print_geometry(geometry: Geometry, results: list[InProcess]) -> None:
    print("\n## Geometry (squared Euclidean distances; percentiles 5 / 50 / 95)\n")
    print("| set | classes | nearest other prototype | query to its prototype | noise scale |")
    print("|---|---:|---:|---:|---|")
    print(
        f"| real: Omniglot background prototypes, held-out drawings | {len(geometry.nn_sq)} "
        f"| {percentiles(geometry.nn_sq)} | {percentiles(geometry.query_sq)} | |"
    )
    for r in results:
        print(
            f"| synthetic | {r.n:,} | {percentiles(r.synthetic.nn_sq)} "
            f"| {percentiles(r.query_sq)} "
            f"| prototypes {r.synthetic.scale:.3f} x prototype spread, queries "
            f"{r.query_scale:.3f} x within-class spread |"
        )
    print(
        f"\nspread of the real prototypes around their mean: per-dimension std mean "
        f"{geometry.prototype_std.mean():.3f} (total variance "
        f"{(geometry.prototype_std**2).sum():.2f}); within a character (held-out drawing to "
        f"its prototype): per-dimension RMS mean {geometry.within_std.mean():.3f} (total "
        f"{(geometry.within_std**2).sum():.2f})"
    )


def print_crossover(rows: list[Crossover], threads: int, nprobe: int, exact_max: int) -> None:
    print(
        f"\n## Crossover: in process, {threads} thread(s), IVF nprobe {nprobe}; median ms per "
        "query\n"
    )
    print(
        "| classes | exact, 1 query | IVF, 1 query | exact / IVF | exact, batch 16 "
        "| IVF, batch 16 | exact / IVF | IVF recall@1 | other CPU |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.n:,} | {r.exact_ms:.3f} | {r.ivf_ms:.3f} | {r.exact_ms / r.ivf_ms:.2f} "
            f"| {r.exact_ms_16:.3f} | {r.ivf_ms_16:.3f} | {r.exact_ms_16 / r.ivf_ms_16:.2f} "
            f"| {r.recall_1:.3f} | {r.others:.0%} |"
        )
    faster = [r.n for r in rows if r.ivf_ms < r.exact_ms]
    first = f"{min(faster):,}" if faster else "none of these sizes"
    print(
        f"\nIVF answers one query faster than exact from {first} classes "
        f"(PROTONET_EXACT_MAX_CLASSES: {exact_max:,})"
    )


def print_in_process(results: list[InProcess], threads: int) -> None:
    print(
        "\n## In process: recall against exact search (synthetic queries; real: held-out "
        f"drawings), {threads}-thread IVF build and timings\n"
    )
    print(
        "| classes | IVF lists | build s | exact ms/query | nprobe | recall@1 | recall@5 "
        "| recall@1 real | IVF ms/query | other CPU |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for p in r.probes:
            print(
                f"| {r.n:,} | {r.lists:,} | {r.build_s:.1f} | {r.exact_ms:.2f} | {p.nprobe} "
                f"| {p.recall_1:.4f} | {p.recall_5:.4f} | {p.recall_1_real:.4f} | {p.ms:.3f} "
                f"| {r.others:.0%} |"
            )


def print_softmax(rows: list[Softmax], nprobe: int) -> None:
    print(
        f"\n## Softmax under IVF ({CANDIDATES} candidates exactly, the rest estimated from "
        f"{TAIL_SAMPLE:,} sampled prototypes) against the exact one (nprobe {nprobe})\n"
    )
    print(
        "| classes | queries | top class p, exact / IVF (medians) | relative error of p "
        "(max / median) | relative error of the normalizer (max / median) "
        "| share of the exact normalizer beyond the candidates (max / median) |"
    )
    print("|---:|---|---:|---:|---:|---:|")
    for s in rows:
        print(
            f"| {s.n:,} | {s.queries} | {np.median(s.p_exact):.3f} / {np.median(s.p_ivf):.3f} "
            f"| {s.relative_p.max():.2e} / {np.median(s.relative_p):.2e} "
            f"| {s.relative_z.max():.2e} / {np.median(s.relative_z):.2e} "
            f"| {s.beyond.max():.2e} / {np.median(s.beyond):.2e} |"
        )


def print_http(rows: list[Served], threads: int, exact_max: int) -> None:
    print(
        f"\n## Through HTTP: one-image query (PNG of a held-out drawing, top_k {TOP_K}), server "
        f"with {threads} torch/FAISS thread(s); one database and server per index kind\n"
    )
    print(
        "| classes | index | ready s (first start) | IVF in use s | ready s (persisted) "
        "| in use at ready | c=1 p50 / p99 ms | c=8 p50 / p99 ms | c=8 req/s "
        "| peak RSS MiB (first / serving) | top-1 = exact | other CPU (starts / queries) |"
    )
    print("|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for s in rows:
        if s.failure:
            print(f"| {s.n:,} | {s.kind} | FAILED: {s.failure} |")
            continue
        one, eight = s.loads
        in_use = f"{s.in_use_after_s:.1f}" if s.in_use_after_s is not None else ""
        persisted = f"{s.ready_persisted_s:.1f}" if s.ready_persisted_s is not None else ""
        print(
            f"| {s.n:,} | {s.kind} | {s.ready_s:.1f} | {in_use} | {persisted} "
            f"| {s.in_use_at_ready} | {one.p50:.2f} / {one.p99:.2f} "
            f"| {eight.p50:.2f} / {eight.p99:.2f} | {eight.rate:,.0f} "
            f"| {s.peak_first_mib:,.0f} / {s.peak_serving_mib:,.0f} | {s.agreement:.3f} "
            f"| {s.others_start:.0%} / {max(x.others for x in s.loads):.0%} |"
        )
    print()
    for s in rows:
        if s.failure:
            continue
        extra = ""
        if s.stop_s is not None:
            extra = (
                f"; stop (saves the index) {s.stop_s:.1f} s, index file {s.index_file_mib:,.0f} MiB"
            )
        queries = " and ".join(f"{len(x.exchanges)} at c={x.concurrency}" for x in s.loads)
        print(
            f"- {s.n:,} {s.kind}: database filled in {s.fill_s:.1f} s ({s.database_mib:,.0f} "
            f"MiB){extra}; {queries} queries; {s.errors} errors; {s.wrong_index} answers from "
            f"another index; RSS after the queries {s.rss_serving_mib:,.0f} MiB; 'auto' would "
            f"be {'exact' if s.n <= exact_max else 'ivf'} here"
        )
    print(
        "\nWhere the time goes at c=8 (the server's pipeline metrics during the measured load; "
        "one torch thread runs the encode and rank stages, the event loop decodes):\n"
    )
    print(
        "| classes | index | server CPU, cores | batches | mean rows per batch "
        "| decode ms / batch | encode ms / batch | rank ms / batch |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for s in rows:
        if s.failure:
            continue
        eight = s.loads[1]
        stage = {
            name: eight.stages.get(name, Stage(0, 0, 0)) for name in ("decode", "encode", "rank")
        }
        per_batch = " | ".join(
            f"{1000 * x.seconds / x.batches:.2f}" if x.batches else "" for x in stage.values()
        )
        rank = stage["rank"]
        rows_per_batch = rank.rows / rank.batches if rank.batches else float("nan")
        print(
            f"| {s.n:,} | {s.kind} | {eight.server_cores:.2f} | {rank.batches:,.0f} "
            f"| {rows_per_batch:.1f} | {per_batch} |"
        )
    floors = [s.floor for s in rows if s.floor]
    if floors:
        text = ", ".join(
            f"c={x.concurrency} p50 {x.p50:.2f} / p99 {x.p99:.2f} ms" for x in floors[0]
        )
        print(f"\nHTTP floor, GET /healthz with the same client: {text}")
    print(
        "\nother CPU: share of the machine's CPU used by other processes meanwhile (each timed "
        f"measurement waits up to {TIMING.patience:.0f} s for a second under {QUIET:.0%} first)"
    )


def print_targets(in_process: list[InProcess], http: list[Served], nprobe: int) -> None:
    rows: list[tuple[str, str, str, bool]] = []
    by_n = {r.n: r for r in in_process}
    served = {(s.n, s.kind): s for s in http if not s.failure}
    for s in http:
        if s.failure:
            rows.append((f"{s.n:,} {s.kind}: served and measured", "FAILED", "yes", False))
    if 1_000_000 in by_n:
        probe = next(p for p in by_n[1_000_000].probes if p.nprobe == nprobe)
        value = probe.recall_1
        rows.append(
            (f"1M: recall@1 vs exact (nprobe {nprobe})", f"{value:.4f}", ">= 0.99", value >= 0.99)
        )
    if (1_000_000, "ivf") in served:
        s = served[1_000_000, "ivf"]
        p99 = s.loads[1].p99
        rows.append(("1M ivf: query p99 at c=8", f"{p99:.1f} ms", "<= 10 ms", p99 <= 10))
        peak = max(s.peak_first_mib, s.peak_serving_mib)
        rows.append(("1M ivf: peak RSS", f"{peak:,.0f} MiB", "<= 2048 MiB", peak <= 2048))
        ready = s.ready_persisted_s or math.inf
        rows.append(("1M ivf: ready, persisted index", f"{ready:.1f} s", "<= 20 s", ready <= 20))
    if (100_000, "ivf") in served:
        p99 = served[100_000, "ivf"].loads[1].p99
        rows.append(("100k ivf: query p99 at c=8", f"{p99:.1f} ms", "<= 10 ms", p99 <= 10))
    if rows:
        print("\n## Targets\n\n| target | measured | wanted | met |\n|---|---:|---:|---|")
    for name, measured, wanted, met in rows:
        print(f"| {name} | {measured} | {wanted} | {'yes' if met else 'NO'} |")
    smallest = min((s for s in served.values()), key=lambda s: s.n, default=None)
    if smallest is not None:
        p99s = " / ".join(
            f"{served[smallest.n, k].loads[1].p99:.1f}"
            for k in ("exact", "ivf")
            if (smallest.n, k) in served
        )
        print(
            f"\nfor reference, query p99 at c=8 with {smallest.n:,} classes (exact / ivf), where "
            f"the index costs well under a millisecond: {p99s} ms"
        )


# -- main ------------------------------------------------------------------------------------


def sizes(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=sizes, default=sizes("10000,100000,1000000"))
    parser.add_argument("--queries", type=int, default=1000, help="in-process queries per size")
    parser.add_argument("--nprobes", type=sizes, default=sizes("16,32,64"))
    parser.add_argument(
        "--crossover-sizes", type=sizes, default=sizes("100,300,1000,5000,10000,20000,50000,100000")
    )
    parser.add_argument("--http-seconds", type=float, default=10.0, help="per concurrency level")
    parser.add_argument("--http-requests", type=int, default=3000, help="most per level")
    parser.add_argument("--drawings", type=int, default=10, help="per character, for prototypes")
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="images_background.zip")
    parser.add_argument("--workdir", type=Path, help="scratch space (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep databases and server logs")
    parser.add_argument("--no-http", action="store_true", help="in-process measurements only")
    parser.add_argument("--seed", type=int, default=0)
    sizes_smoke = {"sizes": [1000], "queries": 50, "nprobes": [], "crossover_sizes": [300]}
    return smoke.parse_args(
        parser, {**sizes_smoke, "http_seconds": 0.3, "http_requests": 20, "drawings": 2}
    )


def main() -> None:
    args = parse_args()
    if args.smoke:  # no waiting for a quiet machine, a few calls per timing
        TIMING.patience, TIMING.tries, TIMING.seconds, TIMING.calls = 0.0, 1, 0.0, 3
    args.settings = Settings()  # PROTONET_IVF_NPROBE, PROTONET_EXACT_MAX_CLASSES as served
    nprobe, exact_max = args.settings.ivf_nprobe, args.settings.exact_max_classes
    if nprobe not in args.nprobes:
        args.nprobes = sorted([*args.nprobes, nprobe])
    threads = default_threads()  # what the service uses with PROTONET_TORCH_THREADS unset
    args.version = load_checkpoint(BUNDLED_CHECKPOINT).version
    owned = args.workdir is None
    args.workdir = Path(tempfile.mkdtemp(prefix="large-collections-")) if owned else args.workdir
    args.workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    try:
        configure_threads(os.cpu_count() or 1)
        encoder = load_encoder("default", BUNDLED_CHECKPOINT, "cpu", 256, 4096 * 4096)
        log(f"embedding images_background ({args.drawings} drawings per character + held out)")
        with smoke.omniglot(args.zip.parent, args.smoke, SAMPLE) as data:
            geometry = measure_geometry(encoder, data / args.zip.name, args.drawings, rng)
        del encoder
        crossover = []
        for n in args.crossover_sizes:
            log(f"crossover: {n:,} classes")
            crossover.append(measure_crossover(n, geometry, nprobe, threads, rng))
        in_process: list[InProcess] = []
        http: list[Served] = []
        configure_threads(os.cpu_count() or 1)
        real_exact = exact_index(geometry.prototypes)
        real_ivf = IVFIndex.build(np.arange(len(geometry.prototypes)), geometry.prototypes, nprobe)
        softmax = [
            softmax_gap(
                len(geometry.prototypes),
                "real drawings, real prototypes",
                real_exact,
                real_ivf,
                geometry.queries,
            )
        ]
        for n in args.sizes:
            log(f"{n:,} classes: synthesizing")
            configure_threads(os.cpu_count() or 1)
            synthetic = synthesize(n, geometry, rng)
            result = measure_in_process(n, synthetic, geometry, args, threads, rng)
            in_process.append(result)
            softmax += result.softmax
            gc.collect()
            if args.no_http:
                continue
            for kind in ("exact", "ivf"):
                try:
                    served = serve(
                        n, kind, synthetic.prototypes, geometry, result.truth_real, args, not http
                    )
                except Exception as error:  # report it with the rest, go on with the next
                    served = Served(n, kind, failure=f"{type(error).__name__}: {error}")
                    log(f"  {n:,} {kind} FAILED: {served.failure}")
                    server_log = args.workdir / f"server-{n}-{kind}.log"
                    if server_log.exists():
                        log("  server log, last lines:\n" + server_log.read_text()[-3000:])
                    shutil.rmtree(args.workdir / f"{n}-{kind}", ignore_errors=True)
                http.append(served)
            result.synthetic = Synthetic(np.zeros((0, 1)), synthetic.scale, synthetic.nn_sq)
            del synthetic
            gc.collect()
    finally:
        if owned and not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
        elif args.keep:
            log(f"kept {args.workdir}")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n{stamp}; {machine()}; torch {torch.__version__}, FAISS {faiss.__version__};")
    print(
        f"model {args.version}; service threads {threads} (PROTONET_TORCH_THREADS unset); "
        f"PROTONET_IVF_NPROBE {nprobe}; PROTONET_EXACT_MAX_CLASSES {exact_max:,}"
    )
    print_geometry(geometry, in_process)
    print_crossover(crossover, threads, nprobe, exact_max)
    if in_process:
        print_in_process(in_process, threads)
    print_softmax(softmax, nprobe)
    if http:
        print_http(http, threads, exact_max)
    print_targets(in_process, http, nprobe)


if __name__ == "__main__":
    main()
