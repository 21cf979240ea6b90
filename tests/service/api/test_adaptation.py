"""Adapting a collection over HTTP, in process: a job adopts its adapter (queries, summaries,
rejection and later examples then live in its space) or keeps the collection unadapted, can be
cancelled, never runs twice for a collection, respects its limits, and fails clearly when the
service stops. Whether an adapter wins is the core's business (tests/protonet): here the
runner's margin is set to make it win or lose, as each test needs."""

from __future__ import annotations

import anyio
import pytest

from protonet.adaptation import AdaptationConfig
from service.client import ProtonetAPIError
from service.collections.adaptation import STOPPED
from service.storage.adaptations import AdaptationStore
from service.storage.repository import LIVE_WITHIN, Storage
from tests.service.helpers import PATIENCE, Drawings, make_settings, serve

pytestmark = pytest.mark.anyio

WINS = AdaptationConfig(steps=20, margin=-1.0, min_gain=-(10**6))  # adopted whatever it does
LOSES = AdaptationConfig(steps=20, margin=2.0)  # never adopted: it cannot gain 200%
SLOW = AdaptationConfig(steps=10**8)  # runs until it is stopped


def configure(running, config: AdaptationConfig) -> None:
    running.state.adaptations.config = config


async def fill(client, name: str, n_classes: int = 4, shots: int = 3, seed: int = 0) -> Drawings:
    drawings = Drawings(n_classes, seed=seed)
    await client.create_collection(name)
    examples = [(f"c{c}", drawings.png(c)) for c in range(n_classes) for _ in range(shots)]
    await client.add_support(name, examples)
    return drawings


async def running_job(client, name: str, job_id: int) -> dict:
    """The job, once its training has reported progress (it runs for sure then)."""
    with anyio.fail_after(PATIENCE):
        while True:
            job = await client.adaptation(name, job_id)
            if job["status"] != "running" or job["progress"]["fraction"] > 0:
                return job
            await anyio.sleep(0.05)


async def test_an_adopted_adapter_answers_queries_until_it_is_removed(settings):
    async with serve(settings) as running:
        configure(running, WINS)
        client = running.client
        drawings = await fill(client, "s")
        started = await client.adapt("s")
        assert started["status"] == "running" and started["n_examples"] == 12
        assert started["n_classes"] == 4 and started["held_out"] is None
        job = await client.wait_for_adaptation("s", started["id"], timeout=PATIENCE)
        assert job["status"] == "completed" and job["decision"] == "adopted"
        assert job["adapter_version"] == job["id"] and job["revision"] > started["trained_revision"]
        assert job["progress"]["fraction"] == 1.0 and job["progress"]["examples_per_second"] > 0
        assert set(job["held_out"]) == {
            "examples",
            "folds",
            "unadapted_accuracy",
            "adapted_accuracy",
            "margin",
            "min_gain",
            "seconds",
        }
        summary = await client.get_collection("s")
        assert summary["adapter"] == {
            "version": job["id"],
            "trained_revision": started["trained_revision"],
            "stale": False,
        }
        answer = await client.query("s", [drawings.png(1)])
        assert answer["adapter_version"] == job["id"]
        assert answer["revision"] == job["revision"]
        adapter = await client.adapter("s")
        assert adapter["version"] == job["id"] and adapter["held_out"] == job["held_out"]
        assert [j["id"] for j in await client.adaptations("s")] == [job["id"]]
        metrics = (await running.http.get("/metrics")).text
        assert 'protonet_adaptations_total{model="default",outcome="adopted"} 1.0' in metrics
        assert "protonet_adapted_collections 1.0" in metrics

        removed = await running.http.delete("/v1/collections/s/adapter")
        assert removed.status_code == 204
        assert int(removed.headers["Protonet-Revision"]) > job["revision"]
        assert "adapter" not in await client.get_collection("s")
        assert "adapter_version" not in await client.query("s", [drawings.png(1)])
        with pytest.raises(ProtonetAPIError, match="has no adapter") as gone:
            await client.delete_adapter("s")
        assert gone.value.status_code == 404


async def test_a_losing_adapter_is_not_adopted_and_both_figures_are_shown(settings):
    async with serve(settings) as running:
        configure(running, LOSES)
        await fill(running.client, "s")
        started = await running.client.adapt("s")
        job = await running.client.wait_for_adaptation("s", started["id"], timeout=PATIENCE)
        assert job["status"] == "completed" and job["decision"] == "kept_unadapted"
        assert job["adapter_version"] is None and job["revision"] is None
        figures = job["held_out"]
        assert figures["margin"] == 2.0 and 0 <= figures["unadapted_accuracy"] <= 1
        assert 0 <= figures["adapted_accuracy"] <= 1 and figures["examples"] == 12
        assert "adapter" not in await running.client.get_collection("s")
        response = await running.http.get("/v1/collections/s/adapter")
        assert response.status_code == 404


