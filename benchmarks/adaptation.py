"""Adapting a collection to its own examples (issue 27): accuracy with and without the adapter,
and what adapting costs the service (a benchmark, not a test).

    python benchmarks/adaptation.py accuracy   # the README's table, in process (tens of minutes)
    python benchmarks/adaptation.py cost       # through HTTP: job times, query latency ratios
    python benchmarks/adaptation.py --smoke    # both, at tiny sizes on small copies (tests)

``accuracy`` runs the service's own adaptation (protonet/adaptation.py's ``adapt``: held-out
folds decide, then the adapter trained on every example) on collections of classes never
trained, validated or selected on, and classifies their other examples; beside it, the adapter
adopted whatever the folds say ("always"), to show what the decision guards against:

- Banking77, all 77 intents as one collection of 8 train texts each (seeded draws), every
  test text a query, through the bundled text head; also on the 27 intents it never saw;
- Omniglot ``images_evaluation`` (alphabets the bundled model never saw), 20-way 5-shot
  collections, the other 15 drawings of each class as queries;
- a far domain for the Omniglot model: emoji pictures of the test subcategories
  (training/emoji.py: Google, Twitter and twelve Iconify sets; the emoji data's README has
  their licences), through the Omniglot Conv-4 in its own input (grey, 28 px), 20-way 5-shot,
  every other drawing (other vendors) a query.

``cost`` starts ``python -m service`` (the Omniglot and text models, 1 torch thread) and times,
side by side on the same server: a job over 20 classes x 5 pictures and one over 150 classes x 8
texts (Banking77's 77 intents, each cut into two classes of 8 texts); single-query latency
while nothing else runs and while the 150 x 8 job runs (p99 ratio); single-query latency of one
collection before and after its adapter is adopted (p50 ratio). Timing figures are only
meaningful with nothing else running on the machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import smoke
from benchmarks.machine import machine
from protonet.adaptation import AdaptationConfig, adapt, train_adapter
from protonet.checkpoint import load_checkpoint
from protonet.prototypes import compute_prototypes, squared_euclidean
from service.client import ImageLike, ProtonetClient, text
from service.launcher import REPO_ROOT, local_server

DATA = REPO_ROOT.parent / "shared" / "data"
MODELS = REPO_ROOT / "models"
TEXT_MODEL = MODELS / "banking77-minilm.pt"
IMAGE_MODEL = MODELS / "omniglot-conv4.pt"
CHUNK = 200  # examples per request (the service takes at most 256)


# -- accuracy, in process ---------------------------------------------------------------------


@dataclass
class Tally:
    """Per collection: accuracy unadapted, as decided, and with the adapter always; and how
    many collections adopted theirs."""

    unadapted: list[float] = field(default_factory=list)
    decided: list[float] = field(default_factory=list)
    always: list[float] = field(default_factory=list)
    adopted: int = 0
    seconds: float = 0.0

    def row(self, name: str) -> str:
        def cell(values: list[float]) -> str:
            if not values:
                return "–"
            half = 1.96 * np.std(values) / np.sqrt(len(values))
            return f"{100 * np.mean(values):.2f} ± {100 * half:.2f}"

        gain = 100 * (np.mean(self.decided) - np.mean(self.unadapted))
        return (
            f"| {name} | {len(self.unadapted)} | {cell(self.unadapted)} | {cell(self.decided)} "
            f"| {self.adopted} of {len(self.unadapted)} | {cell(self.always)} | {gain:+.2f} "
            f"| {self.seconds / len(self.unadapted):.1f} |"
        )


def correct(
    support: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor, truth: torch.Tensor
) -> torch.Tensor:
    """``[q]`` bool: each query's nearest prototype is its class's."""
    prototypes, classes = compute_prototypes(support, labels)
    return classes[squared_euclidean(queries, prototypes).argmin(dim=1)] == truth


def judge(
    tally: Tally,
    support: torch.Tensor,
    labels: torch.Tensor,
    queries: torch.Tensor,
    truth: torch.Tensor,
    groups: dict[str, torch.Tensor] | None = None,
) -> dict[str, tuple[float, ...]]:
    """One collection into ``tally``; per group of queries, ``(unadapted, decided, always)``
    accuracy."""
    started = time.perf_counter()
    result = adapt(support, labels)
    tally.seconds += time.perf_counter() - started
    always = result.adapter or train_adapter(
        support, labels, AdaptationConfig(), torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        plain = correct(support, labels, queries, truth)
        mapped = correct(always.apply(support), labels, always.apply(queries), truth)
    decided = mapped if result.adapter is not None else plain
    tally.adopted += result.adapter is not None
    for values, hits in ((tally.unadapted, plain), (tally.decided, decided)):
        values.append(float(hits.float().mean()))
    tally.always.append(float(mapped.float().mean()))
    masks = groups or {}
    return {
        name: tuple(float(hits[mask].float().mean()) for hits in (plain, decided, mapped))
        for name, mask in masks.items()
    }


def banking77(draws: int, shots: int, data: Path) -> tuple[Tally, Tally]:
    """All 77 intents, ``shots`` each: over every test text, and over the 27 held-out
    intents'."""
    from training.text_evaluate import all_intents_draws, embed_split

    checkpoint = load_checkpoint(TEXT_MODEL, modality="text")
    train = embed_split(checkpoint, data, "train", None, progress=True)
    test = embed_split(checkpoint, data, "test", None, progress=True)
    names = test.texts.class_names
    held_out = [names.index(n) for n in checkpoint.metadata["intents"]["held_out"]]
    all_intents, unseen = Tally(), Tally()
    y_train, y_test = torch.from_numpy(train.texts.labels), torch.from_numpy(test.texts.labels)
    for support, queries in all_intents_draws(train.texts, test.texts, shots, draws, seed=0):
        mask = torch.from_numpy(np.isin(test.texts.labels[queries], held_out))
        groups = judge(
            all_intents,
            train.head[support],
            y_train[support],
            test.head[queries],
            y_test[queries],
            {"held out": mask},
        )
        for values, value in zip(
            (unseen.unadapted, unseen.decided, unseen.always), groups["held out"], strict=True
        ):
            values.append(value)
        print(f"  banking77 draw {len(all_intents.unadapted)}: {all_intents.row('')}", flush=True)
    unseen.adopted, unseen.seconds = all_intents.adopted, all_intents.seconds
    return all_intents, unseen


