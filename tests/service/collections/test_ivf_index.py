"""The approximate (FAISS IVF) index: it agrees with exact search on separated classes, follows
every update, switches in the background without losing updates, and persists safely."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from service.collections import live_collection as live_module
from service.collections.exact_index import ExactIndex
from service.collections.index_files import IndexFiles
from service.collections.ivf_index import IVFIndex
from service.collections.live_collection import IndexPolicy, LiveCollection
from service.storage.repository import StoredEmbeddings
from tests.service.helpers import Drawings, make_settings, serve

DIM = 16


def separated(n: int, seed: int = 0) -> np.ndarray:
    """``n`` prototypes far apart (distance ~ 400 between any two): the nearest is unambiguous."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, DIM)) * 10).astype(np.float32)


def near(prototypes: np.ndarray, rows: list[int], seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((len(rows), DIM)).astype(np.float32) * 0.3
    return prototypes[rows] + noise


def both(ids: np.ndarray, vectors: np.ndarray) -> tuple[ExactIndex, IVFIndex]:
    exact = ExactIndex(DIM)
    exact.upsert(ids, vectors)
    return exact, IVFIndex.build(ids, vectors)


def assert_same(approximate, exact, vectors=None, ids=None) -> None:
    """The nearest class, its distance and probability are exact search's; every other class
    returned comes with its exact distance, nearest first (it may miss some of exact's)."""
    np.testing.assert_array_equal(approximate.class_ids[:, 0], exact.class_ids[:, 0])
    np.testing.assert_allclose(approximate.distances[:, 0], exact.distances[:, 0], rtol=1e-4)
    np.testing.assert_allclose(
        approximate.probabilities()[:, 0], exact.probabilities()[:, 0], rtol=1e-5
    )
    assert (np.diff(approximate.distances, axis=1) >= 0).all()
    assert (approximate.distances >= exact.distances[:, :1] - 1e-3).all()


@pytest.mark.parametrize("n", [1, 7, 300, 5000])
def test_ivf_agrees_with_exact_search_on_separated_classes(n):
    vectors = separated(n)
    ids = np.arange(1000, 1000 + n)
    exact, ivf = both(ids, vectors)
    queries = near(vectors, list(range(min(n, 40))))
    assert_same(ivf.rank(queries, 5), exact.rank(queries, 5))


def test_ivf_follows_moves_removals_and_new_classes():
    vectors = separated(3000)
    ids = np.arange(3000)
    exact, ivf = both(ids, vectors)
    moved = separated(5, seed=9)
    for index in (exact, ivf):
        index.upsert(np.array([3, 5, 7, 9, 11]), moved)  # prototypes move
        index.remove(np.array([20, 21, 99999]))  # unknown ids are ignored
        index.upsert(np.array([5000]), moved[:1] + 50)  # a new class
    assert len(ivf) == len(exact) == 2999 and 20 not in ivf and 5000 in ivf
    np.testing.assert_array_equal(ivf.prototype(5), moved[1])
    queries = np.concatenate([near(moved, [0, 1, 2]), near(vectors, [20, 21, 100]), moved[:1] + 50])
    assert_same(ivf.rank(queries, 4), exact.rank(queries, 4))
    exported_ids, exported = ivf.export()
    order = np.argsort(exported_ids)
    assert set(exported_ids.tolist()) == set(range(3000)) - {20, 21} | {5000}
    np.testing.assert_array_equal(exported[order][0], vectors[0])


def test_the_softmax_over_candidates_matches_the_full_softmax():
    """The far classes' terms that IVF leaves out do not move the probabilities (here: 20,000
    classes, 64 candidates)."""
    vectors = separated(20_000, seed=4)
    exact, ivf = both(np.arange(20_000), vectors)
    queries = near(vectors, [0, 17, 12345], seed=5)
    np.testing.assert_allclose(
        ivf.rank(queries, 3).probabilities(),
        exact.rank(queries, 3).probabilities(),
        rtol=1e-6,
        atol=1e-12,
    )


def stored(ids: np.ndarray, vectors: np.ndarray) -> StoredEmbeddings:
    return StoredEmbeddings(ids.astype(np.int64), vectors, np.arange(len(ids), dtype=np.int64))


def test_auto_switches_to_ivf_past_the_crossover_and_back_answers_the_same():
    vectors = separated(120)
    ids = np.arange(120)
    collection = LiveCollection(1, "c", DIM, policy=IndexPolicy("auto", exact_max_classes=100))
    collection.update_classes({i: f"l{i}" for i in range(100)}, stored(ids[:100], vectors[:100]))
    assert collection.index_in_use == "exact"
    collection.update_classes(
        {i: f"l{i}" for i in range(100, 120)}, stored(ids[100:], vectors[100:])
    )
    assert collection.index_in_use == "ivf"
    exact = ExactIndex(DIM)
    exact.upsert(ids, vectors)
    queries = near(vectors, [3, 110])
    answer = collection.rank(queries, 3)
    assert answer is not None and answer[0].index == "ivf"
    assert [a.best.label for a in answer] == ["l3", "l110"]
    expected = exact.rank(queries, 3)
    np.testing.assert_allclose(
        [a.best.distance for a in answer], expected.distances[:, 0], rtol=1e-4
    )


def test_a_background_build_loses_no_update_made_meanwhile(monkeypatch):
    """Past the synchronous size the build runs in a thread; queries and writes go on against
    the exact index, and the writes made during the build are replayed onto the new one."""
    monkeypatch.setattr(live_module, "SYNCHRONOUS_BUILD_MAX", 10)
    release, started = threading.Event(), threading.Event()
    build = IVFIndex.build

    def slow_build(*args, **kwargs):
        started.set()
        release.wait(10)
        return build(*args, **kwargs)

    monkeypatch.setattr(live_module.IVFIndex, "build", staticmethod(slow_build))
    vectors = separated(400)
    collection = LiveCollection(1, "c", DIM, policy=IndexPolicy("auto", exact_max_classes=300))
    labels = {i: f"l{i}" for i in range(400)}
    collection.update_classes(labels, stored(np.arange(400), vectors))
    assert started.wait(10) and collection.index_in_use == "exact"
    result = collection.rank(near(vectors, [5]), 1)  # answered meanwhile, by the exact index
    assert result is not None and result[0].best.label == "l5"
    moved = separated(1, seed=7)
    collection.update_classes({5: "l5"}, stored(np.array([5]), moved))
    collection.remove_classes({6})
    release.set()
    assert collection.wait_for_build(10) and collection.index_in_use == "ivf"
    result = collection.rank(np.concatenate([moved, near(vectors, [6])]), 2)
    assert result is not None
    assert result[0].best.label == "l5" and result[0].best.distance < 1e-3
    assert "l6" not in [p.label for p in result[1].ranked]
    assert collection.status().n_classes == 399


def test_persisted_indexes_round_trip_and_damage_means_rebuild(tmp_path):
    vectors = separated(500)
    ivf = IVFIndex.build(np.arange(500), vectors)
    files = IndexFiles(tmp_path)
    path = files.save(7, "model-a", ivf, change_id=42)
    loaded = files.load(7, "model-a")
    assert loaded is not None and loaded.change_id == 42 and len(loaded.index) == 500
    queries = near(vectors, [1, 2])
    assert_same(loaded.index.rank(queries, 3), ivf.rank(queries, 3))
    assert files.load(7, "model-b") is None  # another model version: not this one's
    data = path.read_bytes()
    for damaged in (data[:-100], data[:20], b"garbage", data[:-1] + bytes([data[-1] ^ 1])):
        path.write_bytes(damaged)
        assert files.load(7, "model-a") is None
    files.remove(7)
    assert not path.exists()


# -- through the API ---------------------------------------------------------------------


def answers(result: dict) -> list[list[tuple[str, float]]]:
    return [[(p["label"], p["distance"]) for p in r["top_k"]] for r in result["results"]]


def assert_same_answers(approximate: dict, exact: dict) -> None:
    assert approximate["index"] == "ivf" and exact["index"] == "exact"
    for mine, theirs in zip(answers(approximate), answers(exact), strict=True):
        assert [label for label, _ in mine] == [label for label, _ in theirs]
        np.testing.assert_allclose([d for _, d in mine], [d for _, d in theirs], rtol=1e-4)


async def both_collections(client, drawings, n_classes: int) -> None:
    """The same support (each ``png()`` call draws a new jittered copy) in both kinds."""
    support = [(f"c{c}", drawings.png(c)) for c in range(n_classes) for _ in range(2)]
    for name, index in (("approx", "ivf"), ("plain", "exact")):
        created = await client.create_collection(name, index=index)
        assert created["index"] == index
        await client.add_support(name, support)


@pytest.mark.anyio
async def test_every_operation_on_an_ivf_collection_answers_like_exact(tmp_path, bundled_model):
    drawings = Drawings(6)
    queries = [drawings.png(c) for c in range(6)]
    settings = make_settings(tmp_path / "data", bundled_model)  # a trained model: separated classes
    async with serve(settings) as running:
        client = running.client
        await both_collections(client, drawings, 6)
        summary = await client.get_collection("approx")
        assert (summary["index"], summary["index_in_use"]) == ("ivf", "ivf")

        async def compare() -> None:
            approximate = await client.query("approx", queries, top_k=6)
            exact = await client.query("plain", queries, top_k=6)
            assert_same_answers(approximate, exact)

        await compare()
        more = [("c2", drawings.png(4)), ("c9", drawings.png(5))]
        for name in ("approx", "plain"):  # a prototype moves, a class comes, one goes
            await client.add_support(name, more)
            await client.delete_class(name, "c1")
        await compare()
        assert "c1" not in {p["label"] for p in (await client.query("approx", queries))["results"]}
    files = sorted((tmp_path / "data" / "indexes").glob("*.ivf"))
    assert len(files) == 1  # saved at shutdown: only the IVF collection has one

    async with serve(settings) as running:  # started from the persisted index
        assert running.state.registry.saved_indexes.change_ids  # loaded, not rebuilt
        approximate = await running.client.query("approx", queries, top_k=6)
        assert_same_answers(approximate, await running.client.query("plain", queries, top_k=6))
        late = [("c3", drawings.png(0))]
        await running.client.add_support("approx", late)  # after the save

    files[0].write_bytes(files[0].read_bytes()[:-7] + b"damaged")
    async with serve(settings) as running:  # a damaged file: rebuilt from the database
        assert not running.state.registry.saved_indexes.change_ids
        client = running.client
        await client.add_support("plain", late)
        assert_same_answers(
            await client.query("approx", queries, top_k=6),
            await client.query("plain", queries, top_k=6),
        )
        await client.delete_collection("approx")
    assert not list((tmp_path / "data" / "indexes").glob("*.ivf"))


def test_probabilities_count_the_classes_the_search_did_not_return():
    """Prototypes as close together as Omniglot's (a query ~3 from its class, ~4 between
    nearest classes): past the candidates, the other classes hold a real share of the softmax,
    which the sampled estimate recovers (leaving them out would overstate the probabilities)."""
    rng = np.random.default_rng(0)
    n, dim = 30_000, 64
    centers = rng.standard_normal((964, dim)) * 0.42
    prototypes = (centers[rng.integers(0, 964, n)] + rng.standard_normal((n, dim)) * 0.25).astype(
        np.float32
    )
    queries = (prototypes[:100] + rng.standard_normal((100, dim)) * 0.23).astype(np.float32)
    exact = ExactIndex(dim)
    exact.upsert(np.arange(n), prototypes)
    ivf = IVFIndex.build(np.arange(n), prototypes)
    want, got = exact.rank(queries, 1), ivf.rank(queries, 1)
    np.testing.assert_array_equal(got.class_ids, want.class_ids)
    np.testing.assert_allclose(got.probabilities(), want.probabilities(), rtol=0.01)
