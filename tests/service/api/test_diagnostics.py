"""GET /v1/collections/{name}/diagnostics on a small random-init model: the shape, the numbers
against embeddings from /v1/embed, the errors, and the client."""

from __future__ import annotations

import threading

import anyio
import httpx
import pytest
import torch

from protonet.prototypes import compute_prototypes, squared_euclidean
from service.client import ProtonetAPIError, ProtonetClient
from service.collections import registry as registry_module
from tests.service.helpers import Drawings, make_settings, serve

pytestmark = pytest.mark.anyio


async def test_diagnostics_of_a_collection(settings):
    drawings = Drawings(3)
    images = [drawings.png(0), drawings.png(0), drawings.png(0), drawings.png(1)]
    images += [drawings.png(1), drawings.png(2)]
    labels = ["a", "a", "a", "b", "b", "c"]
    async with serve(settings) as running:
        client, http = running.client, running.http
        await client.create_collection("letters")
        written = await client.add_support("letters", list(zip(labels, images, strict=True)))
        response = await http.get("/v1/collections/letters/diagnostics")
        embedded = await client.embed(images)
        model = await client.model()
    assert response.status_code == 200, response.text
    assert response.headers["Protonet-Revision"] == str(written["revision"])
    report = response.json()
    assert report["model_version"] == model["version"]
    assert (report["revision"], report["n_classes"], report["n_examples"]) == (2, 3, 6)
    classes = report["classes"]
    assert [(c["label"], c["n_examples"]) for c in classes] == [("a", 3), ("b", 2), ("c", 1)]
    assert classes[2]["loo_accuracy"] is None  # one example: cannot be left out
    for c in classes[:2]:
        assert 0.0 <= c["loo_accuracy"] <= 1.0
    # The distances are those of the embeddings /v1/embed gives (stored, not re-encoded).
    prototypes, _ = compute_prototypes(
        torch.tensor(embedded["embeddings"]), torch.tensor([0, 0, 0, 1, 1, 2])
    )
    between = squared_euclidean(prototypes, prototypes)
    pairs = {(0, 1), (0, 2), (1, 2)}
    expected = sorted((float(between[i, j]), ("abc"[i], "abc"[j])) for i, j in pairs)
    assert [tuple(p["labels"]) for p in report["confusable_pairs"]] == [p for _, p in expected]
    assert [p["distance"] for p in report["confusable_pairs"]] == pytest.approx(
        [d for d, _ in expected], rel=1e-4
    )
    nearest_of_a = min((float(between[0, j]), "abc"[j]) for j in (1, 2))
    assert (classes[0]["nearest_class_distance"], classes[0]["nearest_class"]) == (
        pytest.approx(nearest_of_a[0], rel=1e-4),
        nearest_of_a[1],
    )
    for suspect in report["suspected_mislabelled"]:
        assert suspect["label"] in ("a", "b") and suspect["closer_to"] != suspect["label"]
        assert suspect["distance_other"] < suspect["distance_own"]


async def test_an_empty_collection_has_empty_diagnostics(settings):
    async with serve(settings) as running:
        await running.client.create_collection("empty")
        report = await running.client.diagnostics("empty")
    assert report["n_classes"] == report["n_examples"] == 0
    assert report["expected_accuracy"] is None
    assert report["classes"] == report["confusable_pairs"] == report["suspected_mislabelled"] == []


async def test_an_unknown_collection_is_a_404(settings):
    async with serve(settings) as running:
        response = await running.http.get("/v1/collections/nope/diagnostics")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found" and "'nope'" in response.json()["detail"]


async def test_a_collection_over_the_limit_is_a_422_naming_the_setting(tmp_path, checkpoint_a):
    drawings = Drawings(1)
    settings = make_settings(tmp_path, checkpoint_a, diagnostics_max_examples=2)
    async with serve(settings) as running:
        await running.client.create_collection("big")
        await running.client.add_support("big", [("a", drawings.png(0))] * 3)
        with pytest.raises(ProtonetAPIError) as raised:
            await running.client.diagnostics("big")
    error = raised.value
    assert (error.status_code, error.error) == (422, "collection_too_large")
    assert "3 examples" in error.detail and "at most 2" in error.detail
    assert "PROTONET_DIAGNOSTICS_MAX_EXAMPLES" in error.detail


