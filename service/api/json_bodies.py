"""JSON request bodies parsed within bounds: counts are checked before Python objects exist.

FastAPI's own parsing (``json.loads``, then pydantic) turns the whole body into Python objects
before any limit can look at it: a 16 MB body of 7.8 million pixel values became ~600 MB of
floats and lists, and 550,000 tiny examples ~900 MB of dicts, all before the 413. Here:

1. A comma count (C speed, ~1 ms per MB) bounds the number of JSON values before parsing.
2. simdjson (pysimdjson) parses into its own compact tape and hands out lazy proxies, so the
   length of every array is known without building its elements: item counts and pixel-array
   sizes are enforced first, and ``pixels`` arrays go straight from the tape into a float64
   numpy array (8 bytes a value instead of ~32 for a Python float in a list).
3. Only then is the (small) rest converted to Python objects for the pydantic models.

Errors name the offending place (``examples: 300 items; at most 256 per request``), 413 for
limits, 400 ``malformed_json`` for anything that is not valid JSON (invalid UTF-8, nesting
deeper than the API ever needs, duplicate-free or not), 422 for a ``pixels`` array that is not
2-D.

Objects are bounded too (``MAX_KEYS_PER_OBJECT``), from their size alone: simdjson looks a key
up by a linear scan, and its only one-pass iteration (``items()``) builds every value, so an
unbounded object of n keys cost n^2/2 comparisons (100,000 keys: 14-27 s before the 422).
"""

from __future__ import annotations

import email.message
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import simdjson
from anyio import to_thread
from fastapi import Request, Response
from fastapi.routing import APIRoute

from protonet.errors import InvalidInputError
from service.errors import LimitExceededError, MalformedJSONError

PIXELS_KEY = "pixels"
# JSON values a well-formed item may carry besides its pixels (label, image, separators...):
# generous, so that only bodies far from any valid request are refused on the comma count.
VALUES_PER_ITEM = 16
MAX_DEPTH = 16  # the API's deepest value is at depth 5 (body.examples[i].pixels[r][c])
# No request object has more than 4 fields; any more are errors anyway (extra fields are
# refused), so this only decides how cheaply such a body is refused.
MAX_KEYS_PER_OBJECT = 64
NOT_2D = "must be a 2-D list of rows of numbers"
# Larger bodies are parsed in a worker thread. The parser holds the GIL either way, but on the
# event loop ten 25 ms parses that are ready together stall every other request (/healthz)
# for all ten; from threads the loop gets the GIL back between them. Small bodies (< 1 ms)
# stay on the loop, where a thread hand-off would cost more than the parse.
INLINE_PARSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class BodyLimits:
    """What one request body may hold."""

    max_items: int  # elements of any array but a pixel array (examples, queries, inputs)
    max_pixel_values: int  # numbers in all of a request's ``pixels`` arrays together

    @property
    def max_values(self) -> int:
        """JSON values a body may hold at most (checked by counting commas)."""
        return self.max_pixel_values + VALUES_PER_ITEM * self.max_items


def parse_json_body(body: bytes, limits: BodyLimits) -> Any:
    """``body`` -> Python values, with every ``pixels`` array as float64 ``[H, W]`` numpy.

    Raises :class:`LimitExceededError` (413) before building anything large, and
    :class:`MalformedJSONError` (400) for invalid JSON.
    """
    values = body.count(b",") + 1  # every value after a container's first follows a comma
    if values > limits.max_values:
        raise LimitExceededError(
            f"body: about {values} JSON values; at most {limits.max_values} per request "
            f"({limits.max_items} items, {limits.max_pixel_values} pixel values in all): send "
            "large images as files in 'image' rather than as 'pixels', or split the request"
        )
    try:
        document = simdjson.Parser().parse(body)
    except (ValueError, RuntimeError) as error:  # UnicodeDecodeError is a ValueError
        raise MalformedJSONError(malformed_json_message(body, error)) from None
    converter = Converter(limits)
    parsed = converter.convert(document, "body", depth=0)
    converter.check_pixels_are_2d(body)
    return parsed


