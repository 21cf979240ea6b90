"""A committed write is answered as committed: the database failing right after the commit (when
the process reads the change back) must not turn it into a 503 that invites a duplicating
retry. And an ``Idempotency-Key`` makes retrying a write safe."""

from __future__ import annotations

import anyio
import pytest
from sqlalchemy.exc import OperationalError

from tests.service.helpers import Drawings, serve

pytestmark = pytest.mark.anyio


def fail_reading_changes(monkeypatch: pytest.MonkeyPatch, running) -> None:
    """The database goes away just after a commit: reading the change back fails."""

    def unreachable(*_args, **_kwargs):
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(running.state.storage, "collection_changes_after", unreachable)


def support_body(drawings: Drawings, labels: list[str]) -> dict:
    return {
        "examples": [{"label": label, "pixels": drawings.pixels(0).tolist()} for label in labels]
    }


async def test_a_write_whose_read_back_fails_is_answered_200_and_stored_once(settings, monkeypatch):
    drawings = Drawings(1)
    async with serve(settings) as running:
        http, storage = running.http, running.state.storage
        await running.client.create_collection("c")
        await running.client.add_support("c", [("a", drawings.png(0))])
        fail_reading_changes(monkeypatch, running)
        response = await http.post(
            "/v1/collections/c/support", json=support_body(drawings, ["a", "b"])
        )
        assert response.status_code == 200, response.text
        written = response.json()
        assert written["n_added"] == 2
        assert written["classes"] == [
            {"label": "a", "n_examples": 2},
            {"label": "b", "n_examples": 1},
        ]
        assert written["revision"] == storage.last_change_id()
        assert response.headers["Protonet-Revision"] == str(written["revision"])
        assert storage.count_examples() == 3  # exactly one copy
        # Until this process applies the write, reads answer the revision they do reflect.
        seen = (await http.get("/v1/collections/c")).json()
        assert seen["revision"] < written["revision"] and seen["n_examples"] == 1
        monkeypatch.undo()  # the database is back: the change feed applies the write
        caught_up = await http.get(
            "/v1/collections/c", params={"min_revision": written["revision"]}
        )
        assert caught_up.status_code == 200, caught_up.text
        assert caught_up.json()["n_examples"] == 3 and caught_up.json()["n_classes"] == 2


async def test_deleting_a_class_or_changing_a_setting_whose_read_back_fails_is_answered(
    settings, monkeypatch
):
    drawings = Drawings(1)
    async with serve(settings) as running:
        http, storage = running.http, running.state.storage
        await running.client.create_collection("c")
        await running.client.add_support("c", [("a", drawings.png(0)), ("b", drawings.png(0))])
        running.state.feed.stop()  # the class deletion reads the changes before it writes
        original = storage.collection_changes_after
        calls = iter([original])  # the first read (before the write) works, the next fail

        def first_then_unreachable(*args, **kwargs):
            reader = next(calls, None)
            if reader is None:
                raise OperationalError("SELECT", {}, Exception("connection refused"))
            return reader(*args, **kwargs)

        monkeypatch.setattr(storage, "collection_changes_after", first_then_unreachable)
        deleted = await http.delete("/v1/collections/c/classes/a")
        assert deleted.status_code == 204, deleted.text
        assert deleted.headers["Protonet-Revision"] == str(storage.last_change_id())
        changed = await http.patch("/v1/collections/c", json={"rejection": "none"})
        assert changed.status_code == 200, changed.text
        assert changed.json()["revision"] == storage.last_change_id()
        assert [
            c.label for c in storage.list_classes(storage.find_collection("default", "c").id)
        ] == ["b"]


async def test_an_idempotency_key_sent_twice_writes_once_and_answers_the_same(settings):
    drawings = Drawings(1)
    async with serve(settings) as running:
        http, storage = running.http, running.state.storage
        await running.client.create_collection("c")
        await running.client.create_collection("d")
        body, key = support_body(drawings, ["a", "a"]), {"Idempotency-Key": "batch-1"}
        first = await http.post("/v1/collections/c/support", json=body, headers=key)
        again = await http.post("/v1/collections/c/support", json=body, headers=key)
        assert first.status_code == again.status_code == 200, again.text
        assert again.json() == first.json()
        assert again.headers["Protonet-Revision"] == first.headers["Protonet-Revision"]
        assert storage.count_examples() == 2
        for path, other in (("c", support_body(drawings, ["b"])), ("d", body)):
            refused = await http.post(f"/v1/collections/{path}/support", json=other, headers=key)
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"] == "idempotency_key_reused"
            assert "'batch-1' was sent before with another request" in refused.json()["detail"]
        assert storage.count_examples() == 2
        unkeyed = await http.post("/v1/collections/c/support", json=body)
        assert unkeyed.status_code == 200 and storage.count_examples() == 4


async def test_a_bad_idempotency_key_is_a_422_naming_the_header(settings):
    drawings = Drawings(1)
    async with serve(settings) as running:
        await running.client.create_collection("c")
        response = await running.http.post(
            "/v1/collections/c/support",
            json=support_body(drawings, ["a"]),
            headers={"Idempotency-Key": "has spaces"},
        )
        assert response.status_code == 422, response.text
        assert "Idempotency-Key" in response.json()["detail"]
        assert running.state.storage.count_examples() == 0


async def test_the_client_retries_safely_with_an_idempotency_key(settings):
    drawings = Drawings(1)
    async with serve(settings) as running:
        client = running.client
        await client.create_collection("c")
        examples = [("a", drawings.png(0))]
        answers = [await client.add_support("c", examples, idempotency_key="k") for _ in range(2)]
        assert answers[0] == answers[1]
        assert running.state.storage.count_examples() == 1


async def test_concurrent_retries_of_one_key_write_once(settings):
    drawings = Drawings(1)
    async with serve(settings) as running:
        await running.client.create_collection("c")
        body = support_body(drawings, ["a"])
        answers: list[dict] = []

        async def send() -> None:
            response = await running.http.post(
                "/v1/collections/c/support", json=body, headers={"Idempotency-Key": "k"}
            )
            assert response.status_code == 200, response.text
            answers.append(response.json())

        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(send)
        assert all(answer == answers[0] for answer in answers)
        assert running.state.storage.count_examples() == 1
