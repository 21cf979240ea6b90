import io

import numpy as np
import pytest
import torch
from PIL import Image

from protonet.errors import InvalidInputError
from protonet.preprocessing import (
    DEFAULT_MAX_SIDE,
    InputSpec,
    pixels_to_tensor,
    preprocess,
    to_pixels,
)
from tests.training.synthetic import truncated_png

SPEC = InputSpec()


def drawing(size: int = 105, mode: str = "L") -> Image.Image:
    """A black vertical bar on white paper, like an Omniglot stroke."""
    array = np.full((size, size), 255, dtype=np.uint8)
    array[:, size // 2 - size // 10 : size // 2 + size // 10] = 0
    return Image.fromarray(array).convert(mode)


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "fmt,mode",
    [
        ("PNG", "1"),
        ("PNG", "L"),
        ("JPEG", "RGB"),
        ("BMP", "RGB"),
        ("GIF", "L"),
        ("WEBP", "RGB"),
        ("PNG", "RGBA"),
    ],
)
def test_encoded_images_become_inverted_28x28_inputs(fmt, mode):
    tensor = preprocess(encode(drawing(mode=mode), fmt), SPEC)
    assert tensor.shape == (1, 28, 28) and tensor.dtype == torch.float32
    # Ink (black) becomes ~1, paper (white) ~0.
    assert tensor[0, 14, 14] > 0.8
    assert tensor[0, 14, 1] < 0.1


def test_transparent_background_is_paper_not_ink():
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)  # fully transparent black
    rgba[10:30, 18:22] = (0, 0, 0, 255)  # an opaque black stroke
    tensor = preprocess(encode(Image.fromarray(rgba, "RGBA"), "PNG"), SPEC)
    assert tensor[0, 2, 2] < 0.05 and tensor[0, 14, 14] > 0.8


def test_float_arrays_and_uint8_arrays_agree_with_images():
    image = drawing(size=28)
    as_uint8 = np.asarray(image)
    from_image = to_pixels(image, SPEC)
    np.testing.assert_array_equal(to_pixels(as_uint8, SPEC), from_image)
    np.testing.assert_array_equal(to_pixels(as_uint8 / 255.0, SPEC), from_image)
    np.testing.assert_array_equal(to_pixels(encode(image, "PNG"), SPEC), from_image)


def test_pixels_to_tensor_batches_and_inverts():
    pixels = np.array([[[0, 255], [255, 0]]] * 3, dtype=np.uint8)
    batch = pixels_to_tensor(pixels, InputSpec(image_size=2))
    assert batch.shape == (3, 1, 2, 2)
    torch.testing.assert_close(batch[0, 0], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


@pytest.mark.parametrize(
    "source,message",
    [
        (b"", "empty"),
        (b"not an image at all", "not a decodable image"),
        (np.array([[0.5, float("nan")]]), "NaN"),
        (np.array([[0.5, 1.5]]), r"\[0, 1\]"),
        (np.zeros((0, 4)), "non-empty"),
        (np.zeros(5), "2-D"),
    ],
)
def test_bad_inputs_raise_clear_errors(source, message):
    with pytest.raises(InvalidInputError, match=message):
        to_pixels(source, SPEC)


def test_decompression_bomb_is_refused_before_decoding():
    big = encode(Image.new("L", (3000, 3000), 255), "PNG")  # compresses to a few KB
    with pytest.raises(InvalidInputError, match="limit"):
        to_pixels(big, SPEC, max_pixels=1000 * 1000)
    assert to_pixels(big, SPEC, max_pixels=3000 * 3000).shape == (28, 28)


@pytest.mark.parametrize(
    "width,height,message",
    [
        (1, 16_777_216, f"image is 1x16777216; a side may be at most {DEFAULT_MAX_SIDE} pixels"),
        (16_777_216, 1, "a side may be at most"),
        (5000, 5000, "image is 5000x5000 = 25000000 pixels; the limit is 16777216"),
    ],
)
def test_images_too_large_to_decode_cheaply_are_refused_from_the_header(width, height, message):
    """A 1 x 16,777,216 PNG is within the pixel limit but took 2 s and 500 MB to decode and
    resize: refused by its side, from the header (the truncated data would not decode)."""
    with pytest.raises(InvalidInputError, match=message):
        to_pixels(truncated_png(width, height), SPEC)


def test_the_side_limit_is_a_parameter_and_applies_to_arrays():
    long = np.ones((10, 300))
    assert to_pixels(long, SPEC, max_side=300).shape == (28, 28)
    with pytest.raises(InvalidInputError, match="image is 300x10; a side may be at most 299"):
        to_pixels(long, SPEC, max_side=299)
    with pytest.raises(InvalidInputError, match="a side may be at most 299"):
        to_pixels(
            encode(Image.fromarray(np.full((10, 300), 255, np.uint8)), "PNG"), SPEC, 10**6, 299
        )
