"""Every kind of bad input gets its 4xx with the offending item named, and changes nothing."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.service.helpers import Drawings, image_item, make_settings, pixels_item, serve
from tests.training.synthetic import truncated_png

pytestmark = pytest.mark.anyio

MAX_ITEMS = 8
MAX_PIXELS = 300 * 300


def png(size: tuple[int, int], mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 255).save(buffer, format="PNG")
    return buffer.getvalue()


GOOD = pixels_item(np.ones((10, 10)))
GOOD_EXAMPLE = {"label": "ok", **GOOD}


def support(*bad: dict[str, Any]) -> dict[str, Any]:
    """A support body whose item 0 is fine and items 1.. are ``bad``."""
    return {"examples": [GOOD_EXAMPLE, *bad]}


def bad_example(**fields: Any) -> dict[str, Any]:
    return {"label": "new", **fields}


SUPPORT = "/v1/collections/c/support"
QUERY = "/v1/collections/c/query"
# (path, JSON body or raw bytes, expected status, text the message must contain)
CASES: list[tuple[str, Any, int, str]] = [
    (SUPPORT, b'{"examples": [', 400, "malformed JSON"),
    (SUPPORT, b"[1, 2]", 422, "body"),
    (SUPPORT, {}, 422, "examples: Field required"),
    (SUPPORT, {"examples": []}, 422, "examples: List should have at least 1 item"),
    (SUPPORT, {"examples": [GOOD_EXAMPLE], "extra": 1}, 422, "extra: Extra inputs"),
    (SUPPORT, support(GOOD), 422, "examples[1].label: Field required"),
    (SUPPORT, support(bad_example(colour="red", **GOOD)), 422, "examples[1].colour: Extra"),
    (SUPPORT, support(bad_example()), 422, "examples[1]: give exactly one of 'image'"),
    (
        SUPPORT,
        support(bad_example(**GOOD, **image_item(png((5, 5))))),
        422,
        "examples[1]: give exactly one",
    ),
    (
        SUPPORT,
        support(bad_example(**image_item(b"not an image"))),
        422,
        "examples[1].image: not a decodable image",
    ),
    (SUPPORT, support(bad_example(image="")), 422, "examples[1].image: empty image"),
    (SUPPORT, support(bad_example(image="@@@!")), 422, "examples[1].image: not valid base64"),
    (
        SUPPORT,
        support(bad_example(**image_item(png((400, 400), mode="1")))),
        422,
        "examples[1].image: image is 400x400",
    ),
    (
        SUPPORT,
        support(bad_example(pixels=[[0.5, 0.5], [0.5]])),
        422,
        "examples[1].pixels: ragged",
    ),
    (SUPPORT, support(bad_example(pixels=[[]])), 422, "examples[1].pixels: pixels must be a non"),
    (SUPPORT, support(bad_example(pixels=[0.5, 0.5])), 422, "examples[1].pixels[0]: Input"),
    (SUPPORT, support(bad_example(pixels=[["0.5"]])), 422, "examples[1].pixels[0][0]"),
    (SUPPORT, support(bad_example(pixels=[[0.5, 2.0]])), 422, "examples[1].pixels: pixels must"),
    # NaN and numbers beyond float64 are not JSON (json.loads let them through as nan/inf).
    (
        SUPPORT,
        json.dumps(support(bad_example(pixels=[[0.5, float("nan")]]))).encode(),
        400,
        "malformed JSON body at character",
    ),
    (
        SUPPORT,
        b'{"examples": [{"label": "x", "pixels": [[1e999]]}]}',
        400,
        "malformed JSON body at character 41: number is infinity",
    ),
    (
        SUPPORT,
        b'{"examples": [{"label": "\xff"}]}',
        400,
        "the body is not valid UTF-8 (at byte 25: invalid start byte)",
    ),
    (SUPPORT, b"[" * 5000 + b"]" * 5000, 400, "malformed JSON body"),
    (SUPPORT, b'{"examples": [{"label": "x", "pixels": [[' + b"[" * 30, 400, "malformed JSON"),
    (SUPPORT, support(bad_example(pixels=[[True]])), 422, "examples[1].pixels[0][0]: Input"),
    (SUPPORT, support(bad_example(image=None, **GOOD)), 422, "examples[1].image: omit the field"),
    (
        SUPPORT,
        support({"label": "", **GOOD}),
        422,
        "examples[1].label: String should have at least 1",
    ),
    (SUPPORT, support({"label": "x" * 201, **GOOD}), 422, "examples[1].label: String should have"),
    (SUPPORT, support({"label": "a\nb", **GOOD}), 422, "examples[1].label: String should match"),
    (SUPPORT, support({"label": 7, **GOOD}), 422, "examples[1].label: Input should be"),
    (SUPPORT, support({"label": "..", **GOOD}), 422, "examples[1].label: Value error, a label"),
    (SUPPORT, support({"label": ".", **GOOD}), 422, "may not be '.' or '..'"),
    (SUPPORT, support({"label": "a/../b", **GOOD}), 422, "may not be '.' or '..'"),
    (SUPPORT, support({"label": "a ", **GOOD}), 422, "may not begin or end with whitespace"),
    (SUPPORT, support({"label": "\u3000a", **GOOD}), 422, "may not begin or end with white"),
    (SUPPORT, support({"label": "a\u200b", **GOOD}), 422, "format characters (found U+200B)"),
    (SUPPORT, support({"label": "a\u0085b", **GOOD}), 422, "examples[1].label: String should"),
    (SUPPORT, support({"label": "a\u2028b", **GOOD}), 422, "examples[1].label: String should"),
    (SUPPORT, support({"label": "a\u2029b", **GOOD}), 422, "examples[1].label: String should"),
    (SUPPORT, support({"label": "\ufeffa", **GOOD}), 422, "format characters (found U+FEFF)"),
    (
        SUPPORT,
        {"examples": [GOOD_EXAMPLE] * (MAX_ITEMS + 1)},
        413,
        f"examples: {MAX_ITEMS + 1} items; at most {MAX_ITEMS}",
    ),
    ("/v1/collections/nope/support", support(), 404, "collection 'nope' does not exist"),
    ("/v1/collections/no%20pe/support", support(), 422, "path.name: String should match"),
    (QUERY, {"queries": [GOOD], "top_k": 0}, 422, "top_k: Input should be greater than"),
    (QUERY, {"queries": [GOOD], "top_k": "3"}, 422, "top_k: Input should be a valid integer"),
    (QUERY, {"queries": [GOOD], "top_k": True}, 422, "top_k: Input should be a valid integer"),
    (QUERY, {"queries": [GOOD], "top_k": 2.5}, 422, "top_k: Input should be a valid integer"),
    (QUERY, {"queries": [{}]}, 422, "queries[0]: give exactly one of 'image'"),
    (QUERY, {"queries": [GOOD, GOOD, {"image": "@@@"}]}, 422, "queries[2].image: not valid"),
    (QUERY, {"queries": [GOOD] * (MAX_ITEMS + 1)}, 413, "queries: 9 items"),
    # Refused by the header (the truncated data would not decode): a long, thin image within
    # the pixel limit costs seconds to decode, so its side is limited too.
    (
        QUERY,
        {"queries": [GOOD, image_item(truncated_png(1, 60_000))]},
        422,
        "queries[1].image: image is 1x60000; a side may be at most 16384 pixels",
    ),
    (QUERY, {"queries": [image_item(truncated_png(400, 400))]}, 422, "image is 400x400 = 160000"),
    ("/v1/collections/nope/query", {"queries": [GOOD]}, 404, "collection 'nope'"),
    ("/v1/collections", {"name": "a b"}, 422, "name: String should match pattern"),
    ("/v1/collections", {"name": "x" * 65}, 422, "name: String should match pattern"),
    ("/v1/collections", {"name": "ok", "x": 1}, 422, "x: Extra inputs"),
    ("/v1/embed", {"inputs": [GOOD, {"pixels": [[0.1, -1]]}]}, 422, "inputs[1].pixels: pixels"),
    # Pixels deeper than rows of numbers: a 500 ([[[1, 1]]]), or silently taken as 2-D.
    (QUERY, {"queries": [{"pixels": [[[1, 1]]]}]}, 422, "queries[0].pixels: must be a 2-D list"),
    (SUPPORT, support(bad_example(pixels=[[[0.5]]])), 422, "examples[1].pixels: must be a 2-D"),
    (
        "/v1/embed",
        {"inputs": [GOOD, {"pixels": [[[0.1], [0.9]], [[0.9], [0.1]]]}]},
        422,
        "inputs[1].pixels: must be a 2-D list of rows of numbers",
    ),
    # 100,000 keys took 14-27 s (a linear lookup per key) before its 422.
    (QUERY, {f"k{i}": 1 for i in range(100_000)}, 413, "body: 100000 keys; at most 64"),
    ("/v1/embed", {"inputs": [GOOD, {"image": 3}]}, 422, "inputs[1].image: Input should be"),
]


async def snapshot(running, probe: dict[str, Any]) -> Any:
    """Everything a request could have changed: listings, classes, storage, query answers."""
    http = running.http
    query = await http.post(QUERY, json={"queries": [probe], "top_k": 5})
    return (
        (await http.get("/v1/collections")).json(),
        (await http.get("/v1/collections/c")).json(),
        running.stored_versions(),
        query.json(),
    )


async def test_bad_inputs_are_4xx_naming_the_item_and_change_nothing(tmp_path, checkpoint_a):
    settings = make_settings(
        tmp_path, checkpoint_a, max_items_per_request=MAX_ITEMS, max_image_pixels=MAX_PIXELS
    )
    drawings = Drawings(2)
    async with serve(settings) as running:
        await running.client.create_collection("c")
        await running.client.add_support("c", [("a", drawings.png(0)), ("b", drawings.png(1))])
        probe = image_item(drawings.png(0))
        before = await snapshot(running, probe)
        failures = []
        for path, body, status, message in CASES:
            if isinstance(body, bytes):
                headers = {"content-type": "application/json"}
                response = await running.http.post(path, content=body, headers=headers)
            else:
                response = await running.http.post(path, json=body)
            detail = response.json().get("detail", "")
            if response.status_code != status or message not in detail:
                failures.append(f"{path} {str(body)[:80]}: {response.status_code} {detail!r}")
        assert not failures, "\n".join(failures)
        assert await snapshot(running, probe) == before


async def test_the_image_side_limit_is_a_setting(tmp_path, checkpoint_a):
    settings = make_settings(tmp_path, checkpoint_a, max_image_side=50)
    async with serve(settings) as running:
        await running.client.create_collection("c")
        body = support(bad_example(**image_item(png((51, 10)))))
        response = await running.http.post(SUPPORT, json=body)
        assert response.status_code == 422
        assert "examples[1].image: image is 51x10; a side may be at most 50" in response.text
        body = support(bad_example(**image_item(png((50, 10)))))
        assert (await running.http.post(SUPPORT, json=body)).status_code == 200


async def test_error_body_lists_every_invalid_field(settings):
    async with serve(settings) as running:
        body = {"examples": [{"label": "", "pixels": [[0]]}, {"label": "x"}]}
        response = await running.http.post("/v1/collections/c/support", json=body)
    assert response.status_code == 422
    error = response.json()
    assert error["error"] == "validation_error"
    assert [e["location"] for e in error["errors"]] == ["examples[0].label", "examples[1]"]


async def test_unknown_routes_and_methods_share_the_error_shape(settings):
    async with serve(settings) as running:
        missing = await running.http.get("/v2/nothing")
        wrong_method = await running.http.put("/v1/collections")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert (
        wrong_method.status_code == 405 and "PUT /v1/collections" in wrong_method.json()["detail"]
    )
    assert wrong_method.headers["allow"] == "GET, POST"  # both routes at the path, not the first


def test_base64_variants_are_accepted():
    from service.collections.payloads import decode_base64

    data = bytes(range(256))
    standard = base64.b64encode(data).decode()
    assert decode_base64(standard) == data
    assert decode_base64(base64.urlsafe_b64encode(data).decode().rstrip("=")) == data
    assert decode_base64("data:image/png;base64," + standard) == data
    assert (
        decode_base64("\n".join(standard[i : i + 76] for i in range(0, len(standard), 76))) == data
    )


async def test_images_in_unusual_modes_are_accepted(tmp_path, checkpoint_a):
    """A LAB TIFF (and a premultiplied-alpha TIFF) used to be a 500. No mode Pillow opens is
    unconvertible for this 1-channel model any more (tests/protonet/test_image_modes.py loops
    over them all), so each of these is a 200, and LAB gives what its lightness band gives."""
    from tests.protonet.test_image_modes import encode, la_tiff, lab_tiff

    stroke = np.full((20, 20), 255, dtype=np.uint8)
    stroke[:, 8:12] = 0
    la = np.zeros((20, 20, 2), dtype=np.uint8)  # transparent paper ...
    la[:, 8:12] = (0, 255)  # ... and an opaque black stroke: the same drawing
    grey = Image.fromarray(stroke)
    images = {
        "L PNG": encode(grey, "PNG"),
        "LAB TIFF": lab_tiff(stroke, a=90, b=170),
        "La TIFF": la_tiff(la),
        "CMYK JPEG": encode(grey.convert("CMYK"), "JPEG"),
        "YCbCr TIFF": encode(grey.convert("YCbCr"), "TIFF"),
        "I;16 PNG": encode(Image.fromarray(stroke.astype(np.uint16) * 257), "PNG"),
        "F TIFF": encode(Image.fromarray(stroke.astype(np.float32)), "TIFF"),
        "1 BMP": encode(grey.convert("1"), "BMP"),
    }
    drawings = Drawings(2)
    async with serve(make_settings(tmp_path, checkpoint_a)) as running:
        await running.client.create_collection("c")
        await running.client.add_support("c", [("a", drawings.png(0)), ("b", drawings.png(1))])
        answers, failures = {}, []
        for name, data in images.items():
            response = await running.http.post(QUERY, json={"queries": [GOOD, image_item(data)]})
            if response.status_code != 200:
                failures.append(f"{name}: {response.status_code} {response.json()}")
            else:
                answers[name] = response.json()["results"][1]
    assert not failures, "\n".join(failures)
    assert answers["LAB TIFF"] == answers["L PNG"] == answers["La TIFF"]


async def test_min_revision_beyond_what_storage_holds_is_422_in_the_schema_too(settings):
    """Revisions are BIGINTs: the schema says so, and a larger one is refused naming it."""
    too_large = 2**63
    async with serve(settings) as running:
        document = (await running.http.get("/openapi.json")).json()
        response = await running.http.get(f"/v1/collections/c?min_revision={too_large}")
    parameters = document["paths"]["/v1/collections/{name}"]["get"]["parameters"]
    (min_revision,) = [p for p in parameters if p["name"] == "min_revision"]
    assert {"type": "integer", "minimum": 0, "maximum": too_large - 1} in min_revision["schema"][
        "anyOf"
    ]
    assert response.status_code == 422
    assert response.json()["detail"] == (
        f"query.min_revision: Input should be less than or equal to {too_large - 1} "
        f"(got {too_large})"
    )
