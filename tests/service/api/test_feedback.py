"""Feedback: a query sent with ``"remember": true`` keeps its inputs (each result gets an
``input_id``), and POST .../feedback adds one as a support example of the right label, once;
remembered inputs expire, stay in their tenant and collection, and are limited per tenant."""

from __future__ import annotations

import io
from datetime import timedelta

import numpy as np
import pytest
from PIL import Image

from service.client import AsyncProtonetClient, ProtonetAPIError
from service.storage import repository
from tests.service.helpers import Drawings, make_settings, serve
from tests.service.test_models import (  # noqa: F401 (fixtures)
    text_checkpoint,
    two_models,
)

pytestmark = pytest.mark.anyio
WRITE_A = "write-key-of-tenant-a-0123456789"
WRITE_B = "write-key-of-tenant-b-0123456789"
KEYS = f"{WRITE_A}:a:write,{WRITE_B}:b:write"


async def rings_and_forks(client: AsyncProtonetClient, drawings: Drawings, name: str = "c") -> None:
    await client.create_collection(name)
    await client.add_support(name, [("ring", drawings.png(0)), ("fork", drawings.png(1))])


async def refused(call, status: int, error: str) -> str:
    with pytest.raises(ProtonetAPIError) as raised:
        await call
    assert (raised.value.status_code, raised.value.error) == (status, error), raised.value
    return raised.value.detail


async def test_a_remembered_input_becomes_an_example_of_the_right_label_once(settings):
    drawings = Drawings(3)
    wand = drawings.png(2)  # neither a ring nor a fork
    async with serve(settings) as running:
        client = running.client
        await rings_and_forks(client, drawings)
        plain = await client.query("c", [wand])
        assert "input_id" not in plain["results"][0]  # no new key unless asked
        answer = await client.query("c", [wand, drawings.png(0)], remember=True)
        ids = [result["input_id"] for result in answer["results"]]
        assert len(set(ids)) == 2 and all(0 < i < 2**53 for i in ids)
        corrected = await client.feedback("c", ids[0], "wand")
        assert corrected["n_added"] == 1 and corrected["classes"] == [
            {"label": "wand", "n_examples": 1}
        ]
        assert corrected["revision"] == client.revisions.last_written["c"]
        # The example is the query's input as stored: its own prototype now, at distance 0.
        again = await client.query("c", [wand])
        assert again["results"][0]["label"] == "wand"
        assert again["results"][0]["distance"] == pytest.approx(0.0, abs=1e-6)
        [stored] = await client.list_examples("c", label="wand")
        image = Image.open(io.BytesIO(await client.example_image("c", stored["id"])))
        assert image.size == (28, 28)
        confirmed = await client.feedback("c", ids[1], answer["results"][1]["label"])
        assert confirmed["classes"][0]["n_examples"] == 2  # a confirmation: one more example
        detail = await refused(client.feedback("c", ids[0], "wand"), 404, "not_found")
        assert f"input_id {ids[0]} is not remembered for this collection" in detail
        assert (await client.get_collection("c"))["n_examples"] == 4


async def test_feedback_is_idempotent_with_a_key_and_validated(settings):
    drawings = Drawings(2)
    async with serve(settings) as running:
        client, http = running.client, running.http
        await rings_and_forks(client, drawings)
        [result] = (await client.query("c", [drawings.png(0)], remember=True))["results"]
        first = await client.feedback("c", result["input_id"], "ring", idempotency_key="k-1")
        retry = await client.feedback("c", result["input_id"], "ring", idempotency_key="k-1")
        assert retry == first and (await client.get_collection("c"))["n_examples"] == 3
        for body in (
            {"input_id": 0, "label": "ring"},
            {"input_id": 2**53, "label": "ring"},
            {"input_id": "1", "label": "ring"},
            {"input_id": 1},
            {"input_id": 1, "label": " ring"},
        ):
            response = await http.post("/v1/collections/c/feedback", json=body)
            assert response.status_code == 422, body
        missing = await http.post(
            "/v1/collections/none/feedback", json={"input_id": 1, "label": "a"}
        )
        assert missing.status_code == 404 and "collection 'none'" in missing.json()["detail"]


