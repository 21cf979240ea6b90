"""A colour (3-channel) checkpoint served end to end: the service reports its input spec and
tells two colours apart that a grayscale model could not (equal grey lightness)."""

from __future__ import annotations

import pytest
import torch

from protonet.checkpoint import Checkpoint, save_checkpoint
from protonet.model import EncoderConfig, build_encoder
from protonet.preprocessing import InputSpec
from tests.protonet.test_rgb_checkpoint import GREEN, RED, png_square
from tests.service.helpers import image_item, make_settings, serve

pytestmark = pytest.mark.anyio


async def test_a_colour_model_serves_in_colour(tmp_path):
    torch.manual_seed(0)
    config = EncoderConfig(in_channels=3)
    checkpoint = save_checkpoint(
        Checkpoint(config, InputSpec(channels=3), build_encoder(config).state_dict()),
        tmp_path / "rgb.pt",
    )
    async with serve(make_settings(tmp_path, checkpoint)) as running:
        http = running.http
        model = (await http.get("/v1/model")).json()
        assert model["input"]["channels"] == 3
        await http.post("/v1/collections", json={"name": "colours"})
        support = [
            {"label": name, **image_item(png_square(colour))}
            for name, colour in (("red", RED), ("green", GREEN))
        ]
        added = await http.post("/v1/collections/colours/support", json={"examples": support})
        assert added.status_code == 200, added.text
        for name, colour in (("red", RED), ("green", GREEN)):
            answer = await http.post(
                "/v1/collections/colours/query",
                json={"queries": [image_item(png_square(colour))], "top_k": 2},
            )
            result = answer.json()["results"][0]
            assert result["label"] == name and result["distance"] < 1e-3
            assert result["top_k"][1]["distance"] > 1e-3  # the other colour is elsewhere
