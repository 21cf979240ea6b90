"""The picture model through the HTTP service, as `make run` serves it (a benchmark, not a test).

Starts ``python -m service`` with the three bundled models (Makefile's MODELS), then prints:

(a) start-up: seconds from the process's start to ``/readyz`` 200, and its RSS then;
(b) latency: one picture per request at concurrency 1 (a collection of 5 emoji, 2 drawings
    each), p50 and p99 over ``--requests``, beside the served encoder alone (decode, preprocess
    and embed one picture, the same code in this process);
(c) throughput: ``--batch`` (64) pictures per request, pictures/s through HTTP against the
    encoder alone (decode, preprocess and embed as many), rounds of the two interleaved so that
    a noisy neighbour slows both alike; the ratio of their medians and of their best rounds;
(d) the server's RSS after (b) and (c).

The encoder alone runs in a plain Python process, glibc's malloc as it comes; with
``--tuned-alone`` it gets the service's malloc settings (service/edge/heap.py), so the ratio
shows what HTTP, decoding and batching cost without the service's allocator gain.

    python benchmarks/picture_service.py --threads 1 [--tuned-alone]
    python benchmarks/picture_service.py --smoke    # a few requests of 4 pictures (tests)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import smoke
from service.client import ProtonetClient
from service.collections.encoder import Encoder, load_encoder
from service.edge.heap import tune_malloc_for_encoders
from service.launcher import REPO_ROOT, local_server

DATA = REPO_ROOT.parent / "shared" / "data" / "emoji"
MODELS = {
    "omniglot": REPO_ROOT / "models" / "omniglot-conv4.pt",
    "intents": REPO_ROOT / "models" / "banking77-minilm.pt",
    "pictures": REPO_ROOT / "models" / "pictures-mobilenetv2.pt",
}
SUPPORT = 10  # the collection's pictures: the last files read, 2 per emoji


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` (Linux /proc), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pictures(folder: Path, n: int) -> list[bytes]:
    """``n`` emoji PNG files of one vendor (64 px RGBA), as a client would send them."""
    return [path.read_bytes() for path in sorted(folder.glob("*.png"))[:n]]


def latencies(client: ProtonetClient, name: str, files: list[bytes], requests: int) -> list[float]:
    """Seconds of each of ``requests`` one-picture queries, one at a time."""
    client.query(name, [files[0]])  # warm-up
    times = []
    for r in range(requests):
        started = time.perf_counter()
        client.query(name, [files[r % len(files)]], top_k=1)
        times.append(time.perf_counter() - started)
    return times


def embed_alone(encoder: Encoder, batch: list[bytes]) -> None:
    """What the service does for a query's pictures: stage one of each, then one embedding."""
    encoder.embed_batch(encoder.stack([encoder.stage_one(data) for data in batch]))


def alone_latencies(encoder: Encoder, files: list[bytes], count: int) -> list[float]:
    """Seconds of the encoder alone on one picture, for ``count`` pictures."""
    embed_alone(encoder, files[:1])  # warm-up
    times = []
    for data in files[:count]:
        started = time.perf_counter()
        embed_alone(encoder, [data])
        times.append(time.perf_counter() - started)
    return times


def interleaved_rounds(
    client: ProtonetClient, name: str, encoder: Encoder, items: list[bytes], rounds: int
) -> tuple[list[float], list[float]]:
    """Seconds per round of ``items`` through HTTP and through the encoder alone, in turn."""
    client.query(name, items)  # warm-up
    embed_alone(encoder, items)
    http, alone = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        client.query(name, items, top_k=1)
        http.append(time.perf_counter() - started)
        started = time.perf_counter()
        embed_alone(encoder, items)
        alone.append(time.perf_counter() - started)
    return http, alone


def milliseconds(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)))]
    return f"p50 {1000 * statistics.median(ordered):6.1f} ms  p99 {1000 * p99:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--threads", type=int, default=1, help="PROTONET_TORCH_THREADS (the default on 2 cores)"
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20, help="--batch rounds of each")
    parser.add_argument("--batch", type=int, default=64, help="pictures per request in (c)")
    parser.add_argument("--files", type=int, default=400, help="pictures read (one vendor's)")
    parser.add_argument(
        "--tuned-alone", action="store_true", help="the encoder alone with the service's malloc"
    )
    sizes = {"requests": 3, "rounds": 2, "batch": 4, "files": 2 * SUPPORT}
    args = smoke.parse_args(parser, sizes)
    torch.set_num_threads(args.threads)
    if args.tuned_alone:
        tune_malloc_for_encoders()
    files = pictures(args.data / "google", args.files)
    # The encoder alone, loaded here before the server starts so both run in turn below.
    encoder = load_encoder("alone", MODELS["pictures"], "cpu", args.batch, 4096 * 4096)
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "PROTONET_DATA_DIR": str(Path(tmp) / "data"),
            "PROTONET_MODELS": ",".join(f"{name}={path}" for name, path in MODELS.items()),
            "PROTONET_TORCH_THREADS": str(args.threads),
            "HF_HUB_OFFLINE": "1",
            "PROTONET_LOG_LEVEL": "warning",
        }
        started = time.perf_counter()
        with (
            local_server(env, log_file=Path(tmp) / "server.log") as server,
            ProtonetClient(server.url, timeout=600) as client,
        ):
            ready = time.perf_counter() - started
            pid = server.process.pid
            print(f"(a) three models ready in {ready:.1f} s; RSS {rss_mib(pid):.0f} MiB")
            client.create_collection("emoji", model="pictures")
            support = [(f"emoji-{i // 2}", file) for i, file in enumerate(files[-SUPPORT:])]
            client.add_support("emoji", support)
            http_single = latencies(client, "emoji", files, args.requests)
            alone_single = alone_latencies(encoder, files, min(200, args.requests))
            http_batch, alone_batch = interleaved_rounds(
                client, "emoji", encoder, files[: args.batch], args.rounds
            )
            rss_after = rss_mib(pid)
    print(f"(b) one picture per request:  HTTP {milliseconds(http_single)}")
    print(f"                      encoder alone {milliseconds(alone_single)}")
    for what, pick in (("median", statistics.median), ("best", min)):
        http_rate, alone_rate = args.batch / pick(http_batch), args.batch / pick(alone_batch)
        print(
            f"(c) {args.batch} per request, {what} of {args.rounds} rounds: HTTP {http_rate:6.1f}/s"
            f"   encoder alone {alone_rate:6.1f}/s   ratio {http_rate / alone_rate:.2f}"
        )
    print(f"(d) server RSS after (b) and (c): {rss_after:.0f} MiB")


if __name__ == "__main__":
    main()
