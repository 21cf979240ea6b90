"""The picture model through the HTTP service, as `make run` serves it (a benchmark, not a test).

Starts ``python -m service`` with the three bundled models (Makefile's MODELS), then prints:

(a) start-up: seconds from the process's start to ``/readyz`` 200, and its RSS then;
(b) latency: one picture per request at concurrency 1 (a collection of 5 emoji, 2 drawings
    each), p50 and p99 over ``--requests``, beside the served encoder alone (decode, preprocess
    and embed one picture, the same code in this process);
(c) throughput: 64 pictures per request, pictures/s through HTTP against the encoder alone
    (decode, preprocess and embed 64 pictures), side by side, and their ratio;
(d) the server's RSS after (b) and (c).

    python benchmarks/picture_service.py --threads 2
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

from service.client import ProtonetClient
from service.collections.encoder import load_encoder
from service.launcher import REPO_ROOT, local_server

DATA = REPO_ROOT.parent / "shared" / "data" / "emoji"
MODELS = {
    "omniglot": REPO_ROOT / "models" / "omniglot-conv4.pt",
    "intents": REPO_ROOT / "models" / "banking77-minilm.pt",
    "pictures": REPO_ROOT / "models" / "pictures-mobilenetv2.pt",
}
BATCH = 64


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


def http_throughput(client: ProtonetClient, name: str, files: list[bytes], rounds: int) -> float:
    items = files[:BATCH]
    client.query(name, items)  # warm-up
    started = time.perf_counter()
    for _ in range(rounds):
        client.query(name, items, top_k=1)
    return BATCH * rounds / (time.perf_counter() - started)


def encoder_alone(files: list[bytes], rounds: int) -> tuple[list[float], float]:
    """One-picture latencies and 64-picture throughput of the served encoder in this process:
    decode and preprocess (stage one), then embed, as the service does for a query."""
    encoder = load_encoder("alone", MODELS["pictures"], "cpu", BATCH, 4096 * 4096)

    def embed(batch: list[bytes]) -> None:
        encoder.embed_batch(encoder.stack([encoder.stage_one(data) for data in batch]))

    embed(files[:BATCH])  # warm-up
    single = []
    for data in files[:200]:
        started = time.perf_counter()
        embed([data])
        single.append(time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(rounds):
        embed(files[:BATCH])
    return single, BATCH * rounds / (time.perf_counter() - started)


def milliseconds(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)))]
    return f"p50 {1000 * statistics.median(ordered):6.1f} ms  p99 {1000 * p99:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--threads", type=int, default=2, help="PROTONET_TORCH_THREADS")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10, help="64-picture requests")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    files = pictures(args.data / "google", 400)
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
            support = [(f"emoji-{i // 2}", files[300 + i]) for i in range(10)]
            client.add_support("emoji", support)
            http_single = latencies(client, "emoji", files, args.requests)
            http_batch = http_throughput(client, "emoji", files, args.rounds)
            rss_after = rss_mib(pid)
    alone_single, alone_batch = encoder_alone(files, args.rounds)
    print(f"(b) one picture per request:  HTTP {milliseconds(http_single)}")
    print(f"                      encoder alone {milliseconds(alone_single)}")
    ratio = http_batch / alone_batch
    print(
        f"(c) {BATCH} per request: HTTP {http_batch:6.1f}/s   encoder alone {alone_batch:6.1f}/s"
        f"   ratio {ratio:.2f}"
    )
    print(f"(d) server RSS after (b) and (c): {rss_after:.0f} MiB")


if __name__ == "__main__":
    main()
