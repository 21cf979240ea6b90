"""Limits a client cannot exhaust the server past: request rate per key, per client address and
of failed authentications per address (429 + Retry-After), with the client address taken from
X-Forwarded-For only behind a trusted proxy; requests in flight (503 + Retry-After); and decoded
pixels per request (413)."""

from __future__ import annotations

import io
import logging
from collections import Counter

import anyio
import httpx
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from service.edge.rate_limits import ConcurrencyLimit, RateLimiter
from service.launcher import local_server
from service.settings import Settings, trusted_proxy_list
from tests.service.helpers import PATIENCE, Running, image_item, make_settings, pixels_item, serve

pytestmark = pytest.mark.anyio

KEY_A = "rate-limit-test-key-a-0123456789"
KEY_B = "rate-limit-test-key-b-0123456789"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_refills_at_the_rate():
    from service.errors import RateLimitedError

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


def test_rate_limiter_names_what_it_counts():
    from service.errors import RateLimitedError

    limiter = RateLimiter(rate=1.0, burst=1, clock=FakeClock(), what="failed authentications")
    limiter.check("a")
    with pytest.raises(RateLimitedError, match=r"^too many failed authentications: at most 1 "):
        limiter.check("a")


def test_limit_defaults_no_address_limit_but_a_key_guessing_limit():
    defaults = Settings()
    assert (defaults.rate_limit_per_second, defaults.rate_limit_burst) == (200, 400)
    assert defaults.address_rate_limit_per_second == 0  # off
    assert defaults.address_rate_limit_burst == 400
    assert defaults.auth_failure_rate_limit_per_second == 20
    assert defaults.auth_failure_rate_limit_burst == 40
    assert defaults.trusted_proxies == ""


def test_trusted_proxies_are_checked_and_normalised(monkeypatch):
    monkeypatch.setenv("PROTONET_TRUSTED_PROXIES", " 10.0.0.1, 172.16.0.0/12,,::1 ")
    assert Settings().trusted_proxies == "10.0.0.1,172.16.0.0/12,::1"
    assert trusted_proxy_list(Settings().trusted_proxies) == ["10.0.0.1", "172.16.0.0/12", "::1"]
    # A typo must fail the start, not silently trust nobody; "*" would let any client pick its
    # address (and rate bucket).
    for bad in ("proxy.internal", "10.0.0.1/8", "10.0.0.300", "*"):
        with pytest.raises(ValidationError, match="not an IP address or a CIDR network"):
            Settings(trusted_proxies=bad)


