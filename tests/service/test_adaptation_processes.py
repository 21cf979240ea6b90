"""Adaptation with real ``python -m service`` processes on one PostgreSQL database, the bundled
Omniglot model and its default adapter training: an adapter adopted through one replica answers
through another, a losing one is not adopted, cancelling (through another replica) and
restarting leave the collection as it was, and a write during a job makes its adapter stale.

The synthetic shapes (tests/service/helpers.py ``Shapes``) are classes the model confuses
unadapted, which an adapter separates; the synthetic drawings (``Drawings``) it already tells
apart perfectly, so no adapter can win there."""

from __future__ import annotations

import numpy as np
import pytest

from service.client import ProtonetClient
from service.launcher import start, stop
from tests.service.helpers import PATIENCE, Drawings, Shapes
from tests.service.test_scale_out import STARTUP, client, environment, eventually, replicas

pytestmark = pytest.mark.slow

BATCH = 200  # examples per request (the service takes at most 256)


def fill(writer: ProtonetClient, name: str, images, n_classes: int, shots: int = 5) -> None:
    writer.create_collection(name)
    examples = [(f"c{c}", images.png(c)) for c in range(n_classes) for _ in range(shots)]
    for begin in range(0, len(examples), BATCH):
        writer.add_support(name, examples[begin : begin + BATCH])


def test_an_adapter_adopted_through_one_replica_answers_through_another(
    postgres_url, bundled_model, tmp_path
):
    shapes = Shapes(10, seed=0)
    env = environment(postgres_url, bundled_model)
    with replicas(env, 2, tmp_path) as (a, b), client(a) as ca, client(b) as cb:
        cb.revisions = ca.revisions  # one logical client behind a load balancer
        fill(ca, "shapes", shapes, 10)
        started = ca.adapt("shapes")
        job = ca.wait_for_adaptation("shapes", started["id"], timeout=PATIENCE)
        assert job["decision"] == "adopted", job
        figures = job["held_out"]
        assert figures["adapted_accuracy"] > figures["unadapted_accuracy"] + figures["margin"]
        answer = cb.query("shapes", [shapes.png(3)])  # min_revision: B catches up first
        assert answer["adapter_version"] == job["id"]
        assert cb.get_collection("shapes")["adapter"] == {
            "version": job["id"],
            "trained_revision": started["trained_revision"],
            "stale": False,
        }
        assert cb.adaptation("shapes", job["id"]) == job  # the job is shared storage
        # Without min_revision, B follows by itself (the change feed).
        with ProtonetClient(b.url, read_your_writes=False) as plain:
            eventually(
                lambda: _assert(
                    plain.query("shapes", [shapes.png(3)]).get("adapter_version") == job["id"]
                )
            )
        # Removing it through B: A answers unadapted again.
        cb.delete_adapter("shapes")
        assert "adapter_version" not in ca.query("shapes", [shapes.png(3)])


def test_a_losing_adapter_is_not_adopted(postgres_url, bundled_model, tmp_path):
    drawings = Drawings(10, seed=0)
    env = environment(postgres_url, bundled_model)
    with replicas(env, 1, tmp_path) as (a,), client(a) as ca:
        fill(ca, "drawings", drawings, 10)
        before = ca.query("drawings", [drawings.png(2)])
        job = ca.wait_for_adaptation("drawings", ca.adapt("drawings")["id"], timeout=PATIENCE)
        assert job["status"] == "completed" and job["decision"] == "kept_unadapted", job
        figures = job["held_out"]
        assert figures["unadapted_accuracy"] == 1.0  # nothing left to win
        assert figures["adapted_accuracy"] <= 1.0 and figures["examples"] == 50
        assert job["adapter_version"] is None and job["revision"] is None
        assert "adapter" not in ca.get_collection("drawings")
        after = ca.query("drawings", [drawings.png(2)])
        assert "adapter_version" not in after and after["revision"] == before["revision"]


def test_cancel_and_restart_leave_the_collection_as_it_was(postgres_url, bundled_model, tmp_path):
    """A job of 2000 examples (several seconds) cancelled through the other replica; another
    one stopped by a restart of its replica: neither adopts anything, and the collection
    answers exactly as before."""
    shapes = Shapes(400, seed=1)
    env = environment(postgres_url, bundled_model)
    queries = [shapes.png(c) for c in (0, 1, 2)]
    with replicas(env, 2, tmp_path) as (a, b), client(a) as ca, client(b) as cb:
        fill(ca, "large", shapes, 400)
        summary, answer = ca.get_collection("large"), ca.query("large", queries, top_k=3)

        started = ca.adapt("large")
        cancelled = cb.cancel_adaptation("large", started["id"])
        assert cancelled["status"] in ("cancelling", "cancelled")
        job = ca.wait_for_adaptation("large", started["id"], timeout=PATIENCE)
        assert job["status"] == "cancelled" and job["adapter_version"] is None, job
        assert_unchanged(ca, summary, answer, queries)

        interrupted = ca.adapt("large")  # the collection is free again
        eventually(
            lambda: _assert(ca.adaptation("large", interrupted["id"])["progress"]["fraction"] > 0)
        )
        port = int(a.url.rsplit(":", 1)[1])
        stop(a.process)
        restarted = start(env, tmp_path, STARTUP, port=port, log_file=tmp_path / "restart.log")
        try:
            with client(restarted) as again:
                job = again.adaptation("large", interrupted["id"])
                assert job["status"] == "failed" and "nothing was adopted" in job["error"], job
                assert_unchanged(again, summary, answer, queries)
            assert_unchanged(cb, summary, answer, queries)
        finally:
            stop(restarted.process)


def assert_unchanged(reader: ProtonetClient, summary: dict, answer: dict, queries) -> None:
    assert reader.get_collection("large") == summary
    now = reader.query("large", queries, top_k=3)
    assert now["revision"] == answer["revision"] and "adapter_version" not in now
    for mine, theirs in zip(now["results"], answer["results"], strict=True):
        assert [p["label"] for p in mine["top_k"]] == [p["label"] for p in theirs["top_k"]]
        np.testing.assert_allclose(
            [p["distance"] for p in mine["top_k"]],
            [p["distance"] for p in theirs["top_k"]],
            rtol=1e-5,
        )


def test_a_write_during_a_job_marks_its_adapter_stale(postgres_url, bundled_model, tmp_path):
    shapes = Shapes(41, seed=2)  # 40 classes to adapt, one more written during the job
    env = environment(postgres_url, bundled_model)
    with replicas(env, 2, tmp_path) as (a, b), client(a) as ca, client(b) as cb:
        fill(ca, "shapes", shapes, 40)
        started = ca.adapt("shapes")  # it has read the collection's embeddings when it answers
        written = cb.add_support("shapes", [("late", shapes.png(40)), ("late", shapes.png(40))])
        job = ca.wait_for_adaptation("shapes", started["id"], timeout=PATIENCE)
        assert job["decision"] == "adopted", job
        assert job["revision"] > written["revision"]  # adopted after the write: during the job
        assert job["n_examples"] == 200 and job["trained_revision"] < written["revision"]
        for reader in (ca, cb):
            reader.revisions.note("shapes", job["revision"])
            summary = reader.get_collection("shapes", classes=True)
            assert summary["adapter"]["stale"] is True
            assert {"label": "late", "n_examples": 2} in summary["classes"]
            answer = reader.query("shapes", [shapes.png(40)], top_k=41)
            assert answer["adapter_version"] == job["id"]
            assert "late" in [p["label"] for p in answer["results"][0]["top_k"]]


def _assert(condition: bool) -> None:
    assert condition
