"""Several real ``python -m service`` processes on one database (PostgreSQL, and SQLite for
workers on one host): writes through one are visible through the others, read-your-writes
with ``min_revision``, convergence, SIGKILL under writes, and a model upgrade under queries."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.client import ProtonetAPIError, ProtonetClient
from service.launcher import REPO_ROOT, LocalServer, free_port, start, stop
from service.storage.repository import LIVE_WITHIN, Storage
from tests.service.helpers import PATIENCE, Drawings, make_settings, wait_until

pytestmark = pytest.mark.slow

STARTUP = 180.0  # patience, not a target: a loaded 2-core machine starts two workers slowly


def environment(database_url: str, checkpoint: Path, **extra: str) -> dict[str, str]:
    return {
        "PROTONET_DATABASE_URL": database_url,
        "PROTONET_CHECKPOINT": str(checkpoint),
        "PROTONET_TORCH_THREADS": "1",
        "PROTONET_LOG_FORMAT": "text",
        **extra,
    }


@contextmanager
def replicas(env: Mapping[str, str], count: int, tmp_path: Path) -> Iterator[list[LocalServer]]:
    """``count`` processes started together (they migrate one at a time under the lock)."""
    with ExitStack() as stack, ThreadPoolExecutor(count) as pool:
        futures = [
            pool.submit(start, env, tmp_path, STARTUP, log_file=tmp_path / f"replica{i}.log")
            for i in range(count)
        ]
        servers = []
        for future in futures:
            server = future.result()
            stack.callback(stop, server.process)
            servers.append(server)
        yield servers


def client(server: LocalServer) -> ProtonetClient:
    return ProtonetClient(server.url, timeout=30)


def labels_of(collection: dict) -> dict[str, int]:
    return {c["label"]: c["n_examples"] for c in collection["classes"]}


def classes_of(client: ProtonetClient, name: str) -> dict[str, int]:
    """``label -> examples`` of every class of the collection, as the replica has them."""
    return labels_of(client.get_collection(name, classes=True))


def eventually(check, timeout: float = PATIENCE):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, ProtonetAPIError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_writes_through_one_replica_reach_the_others(postgres_url, checkpoint_a, tmp_path):
    drawings = Drawings(3)
    env = environment(postgres_url, checkpoint_a)
    with replicas(env, 3, tmp_path) as (a, b, c), client(a) as ca, client(b) as cb, client(c) as cc:
        ca.create_collection("letters")
        added = ca.add_support("letters", [("x", drawings.png(0)), ("y", drawings.png(1))])
        assert added["revision"] >= 2
        # Without min_revision the others converge on their own (LISTEN/NOTIFY + polling).
        for other in (cb, cc):
            eventually(
                lambda other=other: _assert(classes_of(other, "letters") == {"x": 1, "y": 1})
            )
        # Deleting through one replica: a class, then the collection.
        cb.delete_class("letters", "y")
        eventually(lambda: _assert(classes_of(cc, "letters") == {"x": 1}))
        cc.delete_collection("letters")
        for other in (ca, cb):
            eventually(lambda other=other: _assert(other.list_collections() == []))


def _assert(condition: bool) -> None:
    assert condition


def test_feedback_and_restores_through_one_replica_reach_the_other(
    postgres_url, checkpoint_a, tmp_path
):
    """An input remembered through A is fed back through B (remembered inputs live in the
    database), and A sees the new example; a snapshot of A's restored through B appears in A."""
    drawings = Drawings(3)
    wand = drawings.png(2)
    env = environment(postgres_url, checkpoint_a)
    with replicas(env, 2, tmp_path) as (a, b), client(a) as ca, client(b) as cb:
        ca.create_collection("c")
        ca.add_support("c", [("ring", drawings.png(0)), ("fork", drawings.png(1))])
        [result] = ca.query("c", [wand], remember=True)["results"]
        cb.revisions.last_written = ca.revisions.last_written  # one client, two replicas
        written = cb.feedback("c", result["input_id"], "wand")
        assert classes_of(ca, "c") == {"ring": 1, "fork": 1, "wand": 1}  # min_revision: caught up
        assert ca.query("c", [wand])["results"][0]["label"] == "wand"
        with pytest.raises(ProtonetAPIError) as used:  # once, whichever replica is asked
            ca.feedback("c", result["input_id"], "wand")
        assert used.value.status_code == 404
        snapshot = io.BytesIO()
        ca.export_snapshot("c", snapshot)
        restored = cb.restore_snapshot("copy", snapshot.getvalue())
        assert restored["revision"] > written["revision"]
        eventually(lambda: _assert(classes_of(ca, "copy") == classes_of(ca, "c")))


