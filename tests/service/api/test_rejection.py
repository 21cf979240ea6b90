"""Rejection of unknowns over HTTP, with the bundled (calibrated) model and the drawings of
examples/images: a collection of rings accepts a third ring and rejects a fork. The setting per
collection (create, PATCH, summaries, a restart, another process on the same database) and per
query, both index kinds, the client, and the 422s; answers without rejection keep their keys."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import anyio
import pytest

from protonet.checkpoint import load_checkpoint, save_checkpoint
from protonet.open_set import MIN_LOO_SCORES
from service.client import Calls
from tests.conftest import REPO_ROOT
from tests.service.helpers import PATIENCE, Drawings, make_settings, serve

pytestmark = pytest.mark.anyio

IMAGES = REPO_ROOT / "examples" / "images"
RESULT_KEYS = {"label", "probability", "distance", "top_k"}
ANSWER_KEYS = {"model_version", "revision", "index", "results"}


def item(name: str) -> dict[str, str]:
    return {"image": base64.b64encode((IMAGES / f"{name}.png").read_bytes()).decode()}


@pytest.fixture
def calibrated(tmp_path: Path, bundled_model: Path):
    return make_settings(tmp_path / "data", bundled_model)


@pytest.fixture(scope="module")
def bundled_thresholds(bundled_model: Path):
    calibration = load_checkpoint(bundled_model).calibration
    assert calibration is not None
    return calibration


async def rings(http, name: str, **create) -> None:
    """A collection ``name`` with one class, ring, of two drawings."""
    response = await http.post("/v1/collections", json={"name": name, **create})
    assert response.status_code == 201, response.text
    examples = [{"label": "ring", **item("ring1")}, {"label": "ring", **item("ring2")}]
    response = await http.post(f"/v1/collections/{name}/support", json={"examples": examples})
    assert response.status_code == 200, response.text


async def ask(http, name: str, **body) -> dict:
    queries = [item("ring3"), item("fork3")]
    response = await http.post(f"/v1/collections/{name}/query", json={"queries": queries, **body})
    assert response.status_code == 200, response.text
    return response.json()


async def test_without_rejection_answers_keep_their_keys(calibrated):
    async with serve(calibrated) as running:
        await rings(running.http, "plain")
        answer = await ask(running.http, "plain")
        assert set(answer) == ANSWER_KEYS
        assert [set(r) for r in answer["results"]] == [RESULT_KEYS, RESULT_KEYS]
        assert [r["label"] for r in answer["results"]] == ["ring", "ring"]  # a fork is a ring
        summary = (await running.http.get("/v1/collections/plain")).json()
        assert summary["rejection"] == {"mode": "none"}


async def test_default_rejection_accepts_a_ring_and_rejects_a_fork(calibrated, bundled_thresholds):
    async with serve(calibrated) as running:
        await rings(running.http, "shapes", rejection="default")
        summary = (await running.http.get("/v1/collections/shapes")).json()
        assert summary["rejection"] == {"mode": "calibrated", "acceptance": 0.95}
        answer = await ask(running.http, "shapes", top_k=1)
        assert answer["rejection"] == {
            "mode": "calibrated",
            "acceptance": 0.95,
            "threshold_source": "checkpoint",  # 2 held-out scores: far too few to adapt
        }
        ring, fork = answer["results"]
        limit = bundled_thresholds.threshold(2, 0.95)  # the ring class has 2 examples
        assert ring["known"] is True and ring["label"] == "ring"
        assert ring["score"] == ring["distance"] < limit == ring["threshold"]
        assert fork["known"] is False and fork["threshold"] == limit < fork["score"]
        assert fork["label"] is fork["probability"] is fork["distance"] is None
        assert fork["top_k"] == [  # the nearest classes are still listed
            {"label": "ring", "probability": 1.0, "distance": fork["score"]}
        ]


async def test_a_query_overrides_the_collections_setting(calibrated, bundled_thresholds):
    async with serve(calibrated) as running:
        await rings(running.http, "plain")
        answer = await ask(running.http, "plain", rejection="default")
        assert [r["known"] for r in answer["results"]] == [True, False]
        strict = await ask(running.http, "plain", rejection={"acceptance": 0.8})
        assert strict["rejection"]["acceptance"] == 0.8
        assert strict["results"][0]["threshold"] == bundled_thresholds.threshold(2, 0.8)
        await rings(running.http, "shapes", rejection="default")
        answer = await ask(running.http, "shapes", rejection="none")
        assert set(answer) == ANSWER_KEYS and set(answer["results"][1]) == RESULT_KEYS
        answer = await ask(running.http, "shapes", rejection=None)  # null: the collection's
        assert answer["rejection"]["acceptance"] == 0.95


async def test_patch_changes_the_setting_as_a_write(calibrated):
    async with serve(calibrated) as running:
        http = running.http
        await rings(http, "shapes")
        patched = await http.patch(
            "/v1/collections/shapes", json={"rejection": {"acceptance": 0.99}}
        )
        assert patched.status_code == 200, patched.text
        body = patched.json()
        assert body["rejection"] == {"mode": "calibrated", "acceptance": 0.99}
        assert body["revision"] == 3 and patched.headers["Protonet-Revision"] == "3"
        assert body["n_examples"] == 2
        listed = (await http.get("/v1/collections")).json()["collections"]
        assert listed[0]["rejection"] == {"mode": "calibrated", "acceptance": 0.99}
        assert (await ask(http, "shapes"))["rejection"]["acceptance"] == 0.99
        back = await http.patch("/v1/collections/shapes", json={"rejection": "none"})
        assert back.json()["rejection"] == {"mode": "none"}
        assert set(await ask(http, "shapes")) == ANSWER_KEYS
        missing = await http.patch("/v1/collections/nope", json={"rejection": "none"})
        assert missing.status_code == 404
        for bad in (
            {},
            {"rejection": "always"},
            {"rejection": {"acceptance": 1.5}},
            {"index": "ivf"},
        ):
            response = await http.patch("/v1/collections/shapes", json=bad)
            assert response.status_code == 422, bad
            assert response.json()["error"] == "validation_error"


async def test_acceptance_outside_the_schemas_range_is_422_echoing_it(calibrated):
    """The schema's bounds are the calibrations' range, [0.8, 0.999] (it said (0, 1) while the
    server refused the rest); the message echoes the value as sent (it said "acceptance 1")."""
    async with serve(calibrated) as running:
        http = running.http
        schemas = (await http.get("/openapi.json")).json()["components"]["schemas"]
        acceptance = schemas["AcceptanceTarget"]["properties"]["acceptance"]
        assert (acceptance["minimum"], acceptance["maximum"]) == (0.8, 0.999)
        await rings(http, "shapes")
        refusals = [
            http.post("/v1/collections", json={"name": "x", "rejection": {"acceptance": 0.5}}),
            http.patch(
                "/v1/collections/shapes", json={"rejection": {"acceptance": 0.9999999999999999}}
            ),
            http.post(
                "/v1/collections/shapes/query",
                json={"queries": [item("ring3")], "rejection": {"acceptance": 0.79}},
            ),
        ]
        for refusal, sent in zip(refusals, ("0.5", "0.9999999999999999", "0.79"), strict=True):
            response = await refusal
            assert response.status_code == 422
            assert response.json()["error"] == "validation_error"
            assert f"(got {sent})" in response.json()["detail"]
        assert (await http.get("/v1/collections/x")).status_code == 404  # nothing stored
        assert (await http.get("/v1/collections/shapes")).json()["rejection"] == {"mode": "none"}


async def test_acceptance_outside_the_models_calibrated_range_is_422_naming_it(
    tmp_path, bundled_model
):
    """A model calibrated on a narrower range than the schema's refuses the rest itself."""
    checkpoint = load_checkpoint(bundled_model)
    assert checkpoint.calibration is not None
    rejection = checkpoint.calibration
    narrower = dataclasses.replace(
        rejection,
        acceptances=rejection.acceptances[1:-1],
        thresholds=tuple(row[1:-1] for row in rejection.thresholds),
    )
    path = save_checkpoint(dataclasses.replace(checkpoint, calibration=narrower), tmp_path / "n.pt")
    async with serve(make_settings(tmp_path / "data", path)) as running:
        response = await running.http.post(
            "/v1/collections", json={"name": "x", "rejection": {"acceptance": 0.9950000000000001}}
        )
    assert response.status_code == 422
    assert response.json()["error"] == "acceptance_out_of_range"
    assert "acceptance 0.9950000000000001 is outside" in response.json()["detail"]
    assert "[0.9, 0.995]" in response.json()["detail"]


