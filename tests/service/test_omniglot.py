"""Real Omniglot drawings (images_evaluation: alphabets the bundled model never trained on)
registered and classified through the HTTP API with the bundled model."""

from __future__ import annotations

import numpy as np
import pytest

from tests.service.helpers import make_settings, sample_characters, serve

pytestmark = pytest.mark.anyio

WAY, SHOT, QUERIES = 5, 5, 15


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