def test_a_rejection_setting_changed_through_one_replica_reaches_the_other(
    postgres_url, bundled_model, tmp_path
):
    """PATCH through A: B's summaries and queries follow (the feed's settings change)."""
    drawings = Drawings(2)
    env = environment(postgres_url, bundled_model)
    with replicas(env, 2, tmp_path) as (a, b), client(a) as ca, client(b) as cb:
        ca.create_collection("c", rejection="default")
        ca.add_support("c", [("x", drawings.png(0)), ("x", drawings.png(0))])
        eventually(lambda: _assert("rejection" in cb.query("c", [drawings.png(0)])))
        ca.set_rejection("c", {"acceptance": 0.99})
        wanted = {"mode": "calibrated", "acceptance": 0.99}
        eventually(lambda: _assert(cb.get_collection("c")["rejection"] == wanted))
        eventually(
            lambda: _assert(cb.query("c", [drawings.png(1)])["rejection"]["acceptance"] == 0.99)
        )
        ca.set_rejection("c", "none")
        eventually(lambda: _assert("rejection" not in cb.query("c", [drawings.png(1)])))


def test_read_your_writes_through_another_replica(postgres_url, checkpoint_a, tmp_path):
    """1 write-then-read pair after another, each write through A and its read through B with
    the revision the write returned: never stale. (The client does it by itself.)"""
    drawings = Drawings(2)
    env = environment(postgres_url, checkpoint_a, PROTONET_SYNC_INTERVAL_MS="60000")
    # Polling is off in practice (60 s): B learns of A's writes only by LISTEN/NOTIFY or by
    # catching up for min_revision, so a stale read would show.
    with replicas(env, 2, tmp_path) as (a, b), client(a) as writer, client(b) as reader:
        reader.revisions = writer.revisions  # one logical client behind a load balancer
        writer.create_collection("c")
        for n in range(30):
            written = writer.add_support("c", [(f"class-{n}", drawings.png(n % 2))])
            collection = reader.get_collection("c", classes=True)
            assert collection["revision"] >= written["revision"]
            assert f"class-{n}" in labels_of(collection)
            answer = reader.query("c", [drawings.png(0)], top_k=n + 1)
            assert answer["revision"] >= written["revision"]
            assert len(answer["results"][0]["top_k"]) == n + 1
        # A revision that no write has made: 422 at once, not a wait.
        response = httpx.get(f"{b.url}/v1/collections/c", params={"min_revision": 10**9})
        assert response.status_code == 422
        assert "ahead of your latest write" in response.json()["detail"]


def test_concurrent_writes_through_every_replica_converge(postgres_url, checkpoint_a, tmp_path):
    drawings = Drawings(4)
    env = environment(postgres_url, checkpoint_a)
    with replicas(env, 3, tmp_path) as servers:
        clients = [client(server) for server in servers]
        clients[0].create_collection("c")

        def write(index: int) -> None:
            for n in range(8):
                label = f"r{index}-{n % 3}"  # classes shared by several writes
                clients[index].add_support("c", [(label, drawings.png(n % 4))])

        with ThreadPoolExecutor(3) as pool:
            list(pool.map(write, range(3)))
        query = [drawings.png(1), drawings.png(3)]

        def same_everywhere() -> list:
            answers = [c.query("c", query, top_k=9) for c in clients]
            revisions = {answer["revision"] for answer in answers}
            assert len(revisions) == 1, revisions
            return answers

        answers = eventually(same_everywhere)
        first = answers[0]["results"]
        for other in answers[1:]:
            for mine, theirs in zip(first, other["results"], strict=True):
                assert [p["label"] for p in mine["top_k"]] == [p["label"] for p in theirs["top_k"]]
                assert np.allclose(
                    [p["distance"] for p in mine["top_k"]],
                    [p["distance"] for p in theirs["top_k"]],
                    rtol=1e-5,
                )
        assert sum(classes_of(clients[0], "c").values()) == 24
        for c in clients:
            c.close()