async def test_a_model_without_calibration_refuses_calibrated_rejection(settings):
    async with serve(settings) as running:  # a random-init checkpoint: no calibration
        http = running.http
        assert (await http.get("/v1/model")).json()["rejection"] is None
        created = await http.post("/v1/collections", json={"name": "c", "rejection": "default"})
        assert created.status_code == 422
        assert created.json()["error"] == "rejection_unavailable"
        assert "rejection 'none'" in created.json()["detail"]
        assert created.json()["detail"].startswith("model 'default' has no rejection")
        await http.post("/v1/collections", json={"name": "c"})
        patched = await http.patch("/v1/collections/c", json={"rejection": {"acceptance": 0.9}})
        assert patched.json()["error"] == "rejection_unavailable"
        drawing = Drawings(1).pixels(0).tolist()
        await http.post(
            "/v1/collections/c/support", json={"examples": [{"label": "a", "pixels": drawing}]}
        )
        queried = await http.post(
            "/v1/collections/c/query",
            json={"queries": [{"pixels": drawing}], "rejection": "default"},
        )
        assert queried.status_code == 422 and queried.json()["error"] == "rejection_unavailable"
        plain = await http.post("/v1/collections/c/query", json={"queries": [{"pixels": drawing}]})
        assert plain.status_code == 200