async def test_a_collection_needing_too_many_distances_is_a_422(tmp_path, checkpoint_a):
    drawings = Drawings(2)
    settings = make_settings(tmp_path, checkpoint_a, diagnostics_max_distances=5)
    async with serve(settings) as running:
        await running.client.create_collection("c")
        await running.client.add_support("c", [("a", drawings.png(0)), ("b", drawings.png(1))])
        assert (await running.client.diagnostics("c"))["n_classes"] == 2  # 2 x 2 distances
        await running.client.add_support("c", [("a", drawings.png(0))])
        response = await running.http.get("/v1/collections/c/diagnostics")
    assert response.status_code == 422 and response.json()["error"] == "collection_too_large"
    assert "8 distances" in response.json()["detail"]  # 2 examples x 2 classes + 2 x 2
    assert "PROTONET_DIAGNOSTICS_MAX_DISTANCES" in response.json()["detail"]


async def test_the_async_client_reads_its_own_writes(settings):
    drawings = Drawings(2)
    async with serve(settings) as running:
        sent: list[str] = []

        async def note(request: httpx.Request) -> None:
            sent.append(str(request.url))

        running.http.event_hooks["request"].append(note)
        client = running.client
        await client.create_collection("c")
        await client.add_support("c", [("a", drawings.png(0)), ("b", drawings.png(1))])
        report = await client.diagnostics("c")
    assert sent[-1].endswith("/v1/collections/c/diagnostics?min_revision=2")
    assert report["revision"] == 2 and report["n_classes"] == 2


def test_the_sync_client_asks_for_the_diagnostics_path():
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={"n_classes": 0})

    http = httpx.Client(transport=httpx.MockTransport(answer), base_url="http://service")
    with ProtonetClient(http=http) as client:
        assert client.diagnostics("my set") == {"n_classes": 0}
    [request] = requests
    assert (
        request.method == "GET" and request.url.raw_path == b"/v1/collections/my%20set/diagnostics"
    )


async def test_diagnostics_beyond_the_limit_get_429_with_retry_after(
    tmp_path, checkpoint_a, monkeypatch
):
    """With one diagnostics allowed at once and one running (held here), a second is refused
    at once with Retry-After, in the shared error shape; probes and other reads still answer."""
    started, release = threading.Event(), threading.Event()
    original = registry_module.diagnose

    def held(*args, **kwargs):
        started.set()
        release.wait(30)
        return original(*args, **kwargs)

    settings = make_settings(tmp_path, checkpoint_a, diagnostics_max_concurrent=1)
    drawings = Drawings(2)
    async with serve(settings) as running:
        client, http = running.client, running.http
        await client.create_collection("c")
        await client.add_support("c", [("a", drawings.png(0)), ("b", drawings.png(1))])
        monkeypatch.setattr(registry_module, "diagnose", held)
        try:
            async with anyio.create_task_group() as group:
                first: list[httpx.Response] = []

                async def diagnose_first() -> None:
                    first.append(await http.get("/v1/collections/c/diagnostics"))

                group.start_soon(diagnose_first)
                assert await anyio.to_thread.run_sync(started.wait, 30)
                refused = await http.get("/v1/collections/c/diagnostics")
                assert (await http.get("/healthz")).status_code == 200
                assert (await http.get("/v1/collections/c")).status_code == 200
                release.set()
        finally:
            release.set()
        assert first[0].status_code == 200, first[0].text
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "diagnostics_busy"
        assert "PROTONET_DIAGNOSTICS_MAX_CONCURRENT allows" in refused.json()["detail"]
        assert int(refused.headers["Retry-After"]) >= 1
        again = await http.get("/v1/collections/c/diagnostics")  # the slot is free again
        assert again.status_code == 200, again.text
