"""The picture path (pretrained ImageNet bases): RGB, alpha on white, aspect kept, normalised."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from protonet.errors import InvalidInputError
from protonet.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputSpec,
    picture_spec,
    pixels_to_tensor,
    preprocess,
    to_pixels,
)

SPEC = picture_spec(32)
RED = (255, 0, 0)


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_a_wide_picture_is_padded_with_white_keeping_its_aspect_ratio():
    pixels = to_pixels(encode(Image.new("RGB", (64, 16), RED)), SPEC)
    assert pixels.shape == (32, 32, 3)
    assert (pixels[16, :, :] == RED).all()  # the middle row: the picture, full width
    assert (pixels[0] == 255).all() and (pixels[-1] == 255).all()  # paper above and below
    assert (pixels[12:20, :, 0] == 255).all()


def test_stretch_specs_still_stretch():
    pixels = to_pixels(Image.new("RGB", (64, 16), RED), InputSpec(32, 3, invert=False))
    assert (pixels == RED).all()


def test_transparent_rgba_and_palette_pictures_lie_on_white_paper():
    rgba = Image.new("RGBA", (8, 8), (0, 0, 255, 0))
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 255] * 256)
    palette.info["transparency"] = 0
    for image in (rgba, palette):
        assert (to_pixels(encode(image), SPEC) == 255).all()


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no black, full magenta and yellow
    pixels = to_pixels(encode(cmyk, "JPEG"), SPEC)
    assert pixels.shape == (32, 32, 3)
    red, green, blue = pixels[16, 16].astype(int)
    assert red > 200 and green < 60 and blue < 60


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels, with one tiny, wrong data chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))


@pytest.mark.parametrize(
    "width,height,message",
    [
        (10_000, 2_000, "image is 10000x2000 = 20000000 pixels; the limit is 16777216"),
        (100_000, 100_000, "image is larger than .* pixels; the limit is 16777216"),
    ],
)
def test_a_huge_picture_is_refused_from_its_header_before_decoding(width, height, message):
    with pytest.raises(InvalidInputError, match=message):
        to_pixels(huge_png_header(width, height), SPEC)


def test_pixels_are_normalised_with_imagenet_statistics_and_not_inverted():
    tensor = preprocess(Image.new("RGB", (32, 32), (255, 255, 255)), SPEC)
    assert tensor.shape == (3, 32, 32)
    expected = [(1.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert torch.allclose(tensor[:, 0, 0], torch.tensor(expected))
    batch = pixels_to_tensor(np.zeros((2, 32, 32, 3), dtype=np.uint8), SPEC)
    assert batch.shape == (2, 3, 32, 32)
    assert torch.allclose(
        batch[1, :, 5, 5], -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
    )


def test_picture_spec_round_trips_and_pen_stroke_specs_keep_their_old_dict():
    assert InputSpec.from_dict(SPEC.to_dict()) == SPEC
    assert InputSpec().to_dict() == {"image_size": 28, "channels": 1, "invert": True}


@pytest.mark.parametrize(
    "values,message",
    [
        ({"fit": "crop"}, "fit must be one of"),
        ({"channels": 3, "mean": (0.5,), "std": (0.5,)}, "need 3 values each"),
    ],
)
def test_inconsistent_specs_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        InputSpec(**values)