def test_sigkill_of_a_replica_under_writes_loses_no_acknowledged_write(
    postgres_url, checkpoint_a, tmp_path
):
    drawings = Drawings(2)
    env = environment(postgres_url, checkpoint_a)
    with replicas(env, 3, tmp_path) as servers:
        with client(servers[0]) as setup:
            setup.create_collection("c")
        acknowledged: list[tuple[str, int]] = []
        acknowledged_by = [0, 0, 0]  # writes acknowledged through each replica
        stop_writing = threading.Event()

        def write(index: int) -> None:
            with client(servers[index]) as c:
                n = 0
                while not stop_writing.is_set():
                    label = f"w{index}-{n}"
                    try:
                        done = c.add_support("c", [(label, drawings.png(n % 2))])
                        acknowledged.append((label, done["revision"]))
                        acknowledged_by[index] += 1
                    except (httpx.TransportError, ProtonetAPIError):
                        if index == 1:
                            return  # its replica is gone
                    n += 1

        writers = [threading.Thread(target=write, args=(i,)) for i in range(3)]
        for thread in writers:
            thread.start()
        try:
            # Kill replica 1 only once every replica has acknowledged writes: it dies while its
            # writer is mid-stream, and the survivors keep acknowledging writes after its death.
            wait_until(lambda: all(acknowledged_by), PATIENCE, "a write through every replica")
            servers[1].process.send_signal(signal.SIGKILL)
            servers[1].process.wait()
            before = list(acknowledged_by)
            wait_until(
                lambda: all(acknowledged_by[i] > before[i] for i in (0, 2)),
                PATIENCE,
                "a write through each survivor after the SIGKILL",
            )
        finally:
            stop_writing.set()
            for thread in writers:
                thread.join()
        expected = {label for label, _ in acknowledged}
        assert any(label.startswith("w1-") for label in expected)
        last = max(revision for _, revision in acknowledged)
        for survivor in (servers[0], servers[2]):
            with client(survivor) as c:
                c.revisions.last_written["c"] = last
                assert expected <= set(classes_of(c, "c"))
        # The killed replica, restarted, has every acknowledged write before it is ready.
        port = int(servers[1].url.rsplit(":", 1)[1])
        restarted = start(env, tmp_path, STARTUP, port=port, log_file=tmp_path / "restart.log")
        try:
            with ProtonetClient(restarted.url, read_your_writes=False) as c:
                assert expected <= set(classes_of(c, "c"))
        finally:
            stop(restarted.process)


