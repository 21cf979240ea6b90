"""Real Omniglot drawings (images_evaluation: alphabets the bundled model never trained on)
registered and classified through the HTTP API with the bundled model."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.service.helpers import make_settings, serve

pytestmark = pytest.mark.anyio

WAY, SHOT, QUERIES = 5, 5, 15


def sample_characters(zip_path: Path, way: int, seed: int) -> dict[str, list[bytes]]:
    """``"Alphabet/characterNN" -> its 20 PNG files`` for ``way`` random characters."""
    with zipfile.ZipFile(zip_path) as archive:
        members: dict[str, list[str]] = {}
        for name in archive.namelist():
            parts = name.split("/")
            if len(parts) == 4 and parts[3].endswith(".png"):
                members.setdefault(f"{parts[1]}/{parts[2]}", []).append(name)
        chosen = np.random.default_rng(seed).choice(sorted(members), size=way, replace=False)
        return {c: [archive.read(m) for m in sorted(members[c])] for c in chosen}


async def test_five_way_five_shot_on_real_omniglot(tmp_path, omniglot_dir, bundled_model):
    characters = sample_characters(omniglot_dir / "images_evaluation.zip", WAY, seed=7)
    support = [(label, png) for label, pngs in characters.items() for png in pngs[:SHOT]]
    queries = [(label, png) for label, pngs in characters.items() for png in pngs[SHOT:][:QUERIES]]
    async with serve(make_settings(tmp_path, bundled_model)) as running:
        client = running.client
        await client.create_collection("omniglot")
        added = await client.add_support("omniglot", support)
        assert added["n_added"] == WAY * SHOT
        response = await client.query("omniglot", [png for _, png in queries], top_k=WAY)
    predicted = [result["label"] for result in response["results"]]
    accuracy = np.mean([p == label for p, (label, _) in zip(predicted, queries, strict=True)])
    assert accuracy >= 0.8, f"5-way 5-shot accuracy {accuracy:.3f} on {len(queries)} queries"
