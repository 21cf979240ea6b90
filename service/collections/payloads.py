"""Request inputs (base64 image files, pixel lists or text) -> stage 1, naming any bad item.

Every item is decoded before anything else happens, so a request with one bad item is rejected
as a whole with a message such as ``examples[3].image: not a decodable image (...)``; an item
of the wrong kind for the model (an image for a text model, text for an image model) too.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from PIL import Image

from protonet.errors import InvalidInputError
from service.collections.encoder import Encoder, Source, StageOneBatch
from service.errors import LimitExceededError, ModelMismatchError


class InputPayload(Protocol):
    """One input as it arrives: exactly one of ``image`` (base64 file), ``pixels`` or
    ``text``."""

    @property
    def image(self) -> str | None: ...

    @property
    def pixels(self) -> np.ndarray | None: ...  # float64 [H, W] (service/api/json_bodies.py)

    @property
    def text(self) -> str | None: ...


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
        return 0  # text, or nothing
    try:
        with warnings.catch_warnings():  # a decompression bomb is reported when decoding
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(decode_base64(payload.image))) as image:
                width, height = image.size
    except Exception:  # not an image: decode_payloads says why, naming the item
        return 0
    return width * height


# Decoding an item takes about 0.1 ms plus 10-20 ns per pixel (PNG, one core): 65,536 pixels
# (256 x 256) cost about what one more small drawing does.
PIXELS_PER_DECODE_ROW = 256 * 256


def decode_cost(payload: InputPayload) -> int:
    """What decoding the item costs a decode batch, in rows of small drawings: 1, plus 1 per
    65,536 pixels of an image (from its header). A 4096 x 4096 image costs 257 and is decoded
    alone, so the drawings of other requests do not wait for several such images at once."""
    return 1 + source_pixel_count(payload) // PIXELS_PER_DECODE_ROW


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


SOURCE_FIELDS = ("image", "pixels", "text")


def payload_field(payload: InputPayload) -> str:
    """Which of ``image`` / ``pixels`` / ``text`` the payload carries."""
    # getattr: callers' payload objects from before text inputs have no ``text``.
    given = [name for name in SOURCE_FIELDS if getattr(payload, name, None) is not None]
    if len(given) != 1:
        raise InvalidInputError("give exactly one of 'image', 'pixels' or 'text'")
    return given[0]


def payload_source(payload: InputPayload) -> Source:
    """The decoded source: image file bytes, a pixel array ``[H, W]``, or the raw text."""
    if payload.image is not None:
        return decode_base64(payload.image)
    if payload.pixels is not None:
        return payload.pixels
    assert payload.text is not None
    return payload.text


def check_modality(kind: str, encoder: Encoder) -> None:
    """:class:`ModelMismatchError` for text sent to an image model or an image to a text one."""
    if (kind == "text") != (encoder.modality == "text"):
        wanted = "'text'" if encoder.modality == "text" else "'image' or 'pixels'"
        raise ModelMismatchError(
            f"model {encoder.name!r} takes {encoder.modality} inputs, not {kind}: send {wanted}"
        )


def decode_payloads(
    payloads: Sequence[InputPayload], field: str, encoder: Encoder, first: int = 0
) -> StageOneBatch:
    """Stage 1 for every item, by ``encoder`` (the collection's model): a stage-1 batch.

    The first bad item raises :class:`InvalidInputError` (:class:`ModelMismatchError` for an
    item of the wrong kind) prefixed with its location, e.g. ``queries[2].pixels``; ``first``
    is the position of ``payloads[0]`` in the request (a part of a request's items).
    """
    if not payloads:
        raise InvalidInputError(f"{field}: at least one item is required")
    decoded = []
    for position, payload in enumerate(payloads, start=first):
        location = f"{field}[{position}]"
        try:
            kind = payload_field(payload)
            location = f"{location}.{kind}"
            check_modality(kind, encoder)
            decoded.append(encoder.stage_one(payload_source(payload)))
        except InvalidInputError as error:
            raise type(error)(f"{location}: {error}") from None
    return encoder.stack(decoded)
