"""Concurrent writers and readers on one collection: no errors, consistent counts, and
queries never see a class half-updated (``remove_ids`` done, ``add_with_ids`` not yet)."""

from __future__ import annotations

import math

import anyio
import pytest

from tests.service.helpers import Drawings, serve

pytestmark = pytest.mark.anyio

WRITERS, WRITES, READERS, READS = 4, 4, 3, 8


async def test_concurrent_support_and_queries(settings):
    drawings = Drawings(WRITERS + 1)
    batches = {
        (w, i): [("shared", drawings.png(0)), (f"writer{w}", drawings.png(w + 1))]
        for w in range(WRITERS)
        for i in range(WRITES)
    }
    probe, seed_example = drawings.png(0), ("shared", drawings.png(0))
    seen_sizes: list[int] = []

    async with serve(settings) as running:
        client = running.client
        await client.create_collection("busy")
        await client.add_support("busy", [seed_example])

        async def writer(w: int) -> None:
            for i in range(WRITES):
                await client.add_support("busy", batches[w, i])

        async def reader() -> None:
            for _ in range(READS):
                result = (await client.query("busy", [probe], top_k=100))["results"][0]
                labels = [p["label"] for p in result["top_k"]]
                assert "shared" in labels and len(set(labels)) == len(labels)
                assert math.isclose(sum(p["probability"] for p in result["top_k"]), 1.0)
                seen_sizes.append(len(labels))

        async with anyio.create_task_group() as group:
            for w in range(WRITERS):
                group.start_soon(writer, w)
            for _ in range(READERS):
                group.start_soon(reader)

        detail = await client.get_collection("busy", classes=True)
        final = await client.query("busy", [probe], top_k=100)
        await client.create_collection("reference")  # same examples, one request
        everything = [seed_example] + [e for b in batches.values() for e in b]
        await client.add_support("reference", everything)
        reference = await client.query("reference", [probe], top_k=100)

    counts = {c["label"]: c["n_examples"] for c in detail["classes"]}
    assert counts == {
        "shared": 1 + WRITERS * WRITES,
        **{f"writer{w}": WRITES for w in range(WRITERS)},
    }
    assert detail["n_examples"] == 1 + 2 * WRITERS * WRITES
    assert len(seen_sizes) == READERS * READS
    got = {p["label"]: p["distance"] for p in final["results"][0]["top_k"]}
    want = {p["label"]: p["distance"] for p in reference["results"][0]["top_k"]}
    assert got.keys() == want.keys()
    for label, distance in want.items():
        assert got[label] == pytest.approx(distance, rel=1e-4, abs=1e-5)


async def test_concurrent_creates_of_one_name_conflict_cleanly(settings):
    statuses: list[int] = []
    async with serve(settings) as running:

        async def create() -> None:
            response = await running.http.post("/v1/collections", json={"name": "race"})
            statuses.append(response.status_code)

        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(create)
        assert len(await running.client.list_collections()) == 1
    assert sorted(statuses) == [201] + [409] * 5
