"""Paged listings through the API: GET .../classes and GET .../examples take ``limit`` and
``cursor``, the collection's GET has counts and lists classes only when asked, the client
walks the pages, and paging under concurrent writes neither skips nor repeats a class."""

from __future__ import annotations

import pytest

from service import client as client_module
from tests.service.helpers import Drawings, serve

pytestmark = pytest.mark.anyio


async def test_classes_come_in_pages_of_the_limit_with_a_cursor_to_the_next(settings, monkeypatch):
    drawings = Drawings(2)
    async with serve(settings) as running:
        client, http = running.client, running.http
        await client.create_collection("c")
        await client.add_support("c", [(f"k{n}", drawings.png(n % 2)) for n in range(5)])
        summary = (await http.get("/v1/collections/c")).json()
        assert summary["n_classes"] == 5 and "classes" not in summary
        first = (await http.get("/v1/collections/c?classes=true&limit=2")).json()
        assert [c["label"] for c in first["classes"]] == ["k0", "k1"]
        labels, cursor = [], first["next_cursor"]
        while cursor is not None:
            response = await http.get(
                "/v1/collections/c/classes", params={"cursor": cursor, "limit": 2}
            )
            assert response.headers["Protonet-Revision"] == str(response.json()["revision"])
            labels += [c["label"] for c in response.json()["classes"]]
            cursor = response.json()["next_cursor"]
        assert labels == ["k2", "k3", "k4"]
        everything = (await http.get("/v1/collections/c/classes")).json()  # default limit: 100
        assert len(everything["classes"]) == 5 and everything["next_cursor"] is None
        assert [c["label"] for c in await client.list_classes("c")] == [f"k{n}" for n in range(5)]
        monkeypatch.setattr(client_module, "PAGE_SIZE", 2)  # its first page: 2 classes
        full = await client.get_collection("c", classes=True)
        assert full["classes"] == await client.list_classes("c") and full["next_cursor"] is None
        assert len(full["classes"]) == 5


async def test_examples_come_in_pages_too_also_of_one_label(settings):
    drawings = Drawings(2)
    async with serve(settings) as running:
        client, http = running.client, running.http
        await client.create_collection("c")
        await client.add_support(
            "c", [("a" if n % 3 else "b", drawings.png(n % 2)) for n in range(7)]
        )
        pages, cursor = [], None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/v1/collections/c/examples", params=params)).json()
            pages.append([e["id"] for e in page["examples"]])
            if (cursor := page["next_cursor"]) is None:
                break
        ids = [i for page in pages for i in page]
        assert [len(page) for page in pages] == [3, 3, 1] and ids == sorted(set(ids))
        listed = await client.list_examples("c")
        assert [e["id"] for e in listed] == ids
        b = (await http.get("/v1/collections/c/examples?label=b&limit=2")).json()
        assert [e["label"] for e in b["examples"]] == ["b", "b"] and b["next_cursor"]
        assert await client.list_examples("c", label="b") == [
            e for e in listed if e["label"] == "b"
        ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "greater than or equal to 1"),
        ("limit=1001", "less than or equal to 1000"),
        ("cursor=%20x", "should match pattern"),
    ],
)
async def test_bad_limits_and_malformed_cursors_are_422(settings, query, message):
    async with serve(settings) as running:
        await running.client.create_collection("c")
        for listing in ("classes", "examples"):
            response = await running.http.get(f"/v1/collections/c/{listing}?{query}")
            assert response.status_code == 422, response.text
            assert message in response.text


async def test_a_cursor_of_another_listing_or_collection_is_422_with_what_to_send(settings):
    drawings = Drawings(1)
    async with serve(settings) as running:
        client, http = running.client, running.http
        for name in ("one", "two"):
            await client.create_collection(name)
            await client.add_support(name, [("a", drawings.png(0)), ("b", drawings.png(0))])
        classes = (await http.get("/v1/collections/one/classes?limit=1")).json()["next_cursor"]
        examples = (await http.get("/v1/collections/one/examples?limit=1")).json()["next_cursor"]
        for path in (
            f"/v1/collections/two/classes?cursor={classes}",
            f"/v1/collections/one/examples?cursor={classes}",
            f"/v1/collections/one/classes?cursor={examples}",
        ):
            response = await http.get(path)
            assert response.status_code == 422, path
            assert response.json()["error"] == "invalid_input"
            assert "send the next_cursor of its previous page" in response.json()["detail"]
        # A collection deleted and created again under its name (here with another id).
        await client.delete_collection("one")
        await client.create_collection("one")
        await client.add_support("one", [("a", drawings.png(0))])
        assert (await http.get(f"/v1/collections/one/classes?cursor={classes}")).status_code == 422


async def test_paging_under_concurrent_writes_neither_skips_nor_repeats_a_class(settings):
    """Between the pages of a reader walking 1 class at a time, writes add examples to listed
    and unlisted classes, create classes and delete some: every class that lived through the
    whole walk is listed exactly once, no label twice, and new classes come last, in the
    order they were made."""
    drawings = Drawings(2)
    async with serve(settings) as running:
        client = running.client
        await client.create_collection("c")
        await client.add_support("c", [(f"old{n:02}", drawings.png(n % 2)) for n in range(30)])
        deleted = {f"old{n:02}" for n in range(0, 30, 4)}
        walked: list[str] = []

        async def write(step: int) -> None:
            grown = f"old{(7 * step) % 30:02}"  # listed already, or not yet
            if grown in deleted:  # a deleted label added again would be a new class
                grown = f"old{(7 * step + 1) % 30:02}"
            await client.add_support(
                "c", [(grown, drawings.png(0)), (f"new{step:02}", drawings.png(1))]
            )
            if f"old{step:02}" in deleted:
                await client.delete_class("c", f"old{step:02}")

        cursor, step = None, 0
        while True:
            params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
            page = (await running.http.get("/v1/collections/c/classes", params=params)).json()
            walked.extend(c["label"] for c in page["classes"])
            if (cursor := page["next_cursor"]) is None:
                break
            if step < 30:
                await write(step)
                step += 1
        assert step == 30 and len(walked) == len(set(walked)), "a class was listed twice"
        survivors = {f"old{n:02}" for n in range(30)} - deleted
        assert survivors <= set(walked), f"skipped: {sorted(survivors - set(walked))}"
        assert {f"new{n:02}" for n in range(30)} <= set(walked)
        assert walked == sorted(walked, key=lambda label: (label[:3] == "new", label))