async def test_inputs_stay_in_their_collection_and_tenant_and_expire(
    tmp_path, checkpoint_a, monkeypatch
):
    drawings = Drawings(2)
    secured = make_settings(tmp_path, checkpoint_a, auth_enabled=True, api_keys=KEYS)
    async with serve(secured) as running:
        a, b = (AsyncProtonetClient(http=running.http, api_key=key) for key in (WRITE_A, WRITE_B))
        for client in (a, b):
            await rings_and_forks(client, drawings)
        await rings_and_forks(a, drawings, "other")
        [result] = (await a.query("c", [drawings.png(0)], remember=True))["results"]
        input_id = result["input_id"]
        await refused(b.feedback("c", input_id, "ring"), 404, "not_found")  # B's "c"
        await refused(a.feedback("other", input_id, "ring"), 404, "not_found")
        later = repository.utcnow() + timedelta(hours=2)  # past PROTONET_REMEMBER_SECONDS
        monkeypatch.setattr(repository, "utcnow", lambda: later)
        await refused(a.feedback("c", input_id, "ring"), 404, "not_found")
        assert running.state.storage.prune_remembered() == 1
        assert (await a.get_collection("c"))["n_examples"] == 2


async def test_each_tenant_remembers_within_its_limits(tmp_path, checkpoint_a):
    drawings = Drawings(2)
    limited = make_settings(
        tmp_path, checkpoint_a, auth_enabled=True, api_keys=KEYS, remember_max_inputs=3
    )
    async with serve(limited) as running:
        a, b = (AsyncProtonetClient(http=running.http, api_key=key) for key in (WRITE_A, WRITE_B))
        for client in (a, b):
            await rings_and_forks(client, drawings)
        queries = [drawings.png(0), drawings.png(1)]
        ids = [r["input_id"] for r in (await a.query("c", queries, remember=True))["results"]]
        response = await running.http.post(
            "/v1/collections/c/query",
            json={"queries": [{"pixels": [[0.0, 1.0]]}] * 2, "remember": True},
            headers={"Authorization": f"Bearer {WRITE_A}"},
        )
        assert response.status_code == 429 and response.json()["error"] == "remember_limit"
        assert int(response.headers["Retry-After"]) > 3000  # until the oldest expires
        assert "PROTONET_REMEMBER_MAX_INPUTS (3)" in response.json()["detail"]
        await b.query("c", queries, remember=True)  # another tenant's own limit
        await a.feedback("c", ids[0], "ring")  # feedback frees room
        await a.query("c", queries, remember=True)
    bytes_limited = make_settings(tmp_path / "2", checkpoint_a, remember_max_bytes=1000)
    async with serve(bytes_limited) as running:
        await rings_and_forks(running.client, drawings)
        await running.client.query("c", [drawings.png(0)], remember=True)  # 784 bytes
        await refused(
            running.client.query("c", [drawings.png(0)], remember=True), 429, "remember_limit"
        )


async def test_a_collection_deleted_forgets_its_inputs(settings):
    drawings = Drawings(2)
    async with serve(settings) as running:
        await rings_and_forks(running.client, drawings)
        await running.client.query("c", [drawings.png(0)] * 3, remember=True)
        await running.client.delete_collection("c")
        assert running.state.storage.prune_remembered() == 0  # nothing left to prune
        with running.state.storage.engine.connect() as connection:
            assert (
                connection.exec_driver_sql("SELECT count(*) FROM remembered_inputs").scalar() == 0
            )


async def test_feedback_after_a_model_upgrade_embeds_the_input_again(
    tmp_path, checkpoint_a, checkpoint_b
):
    """Remembered while model A served, fed back once B serves the same database: the example
    gets B's embedding of the remembered input (the same as B embedding it fresh)."""
    drawings = Drawings(2)
    wand = drawings.png(1)
    async with serve(make_settings(tmp_path, checkpoint_a)) as running:
        await running.client.create_collection("c")
        await running.client.add_support("c", [("ring", drawings.png(0))])
        [result] = (await running.client.query("c", [wand], remember=True))["results"]
    async with serve(make_settings(tmp_path, checkpoint_b)) as running:
        await running.client.feedback("c", result["input_id"], "wand")
        fresh = (await running.client.embed([wand]))["embeddings"][0]
        storage, version = running.state.storage, (await running.client.model())["version"]
        stored = storage.collection_embeddings(storage.find_collection("default", "c").id, version)
        assert np.allclose(stored.embeddings[-1], fresh, rtol=1e-5, atol=1e-6)


async def test_a_text_collection_remembers_texts(tmp_path, checkpoint_a, text_checkpoint):  # noqa: F811
    async with serve(two_models(tmp_path, checkpoint_a, text_checkpoint)) as running:
        client = running.client
        await client.create_collection("faq", model="intents")
        await client.add_support("faq", [("card_arrival", {"text": "my card has not arrived"})])
        answer = await client.query("faq", [{"text": "  I lost   my card "}], remember=True)
        await client.feedback("faq", answer["results"][0]["input_id"], "lost_card")
        examples = await client.list_examples("faq", label="lost_card")
        assert [e["text"] for e in examples] == ["I lost my card"]  # as stored: cleaned