def episodes(
    labels: np.ndarray, way: int, shot: int, count: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(support, queries)`` indices: ``way`` classes of at least ``shot + 1`` examples,
    ``shot`` of each as support and all the others as queries."""
    rng = np.random.default_rng(seed)
    members = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    eligible = sorted(c for c, m in members.items() if len(m) > shot)
    drawn = []
    for _ in range(count):
        chosen = [rng.permutation(members[c]) for c in rng.choice(eligible, way, replace=False)]
        support = np.concatenate([m[:shot] for m in chosen])
        drawn.append((support, np.concatenate([m[shot:] for m in chosen])))
    return drawn


def image_episodes(
    embeddings: torch.Tensor, labels: np.ndarray, count: int, way: int = 20, shot: int = 5
) -> Tally:
    """``way``-way ``shot``-shot collections of the given images (the same seeded episodes
    every run)."""
    tally, y = Tally(), torch.from_numpy(labels)
    for support, queries in episodes(labels, way, shot, count, seed=0):
        judge(tally, embeddings[support], y[support], embeddings[queries], y[queries])
    return tally


def omniglot_and_emoji(args: argparse.Namespace, data: Folders) -> tuple[Tally, Tally]:
    from training.evaluate import embed_imageset
    from training.omniglot import load_split

    checkpoint = load_checkpoint(IMAGE_MODEL)
    encoder, spec = checkpoint.build_encoder(), checkpoint.input_spec
    sizes = (args.episodes, args.way, args.shot)
    evaluation = load_split(data.omniglot, "evaluation", spec, progress=False)
    omniglot = image_episodes(embed_imageset(encoder, evaluation, spec), evaluation.labels, *sizes)
    emoji = test_emoji(data.emoji)
    far = image_episodes(embed_imageset(encoder, emoji, spec), emoji.labels, *sizes)
    return omniglot, far


def test_emoji(folder: Path) -> Any:
    """The emoji of the test subcategories, in the Omniglot model's input (an ImageSet)."""
    from training.emoji import load_emoji, split_emoji

    spec = load_checkpoint(IMAGE_MODEL).input_spec
    return split_emoji(load_emoji(folder, spec, progress=False), "test")


def accuracy(args: argparse.Namespace, data: Folders) -> None:
    torch.set_num_threads(args.threads)
    print(machine())
    header = (
        "| collections | n | unadapted (%) | adapted, as decided (%) | adopted | adapter always "
        "(%) | gain (points) | s per adaptation |"
    )
    rows = [header, "|---|---|---|---|---|---|---|---|"]
    started = time.perf_counter()
    if args.draws:
        every, unseen = banking77(args.draws, args.shots, data.banking77)
        rows += [every.row(f"Banking77, 77 intents x {args.shots} texts, all test texts")]
        rows += [unseen.row("the same, the 27 held-out intents")]
    if args.episodes:
        omniglot, far = omniglot_and_emoji(args, data)
        setting = f"{args.way}-way {args.shot}-shot"
        rows += [omniglot.row(f"Omniglot images_evaluation, {setting}")]
        rows += [far.row(f"emoji (test subcategories) via the Omniglot model, {setting}")]
    print("\n".join(rows))
    print(f"({time.perf_counter() - started:.0f} s in all)")


# -- cost, through HTTP -----------------------------------------------------------------------


def latencies(
    client: ProtonetClient,
    name: str,
    query: ImageLike,
    seconds: float,
    until: threading.Event | None = None,
) -> np.ndarray:
    """Sequential single queries for ``seconds`` (or until ``until`` is set): their
    latencies in ms."""
    times, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline and not (until is not None and until.is_set()):
        started = time.perf_counter()
        client.query(name, [query], top_k=1)
        times.append(1000 * (time.perf_counter() - started))
    return np.array(times)


def alternating(
    client: ProtonetClient, names: list[str], query: ImageLike, args: argparse.Namespace
) -> list[np.ndarray]:
    """Single queries to each collection in turn for ``args.seconds``: latencies (ms) each,
    measured side by side (the machine's load changes both alike)."""
    times: list[list[float]] = [[] for _ in names]
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        for own, name in zip(times, names, strict=True):
            started = time.perf_counter()
            client.query(name, [query], top_k=1)
            own.append(1000 * (time.perf_counter() - started))
    return [np.array(own) for own in times]


def fill(
    client: ProtonetClient, name: str, model: str, examples: list[tuple[str, ImageLike]]
) -> None:
    client.create_collection(name, model=model)
    for begin in range(0, len(examples), CHUNK):
        client.add_support(name, examples[begin : begin + CHUNK])


def adapt_and_time(client: ProtonetClient, name: str) -> tuple[dict, float]:
    started = time.perf_counter()
    job = client.wait_for_adaptation(name, client.adapt(name)["id"], timeout=1800, interval=0.2)
    return job, time.perf_counter() - started


def emoji_support(folder: Path, classes: int, shots: int) -> list[tuple[str, ImageLike]]:
    """``classes`` emoji of the test subcategories with ``shots`` PNG/SVG drawings each."""
    emoji = test_emoji(folder)
    picked = [c for c in range(emoji.n_classes) if (emoji.labels == c).sum() > shots][:classes]
    return [
        (f"e{c}", emoji.pixels[i].astype(np.float64) / 255.0)
        for c in picked
        for i in np.flatnonzero(emoji.labels == c)[:shots]
    ]


def intent_support(folder: Path, classes: int, shots: int) -> list[tuple[str, ImageLike]]:
    """``classes`` classes of ``shots`` train texts: each intent cut into two classes."""
    import csv

    with open(folder / "train.csv", newline="", encoding="utf-8") as handle:
        rows = [(row["category"], row["text"]) for row in csv.DictReader(handle)]
    by_intent: dict[str, list[str]] = {}
    for intent, sentence in rows:
        by_intent.setdefault(intent, []).append(sentence)
    pieces = [
        (f"{intent}-{half}", texts[half * shots : (half + 1) * shots])
        for intent, texts in sorted(by_intent.items())
        for half in (0, 1)
        if len(texts) >= (half + 1) * shots
    ]
    return [(label, text(s)) for label, texts in pieces[:classes] for s in texts]


def cost(args: argparse.Namespace, data: Folders) -> None:
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "PROTONET_DATA_DIR": str(Path(tmp) / "data"),
            "PROTONET_MODELS": f"omniglot={IMAGE_MODEL},intents={TEXT_MODEL}",
            "PROTONET_TORCH_THREADS": str(args.threads),
            "HF_HUB_OFFLINE": "1",
            "PROTONET_LOG_LEVEL": "warning",
        }
        with (
            local_server(env, log_file=Path(tmp) / "server.log") as server,
            ProtonetClient(server.url, timeout=600) as client,
        ):
            pictures = emoji_support(data.emoji, args.picture_classes, args.picture_shots)
            fill(client, "pictures", "omniglot", pictures)
            fill(client, "pictures-plain", "omniglot", pictures)  # the same, never adapted
            job, wall = adapt_and_time(client, "pictures")
            size = f"{args.picture_classes} classes x {args.picture_shots} pictures"
            print(f"{size}: {job['status']} {job['decision']} in {wall:.1f} s")
            if job["decision"] == "adopted":
                query = pictures[0][1]
                adapted, plain = alternating(client, ["pictures", "pictures-plain"], query, args)
                ratio(f"query p50 with / without the adapter (v{job['id']})", adapted, plain, 50)
            busy_service(client, args, data)


