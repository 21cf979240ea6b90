"""A query's answer does not depend on what else is in the request, or on its encoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.service.helpers import Drawings, image_item, pixels_item, serve

pytestmark = pytest.mark.anyio


async def test_query_alone_and_in_a_batch_agree(settings):
    """24 queries: a request larger than a micro-batch (16 rows), which goes alone."""
    drawings = Drawings(5)
    batch = [drawings.png(c % 5) for c in range(24)]
    async with serve(settings) as running:
        client = running.client
        await client.create_collection("c")
        await client.add_support(
            "c", [(f"k{c}", drawings.png(c)) for c in range(5) for _ in range(2)]
        )
        together = (await client.query("c", batch, top_k=5))["results"]
        for position in (0, 7, 23):
            alone = (await client.query("c", [batch[position]], top_k=5))["results"][0]
            in_batch = together[position]
            assert alone["label"] == in_batch["label"]
            assert [p["label"] for p in alone["top_k"]] == [p["label"] for p in in_batch["top_k"]]
            for a, b in zip(alone["top_k"], in_batch["top_k"], strict=True):
                assert a["distance"] == pytest.approx(b["distance"], rel=1e-4, abs=1e-5)
                assert a["probability"] == pytest.approx(b["probability"], rel=1e-3, abs=1e-6)


def encoded(pixels: np.ndarray, mode: str, file_format: str) -> bytes:
    """``pixels [H, W]`` in [0, 1] as an image file of another mode and format."""
    buffer = io.BytesIO()
    image = Image.fromarray(np.rint(pixels * 255).astype(np.uint8)).convert(mode)
    image.save(buffer, format=file_format, **({"lossless": True} if file_format == "WEBP" else {}))
    return buffer.getvalue()


async def test_pixels_and_image_files_of_one_drawing_embed_alike(settings):
    """One preprocessing path: a pixel list, a grayscale PNG and an RGBA WebP agree."""
    drawing = Drawings(1).pixels(0)  # [105, 105] floats, 0 = ink
    inputs = [
        pixels_item(drawing),
        image_item(encoded(drawing, "L", "PNG")),
        image_item(encoded(drawing, "RGBA", "WEBP")),
    ]
    async with serve(settings) as running:
        response = await running.http.post("/v1/embed", json={"inputs": inputs})
    embeddings = np.array(response.json()["embeddings"])
    np.testing.assert_allclose(embeddings[1], embeddings[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embeddings[2], embeddings[0], rtol=1e-5, atol=1e-6)
