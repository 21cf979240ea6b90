"""Revisions and ``min_revision``: what a read waits for, the errors, and revisions numbered
per tenant (no answer discloses another tenant's writes), also across two processes."""

from __future__ import annotations

import re
import time

import anyio
import numpy as np
import pytest
from sqlalchemy.exc import OperationalError

from service.client import AsyncProtonetClient
from tests.service.edge.test_auth import WRITE_A, WRITE_B, keyed_settings
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
            assert "ahead of your latest write (revision 1)" in response.text


async def test_a_read_waits_for_the_catch_up_then_503_with_retry_after(tmp_path, checkpoint_a):
    drawings = Drawings(1)
    settings = make_settings(tmp_path, checkpoint_a, min_revision_timeout=0.3)
    async with serve(settings) as running:
        client = running.client
        await client.create_collection("c")
        written = await client.add_support("c", [("a", drawings.png(0))])
        registry = running.state.registry
        replication = registry.replication
        running.state.feed.stop()  # else its next poll may record the write as applied
        # Pretend this process has not applied the write, and catching up is slow.
        live = registry._collections["default", "c"]
        live.revision, live.change_id, replication.applied_revisions = 0, 0, {}
        original = replication.sync
        replication.sync = lambda name, tenant: (time.sleep(1.0), original(name, tenant))[1]
        response = await running.http.get(
            "/v1/collections/c", params={"min_revision": written["revision"]}
        )
        assert response.status_code == 503
        assert response.json()["error"] == "revision_not_reached"
        assert response.headers["Retry-After"] == "1"
        replication.sync = original  # a fast catch-up answers with the write applied
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


def tenant_clients(running) -> tuple[AsyncProtonetClient, AsyncProtonetClient]:
    """Clients of tenants a and b (test_auth's keys) on one running app."""
    return tuple(AsyncProtonetClient(http=running.http, api_key=k) for k in (WRITE_A, WRITE_B))


async def test_each_tenant_numbers_its_own_writes(tmp_path, checkpoint_a):
    """Tenant a's revisions are 1, 2, 3 whatever tenant b writes meanwhile, in answers and
    headers alike, and a min_revision beyond a's latest names a's latest only."""
    drawings = Drawings(3)
    async with serve(keyed_settings(tmp_path, checkpoint_a)) as running:
        a, b = tenant_clients(running)
        assert (await a.create_collection("mine"))["revision"] == 1
        await b.create_collection("theirs")
        await b.add_support("theirs", [("z", drawings.png(2))])
        added = await a.add_support("mine", [("x", drawings.png(0)), ("y", drawings.png(1))])
        assert added["revision"] == 2
        await b.add_support("theirs", [("z", drawings.png(2))])
        await a.delete_class("mine", "y")  # its revision comes in the header only
        assert a.revisions.last_written["mine"] == 3
        assert (await a.get_collection("mine"))["revision"] == 3
        assert (await a.query("mine", [drawings.png(0)]))["revision"] == 3
        assert (await b.add_support("theirs", [("w", drawings.png(1))]))["revision"] == 4
        a_key = {"X-API-Key": WRITE_A}
        for name in ("mine", "never-made"):
            response = await running.http.get(
                f"/v1/collections/{name}", params={"min_revision": 999}, headers=a_key
            )
            assert response.status_code == 422, response.text
            detail = response.json()["detail"]
            assert "ahead of your latest write (revision 3)" in detail
            assert re.findall(r"\d+", detail) == ["999", "3"]  # nothing of b's 4 writes


async def test_read_your_writes_across_processes_with_tenant_revisions(tmp_path, checkpoint_a):
    """Two apps on one SQLite database (as PROTONET_WORKERS runs them). The second has applied
    tenant b's many writes through its feed, then stops following it; tenant a's write through
    the first has a revision far below the feed's position in change ids, yet a read through
    the second with that min_revision catches up and sees the write."""
    drawings = Drawings(2)
    settings = keyed_settings(tmp_path, checkpoint_a)
    async with serve(settings) as first, serve(settings) as second:
        a, b = tenant_clients(first)
        await a.create_collection("mine")
        await b.create_collection("theirs")
        for _ in range(4):
            await b.add_support("theirs", [("z", drawings.png(1))])
        replication = second.state.registry.replication
        with anyio.fail_after(30):  # the second's feed has applied every change so far
            while replication.applied_through < first.state.storage.last_change_id():
                await anyio.sleep(0.02)
        second.state.feed.stop()
        assert replication.applied_revisions == {"a": 1, "b": 5}
        written = await a.add_support("mine", [("x", drawings.png(0))])
        assert written["revision"] == 2 < replication.applied_through
        reader = AsyncProtonetClient(http=second.http, api_key=WRITE_A)
        reader.revisions.last_written["mine"] = written["revision"]  # as a's client remembers
        detail = await reader.get_collection("mine")
        assert (detail["revision"], detail["n_examples"]) == (2, 1)
        answer = await reader.query("mine", [drawings.png(0)])
        assert answer["revision"] == 2 and answer["results"][0]["label"] == "x"


async def test_a_late_deletion_does_not_drop_a_collection_made_again_under_its_name(settings):
    """SQLite gives a collection made again after a deletion the deleted one's id: the change
    feed applying the deletion late (after the new collection is made) must leave it."""
    drawings = Drawings(1)
    async with serve(settings) as running:
        client, state = running.client, running.state
        await client.create_collection("c")
        first = state.storage.find_collection("default", "c").id
        await client.delete_collection("c")
        [deletion] = [c for c in state.storage.changes_after(0) if c.kind == "delete"]
        await client.create_collection("c")
        assert state.storage.find_collection("default", "c").id == first  # the id again
        live = state.registry.get("c", "default")  # as a request in flight holds it
        state.registry.replication.apply_change(deletion)  # the feed, late
        assert not live.deleted and state.registry.get("c", "default") is live
        await client.add_support("c", [("a", drawings.png(0))])
        assert (await client.get_collection("c"))["n_examples"] == 1