async def test_model_info_summarizes_the_calibration(calibrated, bundled_thresholds):
    async with serve(calibrated) as running:
        info = (await running.http.get("/v1/model")).json()
    assert info["rejection"] == {
        "method": "nearest_distance",
        "shots": list(bundled_thresholds.shots),
        "acceptances": list(bundled_thresholds.acceptances),
        "default_acceptance": 0.95,
    }


async def test_ivf_and_exact_indexes_give_the_same_verdicts(calibrated):
    async with serve(calibrated) as running:
        await rings(running.http, "exact", index="exact", rejection="default")
        await rings(running.http, "ivf", index="ivf", rejection="default")
        exact, ivf = await ask(running.http, "exact"), await ask(running.http, "ivf")
    assert ivf["index"] == "ivf" and exact["index"] == "exact"
    for got, want in zip(ivf["results"], exact["results"], strict=True):
        assert (got["known"], got["label"], got["threshold"]) == (
            want["known"],
            want["label"],
            want["threshold"],
        )
        assert got["score"] == pytest.approx(want["score"], rel=1e-5)  # FAISS's float32 sums
    assert [r["known"] for r in ivf["results"]] == [True, False]


async def test_the_setting_survives_a_restart(calibrated):
    async with serve(calibrated) as running:
        await rings(running.http, "strict", rejection={"acceptance": 0.99})
        await rings(running.http, "changed", rejection="default")
        await running.http.patch("/v1/collections/changed", json={"rejection": "none"})
    async with serve(calibrated) as running:
        listed = (await running.http.get("/v1/collections")).json()["collections"]
        assert {c["name"]: c["rejection"] for c in listed} == {
            "changed": {"mode": "none"},
            "strict": {"mode": "calibrated", "acceptance": 0.99},
        }
        assert (await ask(running.http, "strict"))["rejection"]["acceptance"] == 0.99


async def test_another_process_on_the_database_sees_a_patch(calibrated):
    """Two apps on one SQLite database (as PROTONET_WORKERS runs them): a PATCH through one
    reaches the other through the change feed, and at once for a read with min_revision."""
    async with serve(calibrated) as first, serve(calibrated) as second:
        await rings(first.http, "shapes")
        patched = await first.client.set_rejection("shapes", "default")

        async def seen() -> dict:
            return (await second.http.get("/v1/collections/shapes")).json()["rejection"]

        with anyio.fail_after(PATIENCE):
            while await seen() != {"mode": "calibrated", "acceptance": 0.95}:
                await anyio.sleep(0.02)
        assert (
            second.state.registry._collections["default", "shapes"].revision
            >= (patched["revision"])
        )
        answer = await ask(second.http, "shapes")
        assert [r["known"] for r in answer["results"]] == [True, False]
        # Read-your-writes: the feed is stopped, and min_revision catches the collection up.
        second.state.feed.stop()
        back = await first.client.set_rejection("shapes", "none")
        response = await second.http.get(
            "/v1/collections/shapes", params={"min_revision": back["revision"]}
        )
        assert response.json()["rejection"] == {"mode": "none"}


