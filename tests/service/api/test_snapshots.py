"""Snapshots over HTTP: GET .../snapshot exports a collection as a file, POST .../snapshot
restores one into a new collection that answers exactly as the original did (same model
version) or as a fresh registration would (another version); image and text collections;
tenants never see each other's data; a damaged or truncated file is refused and leaves
nothing behind; a restore is invisible until it is complete."""

from __future__ import annotations

import io
import json

import anyio
import pytest

from service.client import AsyncProtonetClient, ProtonetAPIError
from service.collections import restore as restore_module
from tests.service.helpers import PATIENCE, Drawings, make_settings, serve, wait_until
from tests.service.test_models import (  # noqa: F401 (fixtures)
    CARD_QUERY,
    SUPPORT,
    text_checkpoint,
    text_examples,
    two_models,
)

pytestmark = pytest.mark.anyio
WRITE_A = "write-key-of-tenant-a-0123456789"
WRITE_B = "write-key-of-tenant-b-0123456789"
READ_B = "read-key-of-tenant-b-0123456789"
KEYS = f"{WRITE_A}:a:write,{WRITE_B}:b:write,{READ_B}:b:read"


Batches = list[list[tuple[str, bytes]]]


def shape_batches(drawings: Drawings) -> Batches:
    """Three support requests: three classes (made in an order that is not alphabetical) of
    2 drawings each."""
    return [
        [("ring", drawings.png(0)), ("ring", drawings.png(0))],
        [("fork", drawings.png(1)), ("b/é", drawings.png(2))],
        [("fork", drawings.png(1)), ("b/é", drawings.png(2))],
    ]


async def shapes(client: AsyncProtonetClient, batches: Batches, name: str = "shapes") -> None:
    await client.create_collection(name, index="exact")
    for batch in batches:
        await client.add_support(name, batch)


async def images_by_class(client: AsyncProtonetClient, name: str) -> dict[str, list[bytes]]:
    """Each class's stored images (PNG), in the order they were added."""
    images: dict[str, list[bytes]] = {}
    for example in await client.list_examples(name):
        image = await client.example_image(name, example["id"])
        images.setdefault(example["label"], []).append(image)
    return images


def answers(outcome: dict) -> list[list[tuple[str, float]]]:
    return [[(p["label"], p["distance"]) for p in r["top_k"]] for r in outcome["results"]]