def test_model_upgrade_under_queries_has_no_failed_request(
    postgres_url, checkpoint_a, checkpoint_b, tmp_path
):
    """A process on model B starts beside one on model A (same database), embeds the stored
    examples for B in the background while A keeps answering, turns ready; writes made
    meanwhile through A reach B too; then A stops and A's embeddings are dropped."""
    drawings = Drawings(3)
    env_a = environment(postgres_url, checkpoint_a)
    env_b = environment(postgres_url, checkpoint_b)
    old = start(env_a, tmp_path, STARTUP, log_file=tmp_path / "old.log")
    stop_querying = threading.Event()
    try:
        with client(old) as c:
            c.create_collection("c")
            support = [(label, drawings.png(i)) for i, label in enumerate("xyz") for _ in range(20)]
            c.add_support("c", support)
            version_a = c.model()["version"]
        statuses: list[int] = []

        def query_continuously() -> None:
            with httpx.Client(base_url=old.url, timeout=30) as http:
                body = {
                    "queries": [{"image": __import__("base64").b64encode(drawings.png(0)).decode()}]
                }
                while not stop_querying.is_set():
                    statuses.append(http.post("/v1/collections/c/query", json=body).status_code)

        querying = threading.Thread(target=query_continuously)
        querying.start()
        new_port = free_port()
        with open(tmp_path / "new.log", "ab") as log:
            new = subprocess.Popen(
                [sys.executable, "-m", "service"],
                cwd=REPO_ROOT,
                env={**_base_env(), **env_b, "PROTONET_PORT": str(new_port)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            with ProtonetClient(f"http://127.0.0.1:{new_port}") as c_new, client(old) as c_old:
                written = c_old.add_support("c", [("w", drawings.png(1))])  # during rollover
                c_new.wait_until_ready(STARTUP, exited=new.poll)
                c_new.revisions.last_written["c"] = written["revision"]
                assert c_new.model()["version"] != version_a
                assert classes_of(c_new, "c") == {
                    "x": 20,
                    "y": 20,
                    "z": 20,
                    "w": 1,
                }
                assert c_new.query("c", [drawings.png(2)])["model_version"] != version_a
                stop_querying.set()
                querying.join()
                assert statuses and set(statuses) == {200}
                stop(old.process)
                dropped = subprocess.run(
                    [sys.executable, "-m", "service", "embeddings", "--drop-unused"],
                    cwd=REPO_ROOT,
                    env={**_base_env(), **env_b},
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert dropped.returncode == 0, dropped.stderr
                assert "dropped 61 embeddings of 1 unused versions" in dropped.stdout
                assert c_new.query("c", [drawings.png(2)])["results"][0]["label"] in "xyzw"
        finally:
            stop_querying.set()
            stop(new)
    finally:
        stop(old.process)


def _base_env() -> dict[str, str]:
    import os

    return {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "PROTONET_HOST": "127.0.0.1",
        "PROTONET_RATE_LIMIT_PER_SECOND": "0",
        "PROTONET_MAX_CONCURRENT_REQUESTS": "0",
    }


def two_workers(tmp_path: Path, checkpoint: Path) -> dict[str, str]:
    """PROTONET_WORKERS=2 on a SQLite database in ``tmp_path``."""
    return {
        "PROTONET_DATA_DIR": str(tmp_path / "data"),
        "PROTONET_CHECKPOINT": str(checkpoint),
        "PROTONET_TORCH_THREADS": "1",
        "PROTONET_WORKERS": "2",
        "PROTONET_LOG_FORMAT": "text",
    }


def workers_database(tmp_path: Path, checkpoint: Path) -> Storage:
    """The database of :func:`two_workers`, once started (a worker migrated it)."""
    url = make_settings(tmp_path / "data", checkpoint).resolved_database_url()
    return Storage(url, migrate=False)


def test_workers_on_one_sqlite_database_stay_in_sync(checkpoint_a, tmp_path):
    """PROTONET_WORKERS=2: two processes behind one port, one SQLite file (polling)."""
    drawings = Drawings(2)
    env = two_workers(tmp_path, checkpoint_a)
    server = start(env, tmp_path, STARTUP, log_file=tmp_path / "workers.log")
    database = workers_database(tmp_path, checkpoint_a)
    try:
        with (
            ProtonetClient(server.url) as c,
            ProtonetClient(server.url, read_your_writes=False) as plain,
        ):

            def both_ready() -> None:
                output = subprocess.run(
                    [sys.executable, "-m", "service", "embeddings"],
                    cwd=REPO_ROOT,
                    env={**_base_env(), **env},
                    capture_output=True,
                    text=True,
                    timeout=60,
                ).stdout
                assert output.count("127") + output.count(":") >= 2 and "(starting)" not in output

            # start() returned once one worker was ready; a request that lands on the other
            # while it still loads gets 503 not_ready. Each worker marks its row ready in the
            # database once it serves (uvicorn starts them one after the other, so a run of 200s
            # from /readyz may all come from the first).
            wait_until(
                lambda: ready_workers(database) == 2, STARTUP, "both workers ready (workers.log)"
            )
            c.create_collection("c")
            for n in range(20):  # each request may land on either worker
                c.add_support("c", [(f"k{n}", drawings.png(n % 2))])
                assert f"k{n}" in classes_of(c, "c")
            eventually(lambda: _assert(len(plain.list_classes("c")) == 20))
            both_ready()
    finally:
        database.close()
        stop(server.process)


def ready_workers(database: Storage) -> int:
    """How many live processes on ``database`` have finished loading."""
    return len({r.pid for r in database.live_replicas(LIVE_WITHIN) if r.ready})


def test_a_worker_kept_off_the_cpu_for_seconds_is_not_restarted(checkpoint_a, tmp_path):
    """A loaded machine can keep a worker off the CPU for seconds (SIGSTOP stands in for it
    here). uvicorn's supervisor killed and restarted from scratch any worker that did not answer
    its ping within 5 s, so under load start-up could begin again and again."""
    log = tmp_path / "workers.log"
    server = start(two_workers(tmp_path, checkpoint_a), tmp_path, STARTUP, log_file=log)
    database = workers_database(tmp_path, checkpoint_a)
    try:
        wait_until(lambda: ready_workers(database) == 2, STARTUP, "both workers ready")
        stopped = database.live_replicas(LIVE_WITHIN)[0].pid
        os.kill(stopped, signal.SIGSTOP)
        try:
            time.sleep(7)  # the point: longer than uvicorn's default health-check timeout (5 s)
        finally:
            with suppress(ProcessLookupError):  # gone if the supervisor killed it
                os.kill(stopped, signal.SIGCONT)
        assert "died" not in log.read_text(), "the supervisor killed the stopped worker"
        wait_until(lambda: ready_workers(database) == 2, STARTUP, "both workers ready again")
    finally:
        database.close()
        stop(server.process)
