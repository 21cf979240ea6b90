"""Storage survives restarts; a different checkpoint re-embeds stored examples before ready."""

from __future__ import annotations

import threading

import pytest

from protonet.checkpoint import load_checkpoint
from protonet.preprocessing import InputSpec
from service.state import ServiceState
from tests.service.helpers import Drawings, make_settings, serve, write_checkpoint

pytestmark = pytest.mark.anyio

N_CLASSES = 4


def support_and_queries(seed: int = 0) -> tuple[list[tuple[str, bytes]], list[bytes]]:
    drawings = Drawings(N_CLASSES, seed)
    support = [(f"class{c}", drawings.png(c)) for c in range(N_CLASSES) for _ in range(3)]
    queries = [drawings.png(c) for c in range(N_CLASSES) for _ in range(2)]
    return support, queries


async def register_and_query(running, support, queries) -> dict:
    await running.client.create_collection("kept")
    await running.client.add_support("kept", support[:5])
    await running.client.add_support("kept", support[5:])
    return await running.client.query("kept", queries, top_k=N_CLASSES)


def answers(response: dict) -> list[list[tuple[str, float]]]:
    return [[(p["label"], p["distance"]) for p in r["top_k"]] for r in response["results"]]


def assert_same_answers(actual: dict, expected: dict, rel: float) -> None:
    for got, want in zip(answers(actual), answers(expected), strict=True):
        assert [label for label, _ in got] == [label for label, _ in want]
        assert [d for _, d in got] == pytest.approx([d for _, d in want], rel=rel, abs=1e-6)


async def test_restart_keeps_collections_and_answers_identically(tmp_path, checkpoint_a):
    settings = make_settings(tmp_path, checkpoint_a)
    support, queries = support_and_queries()
    async with serve(settings) as running:
        first = await register_and_query(running, support, queries)
        await running.client.create_collection("empty")
        listing = await running.client.list_collections()
        detail = await running.client.get_collection("kept", classes=True)
    async with serve(settings) as running:
        assert await running.client.list_collections() == listing
        assert await running.client.get_collection("kept", classes=True) == detail
        again = await running.client.query("kept", queries, top_k=N_CLASSES)
    assert again["model_version"] == first["model_version"]
    assert_same_answers(again, first, rel=1e-6)


async def test_new_checkpoint_re_embeds_stored_examples(tmp_path, checkpoint_a, checkpoint_b):
    support, queries = support_and_queries()
    version_a, version_b = (load_checkpoint(c).version for c in (checkpoint_a, checkpoint_b))
    upgraded = make_settings(tmp_path / "upgraded", checkpoint_a)
    async with serve(upgraded) as running:
        before = await register_and_query(running, support, queries)
        assert running.stored_versions() == {version_a: len(support)}

    upgraded = make_settings(tmp_path / "upgraded", checkpoint_b, embed_batch_size=5)
    async with serve(upgraded) as running:
        # Both versions' embeddings stay: processes on A may still serve (docs/scaling.md).
        assert running.stored_versions() == {version_a: len(support), version_b: len(support)}
        after = await running.client.query("kept", queries, top_k=N_CLASSES)
        assert (await running.client.get_collection("kept"))["n_examples"] == len(support)
    async with serve(make_settings(tmp_path / "fresh", checkpoint_b)) as running:
        fresh = await register_and_query(running, support, queries)

    assert before["model_version"] == version_a
    assert after["model_version"] == fresh["model_version"] == version_b
    assert answers(after) != answers(before)
    assert_same_answers(after, fresh, rel=1e-4)


async def test_checkpoint_with_another_input_size_re_embeds_stored_pixels(tmp_path, checkpoint_a):
    """Pixels stored at 28x28 go through stage 1 again for a 32x32 model (256-d embeddings)."""
    support, queries = support_and_queries()
    async with serve(make_settings(tmp_path, checkpoint_a)) as running:
        await register_and_query(running, support, queries)
    bigger = write_checkpoint(tmp_path / "big.pt", seed=2, input_spec=InputSpec(image_size=32))
    async with serve(make_settings(tmp_path, bigger)) as running:
        assert (await running.client.model())["embedding_dim"] == 256
        result = await running.client.query("kept", queries, top_k=2)
        assert len(result["results"]) == len(queries)
        assert running.stored_versions()[load_checkpoint(bigger).version] == len(support)


async def test_not_ready_until_prepared(tmp_path, checkpoint_a, monkeypatch):
    """While re-embedding/indexing runs: /healthz 200, /readyz and the API 503."""
    release = threading.Event()
    original_prepare = ServiceState.prepare

    def slow_prepare(self: ServiceState) -> None:
        release.wait(30)
        original_prepare(self)

    monkeypatch.setattr(ServiceState, "prepare", slow_prepare)
    async with serve(make_settings(tmp_path, checkpoint_a), wait=False) as running:
        http = running.http
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "starting"
        listing = await http.get("/v1/collections")
        assert listing.status_code == 503 and "not ready" in listing.json()["detail"]
        release.set()
        await running.client.wait_until_ready(timeout=30, interval=0.02)
        assert (await http.get("/v1/collections")).status_code == 200


async def test_startup_failure_is_reported_by_readyz(tmp_path, checkpoint_a, monkeypatch):
    def broken_load_all(self) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("service.collections.replication.Replication.load_all", broken_load_all)
    async with serve(make_settings(tmp_path, checkpoint_a), wait=False) as running:
        assert running.state.wait_prepared(30)
        ready = await running.http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "failed",
        "detail": "startup failed: disk on fire",
        "database": "up",
    }


async def test_unreadable_checkpoint_fails_fast(tmp_path):
    from protonet.errors import CheckpointError

    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        async with serve(make_settings(tmp_path, tmp_path / "broken.pt")):
            pass
