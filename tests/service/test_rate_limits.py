"""Limits a client cannot exhaust the server past: request rate per key or address (429 +
Retry-After), requests in flight (503 + Retry-After), and decoded pixels per request (413)."""

from __future__ import annotations

import io

import anyio
import numpy as np
import pytest
from PIL import Image

from service.ratelimit import ConcurrencyLimit, RateLimiter
from tests.service.helpers import image_item, make_settings, pixels_item, serve

pytestmark = pytest.mark.anyio

KEY_A = "rate-limit-test-key-a-0123456789"
KEY_B = "rate-limit-test-key-b-0123456789"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_refills_at_the_rate():
    from protonet.errors import RateLimitedError

    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    for _ in range(3):
        limiter.check("a")
    with pytest.raises(RateLimitedError) as refused:
        limiter.check("a")
    assert refused.value.retry_after == 1  # 0.5 s to the next token, rounded up
    limiter.check("b")  # other clients have their own bucket
    clock.now += 0.5
    limiter.check("a")
    with pytest.raises(RateLimitedError):
        limiter.check("a")
    clock.now += 60  # refills to the burst, not beyond
    for _ in range(3):
        limiter.check("a")
    with pytest.raises(RateLimitedError):
        limiter.check("a")


def test_rate_limiter_tracks_a_bounded_number_of_clients():
    limiter = RateLimiter(rate=1.0, burst=1, clock=FakeClock(), max_clients=100)
    for n in range(1000):
        limiter.check(f"client-{n}")
    assert len(limiter._buckets) == 100
    RateLimiter(rate=0, burst=1).check("off")  # rate 0: no limit, nothing tracked


def limited_settings(tmp_path, checkpoint, **overrides):
    keys = f"{KEY_A}:a:write,{KEY_B}:b:write"
    return make_settings(
        tmp_path,
        checkpoint,
        rate_limit_per_second=0.01,  # one token per 100 s: nothing refills during the test
        rate_limit_burst=3,
        auth_enabled=True,
        api_keys=keys,
        **overrides,
    )


async def test_each_key_gets_its_burst_then_429_with_retry_after(tmp_path, checkpoint_a):
    async with serve(limited_settings(tmp_path, checkpoint_a)) as running:
        http = running.http
        statuses = [
            (await http.get("/v1/collections", headers={"X-API-Key": KEY_A})).status_code
            for _ in range(3)
        ]
        refused = await http.get("/v1/collections", headers={"X-API-Key": KEY_A})
        other_key = await http.get("/v1/collections", headers={"X-API-Key": KEY_B})
        probes = [(await http.get("/readyz")).status_code for _ in range(10)]
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-request-id"]
    assert other_key.status_code == 200
    assert probes == [200] * 10  # kubelet's probes are never limited


async def test_key_guessing_is_rate_limited_by_address(tmp_path, checkpoint_a):
    async with serve(limited_settings(tmp_path, checkpoint_a)) as running:
        statuses = [
            (
                await running.http.get("/v1/collections", headers={"X-API-Key": f"guess-{n:020d}"})
            ).status_code
            for n in range(5)
        ]
        valid = await running.http.get("/v1/collections", headers={"X-API-Key": KEY_A})
    assert statuses == [401, 401, 401, 429, 429]
    assert valid.status_code == 200  # a valid key has its own bucket


async def test_requests_over_the_concurrency_cap_get_503(tmp_path, checkpoint_a):
    settings = make_settings(tmp_path, checkpoint_a, max_concurrent_requests=1)
    release = anyio.Event()

    async def slow_body():
        await release.wait()
        yield b'{"name": "slow"}'

    async with serve(settings) as running:
        http = running.http
        results: dict[str, int] = {}

        async def hold_the_slot() -> None:
            headers = {"content-type": "application/json"}
            response = await http.post("/v1/collections", content=slow_body(), headers=headers)
            results["slow"] = response.status_code

        async with anyio.create_task_group() as group:
            group.start_soon(hold_the_slot)
            await anyio.sleep(0.2)
            refused = await http.get("/v1/collections")
            probe = await http.get("/healthz")
            release.set()
        after = await http.get("/v1/collections")
    assert refused.status_code == 503 and refused.json()["error"] == "overloaded"
    assert refused.headers["retry-after"] == "1"
    assert probe.status_code == 200
    assert results == {"slow": 201} and after.status_code == 200


def test_concurrency_limit_counts_slots():
    from protonet.errors import OverloadedError

    limit = ConcurrencyLimit(2)
    limit.acquire()
    limit.acquire()
    with pytest.raises(OverloadedError):
        limit.acquire()
    limit.release()
    limit.acquire()


def png_of_size(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 255).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_pixels_per_request_are_capped_before_decoding(tmp_path, checkpoint_a):
    settings = make_settings(
        tmp_path, checkpoint_a, max_request_pixels=50_000, max_image_pixels=40_000
    )
    async with serve(settings) as running:
        http = running.http
        fits = {"inputs": [image_item(png_of_size(150, 150)), pixels_item(np.ones((100, 100)))]}
        too_many = {
            "inputs": [image_item(png_of_size(200, 200)), image_item(png_of_size(150, 150))]
        }
        too_many_lists = {"inputs": [pixels_item(np.ones((200, 200)))] * 2}
        ok = await http.post("/v1/embed", json=fits)
        refused = await http.post("/v1/embed", json=too_many)
        refused_lists = await http.post("/v1/embed", json=too_many_lists)
    assert ok.status_code == 200
    assert refused.status_code == 413
    assert refused.json()["detail"].startswith("inputs[1]: the request's images add up")
    assert refused_lists.status_code == 413