def peer(running: Running, address: str) -> httpx.AsyncClient:
    """A client of the running app whose connections come from ``address``."""
    transport = httpx.ASGITransport(running.app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://service")


def limit_defaults() -> dict[str, float | int]:
    """The rate-limit settings as a deployment gets them (make_settings turns the key limit
    off for tests)."""
    names = ("rate_limit_per_second", "rate_limit_burst")
    return {name: Settings.model_fields[name].default for name in names}


async def test_auth_off_default_settings_never_rate_limit_one_client(tmp_path, checkpoint_a):
    # Regression: one local client (or everyone behind a reverse proxy) shared one bucket of
    # 200/s (bursts of 400), so `hey -c 32` got mostly 429s from a server that could serve it.
    settings = make_settings(tmp_path, checkpoint_a, **limit_defaults())
    statuses: Counter[int] = Counter()

    async def client(http: httpx.AsyncClient) -> None:
        for _ in range(1000 // 20):
            statuses[(await http.get("/v1/collections")).status_code] += 1

    async with (
        serve(settings) as running,
        peer(running, "127.0.0.1") as http,
        anyio.create_task_group() as group,
    ):
        for _ in range(20):
            group.start_soon(client, http)
    assert statuses == {200: 1000}


async def test_auth_off_the_key_limit_does_not_apply(tmp_path, checkpoint_a):
    settings = make_settings(tmp_path, checkpoint_a, rate_limit_per_second=0.01, rate_limit_burst=1)
    async with serve(settings) as running:
        statuses = [(await running.http.get("/v1/collections")).status_code for _ in range(20)]
    assert statuses == [200] * 20


def limited_settings(tmp_path, checkpoint, **overrides):
    keys = f"{KEY_A}:a:write,{KEY_B}:b:write"
    values = {
        "rate_limit_per_second": 0.01,  # one token per 100 s: nothing refills during the test
        "rate_limit_burst": 3,
        "auth_enabled": True,
        "api_keys": keys,
        **overrides,
    }
    return make_settings(tmp_path, checkpoint, **values)


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
        docs = [(await http.get("/openapi.json")).status_code for _ in range(5)]
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-request-id"]
    assert other_key.status_code == 200  # one key's exhaustion does not touch another key
    assert probes == [200] * 10  # kubelet's probes are never limited
    assert docs == [200] * 5  # keyless requests are not charged to any key


async def test_a_key_has_one_bucket_whatever_address_it_comes_from(tmp_path, checkpoint_a):
    async with (
        serve(limited_settings(tmp_path, checkpoint_a)) as running,
        peer(running, "10.0.0.1") as first,
        peer(running, "10.0.0.2") as second,
    ):
        headers = {"X-API-Key": KEY_A}
        statuses = [(await first.get("/v1/collections", headers=headers)).status_code]
        statuses += [(await second.get("/v1/collections", headers=headers)).status_code]
        statuses += [(await first.get("/v1/collections", headers=headers)).status_code]
        statuses += [(await second.get("/v1/collections", headers=headers)).status_code]
    assert statuses == [200, 200, 200, 429]


async def test_key_guessing_is_rate_limited_by_address(tmp_path, checkpoint_a):
    settings = limited_settings(
        tmp_path,
        checkpoint_a,
        auth_failure_rate_limit_per_second=0.01,
        auth_failure_rate_limit_burst=3,
    )
    async with (
        serve(settings) as running,
        peer(running, "10.0.0.1") as guesser,
        peer(running, "10.0.0.2") as neighbour,
    ):
        statuses = [
            (await guesser.get("/v1/collections", headers={"X-API-Key": f"guess-{n:020d}"}))
            for n in range(5)
        ]
        valid = await guesser.get("/v1/collections", headers={"X-API-Key": KEY_A})
        missing_key = await guesser.get("/v1/collections")
        elsewhere = await neighbour.get("/v1/collections", headers={"X-API-Key": "guess"})
    assert [r.status_code for r in statuses] == [401, 401, 401, 429, 429]
    assert statuses[3].json()["detail"].startswith("too many failed authentications")
    assert valid.status_code == 200  # a valid key has its own bucket
    assert missing_key.status_code == 429  # no key at all is a failed authentication too
    assert elsewhere.status_code == 401  # another address has its own failure bucket


async def test_key_guessing_is_limited_by_default(tmp_path, checkpoint_a):
    # The default failure limit (20/s, bursts of 40): the first 40 guesses are answered 401,
    # and 200 quick ones cannot all be (they would have to take over 8 s).
    settings = make_settings(tmp_path, checkpoint_a, auth_enabled=True, api_keys=f"{KEY_A}:a:write")
    async with serve(settings) as running:
        http = running.http
        statuses = [
            (await http.get("/v1/collections", headers={"X-API-Key": f"g-{n}"})).status_code
            for n in range(200)
        ]
        valid = await http.get("/v1/collections", headers={"X-API-Key": KEY_A})
    assert statuses[:40] == [401] * 40
    assert set(statuses) == {401, 429}
    assert valid.status_code == 200


async def test_the_address_limit_applies_to_every_request_with_auth_off(tmp_path, checkpoint_a):
    settings = make_settings(
        tmp_path, checkpoint_a, address_rate_limit_per_second=0.01, address_rate_limit_burst=3
    )
    async with (
        serve(settings) as running,
        peer(running, "10.0.0.1") as first,
        peer(running, "10.0.0.2") as second,
    ):
        statuses = [(await first.get("/v1/collections")).status_code for _ in range(4)]
        docs = await first.get("/openapi.json")
        other = await second.get("/v1/collections")
        probe = await first.get("/healthz")
    assert statuses == [200, 200, 200, 429]
    assert docs.status_code == 429
    assert other.status_code == 200  # per address
    assert probe.status_code == 200


async def test_the_address_limit_with_auth_on_spares_valid_keys(tmp_path, checkpoint_a):
    settings = limited_settings(
        tmp_path,
        checkpoint_a,
        rate_limit_per_second=0,
        address_rate_limit_per_second=0.01,
        address_rate_limit_burst=2,
    )
    async with serve(settings) as running:
        http = running.http
        keyless = [(await http.get("/openapi.json")).status_code for _ in range(2)]
        guess = await http.get("/v1/collections", headers={"X-API-Key": "guess"})
        valid = [
            (await http.get("/v1/collections", headers={"X-API-Key": KEY_A})).status_code
            for _ in range(10)
        ]
    assert keyless == [200, 200]
    assert guess.status_code == 429  # the address's bucket is empty: failures are refused too
    assert valid == [200] * 10


def address_limited(tmp_path, checkpoint, **overrides):
    """Auth off, two requests per client address (nothing refills during a test)."""
    return make_settings(
        tmp_path,
        checkpoint,
        address_rate_limit_per_second=0.01,
        address_rate_limit_burst=2,
        **overrides,
    )


async def statuses_with_forwarded_for(http: httpx.AsyncClient, *chains: str) -> list[int]:
    return [
        (await http.get("/v1/collections", headers={"X-Forwarded-For": chain})).status_code
        for chain in chains
    ]


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path, checkpoint_a):
    # A client must not pick its bucket: without trusted proxies, or from a peer that is not
    # one of them, X-Forwarded-For changes nothing.
    for run, proxies in enumerate(("", "10.0.1.0/24")):
        settings = address_limited(tmp_path / f"run{run}", checkpoint_a, trusted_proxies=proxies)
        async with serve(settings) as running, peer(running, "10.0.0.1") as http:
            statuses = await statuses_with_forwarded_for(
                http, "203.0.113.1", "203.0.113.2", "203.0.113.3", "10.0.1.7"
            )
        assert statuses == [200, 200, 429, 429], proxies


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(tmp_path, checkpoint_a):
    settings = address_limited(tmp_path, checkpoint_a, trusted_proxies="10.0.0.1,10.0.2.0/24")
    async with (
        serve(settings) as running,
        peer(running, "10.0.0.1") as proxy,
        peer(running, "10.0.2.9") as other_proxy,
    ):
        first = await statuses_with_forwarded_for(proxy, "203.0.113.5", "203.0.113.5")
        # The same client through another trusted proxy (a CIDR entry): the same bucket.
        again = await statuses_with_forwarded_for(other_proxy, "203.0.113.5")
        other_client = await statuses_with_forwarded_for(proxy, "203.0.113.6")
        # Without the header, the proxy's own requests count against the proxy's address.
        own = [(await proxy.get("/v1/collections")).status_code for _ in range(3)]
    assert first == [200, 200]
    assert again == [429]
    assert other_client == [200]
    assert own == [200, 200, 429]


async def test_a_spoofed_forwarded_for_chain_counts_the_right_most_untrusted_address(
    tmp_path, checkpoint_a
):
    # The client sends its own X-Forwarded-For; each trusted proxy appends the address it got
    # the request from. Only the right-most address a trusted proxy did not add is believed.
    settings = address_limited(tmp_path, checkpoint_a, trusted_proxies="10.0.0.0/24")
    async with serve(settings) as running, peer(running, "10.0.0.1") as proxy:
        spoofed = await statuses_with_forwarded_for(
            proxy,
            "1.1.1.1, 203.0.113.5",
            "2.2.2.2, 10.0.0.3, 203.0.113.5, 10.0.0.2",  # two hops of trusted proxies
            "3.3.3.3, 4.4.4.4, 203.0.113.5",
        )
        # Several X-Forwarded-For headers read as one list, in order.
        split = await proxy.get(
            "/v1/collections",
            headers=[("X-Forwarded-For", "5.5.5.5"), ("X-Forwarded-For", "203.0.113.5")],
        )
        real_client_elsewhere = await statuses_with_forwarded_for(proxy, "1.1.1.1")
    assert spoofed == [200, 200, 429]
    assert split.status_code == 429
    assert real_client_elsewhere == [200]  # the spoofed address was never charged


async def test_the_access_log_names_the_forwarded_client(tmp_path, checkpoint_a, caplog):
    caplog.set_level(logging.INFO, logger="service.access")
    settings = make_settings(tmp_path, checkpoint_a, trusted_proxies="10.0.0.1")
    async with serve(settings) as running, peer(running, "10.0.0.1") as proxy:
        await proxy.get("/v1/collections", headers={"X-Forwarded-For": "203.0.113.5"})
    clients = [getattr(record, "client", None) for record in caplog.records]
    assert "203.0.113.5" in clients


def test_python_m_service_leaves_forwarded_headers_to_the_app(monkeypatch):
    import service.__main__ as entry

    calls: list[dict] = []
    monkeypatch.setattr(entry.uvicorn, "Config", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setattr(entry, "run_uvicorn", lambda config: 0)
    monkeypatch.setattr(entry.signal, "signal", lambda *args: None)
    entry.main([])
    assert calls and calls[0]["proxy_headers"] is False


def test_a_real_server_ignores_forwarded_for_from_loopback(tmp_path, checkpoint_a):
    # uvicorn alone would trust 127.0.0.1's X-Forwarded-For (its default forwarded_allow_ips):
    # every request below would then have its own address and bucket.
    env = {
        "PROTONET_CHECKPOINT": str(checkpoint_a),
        "PROTONET_DATA_DIR": str(tmp_path / "data"),
        "PROTONET_TORCH_THREADS": "1",
        "PROTONET_LOG_LEVEL": "warning",
        "PROTONET_ADDRESS_RATE_LIMIT_PER_SECOND": "0.01",
        "PROTONET_ADDRESS_RATE_LIMIT_BURST": "2",
    }
    with (
        local_server(env, cwd=tmp_path, ready_timeout=PATIENCE) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        statuses = [
            http.get("/v1/collections", headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code
            for n in range(3)
        ]
    assert statuses == [200, 200, 429]


async def test_requests_over_the_concurrency_cap_get_503(tmp_path, checkpoint_a):
    settings = make_settings(tmp_path, checkpoint_a, max_concurrent_requests=1)
    reading, release = anyio.Event(), anyio.Event()

    async def slow_body():
        reading.set()  # the body is read past admission: this request holds the slot
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
            with anyio.fail_after(PATIENCE):
                await reading.wait()
            refused = await http.get("/v1/collections")
            probe = await http.get("/healthz")
            release.set()
        after = await http.get("/v1/collections")
    assert refused.status_code == 503 and refused.json()["error"] == "overloaded"
    assert refused.headers["retry-after"] == "1"
    assert probe.status_code == 200
    assert results == {"slow": 201} and after.status_code == 200


def test_concurrency_limit_counts_slots():
    from service.errors import OverloadedError

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
