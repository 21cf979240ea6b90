"""``GET /metrics``: Prometheus text with the request, batching, encoder and storage metrics."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.client import AsyncProtonetClient
from service.collections.registry import AllTenantsSummary, CollectionRegistry
from service.edge.metrics import ServiceMetrics
from service.state import ServiceState
from tests.service.helpers import Drawings, make_settings, serve

pytestmark = pytest.mark.anyio

QUERY_ROUTE = "/v1/collections/{name}/query"
ACME = "k-acme-0123456789abcdef"
GLOBEX = "k-globex-0123456789abcdef"
TENANT_KEYS = f"{ACME}:acme:write,{GLOBEX}:globex:write"
TENANT_METHODS = (
    "create",
    "list_all",
    "describe",
    "delete",
    "add_support",
    "delete_class",
    "query",
)
GAUGES = ("protonet_tenants", "protonet_collections", "protonet_classes", "protonet_examples")


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """``(sample name, labels) -> value`` of a Prometheus text exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(parsed: dict, name: str, **labels: str) -> float:
    return parsed[(name, frozenset(labels.items()))]


async def test_metrics_after_some_requests(settings):
    drawings = Drawings(3)
    async with serve(settings) as running:
        client, http = running.client, running.http
        await client.create_collection("m")
        await client.add_support(
            "m", [(f"c{c}", drawings.png(c)) for c in range(3) for _ in range(2)]
        )
        for _ in range(3):
            await client.query("m", [drawings.png(0), drawings.png(1)], top_k=2)
        assert (await http.get("/v1/collections/absent")).status_code == 404
        assert (await http.get("/no/such/path")).status_code == 404
        response = await http.get("/metrics")
        spec = (await http.get("/openapi.json")).json()

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    parsed = samples(response.text)
    query = {"method": "POST", "route": QUERY_ROUTE, "status": "200"}
    assert value(parsed, "protonet_http_requests_total", **query) == 3
    assert value(parsed, "protonet_http_request_duration_seconds_count", **query) == 3
    assert value(parsed, "protonet_http_request_duration_seconds_sum", **query) > 0
    missing = {"method": "GET", "route": "/v1/collections/{name}", "status": "404"}
    assert value(parsed, "protonet_http_requests_total", **missing) == 1
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(parsed, "protonet_http_requests_total", **unmatched) == 1

    # 6 support images in one batch, then 3 batches of 2 query images (ranked too), all by
    # the one model, named "default" (PROTONET_CHECKPOINT).
    model = {"model": "default"}
    assert value(parsed, "protonet_batch_size_count", stage="encode", **model) == 4
    assert value(parsed, "protonet_batch_size_sum", stage="encode", **model) == 12
    assert value(parsed, "protonet_batch_size_sum", stage="decode", **model) == 12
    assert value(parsed, "protonet_batch_size_sum", stage="rank", **model) == 6
    assert value(parsed, "protonet_batch_queue_wait_seconds_count", stage="encode", **model) == 4
    assert value(parsed, "protonet_batch_duration_seconds_count", stage="decode", **model) == 4
    assert value(parsed, "protonet_encoder_duration_seconds_count", **model) == 4

    assert value(parsed, "protonet_tenants") == 1
    assert value(parsed, "protonet_collections") == 1
    assert value(parsed, "protonet_classes") == 3
    assert value(parsed, "protonet_examples") == 6
    assert "/metrics" not in spec["paths"]  # operational, not part of the versioned API


def examples(labels: dict[str, int]) -> list[tuple[str, np.ndarray]]:
    """``n`` support examples per label (pixel arrays: no image decoding needed)."""
    return [(label, np.ones((10, 10))) for label, n in labels.items() for _ in range(n)]


async def gauges(running) -> dict[str, float]:
    response = await running.http.get("/metrics")  # no key: /metrics is open by default
    assert response.status_code == 200
    parsed = samples(response.text)
    return {name: value(parsed, name) for name in GAUGES}


async def test_collection_gauges_count_every_tenant_with_auth_on(tmp_path, checkpoint_a):
    """Regression: the gauges used to count only the "default" tenant, so 0 with auth on."""
    settings = make_settings(tmp_path, checkpoint_a, auth_enabled=True, api_keys=TENANT_KEYS)
    async with serve(settings) as running:
        acme = AsyncProtonetClient(http=running.http, api_key=ACME)
        globex = AsyncProtonetClient(http=running.http, api_key=GLOBEX)
        assert await gauges(running) == dict.fromkeys(GAUGES, 0)

        await acme.create_collection("shared")  # the same name in both tenants: two collections
        await acme.add_support("shared", examples({"a": 2, "b": 3}))
        await acme.create_collection("empty")
        await globex.create_collection("shared")
        await globex.add_support("shared", examples({"x": 1, "y": 1, "z": 4}))
        await globex.create_collection("other")
        await globex.add_support("other", examples({"a": 2}))
        assert await gauges(running) == {
            "protonet_tenants": 2,
            "protonet_collections": 4,
            "protonet_classes": 2 + 3 + 1,
            "protonet_examples": 5 + 6 + 2,
        }

        await globex.delete_class("shared", "z")
        await acme.delete_collection("shared")
        await acme.delete_collection("empty")  # acme has no collection left: not a tenant
        assert await gauges(running) == {
            "protonet_tenants": 1,
            "protonet_collections": 2,
            "protonet_classes": 2 + 1,
            "protonet_examples": 2 + 2,
        }


async def test_collection_gauges_with_auth_off(settings):
    async with serve(settings) as running:
        assert await gauges(running) == dict.fromkeys(GAUGES, 0)
        await running.client.create_collection("one")
        await running.client.add_support("one", examples({"a": 1, "b": 2}))
        await running.client.create_collection("two")
        await running.client.add_support("two", examples({"c": 4}))
        assert await gauges(running) == {
            "protonet_tenants": 1,  # everything is in the default tenant
            "protonet_collections": 2,
            "protonet_classes": 3,
            "protonet_examples": 7,
        }


async def test_summary_is_zero_until_ready(settings):
    state = ServiceState.open(settings, ServiceMetrics())  # opened, not prepared: no registry
    try:
        assert state.all_tenants_summary() == AllTenantsSummary(0, 0, 0, 0)
    finally:
        state.close()


async def test_registry_methods_need_an_explicit_tenant(settings):
    for method in TENANT_METHODS:
        parameter = inspect.signature(getattr(CollectionRegistry, method)).parameters["tenant"]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, method
        assert parameter.default is inspect.Parameter.empty, method

    async with serve(settings) as running:
        registry = running.state.require_registry()
        calls = {
            "create": lambda: registry.create("c"),
            "list_all": lambda: registry.list_all(),
            "describe": lambda: registry.describe("c"),
            "delete": lambda: registry.delete("c"),
            "add_support": lambda: registry.add_support("c", []),
            "delete_class": lambda: registry.delete_class("c", "a"),
            "query": lambda: registry.query("c", [], 1),
        }
        assert set(calls) == set(TENANT_METHODS)
        for method, call in calls.items():
            with pytest.raises(TypeError, match="tenant"):
                call()  # the async ones raise when called, before any coroutine exists
            assert registry.list_all(tenant="default") == [], method  # nothing was created

        registry.create("c", tenant="t1")
        registry.create("c", tenant="t2")
        registry.create("d", tenant="t2")
        assert registry.summarize_all_tenants() == AllTenantsSummary(2, 3, 0, 0)
        assert [c.name for c in registry.list_all(tenant="t2")] == ["c", "d"]
