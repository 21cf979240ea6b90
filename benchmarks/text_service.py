"""Banking77 through the HTTP service, as a user would do it (a benchmark, not a test).

Starts ``python -m service`` serving the bundled image model and two text models side by side
(PROTONET_MODELS): a text head (``--checkpoint``: by default the bundled model, which is now
itself an identity head; ``runs/banking77-minilm/best.pt`` for the meta-learned one) and the
frozen base alone (an identity head, written here: plain prototypes of the all-MiniLM-L6-v2
embeddings). Then:

(a) issue 16's setting 2: per draw (seeded), 8 examples of each of the 77 intents from
    train.csv into one collection per text model, and every text of test.csv as queries;
    accuracy per draw, mean and 95% interval (1.96 standard errors over the draws);
(b) throughput: one-sentence and ``--batch``-sentence (64) queries through HTTP, against the
    served encoder alone (the same code, in this process), printed side by side.

    HF_HUB_OFFLINE=1 python benchmarks/text_service.py --draws 10 --threads 2
    HF_HUB_OFFLINE=1 python benchmarks/text_service.py --smoke    # 1 draw, 20 queries (tests)
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import smoke
from protonet.model import build_encoder, linear_head_config
from protonet.preprocessing import InputSpec
from service.client import ProtonetClient, text
from service.collections.encoder import load_encoder
from service.launcher import REPO_ROOT, local_server
from service.settings import BUNDLED_CHECKPOINT

DATA = REPO_ROOT.parent / "shared" / "data" / "banking77"
TRAINED = REPO_ROOT / "models" / "banking77-minilm.pt"
CHUNK = 256  # PROTONET_MAX_ITEMS_PER_REQUEST's default


def read_csv(path: Path) -> list[tuple[str, str]]:
    """``(text, intent)`` rows of a Banking77 file."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [(row["text"], row["category"]) for row in csv.DictReader(handle)]


def base_checkpoint(path: Path) -> Path:
    """The frozen base alone: an identity head over the installed all-MiniLM-L6-v2."""
    from protonet.checkpoint import Checkpoint, save_checkpoint
    from protonet.text import base_identity

    spec = base_identity()
    config = linear_head_config(spec.base_dim)
    head = build_encoder(config).state_dict()
    return save_checkpoint(Checkpoint(config, InputSpec(), head, text_spec=spec), path)


def draw_support(train: list[tuple[str, str]], shots: int, seed: int) -> list[tuple[str, str]]:
    """``shots`` seeded examples of every intent: ``(intent, text)`` pairs."""
    by_intent: dict[str, list[str]] = defaultdict(list)
    for sentence, intent in train:
        by_intent[intent].append(sentence)
    rng = np.random.default_rng(seed)
    return [
        (intent, by_intent[intent][i])
        for intent in sorted(by_intent)
        for i in rng.choice(len(by_intent[intent]), size=shots, replace=False)
    ]


def accuracy(
    client: ProtonetClient, model: str, support: list[tuple[str, str]], test: list[tuple[str, str]]
) -> float:
    """One draw: a collection bound to ``model``, the support set, every test text queried."""
    name = f"banking77-{model}"
    client.create_collection(name, index="exact", model=model)
    try:
        for start in range(0, len(support), CHUNK):
            chunk = support[start : start + CHUNK]
            client.add_support(name, [(intent, text(sentence)) for intent, sentence in chunk])
        correct = 0
        for start in range(0, len(test), CHUNK):
            chunk = test[start : start + CHUNK]
            answer = client.query(name, [text(sentence) for sentence, _ in chunk], top_k=1)
            correct += sum(
                result["label"] == intent
                for result, (_, intent) in zip(answer["results"], chunk, strict=True)
            )
        return correct / len(test)
    finally:
        client.delete_collection(name)


def throughput(client: ProtonetClient, sentences: list[str], batch: int, requests: int) -> float:
    """Sentences per second of ``requests`` sequential queries of ``batch`` sentences each."""
    name = "banking77-speed"
    items = [text(sentence) for sentence in sentences]
    client.query(name, items[:batch], top_k=1)  # warm-up
    started = time.perf_counter()
    for r in range(requests):
        offset = (r * batch) % (len(items) - batch)
        client.query(name, items[offset : offset + batch], top_k=1)
    return batch * requests / (time.perf_counter() - started)