async def export(running, name: str, **params) -> bytes:
    response = await running.http.get(f"/v1/collections/{name}/snapshot", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    return response.content


async def test_an_image_collection_round_trips_and_answers_identically(settings):
    drawings = Drawings(3)
    queries = [drawings.png(c % 3) for c in range(9)]
    async with serve(settings) as running:
        client = running.client
        await shapes(client, shape_batches(drawings))
        await client.set_rejection("shapes", "none")
        data = await export(running, "shapes")
        restored = await client.restore_snapshot("copy", data)
        original = await client.get_collection("shapes", classes=True)
        assert restored["name"] == "copy" and restored["revision"] > original["revision"]
        copy = await client.get_collection("copy", classes=True)
        same = ("n_classes", "n_examples", "index", "rejection", "model", "classes")
        assert {k: copy[k] for k in same} == {k: original[k] for k in same}
        assert [c["label"] for c in copy["classes"]] == ["ring", "b/é", "fork"]
        before = await client.query("shapes", queries, top_k=3)
        after = await client.query("copy", queries, top_k=3)
        assert answers(after) == answers(before)  # the same floats: embeddings carried over
        assert await images_by_class(client, "copy") == await images_by_class(client, "shapes")
        # Without embeddings the restore embeds the stored pixels again: the same answers.
        await client.restore_snapshot("again", await export(running, "shapes", embeddings=False))
        again = await client.query("again", queries, top_k=3)
        for mine, theirs in zip(answers(again), answers(before), strict=True):
            assert [label for label, _ in mine] == [label for label, _ in theirs]
            assert [d for _, d in mine] == pytest.approx([d for _, d in theirs], rel=1e-5)


async def test_a_snapshot_restores_on_another_model_version_as_a_fresh_registration(
    tmp_path, checkpoint_a, checkpoint_b
):
    drawings = Drawings(3)
    queries = [drawings.png(c) for c in range(3)]
    batches = shape_batches(drawings)
    async with serve(make_settings(tmp_path / "a", checkpoint_a)) as running:
        await shapes(running.client, batches)
        data = await export(running, "shapes")
    header = json.loads(data.splitlines()[0])
    async with serve(make_settings(tmp_path / "b", checkpoint_b)) as running:
        client = running.client
        assert header["model_versions"] != [(await client.model())["version"]]
        await client.restore_snapshot("restored", data)
        await shapes(client, batches, "fresh")  # the same drawings, registered here
        restored = await client.query("restored", queries, top_k=3)
        fresh = await client.query("fresh", queries, top_k=3)
        assert restored["model_version"] == fresh["model_version"]
        for mine, theirs in zip(answers(restored), answers(fresh), strict=True):
            assert [label for label, _ in mine] == [label for label, _ in theirs]
            assert [d for _, d in mine] == pytest.approx([d for _, d in theirs], rel=1e-5)
        # Its embeddings by both versions are stored: the old one's came with the file.
        assert set(running.stored_versions()) == {
            header["model_versions"][0],
            fresh["model_version"],
        }


async def test_a_text_collection_round_trips(tmp_path, checkpoint_a, text_checkpoint):  # noqa: F811
    async with serve(two_models(tmp_path, checkpoint_a, text_checkpoint)) as running:
        client, http = running.client, running.http
        await client.create_collection("faq", model="intents")
        await http.post("/v1/collections/faq/support", json={"examples": text_examples(SUPPORT)})
        data = await export(running, "faq")
        assert b'"text":"where is my new card?"' in data  # as stored: cleaned
        restored = await client.restore_snapshot("faq-copy", data)
        assert restored["model"] == "intents" and restored["n_examples"] == 4
        query = [{"text": CARD_QUERY}]
        assert answers(await client.query("faq-copy", query)) == answers(
            await client.query("faq", query)
        )
        texts = [(e["label"], e["text"]) for e in await client.list_examples("faq")]
        assert [(e["label"], e["text"]) for e in await client.list_examples("faq-copy")] == texts
        # A text snapshot for the image model, and an image snapshot for the text model: 422.
        await shapes(client, shape_batches(Drawings(3)), "images")
        for name, source, model in (
            ("t", data, "omniglot"),
            ("i", await export(running, "images"), "intents"),
        ):
            with pytest.raises(ProtonetAPIError) as wrong:
                await client.restore_snapshot(name, source, model=model)
            assert (wrong.value.status_code, wrong.value.error) == (422, "wrong_modality")
            assert f"model {model!r} takes" in wrong.value.detail
        assert {c["name"] for c in await client.list_collections()} == {"faq", "faq-copy", "images"}


def damaged_versions(data: bytes) -> dict[str, bytes]:
    lines = data.splitlines(keepends=True)
    return {
        "cut in a line": data[: len(data) // 2],
        "cut before the end line": b"".join(lines[:-1]),
        "a byte changed": data.replace(b'"ring"', b'"rinG"', 1),
        "a line lost": b"".join(lines[:2] + lines[3:]),
        "not a snapshot": b'{"examples": []}\n',
        "empty": b"",
    }


async def test_a_damaged_or_truncated_file_is_refused_and_leaves_nothing(settings):
    drawings = Drawings(3)
    async with serve(settings) as running:
        client, storage = running.client, running.state.storage
        await shapes(client, shape_batches(drawings))
        data = await export(running, "shapes")
        examples, revision = storage.count_examples(), storage.tenant_revision("default")
        for what, damaged in damaged_versions(data).items():
            with pytest.raises(ProtonetAPIError) as refused:
                await client.restore_snapshot("copy", damaged)
            assert refused.value.status_code == 422, what
            assert refused.value.error == "invalid_snapshot", what
            assert "nothing was restored" in refused.value.detail, what
            assert storage.count_examples() == examples, what  # the batches written are gone
            assert (await running.http.get("/v1/collections/copy")).status_code == 404
        assert storage.tenant_revision("default") == revision  # no write happened
        assert [c["name"] for c in await client.list_collections()] == ["shapes"]
        await client.restore_snapshot("copy", data)  # the name was never taken


async def test_tenants_export_and_restore_only_their_own(tmp_path, checkpoint_a):
    drawings = Drawings(3)
    secured = make_settings(tmp_path, checkpoint_a, auth_enabled=True, api_keys=KEYS)
    async with serve(secured) as running:
        a, b, reader = (
            AsyncProtonetClient(http=running.http, api_key=key)
            for key in (WRITE_A, WRITE_B, READ_B)
        )
        await shapes(a, shape_batches(drawings))
        await b.create_collection("mine")
        await b.add_support("mine", [("theirs", drawings.png(2))])
        with pytest.raises(ProtonetAPIError) as elsewhere:
            await b.export_snapshot("shapes", io.BytesIO())
        assert elsewhere.value.status_code == 404  # another tenant's: as if missing
        snapshot = io.BytesIO()
        await a.export_snapshot("shapes", snapshot)
        assert b"theirs" not in snapshot.getvalue()
        with pytest.raises(ProtonetAPIError) as read_only:
            await reader.restore_snapshot("copy", snapshot.getvalue())
        assert read_only.value.status_code == 403
        await b.restore_snapshot("shapes", snapshot.getvalue())  # B's own, same name as A's
        assert [c["label"] for c in await b.list_classes("shapes")] == ["ring", "b/é", "fork"]
        mine = io.BytesIO()
        await reader.export_snapshot("mine", mine)  # the read role may export
        assert b"ring" not in mine.getvalue() and b"theirs" in mine.getvalue()
        assert {c["name"] for c in await a.list_collections()} == {"shapes"}
        assert {c["name"] for c in await b.list_collections()} == {"mine", "shapes"}


async def test_existing_names_limits_and_unknown_models_are_refused_before_reading(
    tmp_path, checkpoint_a
):
    drawings = Drawings(3)
    limited = make_settings(tmp_path, checkpoint_a, max_snapshot_bytes=50_000)
    async with serve(limited) as running:
        client = running.client
        await shapes(client, shape_batches(drawings))
        data = await export(running, "shapes")
        cases = [
            ("shapes", data, {}, 409, "conflict"),
            ("big", data + b" " * 50_000, {}, 413, "too_large"),
            ("other", data, {"model": "elsewhere"}, 422, "unknown_model"),
            ("bad name", data, {}, 422, "validation_error"),
        ]
        for name, body, params, status, error in cases:
            response = await running.http.post(
                f"/v1/collections/{name}/snapshot", content=body, params=params
            )
            assert (response.status_code, response.json()["error"]) == (status, error), name

        async def chunks():  # no Content-Length: counted as it streams in
            yield data
            yield b" " * 50_000

        chunked = await running.http.post("/v1/collections/big/snapshot", content=chunks())
        assert chunked.status_code == 413 and "PROTONET_MAX_SNAPSHOT_BYTES" in chunked.text
        assert [c["name"] for c in await client.list_collections()] == ["shapes"]
        assert (await running.http.get("/v1/collections/none/snapshot")).status_code == 404


async def test_a_restore_is_invisible_until_its_file_is_complete(settings, monkeypatch):
    monkeypatch.setattr(restore_module, "RESTORE_BATCH", 2)  # written as it comes
    drawings = Drawings(3)
    async with serve(settings) as running:
        client = running.client
        await shapes(client, shape_batches(drawings))
        data = await export(running, "shapes")
        half = data.index(b"\n", len(data) // 2) + 1
        sent_half, go_on = anyio.Event(), anyio.Event()

        async def slowly():
            yield data[:half]
            sent_half.set()
            await go_on.wait()
            yield data[half:]

        async def restore() -> None:
            response = await running.http.post("/v1/collections/copy/snapshot", content=slowly())
            assert response.status_code == 201, response.text

        async with anyio.create_task_group() as group:
            group.start_soon(restore)
            await sent_half.wait()
            storage = running.state.storage
            await anyio.to_thread.run_sync(
                wait_until, lambda: storage.count_examples() > 6, PATIENCE, "a batch written"
            )
            assert (await running.http.get("/v1/collections/copy")).status_code == 404
            assert [c["name"] for c in await client.list_collections()] == ["shapes"]
            taken = await running.http.post("/v1/collections", json={"name": "copy"})
            assert taken.status_code == 409  # the name is held
            go_on.set()
        assert (await client.get_collection("copy"))["n_examples"] == 6