async def test_a_cancelled_job_adopts_nothing_and_cannot_be_cancelled_twice(settings):
    async with serve(settings) as running:
        configure(running, SLOW)
        client = running.client
        await fill(client, "s")
        started = await client.adapt("s")
        await running_job(client, "s", started["id"])
        response = await running.http.delete(f"/v1/collections/s/adaptations/{started['id']}")
        assert response.status_code == 202
        assert response.json()["status"] in ("cancelling", "cancelled")
        job = await client.wait_for_adaptation("s", started["id"], timeout=PATIENCE)
        assert job["status"] == "cancelled" and job["decision"] is None
        assert "adapter" not in await client.get_collection("s")
        with pytest.raises(ProtonetAPIError, match="has finished") as again:
            await client.cancel_adaptation("s", started["id"])
        assert again.value.status_code == 409
        # The slot is free again: a new job of the collection may start.
        configure(running, WINS)
        second = await client.adapt("s")
        assert (await client.wait_for_adaptation("s", second["id"]))["decision"] == "adopted"


async def test_one_job_per_collection_and_as_many_as_the_process_allows(tmp_path, checkpoint_a):
    settings = make_settings(tmp_path / "data", checkpoint_a, adapt_max_concurrent=2)
    async with serve(settings) as running:
        configure(running, SLOW)
        client = running.client
        for name in ("a", "b", "c"):
            await fill(client, name)
        first = await client.adapt("a")
        with pytest.raises(ProtonetAPIError, match=f"adaptation {first['id']} of this") as twice:
            await client.adapt("a")
        assert twice.value.status_code == 409
        await client.adapt("b")
        response = await running.http.post("/v1/collections/c/adaptations")
        assert response.status_code == 429
        assert response.json()["error"] == "adaptation_busy"
        assert "PROTONET_ADAPT_MAX_CONCURRENT" in response.json()["detail"]
        assert int(response.headers["Retry-After"]) >= 1
        for name in ("a", "b"):
            [job] = await client.adaptations(name)
            await client.cancel_adaptation(name, job["id"])


async def test_what_cannot_be_adapted_is_refused_before_any_job(tmp_path, checkpoint_a):
    settings = make_settings(tmp_path / "data", checkpoint_a, adapt_max_examples=10)
    async with serve(settings) as running:
        client, http = running.client, running.http
        await client.create_collection("singles")
        drawings = Drawings(3)
        await client.add_support("singles", [(f"c{c}", drawings.png(c)) for c in range(3)])
        response = await http.post("/v1/collections/singles/adaptations")
        assert response.status_code == 409
        assert "at least 2 classes, one of them with at least 2 examples" in response.text
        await fill(client, "large", n_classes=4, shots=3)  # 12 examples
        response = await http.post("/v1/collections/large/adaptations")
        assert response.status_code == 422
        assert response.json()["error"] == "collection_too_large"
        assert "PROTONET_ADAPT_MAX_EXAMPLES (10)" in response.json()["detail"]
        assert (await http.post("/v1/collections/nowhere/adaptations")).status_code == 404
        assert (await http.get("/v1/collections/singles/adaptations/99")).status_code == 404
        assert (await http.delete("/v1/collections/singles/adaptations/99")).status_code == 404
        assert await client.adaptations("singles") == []


async def test_a_write_during_a_job_makes_its_adapter_stale_and_counts_in_its_space(settings):
    async with serve(settings) as running:
        client = running.client
        configure(running, AdaptationConfig(steps=400, margin=-1.0, min_gain=-(10**6)))
        drawings = await fill(client, "s", n_classes=5)
        started = await client.adapt("s")  # its embeddings are read before it answers
        await running_job(client, "s", started["id"])
        added = await client.add_support("s", [("late", drawings.png(4))])
        assert added["revision"] > started["trained_revision"]
        job = await client.wait_for_adaptation("s", started["id"], timeout=PATIENCE)
        assert job["decision"] == "adopted"
        summary = await client.get_collection("s", classes=True)
        assert summary["adapter"]["stale"] is True
        assert summary["adapter"]["trained_revision"] == started["trained_revision"]
        assert {"label": "late", "n_examples": 1} in summary["classes"]
        answer = await client.query("s", [drawings.png(4)], top_k=6)
        assert answer["adapter_version"] == job["id"]
        assert "late" in [ranked["label"] for ranked in answer["results"][0]["top_k"]]
        assert (await client.adapter("s"))["stale"] is True


