"""GET .../examples and .../examples/{id}/image: a collection's stored examples and their
images (the thumbnails of the web page), with the same 404s, roles and tenants as the rest."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from protonet.checkpoint import load_checkpoint
from protonet.preprocessing import to_pixels
from service.client import AsyncProtonetClient, ProtonetAPIError
from tests.service.helpers import Drawings, make_settings, serve

pytestmark = pytest.mark.anyio
READ_A = "read-key-of-tenant-a-0123456789"
WRITE_A = "write-key-of-tenant-a-0123456789"
WRITE_B = "write-key-of-tenant-b-0123456789"
KEYS = f"{READ_A}:a:read,{WRITE_A}:a:write,{WRITE_B}:b:write"


async def test_examples_are_listed_by_id_with_labels_and_filtered_by_label(settings):
    drawings = Drawings(2)
    async with serve(settings) as running:
        client = running.client
        await client.create_collection("shapes")
        await client.add_support("shapes", [("ring", drawings.png(0)), ("fork", drawings.png(1))])
        await client.add_support("shapes", [("ring", drawings.png(0)), ("b/é", drawings.png(1))])
        everything = await client.list_examples("shapes")
        ids = [example["id"] for example in everything]
        assert ids == sorted(ids) and len(set(ids)) == 4
        assert [example["label"] for example in everything] == ["ring", "fork", "ring", "b/é"]
        rings = await client.list_examples("shapes", label="ring")
        assert rings == [everything[0], everything[2]]
        # Labels are compared in NFC, as everywhere: "e" + combining acute is "é".
        assert await client.list_examples("shapes", label="b/e\u0301") == [everything[3]]

        await client.delete_class("shapes", "ring")
        assert await client.list_examples("shapes") == [everything[1], everything[3]]


async def test_the_image_is_the_stored_pixels_as_png(settings, checkpoint_a):
    drawings = Drawings(1)
    png = drawings.png(0)
    async with serve(settings) as running:
        await running.client.create_collection("shapes")
        await running.client.add_support("shapes", [("ring", png)])
        [example] = await running.client.list_examples("shapes")
        response = await running.http.get(f"/v1/collections/shapes/examples/{example['id']}/image")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(response.content))
        assert image.format == "PNG" and image.mode == "L" and image.size == (28, 28)
        spec = load_checkpoint(checkpoint_a).input_spec
        stored = to_pixels(png, spec)  # ink dark on light paper, not inverted
        assert np.array_equal(np.asarray(image), stored)
        assert await running.client.example_image("shapes", example["id"]) == response.content


async def test_unknown_collection_class_or_example_is_404(settings):
    drawings = Drawings(1)
    async with serve(settings) as running:
        client, http = running.client, running.http
        await client.create_collection("one")
        await client.create_collection("two")
        await client.add_support("two", [("ring", drawings.png(0))])
        [theirs] = await client.list_examples("two")
        cases = {
            "/v1/collections/nothing/examples": "collection 'nothing' does not exist",
            "/v1/collections/one/examples?label=ring": (
                "class 'ring' does not exist in collection 'one'"
            ),
            "/v1/collections/nothing/examples/1/image": "collection 'nothing' does not exist",
            # An example of another collection is not this one's.
            f"/v1/collections/one/examples/{theirs['id']}/image": (
                f"example {theirs['id']} does not exist in collection 'one'"
            ),
            "/v1/collections/two/examples/999999/image": (
                "example 999999 does not exist in collection 'two'"
            ),
        }
        for path, detail in cases.items():
            response = await http.get(path)
            assert response.status_code == 404, path
            assert response.json() == {"error": "not_found", "detail": detail, "errors": []}
        assert await client.list_examples("one") == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/collections/two/examples/0/image",
        "/v1/collections/two/examples/x/image",
        f"/v1/collections/two/examples/{2**63}/image",
        "/v1/collections/two/examples?label=%20ring",
        "/v1/collections/bad%20name/examples",
    ],
)
async def test_malformed_ids_labels_and_names_are_422(settings, path):
    async with serve(settings) as running:
        response = await running.http.get(path)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "validation_error"


async def test_reading_needs_the_read_role_and_stays_in_the_tenant(tmp_path, checkpoint_a):
    secured = make_settings(tmp_path, checkpoint_a, auth_enabled=True, api_keys=KEYS)
    drawings = Drawings(1)
    async with serve(secured) as running:

        def client(key: str | None) -> AsyncProtonetClient:
            return AsyncProtonetClient(http=running.http, api_key=key)

        await client(WRITE_A).create_collection("shapes")
        await client(WRITE_A).add_support("shapes", [("ring", drawings.png(0))])
        [example] = await client(READ_A).list_examples("shapes")
        assert (await client(READ_A).example_image("shapes", example["id"]))[:4] == b"\x89PNG"
        with pytest.raises(ProtonetAPIError) as anonymous:
            await client(None).example_image("shapes", example["id"])
        assert anonymous.value.status_code == 401
        for call in (
            client(WRITE_B).list_examples("shapes"),
            client(WRITE_B).example_image("shapes", example["id"]),
        ):
            with pytest.raises(ProtonetAPIError) as elsewhere:
                await call
            assert elsewhere.value.status_code == 404  # another tenant's: as if missing
