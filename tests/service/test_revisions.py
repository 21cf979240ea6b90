"""Revisions and ``min_revision`` in one process: what a read waits for, and the errors."""

from __future__ import annotations

import time

import anyio
import numpy as np
import pytest
from sqlalchemy.exc import OperationalError

from tests.service.helpers import Drawings, make_settings, serve

pytestmark = pytest.mark.anyio


async def test_a_revision_no_write_made_is_a_422(settings):
    async with serve(settings) as running:
        await running.client.create_collection("c")
        for path in ("/v1/collections/c", "/v1/collections/c/query"):
            method = running.http.get if path.endswith("/c") else running.http.post
            kwargs = {} if path.endswith("/c") else {"json": {"queries": [{"pixels": [[1.0]]}]}}
            response = await method(path, params={"min_revision": 99}, **kwargs)
            assert response.status_code == 422, response.text
            assert "ahead of every change in the database (the latest is 1)" in response.text


async def test_a_read_waits_for_the_catch_up_then_503_with_retry_after(tmp_path, checkpoint_a):
    drawings = Drawings(1)
    settings = make_settings(tmp_path, checkpoint_a, min_revision_timeout=0.3)
    async with serve(settings) as running:
        client = running.client
        await client.create_collection("c")
        written = await client.add_support("c", [("a", drawings.png(0))])
        registry = running.state.registry
        running.state.feed.stop()  # else its next poll may record the write as applied
        # Pretend this process has not applied the write, and catching up is slow.
        live = registry._collections["default", "c"]
        live.revision, registry.applied_through = 0, 0
        original = registry.sync
        registry.sync = lambda name, tenant: (time.sleep(1.0), original(name, tenant))[1]
        response = await running.http.get(
            "/v1/collections/c", params={"min_revision": written["revision"]}
        )
        assert response.status_code == 503
        assert response.json()["error"] == "revision_not_reached"
        assert response.headers["Retry-After"] == "1"
        registry.sync = original  # a fast catch-up answers with the write applied
        detail = await client.get_collection("c")
        assert detail["revision"] >= written["revision"] and detail["n_examples"] == 1


async def test_an_unreachable_database_is_a_503_and_writes_nothing(settings, monkeypatch):
    drawings = Drawings(1)
    async with serve(settings) as running:
        await running.client.create_collection("c")
        storage = running.state.storage

        def unreachable(*_args, **_kwargs):
            raise OperationalError("INSERT", {}, Exception("connection refused"))

        monkeypatch.setattr(storage, "add_examples", unreachable)
        response = await running.http.post(
            "/v1/collections/c/support",
            json={"examples": [{"label": "a", "pixels": drawings.pixels(0).tolist()}]},
        )
        assert response.status_code == 503
        assert response.json()["error"] == "database_unavailable"
        assert response.headers["Retry-After"] == "1"
        monkeypatch.undo()
        assert (await running.client.get_collection("c"))["n_examples"] == 0


async def test_the_client_sends_the_revision_it_wrote(settings):
    drawings = Drawings(1)
    async with serve(settings) as running:
        sent: list[str] = []

        async def note(request) -> None:
            sent.append(str(request.url))

        running.http.event_hooks["request"].append(note)
        client = running.client
        await client.create_collection("c")
        await client.add_support("c", [("a", drawings.png(0))])
        await client.query("c", [drawings.png(0)])
        await client.get_collection("c")
        assert sent[-2].endswith("/v1/collections/c/query?min_revision=2")
        assert sent[-1].endswith("/v1/collections/c?min_revision=2")
        assert "min_revision" not in sent[1]  # writes do not send it


async def test_a_change_of_tens_of_thousands_of_classes_is_applied(settings):
    """One catch-up that touches more classes than SQLite binds in one statement (32766)."""
    n = 40_000
    async with serve(settings) as running:
        state = running.state
        await running.client.create_collection("big")
        collection = state.storage.find_collection("default", "big")
        rng = np.random.default_rng(0)
        embeddings = rng.normal(size=(n, state.encoder.embedding_dim)).astype(np.float32)
        # Written straight to the database, as another process would: this one learns of it
        # through the change feed (or a read's catch-up).
        state.storage.add_examples(
            collection.id,
            [f"k{i}" for i in range(n)],
            np.zeros((n, 28, 28), np.uint8),
            embeddings,
            state.encoder.version,
        )
        live = await anyio.to_thread.run_sync(state.registry.sync, "big", "default")
        assert live is not None and live.status().n_classes == n
        detail = await running.client.get_collection("big")
        assert detail["n_classes"] == n
