"""Listings are built and serialized in a worker thread, never on the event loop (a 50,000-class
collection is 3 MB of JSON: on the loop it stalled every other request, /healthz included), and
keep their documented shape."""

from __future__ import annotations

import asyncio

import pytest

from service.api import schemas
from service.api.responses import json_response
from service.api.routers import collections, examples
from tests.service.helpers import Drawings, serve

pytestmark = pytest.mark.anyio


def on_the_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


async def test_listings_are_serialized_off_the_event_loop(settings, monkeypatch):
    serialized: list[bool] = []  # for each response body: whether on the event loop

    def noting_the_thread(*args, **kwargs):
        serialized.append(on_the_event_loop())
        return json_response(*args, **kwargs)

    drawings = Drawings(2)
    async with serve(settings) as running:
        client, http = running.client, running.http
        await client.create_collection("c")
        await client.add_support("c", [("a", drawings.png(0)), ("b", drawings.png(1))])
        for module in (collections, examples):
            monkeypatch.setattr(module, "json_response", noting_the_thread)
        shapes = {
            "/v1/collections/c": schemas.CollectionDetail,
            "/v1/collections/c?classes=true": schemas.CollectionDetail,
            "/v1/collections/c/classes": schemas.ClassPage,
            "/v1/collections": schemas.CollectionList,
            "/v1/collections/c/examples": schemas.ExampleList,
            "/v1/collections/c/diagnostics": schemas.DiagnosticsResponse,
        }
        for path, shape in shapes.items():
            response = await http.get(path)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/json"
            shape.model_validate_json(response.content, strict=True)
        assert serialized == [False] * len(shapes)
        assert "classes" not in (await http.get("/v1/collections/c")).json()  # counts only
        detail = await http.get("/v1/collections/c?classes=true")
        assert detail.headers["Protonet-Revision"] == str(detail.json()["revision"])
        assert detail.json()["next_cursor"] is None
        assert detail.json()["classes"] == [
            {"label": "a", "n_examples": 1},
            {"label": "b", "n_examples": 1},
        ]
