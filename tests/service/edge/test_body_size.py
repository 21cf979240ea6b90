"""Request body size limit (413): from Content-Length, and while a chunked body streams in."""

from __future__ import annotations

import json

import pytest

from service.edge.body_size import BODY_MEMORY_FACTOR, BodySizeLimitMiddleware, MemoryBudget
from service.edge.heap import TRIM_AFTER_BYTES, trim_heap
from tests.service.helpers import make_settings, serve

pytestmark = pytest.mark.anyio

LIMIT = 4096


def big_body(size: int) -> bytes:
    label = "x" * 100
    body = {"examples": [{"label": label, "pixels": [[0.5] * 10]}] * (size // 60)}
    return json.dumps(body).encode()


async def test_declared_length_over_the_limit_is_refused(tmp_path, checkpoint_a):
    async with serve(make_settings(tmp_path, checkpoint_a, max_body_bytes=LIMIT)) as running:
        await running.client.create_collection("c")
        body = big_body(2 * LIMIT)
        response = await running.http.post(
            "/v1/collections/c/support", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["error"] == "too_large"
        assert f"{len(body)} bytes; the limit is {LIMIT}" in response.json()["detail"]
        assert (await running.client.get_collection("c"))["n_examples"] == 0


async def test_streamed_body_is_cut_off_at_the_limit(tmp_path, checkpoint_a):
    """No Content-Length (chunked): counted while streaming, and never read to the end."""
    chunks_sent = 0

    async def chunks():
        nonlocal chunks_sent
        for _ in range(1000):  # 1 MB in all, if it were all read
            chunks_sent += 1
            yield b" " * 1024

    async with serve(make_settings(tmp_path, checkpoint_a, max_body_bytes=LIMIT)) as running:
        response = await running.http.post(
            "/v1/collections", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert f"exceeds the limit of {LIMIT} bytes" in response.json()["detail"]
    assert chunks_sent <= LIMIT // 1024 + 2


async def test_bodies_under_the_limit_pass_through_unchanged(tmp_path, checkpoint_a):
    async with serve(make_settings(tmp_path, checkpoint_a, max_body_bytes=LIMIT)) as running:
        response = await running.http.post("/v1/collections", json={"name": "fits"})
        assert response.status_code == 201


async def test_non_http_scopes_pass_through():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    async def never_called():
        raise AssertionError

    middleware = BodySizeLimitMiddleware(app, max_body_bytes=1, budget=MemoryBudget(1))
    await middleware({"type": "lifespan"}, never_called, never_called)
    assert seen == ["lifespan"]


async def test_the_heap_is_trimmed_after_the_last_large_body_in_flight(monkeypatch):
    """A large body's parsed copies are freed to the heap (service/edge/heap.py): once no
    other body holds memory, the heap is trimmed; small bodies never trim."""
    trims = []
    monkeypatch.setattr("service.edge.body_size.trim_heap", lambda: trims.append(1))
    budget = MemoryBudget(10**9)

    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message):
        pass

    def request(size: int):
        scope = {"type": "http", "headers": [(b"content-length", str(size).encode())]}
        body = iter([{"type": "http.request", "body": b" " * size, "more_body": False}])

        async def receive():
            return next(body)

        return scope, receive

    middleware = BodySizeLimitMiddleware(app, max_body_bytes=10**8, budget=budget)
    await middleware(*request(1000), send)
    assert trims == []
    large = TRIM_AFTER_BYTES // BODY_MEMORY_FACTOR + 1
    held = await budget.reserve(1)  # another request still holds memory: not yet
    await middleware(*request(large), send)
    assert trims == []
    budget.release(held)
    await middleware(*request(large), send)
    assert trims == [1]
    assert budget.available == budget.capacity


def test_trimming_the_heap_runs_here():
    trim_heap()  # glibc: malloc_trim(0); elsewhere a no-op; never an error
