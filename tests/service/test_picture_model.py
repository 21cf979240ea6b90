"""A picture model (a head over the frozen ImageNet MobileNetV2) served end to end over HTTP:
its card names the base, colour pictures of any mode and shape become support and queries."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw

from protonet.checkpoint import Checkpoint, save_checkpoint
from protonet.mobilenet import FEATURE_DIM, ImageBaseSpec
from protonet.model import build_encoder, linear_head_config
from protonet.preprocessing import picture_spec
from tests.service.helpers import image_item, make_settings, serve

pytestmark = pytest.mark.anyio


def picture(shape: str, colour: str, size: tuple[int, int], mode: str, fmt: str) -> bytes:
    """A shape on a transparent (or white) background, in ``mode``, encoded as ``fmt``."""
    image = Image.new("RGBA", size, (255, 255, 255, 0))
    draw = ImageDraw.Draw(image)
    side = min(size)
    box = ((size[0] - side) // 2 + 4, (size[1] - side) // 2 + 4)
    box = (*box, box[0] + side - 8, box[1] + side - 8)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=colour)
    if mode != "RGBA":
        paper = Image.new("RGBA", size, "white")
        image = Image.alpha_composite(paper, image).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def picture_checkpoint(path):
    head = linear_head_config(FEATURE_DIM)
    checkpoint = Checkpoint(
        head, picture_spec(64), build_encoder(head).state_dict(), image_base=ImageBaseSpec()
    )
    return save_checkpoint(checkpoint, path)


async def test_a_picture_collection_over_http(tmp_path):
    settings = make_settings(tmp_path, picture_checkpoint(tmp_path / "pictures.pt"))
    async with serve(settings) as running:
        http = running.http
        model = (await http.get("/v1/model")).json()
        assert model["input"]["channels"] == 3 and model["input"]["fit"] == "pad"
        assert model["card"]["image_base"]["weights_sha256"] == ImageBaseSpec().weights_sha256
        assert model["embedding_dim"] == FEATURE_DIM
        await http.post("/v1/collections", json={"name": "shapes"})
        support = [
            ("red circle", picture("circle", "red", (80, 80), "RGBA", "PNG")),
            ("red circle", picture("circle", "#dd0000", (64, 64), "P", "GIF")),
            ("blue square", picture("square", "blue", (80, 80), "CMYK", "JPEG")),
            ("blue square", picture("square", "#0000dd", (72, 72), "RGB", "WEBP")),
        ]
        examples = [{"label": label, **image_item(data)} for label, data in support]
        added = await http.post("/v1/collections/shapes/support", json={"examples": examples})
        assert added.status_code == 200, added.text
        queries = [
            picture("circle", "red", (160, 60), "RGB", "JPEG"),  # wide: padded, not stretched
            picture("square", "blue", (50, 120), "RGBA", "PNG"),  # tall
        ]
        answer = await http.post(
            "/v1/collections/shapes/query", json={"queries": [image_item(q) for q in queries]}
        )
        assert answer.status_code == 200, answer.text
        labels = [result["label"] for result in answer.json()["results"]]
        assert labels == ["red circle", "blue square"]
