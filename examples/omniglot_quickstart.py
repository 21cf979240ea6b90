"""Few-shot classification of Omniglot characters through a running protonet service.

Registers five characters from ``images_evaluation.zip`` (alphabets the bundled model never saw
in training) with five drawings each, then classifies the other drawings of them.

    .venv/bin/python -m service &                        # in the repository root
    .venv/bin/python examples/omniglot_quickstart.py     # or: ... http://host:port --seed 3

(``.venv/bin/python``, or plain ``python`` after ``source .venv/bin/activate``: the client
needs httpx, which the virtualenv has.)
"""

from __future__ import annotations

import argparse
import random
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run from anywhere without installing the package

from service.client import ProtonetClient  # noqa: E402

DEFAULT_ZIP = REPO_ROOT.parent / "shared" / "data" / "omniglot" / "images_evaluation.zip"
WAY, SHOT = 5, 5


def read_characters(zip_path: Path, way: int, seed: int) -> dict[str, list[bytes]]:
    """``"Alphabet/characterNN" -> its drawings (PNG bytes)`` for ``way`` random characters."""
    with zipfile.ZipFile(zip_path) as archive:
        drawings: dict[str, list[str]] = {}
        for name in archive.namelist():  # images_evaluation/<Alphabet>/<character>/<id>.png
            parts = name.split("/")
            if len(parts) == 4 and parts[3].endswith(".png"):
                drawings.setdefault(f"{parts[1]}/{parts[2]}", []).append(name)
        chosen = random.Random(seed).sample(sorted(drawings), way)
        return {label: [archive.read(m) for m in sorted(drawings[label])] for label in chosen}


def register(client: ProtonetClient, collection: str, characters: dict[str, list[bytes]]) -> None:
    """A fresh collection with the first ``SHOT`` drawings of each character."""
    if any(c["name"] == collection for c in client.list_collections()):
        client.delete_collection(collection)  # start from scratch on every run
    client.create_collection(collection)
    client.add_support(collection, {label: pngs[:SHOT] for label, pngs in characters.items()})
    print(f"registered {len(characters)} characters x {SHOT} drawings: {', '.join(characters)}")


def classify(client: ProtonetClient, collection: str, characters: dict[str, list[bytes]]) -> float:
    """Classify every other drawing of the characters; print the misses; return accuracy."""
    queries = [(label, png) for label, pngs in characters.items() for png in pngs[SHOT:]]
    results = client.query(collection, [png for _, png in queries], top_k=3)["results"]
    correct = 0
    for (label, _), result in zip(queries, results, strict=True):
        correct += result["label"] == label
        if result["label"] != label:
            print(f"  miss: {label} taken for {result['label']} (p={result['probability']:.2f})")
    return correct / len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:8000")
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="images_evaluation.zip")
    parser.add_argument("--seed", type=int, default=0, help="which characters to pick")
    parser.add_argument("--collection", default="omniglot-quickstart")
    args = parser.parse_args()

    characters = read_characters(args.zip, WAY, args.seed)
    with ProtonetClient(args.url) as client:
        client.wait_until_ready(timeout=120)
        print(f"model {client.model()['version']} at {args.url}")
        register(client, args.collection, characters)
        accuracy = classify(client, args.collection, characters)
    print(f"{WAY}-way {SHOT}-shot accuracy: {accuracy:.1%} (chance: {1 / WAY:.0%})")


if __name__ == "__main__":
    main()