def busy_service(client: ProtonetClient, args: argparse.Namespace, data: Folders) -> None:
    """The 150 x 8 text job, and query latency beside it against idle."""
    support = intent_support(data.banking77, args.text_classes, args.text_shots)
    fill(client, "intents", "intents", support)
    fill(client, "probe", "intents", [("a", text("my card is lost")), ("b", text("top up"))])
    probe = text("where is my card")
    idle = latencies(client, "probe", probe, args.seconds)
    during: list[np.ndarray] = []
    done = threading.Event()

    def measure() -> None:
        with ProtonetClient(str(client.http.base_url), timeout=600) as other:
            during.append(latencies(other, "probe", probe, float("inf"), done))

    thread = threading.Thread(target=measure)
    thread.start()
    try:
        job, wall = adapt_and_time(client, "intents")
    finally:
        done.set()
        thread.join()
    size = f"{args.text_classes} classes x {args.text_shots} texts"
    print(f"{size}: {job['status']} {job['decision']} in {wall:.1f} s")
    ratio("query p99 during the job / idle", during[0], idle, 99)


def ratio(what: str, measured: np.ndarray, reference: np.ndarray, q: int) -> None:
    a, b = np.percentile(measured, q), np.percentile(reference, q)
    print(f"{what}: {a:.1f} / {b:.1f} ms = {a / b:.2f} ({len(measured)} and {len(reference)})")


