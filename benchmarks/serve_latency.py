"""Query latency of the real service over loopback (a benchmark, not a test).

Starts ``python -m service`` (uvicorn) on a free port with a temporary data directory,
registers a few classes, then sends N sequential single-image queries and prints latency
percentiles. Defaults to the bundled model.

    python benchmarks/serve_latency.py --queries 500 --classes 20 --threads 1
    python benchmarks/serve_latency.py --smoke    # a few queries (tests)
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import smoke
from service.client import ProtonetClient
from service.launcher import local_server


def drawing(strokes: np.ndarray, rng: np.random.Generator) -> bytes:
    """A 105x105 PNG of black ``strokes [k, 4]`` on white, jittered: one drawing of a class."""
    image = Image.new("L", (105, 105), 255)
    pen = ImageDraw.Draw(image)
    for stroke in strokes + rng.integers(-4, 5, size=strokes.shape):
        pen.line(tuple(int(v) for v in stroke), fill=0, width=5)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def measure(client: ProtonetClient, queries: list[bytes], warmup: int) -> np.ndarray:
    """Milliseconds per sequential single-image query ``[len(queries)]`` after ``warmup``."""
    for image in queries[:warmup]:
        client.query("bench", [image], top_k=5)
    latencies = []
    for image in queries:
        start = time.perf_counter()
        client.query("bench", [image], top_k=5)
        latencies.append((time.perf_counter() - start) * 1000)
    return np.array(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="PROTONET_TORCH_THREADS")
    parser.add_argument("--checkpoint", type=Path, help="default: the bundled model")
    args = smoke.parse_args(parser, {"queries": 5, "classes": 2, "shots": 2})

    rng = np.random.default_rng(0)
    templates = [rng.integers(10, 95, size=(3, 4)) for _ in range(args.classes)]
    support = [
        (f"class{c}", drawing(template, rng))
        for c, template in enumerate(templates)
        for _ in range(args.shots)
    ]
    queries = [drawing(templates[i % args.classes], rng) for i in range(args.queries)]
    with tempfile.TemporaryDirectory() as data_dir:
        env = {"PROTONET_DATA_DIR": data_dir, "PROTONET_TORCH_THREADS": str(args.threads)}
        env["PROTONET_LOG_LEVEL"] = "warning"
        if args.checkpoint:
            env["PROTONET_CHECKPOINT"] = str(args.checkpoint.resolve())
        with local_server(env) as server, ProtonetClient(server.url) as client:
            client.create_collection("bench")
            client.add_support("bench", support)
            latencies = measure(client, queries, warmup=min(20, args.queries))
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    print(
        f"{args.queries} sequential single-image queries, {args.classes} classes x "
        f"{args.shots} shots, torch threads {args.threads}: "
        f"p50 {p50:.2f} ms, p90 {p90:.2f} ms, p99 {p99:.2f} ms, mean {latencies.mean():.2f} ms"
    )


if __name__ == "__main__":
    main()