def encoder_throughput(checkpoint: Path, sentences: list[str], batch: int, rounds: int) -> float:
    """The served text encoder alone (same code, this process): sentences per second."""
    encoder = load_encoder("alone", checkpoint, "cpu", 256, 1)
    encoder.embed_batch(sentences[:batch])  # warm-up
    started = time.perf_counter()
    for r in range(rounds):
        offset = (r * batch) % (len(sentences) - batch)
        encoder.embed_batch(sentences[offset : offset + batch])
    return batch * rounds / (time.perf_counter() - started)


def interval(values: list[float]) -> str:
    mean = float(np.mean(values))
    half = 1.96 * float(np.std(values)) / math.sqrt(len(values))
    return f"{100 * mean:.2f}% ± {100 * half:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=TRAINED)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="PROTONET_TORCH_THREADS")
    parser.add_argument("--single-requests", type=int, default=200)
    parser.add_argument("--batch-requests", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64, help="sentences per batch request")
    parser.add_argument("--test-texts", type=int, default=0, help="(a)'s queries: 0 = all")
    sizes = {"draws": 1, "shots": 1, "test_texts": 20, "batch": 8}
    args = smoke.parse_args(parser, {**sizes, "single_requests": 3, "batch_requests": 2})
    torch.set_num_threads(args.threads)
    train, test = read_csv(args.data / "train.csv"), read_csv(args.data / "test.csv")
    queried = test[: args.test_texts or None]
    print(f"checkpoint {args.checkpoint}; {len(train)} train, {len(test)} test texts")
    with tempfile.TemporaryDirectory() as tmp:
        base = base_checkpoint(Path(tmp) / "minilm-base.pt")
        env = {
            "PROTONET_DATA_DIR": str(Path(tmp) / "data"),
            "PROTONET_MODELS": f"omniglot={BUNDLED_CHECKPOINT},"
            f"intents={args.checkpoint.resolve()},base={base}",
            "PROTONET_TORCH_THREADS": str(args.threads),
            "HF_HUB_OFFLINE": "1",
            "PROTONET_LOG_LEVEL": "warning",
        }
        log = Path(tmp) / "server.log"
        with (
            local_server(env, log_file=log) as server,
            ProtonetClient(server.url, timeout=600) as client,
        ):
            print(
                f"(a) all 77 intents, {args.shots} examples each from train.csv, "
                f"{'whole test.csv' if queried is test else f'{len(queried)} test texts'}, "
                "via HTTP"
            )
            results: dict[str, list[float]] = {"intents": [], "base": []}
            for draw in range(args.draws):
                support = draw_support(train, args.shots, args.seed + draw)
                for model in results:
                    results[model].append(accuracy(client, model, support, queried))
                print(
                    f"  draw {draw}: " + ", ".join(f"{m} {v[-1]:.4f}" for m, v in results.items())
                )
            for model, values in results.items():
                if values:  # --draws 0: throughput alone
                    print(f"  {model:8s} {interval(values)}  ({len(values)} draws)")
            print("(b) query throughput, sentences/s (HTTP vs the encoder alone)")
            client.create_collection("banking77-speed", index="exact", model="intents")
            support = draw_support(train, args.shots, args.seed)
            for start in range(0, len(support), CHUNK):
                chunk = support[start : start + CHUNK]
                client.add_support("banking77-speed", [(i, text(s)) for i, s in chunk])
            sentences = [sentence for sentence, _ in test]
            for batch, requests in ((1, args.single_requests), (args.batch, args.batch_requests)):
                http = throughput(client, sentences, batch, requests)
                alone = encoder_throughput(args.checkpoint, sentences, batch, requests)
                print(
                    f"  {batch:3d} per request: HTTP {http:7.1f}/s   encoder alone {alone:7.1f}/s"
                )


if __name__ == "__main__":
    main()
