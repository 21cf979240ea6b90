"""Concurrent requests share decoder and encoder batches, and batching changes no answer."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from tests.service.helpers import Drawings, image_item, serve

pytestmark = pytest.mark.anyio

N_QUERIES = 12


class Gate:
    """Wraps a function so its first call blocks (in the worker thread) until ``open()``."""

    def __init__(self, function):
        self.function = function
        self.event = threading.Event()
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls == 1:
            self.event.wait(30)
        return self.function(*args)

    def open(self) -> None:
        self.event.set()


async def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_queries_alone_and_inside_a_batch_agree(settings):
    """12 single-image queries against two collections, with different ``top_k``, held back
    until all are queued so they share batches, plus one bad request among them; then each
    query again on its own. Same labels and distances (1e-5); the bad one fails alone."""
    drawings = Drawings(6)
    requests = [
        (("left", "right")[i % 2], drawings.png(i % 6), 1 + i % 3) for i in range(N_QUERIES)
    ]
    async with serve(settings) as running:
        client, http, state = running.client, running.http, running.state
        for name, classes in (("left", range(3)), ("right", range(3, 6))):
            await client.create_collection(name)
            await client.add_support(name, [(f"{name}{c}", drawings.png(c)) for c in classes] * 2)

        encoder_rows: list[int] = []
        embed_pixels = state.encoder.embed_pixels

        def counting_embed(pixels: np.ndarray) -> np.ndarray:
            encoder_rows.append(len(pixels))
            return embed_pixels(pixels)

        state.encoder.embed_pixels = counting_embed  # type: ignore[method-assign]
        gate = Gate(state.encoder.to_pixels)
        state.encoder.to_pixels = gate  # type: ignore[method-assign]

        async def query(name: str, png: bytes, top_k: int):
            body = {"queries": [image_item(png)], "top_k": top_k}
            return await http.post(f"/v1/collections/{name}/query", json=body)

        blocker = asyncio.ensure_future(query("left", drawings.png(0), 1))
        await wait_until(lambda: gate.calls == 1)  # the decode thread is held
        together = [asyncio.ensure_future(query(*request)) for request in requests]
        bad = asyncio.ensure_future(query("right", b"not an image", 1))
        await wait_until(lambda: state.pipeline.decoder.in_flight == N_QUERIES + 2)
        gate.open()
        responses = await asyncio.gather(blocker, bad, *together)
        bad_response, batched = responses[1], [r.json() for r in responses[2:]]
        alone = [(await client.query(n, [png], top_k=k)) for n, png, k in requests]

    assert bad_response.status_code == 422
    assert "queries[0].image: not a decodable image" in bad_response.json()["detail"]
    assert all(r.status_code == 200 for r in responses[2:])
    assert max(encoder_rows) >= N_QUERIES, encoder_rows  # the 12 shared one encoder call
    for (_, _, top_k), in_batch, on_its_own in zip(requests, batched, alone, strict=True):
        in_batch, on_its_own = in_batch["results"][0], on_its_own["results"][0]
        assert in_batch["label"] == on_its_own["label"]
        assert len(in_batch["top_k"]) == top_k
        for a, b in zip(in_batch["top_k"], on_its_own["top_k"], strict=True):
            assert a["label"] == b["label"]
            assert a["distance"] == pytest.approx(b["distance"], rel=1e-5, abs=1e-5)
            assert a["probability"] == pytest.approx(b["probability"], rel=1e-5, abs=1e-7)
