"""The API contract on a small random-init model: paths, fields, status codes, and that the
numbers are the core's (one preprocessing path, one prototype computation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from protonet.checkpoint import load_checkpoint
from protonet.embedding import embed
from protonet.preprocessing import preprocess
from protonet.prototypes import compute_prototypes, squared_euclidean
from tests.service.helpers import Drawings, image_item, pixels_item, serve

pytestmark = pytest.mark.anyio


async def test_health_ready_and_model(settings, checkpoint_a):
    async with serve(settings) as running:
        http = running.http
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        model = (await http.get("/v1/model")).json()
        assert model["version"] == load_checkpoint(checkpoint_a).version
        assert model["embedding_dim"] == 64 and model["metric"] == "squared_euclidean"
        assert model["input"] == {
            "image_size": 28,
            "channels": 1,
            "invert": True,
            "fit": "stretch",
            "mean": [],
            "std": [],
        }
        assert model["card"]["metadata"] == {"seed": 0}


async def test_collection_lifecycle(settings):
    drawings = Drawings(3)
    async with serve(settings) as running:
        client, http = running.client, running.http
        created = await http.post("/v1/collections", json={"name": "letters"})
        assert created.status_code == 201
        # Revisions: the id of the collection's latest change (each write adds one).
        assert created.json() == {
            "name": "letters",
            "n_classes": 0,
            "n_examples": 0,
            "revision": 1,
            "index": "auto",  # exact until PROTONET_EXACT_MAX_CLASSES classes, then ivf
            "index_in_use": "exact",
            "rejection": {"mode": "none"},  # the default: no rejection of unknowns
            "model": "default",  # the one model of PROTONET_CHECKPOINT
        }
        assert created.headers["Protonet-Revision"] == "1"
        duplicate = await http.post("/v1/collections", json={"name": "letters"})
        assert duplicate.status_code == 409 and "letters" in duplicate.json()["detail"]

        added = await client.add_support(
            "letters", [("a", drawings.png(0)), ("a", drawings.pixels(0)), ("b/é", drawings.png(1))]
        )
        assert added == {
            "n_added": 3,
            "classes": [{"label": "a", "n_examples": 2}, {"label": "b/é", "n_examples": 1}],
            "revision": 2,
        }
        added = await client.add_support(
            "letters", {"a": [drawings.png(0)], "c": [drawings.png(2)]}
        )
        assert added["classes"] == [
            {"label": "a", "n_examples": 3},
            {"label": "c", "n_examples": 1},
        ]
        assert await client.list_collections() == [
            {
                "name": "letters",
                "n_classes": 3,
                "n_examples": 5,
                "revision": 3,
                "index": "auto",
                "index_in_use": "exact",
                "rejection": {"mode": "none"},
                "model": "default",
            }
        ]
        await client.delete_class("letters", "b/é")  # a label with a slash, URL-encoded
        assert client.revisions.last_written == {"letters": 4}  # sent as min_revision
        detail = await client.get_collection("letters", classes=True)
        assert detail == {
            "name": "letters",
            "n_classes": 2,
            "n_examples": 4,
            "revision": 4,
            "index": "auto",
            "index_in_use": "exact",
            "rejection": {"mode": "none"},
            "model": "default",
            "classes": [{"label": "a", "n_examples": 3}, {"label": "c", "n_examples": 1}],
            "next_cursor": None,
        }
        assert (await http.delete("/v1/collections/letters/classes/b%2F%C3%A9")).status_code == 404
        deleted = await http.delete("/v1/collections/letters")
        assert deleted.status_code == 204 and deleted.headers["Protonet-Revision"] == "5"
        assert (await http.get("/v1/collections/letters")).status_code == 404
        assert await client.list_collections() == []


async def test_query_numbers_are_the_cores(settings, checkpoint_a):
    """Distances, probabilities and ranking equal a direct computation with the core."""
    drawings = Drawings(4)
    support = [(f"class{c}", drawings.png(c)) for c in range(4) for _ in range(3)]
    queries = [drawings.png(c) for c in range(4)]
    async with serve(settings) as running:
        client = running.client
        await client.create_collection("demo")
        await client.add_support("demo", support[:6])
        await client.add_support("demo", support[6:])  # prototypes updated incrementally
        response = await client.query("demo", queries, top_k=3)

    checkpoint = load_checkpoint(checkpoint_a)
    encoder = checkpoint.build_encoder()
    spec = checkpoint.input_spec
    support_embeddings = embed(encoder, torch.stack([preprocess(b, spec) for _, b in support]))
    labels = torch.tensor([c for c in range(4) for _ in range(3)])
    prototypes, _ = compute_prototypes(support_embeddings, labels)
    query_embeddings = embed(encoder, torch.stack([preprocess(b, spec) for b in queries]))
    expected = squared_euclidean(query_embeddings, prototypes)  # [4, 4]
    expected_probabilities = torch.softmax(-expected.double(), dim=1)

    assert response["model_version"] == checkpoint.version
    for row, result in enumerate(response["results"]):
        order = torch.argsort(expected[row]).tolist()
        assert [p["label"] for p in result["top_k"]] == [f"class{c}" for c in order[:3]]
        assert result["label"] == result["top_k"][0]["label"]
        for prediction, c in zip(result["top_k"], order, strict=False):
            assert prediction["distance"] == pytest.approx(float(expected[row, c]), rel=1e-4)
            assert prediction["probability"] == pytest.approx(
                float(expected_probabilities[row, c]), rel=1e-4, abs=1e-9
            )


async def test_top_k_is_clamped_and_probabilities_sum_to_one(settings):
    drawings = Drawings(2)
    async with serve(settings) as running:
        client = running.client
        await client.create_collection("two")
        await client.add_support("two", [("x", drawings.png(0)), ("y", drawings.png(1))])
        result = (await client.query("two", [drawings.png(0)], top_k=50))["results"][0]
        assert len(result["top_k"]) == 2
        assert math.isclose(sum(p["probability"] for p in result["top_k"]), 1.0, rel_tol=1e-9)
        distances = [p["distance"] for p in result["top_k"]]
        assert distances == sorted(distances)


async def test_embed_matches_the_core(settings, checkpoint_a):
    drawings = Drawings(1)
    png, pixels = drawings.png(0), drawings.pixels(0)
    async with serve(settings) as running:
        body = {"inputs": [image_item(png), pixels_item(pixels)]}
        response = (await running.http.post("/v1/embed", json=body)).json()
    checkpoint = load_checkpoint(checkpoint_a)
    inputs = torch.stack(
        [preprocess(png, checkpoint.input_spec), preprocess(pixels, checkpoint.input_spec)]
    )
    expected = embed(checkpoint.build_encoder(), inputs).numpy()
    np.testing.assert_allclose(np.array(response["embeddings"]), expected, rtol=1e-4, atol=1e-5)


async def test_query_on_empty_collection_is_a_conflict(settings):
    async with serve(settings) as running:
        await running.client.create_collection("empty")
        response = await running.http.post(
            "/v1/collections/empty/query", json={"queries": [pixels_item(np.ones((5, 5)))]}
        )
        assert response.status_code == 409
        assert "no classes" in response.json()["detail"]


async def test_openapi_documents_every_field_and_error(settings):
    async with serve(settings) as running:
        spec = (await running.http.get("/openapi.json")).json()
        assert (await running.http.get("/docs")).status_code == 200
    for name, schema in spec["components"]["schemas"].items():
        if name in ("HTTPValidationError", "ValidationError") or "properties" not in schema:
            continue
        for field, definition in schema["properties"].items():
            assert "description" in definition, f"{name}.{field} has no description"
    query = spec["paths"]["/v1/collections/{name}/query"]["post"]["responses"]
    assert {"200", "404", "409", "413", "422"} <= set(query)
    assert query["422"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
    assert set(spec["paths"]) == {
        "/healthz",
        "/readyz",
        "/v1/model",
        "/v1/models",
        "/v1/collections",
        "/v1/collections/{name}",
        "/v1/collections/{name}/support",
        "/v1/collections/{name}/classes/{label}",
        "/v1/collections/{name}/query",
        "/v1/collections/{name}/diagnostics",
        "/v1/collections/{name}/classes",
        "/v1/collections/{name}/snapshot",
        "/v1/collections/{name}/feedback",
        "/v1/collections/{name}/adaptations",
        "/v1/collections/{name}/adaptations/{job_id}",
        "/v1/collections/{name}/adapter",
        "/v1/collections/{name}/examples",
        "/v1/collections/{name}/examples/{example_id}/image",
        "/v1/embed",
    }
    image = spec["paths"]["/v1/collections/{name}/examples/{example_id}/image"]["get"]
    assert set(image["responses"]["200"]["content"]) == {"image/png"}


async def test_openapi_states_exactly_one_image_source_and_strict_types(settings):
    """Clients generated from the schema must not send ``{}`` or ``null`` sources, and the
    schema's types are the server's (issue 11)."""
    async with serve(settings) as running:
        spec = (await running.http.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    for name in ("InputItem", "SupportExample"):
        item = schemas[name]
        sources = [{"required": ["image"]}, {"required": ["pixels"]}, {"required": ["text"]}]
        assert item["oneOf"] == sources, name
        assert item["properties"]["image"]["type"] == "string"
        assert item["properties"]["pixels"]["items"]["items"] == {"type": "number"}
        assert "anyOf" not in item["properties"]["image"]  # no null
        assert item["properties"]["text"]["type"] == "string"
    assert "NFC" in schemas["SupportExample"]["properties"]["label"]["description"]
    assert schemas["QueryRequest"]["properties"]["top_k"]["type"] == "integer"


def test_importing_the_app_reads_no_settings_and_loads_nothing(monkeypatch):
    import importlib

    import pydantic

    import service.app

    monkeypatch.setenv("PROTONET_PORT", "not-a-port")
    monkeypatch.setenv("PROTONET_CHECKPOINT", "/nonexistent/model.pt")
    module = importlib.reload(service.app)
    assert not hasattr(module, "app")
    with pytest.raises(pydantic.ValidationError, match="port"):
        module.create_app()
