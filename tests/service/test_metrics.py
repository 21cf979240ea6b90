"""``GET /metrics``: Prometheus text with the request, batching, encoder and storage metrics."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.helpers import Drawings, serve

pytestmark = pytest.mark.anyio

QUERY_ROUTE = "/v1/collections/{name}/query"


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

    # 6 support images in one batch, then 3 batches of 2 query images (ranked too).
    assert value(parsed, "protonet_batch_size_count", stage="encode") == 4
    assert value(parsed, "protonet_batch_size_sum", stage="encode") == 12
    assert value(parsed, "protonet_batch_size_sum", stage="decode") == 12
    assert value(parsed, "protonet_batch_size_sum", stage="rank") == 6
    assert value(parsed, "protonet_batch_queue_wait_seconds_count", stage="encode") == 4
    assert value(parsed, "protonet_batch_duration_seconds_count", stage="decode") == 4
    assert value(parsed, "protonet_encoder_duration_seconds_count") == 4

    assert value(parsed, "protonet_collections") == 1
    assert value(parsed, "protonet_classes") == 3
    assert value(parsed, "protonet_examples") == 6
    assert "/metrics" not in spec["paths"]  # operational, not part of the versioned API
