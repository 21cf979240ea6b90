"""A 3-channel (RGB) checkpoint through the service's path: encoded image -> ``to_pixels`` ->
``pixels_to_tensor`` -> the inference-optimized encoder -> ``embed``."""

import io

import numpy as np
import torch
from PIL import Image, ImageDraw

from protonet.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from protonet.embedding import embed, optimize_for_inference
from protonet.model import EncoderConfig, build_encoder
from protonet.preprocessing import InputSpec, pixels_to_tensor, to_pixels

RGB = InputSpec(image_size=28, channels=3)
# Equal lightness for Pillow's grey conversion (L = 0.299 R + 0.587 G + 0.114 B = 76): a
# grayscale model cannot tell these apart, a colour one must.
RED, GREEN = (255, 0, 0), (0, 130, 0)


def png_square(colour: tuple[int, int, int]) -> bytes:
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    ImageDraw.Draw(image).rectangle((16, 16, 47, 47), fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def tiny_rgb_checkpoint(tmp_path) -> Checkpoint:
    torch.manual_seed(0)
    config = EncoderConfig(in_channels=3, hidden_channels=8, out_channels=8)
    saved = Checkpoint(config, RGB, build_encoder(config).state_dict())
    return load_checkpoint(save_checkpoint(saved, tmp_path / "rgb.pt"))  # weights_only load


def service_embedding(checkpoint: Checkpoint, images: list[bytes]) -> torch.Tensor:
    spec = checkpoint.input_spec
    pixels = np.stack([to_pixels(image, spec) for image in images])
    inputs = pixels_to_tensor(torch.from_numpy(pixels), spec)
    network = optimize_for_inference(checkpoint.build_encoder(), inputs)
    return embed(network, inputs)


def test_an_rgb_checkpoint_embeds_rgb_pngs_in_colour(tmp_path):
    checkpoint = tiny_rgb_checkpoint(tmp_path)
    assert checkpoint.input_spec.channels == 3
    red, green = png_square(RED), png_square(GREEN)
    assert to_pixels(red, checkpoint.input_spec).shape == (28, 28, 3)
    grey = InputSpec(image_size=28, channels=1)
    np.testing.assert_array_equal(to_pixels(red, grey), to_pixels(green, grey))

    embeddings = service_embedding(checkpoint, [red, green, red])
    assert embeddings.shape == (3, 8) and torch.isfinite(embeddings).all()
    torch.testing.assert_close(embeddings[0], embeddings[2])
    assert not torch.allclose(embeddings[0], embeddings[1], atol=1e-4)  # colour reaches the model


def test_grayscale_and_transparent_inputs_become_rgb_for_an_rgb_checkpoint():
    grey = Image.new("L", (40, 40), 128)
    clear = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    assert (to_pixels(grey, RGB) == 128).all()
    assert (to_pixels(clear, RGB) == 255).all()  # flattened onto white paper
