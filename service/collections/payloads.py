"""Request inputs (base64 image files or pixel lists) -> stage-1 pixels, naming any bad item.

Every item is decoded before anything else happens, so a request with one bad item is rejected
as a whole with a message such as ``examples[3].image: not a decodable image (...)``.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
from PIL import Image

from protonet.errors import InvalidInputError
from protonet.preprocessing import ImageSource
from service.errors import LimitExceededError


class InputPayload(Protocol):
    """One input as it arrives: exactly one of ``image`` (base64 file) or ``pixels``."""

    @property
    def image(self) -> str | None: ...

    @property
    def pixels(self) -> np.ndarray | None: ...  # float64 [H, W] (service/api/json_bodies.py)


def check_item_count(count: int, limit: int, field: str) -> None:
    """Raise :class:`LimitExceededError` when a request carries more than ``limit`` items."""
    if count > limit:
        raise LimitExceededError(f"{field}: {count} items; at most {limit} per request")


def source_pixel_count(payload: InputPayload) -> int:
    """Width x height of an input, from the image file's header (nothing is decoded) or the
    pixel list's size; 0 when it cannot be told (decoding will then report the error)."""
    if payload.pixels is not None:
        return int(payload.pixels.size)
    if payload.image is None:
        return 0
    try:
        with warnings.catch_warnings():  # a decompression bomb is reported when decoding
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(decode_base64(payload.image))) as image:
                width, height = image.size
    except Exception:  # not an image: decode_payloads says why, naming the item
        return 0
    return width * height


def check_pixel_budget(payloads: Sequence[InputPayload], limit: int | None, field: str) -> None:
    """Raise :class:`LimitExceededError` when a request's images add up to more than ``limit``
    pixels: each image is capped on its own, but many large ones (small files, when they
    compress well) would still cost seconds of decoding per request."""
    if limit is None:
        return
    total = 0
    for position, payload in enumerate(payloads):
        total += source_pixel_count(payload)
        if total > limit:
            raise LimitExceededError(
                f"{field}[{position}]: the request's images add up to more than {limit} "
                "pixels (PROTONET_MAX_REQUEST_PIXELS); send fewer or smaller images per request"
            )


def decode_base64(text: str) -> bytes:
    """Standard or URL-safe base64, with or without padding or a ``data:...;base64,`` prefix."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    text = "".join(text.split())  # line-wrapped base64 (``base64`` CLI output) is fine
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError("not valid base64") from None


def payload_field(payload: InputPayload) -> str:
    """Which of ``image`` / ``pixels`` the payload carries."""
    if (payload.image is None) == (payload.pixels is None):
        raise InvalidInputError("give exactly one of 'image' or 'pixels'")
    return "image" if payload.image is not None else "pixels"


def payload_source(payload: InputPayload) -> ImageSource:
    """The decoded source: image file bytes or a pixel array ``[H, W]``."""
    if payload.image is not None:
        return decode_base64(payload.image)
    assert payload.pixels is not None
    return payload.pixels


def decode_payloads(
    payloads: Sequence[InputPayload],
    field: str,
    to_pixels: Callable[[ImageSource], np.ndarray],
) -> np.ndarray:
    """Stage 1 for every item: ``uint8 [n, *pixel_shape]``.

    ``to_pixels`` is the encoder's stage 1 (spec and pixel cap bound in). The first bad item
    raises :class:`InvalidInputError` prefixed with its location, e.g. ``queries[2].pixels``.
    """
    if not payloads:
        raise InvalidInputError(f"{field}: at least one item is required")
    decoded = []
    for position, payload in enumerate(payloads):
        location = f"{field}[{position}]"
        try:
            location = f"{location}.{payload_field(payload)}"
            decoded.append(to_pixels(payload_source(payload)))
        except InvalidInputError as error:
            raise InvalidInputError(f"{location}: {error}") from None
    return np.stack(decoded)
