"""Crash safety of the real server: a support request that got 200 survives SIGKILL right
after; one that did not return leaves nothing half-written; SIGTERM drains in-flight requests
and exits 0."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.client import ProtonetClient
from service.launcher import LocalServer, start, stop
from tests.service.helpers import PATIENCE, wait_until

pytestmark = pytest.mark.slow

CLIENTS, ROUNDS, SHOT = 4, 3, 2
NAME = "durable"
COLLECTION = f"/v1/collections/{NAME}"


def server_env(tmp_path: Path, checkpoint: Path) -> dict[str, str]:
    return {
        "PROTONET_CHECKPOINT": str(checkpoint),
        "PROTONET_DATA_DIR": str(tmp_path / "data"),
        "PROTONET_TORCH_THREADS": "1",
        "PROTONET_LOG_LEVEL": "warning",
        "PROTONET_RATE_LIMIT_PER_SECOND": "0",
    }


def request_body(client: int, label: str, rng: np.random.Generator) -> dict:
    """``SHOT`` examples of a label of its own plus one of the client's shared class: a
    committed request shows as exactly ``SHOT`` examples of ``label`` and one more ``shared``."""
    examples = [{"label": label, "pixels": rng.random((8, 8)).tolist()} for _ in range(SHOT)]
    examples.append({"label": f"shared-{client}", "pixels": rng.random((8, 8)).tolist()})
    return {"examples": examples}


def write_until_the_server_dies(url: str, client: int, round_: int, acked: list[str]) -> None:
    """Sequential support requests; each label whose request returned 200 goes to ``acked``."""
    rng = np.random.default_rng(1000 * round_ + client)
    with httpx.Client(base_url=url, timeout=30) as http:
        for n in range(10_000):  # bounded: the server is killed within seconds
            label = f"c{client}-r{round_}-{n}"
            try:
                response = http.post(f"{COLLECTION}/support", json=request_body(client, label, rng))
            except httpx.TransportError:
                return  # killed mid-request: this one may or may not have been committed
            assert response.status_code == 200, response.text
            acked.append(label)


def every_client_acknowledged(acked: list[str], round_: int) -> bool:
    return all(any(label.startswith(f"c{c}-r{round_}-") for label in acked) for c in range(CLIENTS))


def check_consistency(url: str, acked: list[str]) -> dict[str, int]:
    """Every acknowledged label is there in full; no class is partial; counts add up."""
    with ProtonetClient(url, timeout=30) as service:
        detail = service.get_collection(NAME, classes=True)
    counts = {c["label"]: c["n_examples"] for c in detail["classes"]}
    own = {label: n for label, n in counts.items() if not label.startswith("shared-")}
    assert not set(acked) - own.keys(), "acknowledged examples lost"
    assert set(own.values()) <= {SHOT}, "a request left a partial class"
    for client in range(CLIENTS):
        committed = sum(label.startswith(f"c{client}-") for label in own)
        assert counts.get(f"shared-{client}", 0) == committed
    assert detail["n_examples"] == sum(counts.values())
    return counts


def test_acknowledged_writes_survive_sigkill_mid_load(tmp_path: Path, checkpoint_a: Path):
    env, acked = server_env(tmp_path, checkpoint_a), []
    rng = random.Random(5)
    for round_ in range(ROUNDS):
        server = start(env, cwd=tmp_path, ready_timeout=PATIENCE)
        try:
            if round_ == 0:
                httpx.post(f"{server.url}/v1/collections", json={"name": "durable"}, timeout=30)
            check_consistency(server.url, acked)
            writers = [
                threading.Thread(
                    target=write_until_the_server_dies, args=(server.url, c, round_, acked)
                )
                for c in range(CLIENTS)
            ]
            for writer in writers:
                writer.start()
            wait_until(
                partial(every_client_acknowledged, acked, round_),
                PATIENCE,
                f"a write acknowledged to every client in round {round_}",
            )
            time.sleep(rng.uniform(0, 0.8))  # the point: the kill lands at a random moment
        finally:
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(30)
        for writer in writers:
            writer.join(30)
    assert len(acked) >= ROUNDS * CLIENTS, "too few writes were acknowledged to test anything"
    server = start(env, cwd=tmp_path, ready_timeout=PATIENCE)
    try:
        counts = check_consistency(server.url, acked)
        query = {"queries": [{"pixels": np.ones((8, 8)).tolist()}], "top_k": 3}
        answer = httpx.post(f"{server.url}{COLLECTION}/query", json=query, timeout=30)
        assert answer.status_code == 200 and len(answer.json()["results"][0]["top_k"]) == 3
    finally:
        assert stop(server.process) == 0
    database = sqlite3.connect(tmp_path / "data" / "protonet.sqlite3")
    assert database.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert database.execute("SELECT count(*) FROM examples").fetchone() == (sum(counts.values()),)


def slow_body(body: bytes, started: threading.Event, release: threading.Event) -> Iterator[bytes]:
    """The body in two halves, the second once ``release`` is set: in flight meanwhile."""
    yield body[: len(body) // 2]
    started.set()
    release.wait(PATIENCE)
    yield body[len(body) // 2 :]


def refuses_connections(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=5)
    except httpx.TransportError:
        return True
    return False


def test_sigterm_drains_in_flight_requests_and_exits_0(tmp_path: Path, checkpoint_a: Path):
    env = server_env(tmp_path, checkpoint_a)
    server: LocalServer = start(env, cwd=tmp_path, ready_timeout=PATIENCE)
    try:
        httpx.post(f"{server.url}/v1/collections", json={"name": "durable"}, timeout=30)
        body = json.dumps(request_body(0, "drained", np.random.default_rng(0))).encode()
        started, release, result = threading.Event(), threading.Event(), {}

        def send() -> None:
            response = httpx.post(
                f"{server.url}{COLLECTION}/support",
                content=slow_body(body, started, release),
                headers={"content-type": "application/json"},
                timeout=30,
            )
            result["status"] = response.status_code

        sender = threading.Thread(target=send)
        sender.start()
        assert started.wait(30)
        server.process.send_signal(signal.SIGTERM)
        # No new connections once draining, while the request is still in flight.
        wait_until(lambda: refuses_connections(server.url), PATIENCE, "refusal once draining")
        release.set()
        sender.join(30)
        assert server.process.wait(30) == 0
    finally:
        stop(server.process)
    assert result == {"status": 200}
    server = start(env, cwd=tmp_path, ready_timeout=PATIENCE)
    try:
        with ProtonetClient(server.url, timeout=30) as service:
            classes = service.list_classes(NAME)
    finally:
        stop(server.process)
    assert {c["label"]: c["n_examples"] for c in classes} == {
        "drained": SHOT,
        "shared-0": 1,
    }