async def test_a_write_after_adoption_makes_the_adapter_stale(settings):
    async with serve(settings) as running:
        configure(running, WINS)
        drawings = await fill(running.client, "s")
        started = await running.client.adapt("s")
        await running.client.wait_for_adaptation("s", started["id"])
        assert (await running.client.get_collection("s"))["adapter"]["stale"] is False
        await running.client.delete_class("s", "c3")
        assert (await running.client.get_collection("s"))["adapter"]["stale"] is True
        assert (await running.client.adapter("s"))["stale"] is True
        answer = await running.client.query("s", [drawings.png(0)])
        assert answer["adapter_version"] == started["id"]


async def test_a_job_that_overruns_its_time_fails_and_adopts_nothing(tmp_path, checkpoint_a):
    settings = make_settings(tmp_path / "data", checkpoint_a, adapt_max_seconds=0.5)
    async with serve(settings) as running:
        configure(running, SLOW)
        await fill(running.client, "s")
        started = await running.client.adapt("s")
        job = await running.client.wait_for_adaptation("s", started["id"], timeout=PATIENCE)
        assert job["status"] == "failed"
        assert "PROTONET_ADAPT_MAX_SECONDS (0.5 s)" in job["error"]
        assert "adapter" not in await running.client.get_collection("s")


async def test_stopping_the_service_fails_its_running_jobs(settings):
    async with serve(settings) as running:
        configure(running, SLOW)
        await fill(running.client, "s")
        started = await running.client.adapt("s")
        await running_job(running.client, "s", started["id"])
        collection_id = running.state.storage.find_collection("default", "s").id
    storage = Storage(settings.resolved_database_url())
    try:
        job = AdaptationStore(storage, LIVE_WITHIN).get_job(collection_id, started["id"])
        assert job is not None and job.status == "failed" and job.error == STOPPED
    finally:
        storage.close()


async def test_the_adapter_and_its_jobs_go_with_their_collection(settings):
    async with serve(settings) as running:
        configure(running, WINS)
        await fill(running.client, "s")
        started = await running.client.adapt("s")
        await running.client.wait_for_adaptation("s", started["id"])
        await running.client.delete_collection("s")
        await fill(running.client, "s")
        assert "adapter" not in await running.client.get_collection("s")
        assert await running.client.adaptations("s") == []


async def test_rejection_thresholds_are_scaled_in_the_adapted_space(tmp_path, bundled_model):
    """The bundled model is calibrated: an adapted collection's thresholds are scaled by the
    held-out distances its adaptation measured (40 here: enough), not by leave-one-out
    distances of the examples the adapter was fitted to."""
    async with serve(make_settings(tmp_path / "data", bundled_model)) as running:
        configure(running, WINS)
        drawings = await fill(running.client, "s", n_classes=10, shots=4)
        before = await running.client.query("s", [drawings.png(0)], rejection="default")
        assert before["rejection"]["threshold_source"] == "collection"
        started = await running.client.adapt("s")
        job = await running.client.wait_for_adaptation("s", started["id"], timeout=PATIENCE)
        answer = await running.client.query("s", [drawings.png(0)], rejection="default")
        assert answer["adapter_version"] == job["id"]
        assert answer["rejection"]["threshold_source"] == "adapter"
        live = running.state.registry.get("s", "default")
        assert live.adapter is not None and len(live.adapter.scores.scores) == 40
        assert answer["results"][0]["threshold"] > 0


@pytest.mark.parametrize("index", ["exact", "ivf"])
async def test_an_adapted_collection_is_adapted_again_after_a_restart(
    tmp_path, checkpoint_a, index
):
    """The adapter is loaded with the collection; an IVF index persisted in the adapted space
    is used again (its file is named by the space), and never for the unadapted one."""
    settings = make_settings(tmp_path / "data", checkpoint_a)
    async with serve(settings) as running:
        configure(running, WINS)
        drawings = Drawings(4)
        await running.client.create_collection("s", index=index)
        examples = [(f"c{c}", drawings.png(c)) for c in range(4) for _ in range(3)]
        await running.client.add_support("s", examples)
        job = await running.client.wait_for_adaptation("s", (await running.client.adapt("s"))["id"])
        query = drawings.png(2)
        before = await running.client.query("s", [query], top_k=4)
    async with serve(settings) as running:
        after = await running.client.query("s", [query], top_k=4)
        assert after["adapter_version"] == job["id"] and after["index"] == index
        ranked = [before["results"][0]["top_k"], after["results"][0]["top_k"]]
        assert [p["label"] for p in ranked[0]] == [p["label"] for p in ranked[1]]
        assert [p["distance"] for p in ranked[0]] == pytest.approx(
            [p["distance"] for p in ranked[1]], rel=1e-4
        )
        saved = sorted(path.name for path in (tmp_path / "data" / "indexes").glob("*.ivf"))
        if index == "ivf":
            assert any(f".adapter-{job['id']}." in name for name in saved), saved
        await running.client.delete_adapter("s")
    async with serve(settings) as running:
        assert "adapter_version" not in await running.client.query("s", [query], top_k=4)