async def test_a_reader_never_sees_a_new_setting_at_an_older_revision(calibrated, monkeypatch):
    """While this process applies another's PATCH (re-reading the touched classes), a read
    of the collection shows the old setting at the old revision, then the new setting at the
    new revision: never the new setting with the old revision (min_revision and the
    X-Revision header would then vouch for a state that mixes two revisions)."""
    async with serve(calibrated) as first, serve(calibrated) as second:
        await rings(first.http, "shapes")
        second.state.feed.stop()  # this test applies the change itself, at a chosen moment
        assert (await second.http.get("/v1/collections/shapes")).status_code == 200
        registry = second.state.registry
        live = registry._collections["default", "shapes"]
        before = live.contents()
        patched = await first.client.set_rejection("shapes", "default")
        midway = []
        replication = registry.replication
        refresh = replication._refresh

        def refresh_then_read(collection, class_ids):
            midway.append(collection.contents())  # a reader in the middle of the catch-up
            refresh(collection, class_ids)

        monkeypatch.setattr(replication, "_refresh", refresh_then_read)
        replication.catch_up_or_forget(("default", "shapes"), live)
        assert [(m.revision, m.rejection_setting) for m in midway] == [
            (before.revision, before.rejection_setting)
        ]
        after = live.contents()
        assert (
            after.revision == patched["revision"]
            and after.rejection_setting != before.rejection_setting
        )


async def test_thresholds_adapt_to_a_collection_with_enough_examples(calibrated):
    """12 classes of 3 drawings: 36 held-out scores, so the thresholds are the checkpoint's
    scaled to this collection, also after a restart that loads a persisted IVF index (which
    reads no embeddings: the held-out scores are read from storage when first needed)."""
    drawings = Drawings(12)
    examples = {f"class-{c}": [drawings.png(c) for _ in range(3)] for c in range(12)}
    assert MIN_LOO_SCORES <= 12 * 3
    async with serve(calibrated) as running:
        client = running.client
        await client.create_collection("many", index="ivf", rejection="default")
        await client.add_support("many", examples)
        first = await client.query("many", [drawings.png(0), item_bytes("fork3")])
        assert first["rejection"]["threshold_source"] == "collection"
        await client.create_collection("few", rejection="default")
        await client.add_support("few", {"a": [drawings.png(0)] * 2})
        few = await client.query("few", [drawings.png(0)])
        assert few["rejection"]["threshold_source"] == "checkpoint"
        checkpoint_limit = few["results"][0]["threshold"]  # 2 examples
    # The collection's thresholds differ from the checkpoint's at its shot count (3).
    calibration = load_checkpoint(calibrated.checkpoint).calibration
    assert first["results"][0]["threshold"] != pytest.approx(calibration.threshold(3, 0.95))
    assert checkpoint_limit == calibration.threshold(2, 0.95)
    assert (calibrated.data_dir / "indexes").exists()
    async with serve(calibrated) as running:
        live = running.state.registry._collections["default", "many"]
        assert not live.leave_one_out.complete  # loaded from its persisted IVF index
        again = await running.client.query("many", [drawings.png(0), item_bytes("fork3")])
        assert live.leave_one_out.complete
    assert again["rejection"] == first["rejection"]
    assert [r["threshold"] for r in again["results"]] == pytest.approx(
        [r["threshold"] for r in first["results"]]
    )


def item_bytes(name: str) -> bytes:
    return (IMAGES / f"{name}.png").read_bytes()


async def test_the_client_sets_and_asks_for_rejection(calibrated):
    async with serve(calibrated) as running:
        client = running.client
        created = await client.create_collection("shapes", rejection=0.99)
        assert created["rejection"] == {"mode": "calibrated", "acceptance": 0.99}
        await client.add_support("shapes", {"ring": [item_bytes("ring1"), item_bytes("ring2")]})
        answer = await client.query("shapes", [item_bytes("fork3")], rejection="default")
        assert answer["rejection"]["acceptance"] == 0.95 and not answer["results"][0]["known"]
        changed = await client.set_rejection("shapes", {"acceptance": 0.9})
        assert changed["rejection"] == {"mode": "calibrated", "acceptance": 0.9}
        assert client.revisions.last_written["shapes"] == changed["revision"]
        plain = await client.query("shapes", [item_bytes("ring3")], rejection="none")
        assert "rejection" not in plain


def test_the_clients_calls_carry_rejection_only_when_given():
    assert Calls.create_collection("c").json == {"name": "c"}
    assert Calls.create_collection("c", rejection="default").json == {
        "name": "c",
        "rejection": "default",
    }
    assert Calls.query("c", [b"png"], 1).json.keys() == {"queries", "top_k"}
    assert Calls.query("c", [b"png"], 1, rejection=0.99).json["rejection"] == {"acceptance": 0.99}
    patch = Calls.set_rejection("a b", "none")
    assert (patch.method, patch.path, patch.json) == (
        "PATCH",
        "/v1/collections/a%20b",
        {"rejection": "none"},
    )
    assert patch.writes and patch.collection == "a b"