@dataclass(frozen=True)
class Folders:
    """Where the data sets are read from: ../shared/data's, or small copies (--smoke)."""

    banking77: Path
    omniglot: Path
    emoji: Path


# --smoke: every intent with 4 texts per file; 10 characters of one images_evaluation alphabet;
# 10 emoji of the test subcategories drawn by the 2 PNG vendors and 2 Iconify sets.
SMOKE_OMNIGLOT, SMOKE_EMOJI, SMOKE_ICONS = {"Keble": 10}, 10, ("emojione", "noto")
SMOKE = {
    "draws": 1,
    "shots": 2,
    "episodes": 2,
    "way": 5,
    "shot": 2,
    "seconds": 0.3,
    "picture_classes": 5,
    "picture_shots": 2,
    "text_classes": 6,
    "text_shots": 2,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", choices=["accuracy", "cost"], help="default: both")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--draws", type=int, default=10, help="Banking77 collections")
    parser.add_argument("--shots", type=int, default=8, help="texts per intent (Banking77)")
    parser.add_argument("--episodes", type=int, default=100, help="image collections")
    parser.add_argument("--way", type=int, default=20, help="classes per image collection")
    parser.add_argument("--shot", type=int, default=5, help="images per class (collections)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per latency phase (cost)")
    parser.add_argument("--picture-classes", type=int, default=20, help="(cost)")
    parser.add_argument("--picture-shots", type=int, default=5, help="(cost)")
    parser.add_argument("--text-classes", type=int, default=150, help="(cost)")
    parser.add_argument("--text-shots", type=int, default=8, help="(cost)")
    parser.add_argument("--threads", type=int, default=1)
    args = smoke.parse_args(parser, SMOKE, argv)
    with (
        smoke.banking77(args.data / "banking77", args.smoke, 4) as banking77_folder,
        smoke.omniglot(args.data / "omniglot", args.smoke, SMOKE_OMNIGLOT) as omniglot_folder,
        smoke.emoji(args.data / "emoji", args.smoke, SMOKE_EMOJI, SMOKE_ICONS) as emoji_folder,
    ):
        data = Folders(banking77_folder, omniglot_folder, emoji_folder)
        parts: list[Callable[[argparse.Namespace, Folders], None]] = [accuracy, cost]
        for part in parts:
            if args.part in (None, part.__name__):
                part(args, data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