def malformed_json_message(body: bytes, error: Exception) -> str:
    """Where and why the body is not JSON. simdjson says only what kind of error; Python's
    decoder (for UTF-8) and orjson (only on this error path, on a body the comma count has
    bounded) say where."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as invalid:
        return f"the body is not valid UTF-8 (at byte {invalid.start}: {invalid.reason})"
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as located:
        return f"malformed JSON body at character {located.pos}: {located.msg}"
    reason = str(error).split(":", 1)[-1].strip()
    return f"malformed JSON body: {reason}"


class Converter:
    """simdjson proxies -> Python values, counting pixel values across the whole body."""

    def __init__(self, limits: BodyLimits) -> None:
        self.limits = limits
        self.pixel_values = 0
        self.arrays = 0  # arrays converted, for check_pixels_are_2d
        self.numeric_pixels: list[tuple[str, Any, int]] = []  # (location, array, rows)

    def convert(self, node: Any, location: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise MalformedJSONError(f"malformed JSON body: nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, simdjson.Object):
            return self.object(node, location, depth)
        if isinstance(node, simdjson.Array):
            if location.endswith("." + PIXELS_KEY) or location == PIXELS_KEY:
                return self.pixels(node, location)
            if len(node) > self.limits.max_items:
                raise LimitExceededError(
                    f"{location}: {len(node)} items; at most {self.limits.max_items} per request"
                )
            self.arrays += 1
            return [
                self.convert(item, f"{location}[{i}]", depth + 1) for i, item in enumerate(node)
            ]
        return node  # str, int, float, bool or None: simdjson returns scalars as Python values

    def object(self, node: Any, location: str, depth: int) -> dict[str, Any]:
        if len(node) > MAX_KEYS_PER_OBJECT:  # the size is on simdjson's tape: no key is read
            raise LimitExceededError(
                f"{location}: {len(node)} keys; at most {MAX_KEYS_PER_OBJECT} per object (no "
                "request object has more than a few fields)"
            )
        keys = list(node.keys())
        if any("\x00" in key for key in keys):  # no API field has one, and simdjson cannot
            return node.as_dict()  # look it up: convert eagerly (the commas bound the size)
        # Each lookup scans the keys before it: at most MAX_KEYS_PER_OBJECT^2 / 2 comparisons.
        return {key: self.convert(node[key], join(location, key), depth + 1) for key in keys}

    def pixels(self, node: Any, location: str) -> Any:
        """A rectangular array of numbers -> float64 ``[H, W]``; anything else becomes lists
        (bounded by the counts above) for the request model to report precisely, except
        arrays nested deeper than rows of numbers (422 here)."""
        rows = list(node)
        widths = [len(row) if isinstance(row, simdjson.Array) else -1 for row in rows]
        self.count_pixels(sum(max(width, 1) for width in widths), location)
        self.arrays += 1 + sum(width >= 0 for width in widths)
        if len(set(widths)) <= 1 and min(widths, default=0) >= 0:
            try:  # as_buffer flattens nested arrays: the size and check_pixels_are_2d tell
                flat = np.frombuffer(node.as_buffer(of_type="d"), dtype=np.float64)
            except (TypeError, ValueError):  # a string, bool, null or object inside
                pass
            else:
                width = widths[0] if rows else 0
                if flat.size != len(rows) * width:
                    raise InvalidInputError(f"{location}: {NOT_2D}")
                self.numeric_pixels.append((location, node, len(rows)))
                return flat.reshape(len(rows), width)
        values = node.as_list()
        if any(isinstance(value, list) for row in values if isinstance(row, list) for value in row):
            raise InvalidInputError(f"{location}: {NOT_2D}")
        return values

    def check_pixels_are_2d(self, body: bytes) -> None:
        """Refuse a numeric ``pixels`` array nested deeper than rows of numbers whose flattened
        size still fits its shape (``[[[0.5]]]``): simdjson's buffer flattens any depth.

        Every array of the body was counted while converting, so a body with as many '['
        as counted arrays has no deeper one: one C-speed count. Only otherwise (a '[' in a
        string, or a deeper array somewhere) is each numeric ``pixels`` array re-read: its
        minified form has one '[' per row plus its own exactly when it is 2-D.
        """
        if body.count(b"[") == self.arrays:
            return
        for location, node, rows in self.numeric_pixels:
            if node.mini.count(b"[") != rows + 1:
                raise InvalidInputError(f"{location}: {NOT_2D}")

    def count_pixels(self, values: int, location: str) -> None:
        self.pixel_values += values
        if self.pixel_values > self.limits.max_pixel_values:
            raise LimitExceededError(
                f"{location}: the request's pixel arrays add up to more than "
                f"{self.limits.max_pixel_values} values (PROTONET_MAX_PIXEL_VALUES); send "
                "large images as files in 'image', or fewer per request"
            )


def join(location: str, key: str) -> str:
    return key if location == "body" else f"{location}.{key}"


def is_json_request(request: Request) -> bool:
    """Whether FastAPI would read the body as JSON (no content type, or ``*/json``,
    ``*/*+json``); other bodies are left to FastAPI, which refuses them with 422."""
    content_type = request.headers.get("content-type")
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class ParsedJSONRequest(Request):
    """A request whose JSON body was parsed (within bounds) before FastAPI asks for it."""

    parsed: Any = None

    async def json(self) -> Any:
        return self.parsed


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class BoundedJSONRoute(APIRoute):
    """An ``APIRoute`` whose JSON body goes through :func:`parse_json_body` first.

    The parsing happens before FastAPI's own body handling, which would turn our 413 and 400
    errors into a generic 400; ``app.state.body_limits`` holds the limits.
    """

    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()
        if self.body_field is None:
            return handle

        async def parse_then_handle(request: Request) -> Response:
            parsed = ParsedJSONRequest(request.scope, request.receive)
            body = await parsed.body()
            if body and is_json_request(parsed):
                limits = request.app.state.body_limits
                if len(body) <= INLINE_PARSE_BYTES:
                    parsed.parsed = parse_json_body(body, limits)
                else:
                    parsed.parsed = await to_thread.run_sync(parse_json_body, body, limits)
            return await handle(parsed)

        return parse_then_handle
