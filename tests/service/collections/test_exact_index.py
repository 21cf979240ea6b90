"""The prototype index and a collection's in-memory state, without HTTP."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from protonet.prototypes import squared_euclidean
from service.collections.exact_index import WIDE_BATCH_ROWS, ExactIndex
from service.collections.live_collection import LiveCollection
from service.storage.repository import StoredClass, StoredEmbeddings

DIM = 8


def stored(class_ids: list[int], seed: int = 0) -> StoredEmbeddings:
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((len(class_ids), DIM)).astype(np.float32)
    example_ids = np.arange(len(class_ids), dtype=np.int64)
    return StoredEmbeddings(np.array(class_ids, dtype=np.int64), embeddings, example_ids)


def test_upsert_replaces_only_the_given_classes():
    index = ExactIndex(DIM)
    vectors = np.eye(3, DIM, dtype=np.float32)
    index.upsert(np.array([10, 20, 30]), vectors)
    index.upsert(np.array([20]), np.full((1, DIM), 5.0, dtype=np.float32))
    assert len(index) == 3
    np.testing.assert_array_equal(index.prototype(10), vectors[0])
    np.testing.assert_array_equal(index.prototype(20), np.full(DIM, 5.0))
    index.remove(np.array([10, 99]))
    assert len(index) == 2 and 10 not in index and 20 in index


def test_rank_returns_squared_euclidean_distances_nearest_first_and_the_softmax():
    rng = np.random.default_rng(1)
    prototypes = rng.standard_normal((5, DIM)).astype(np.float32)
    queries = rng.standard_normal((3, DIM)).astype(np.float32)
    index = ExactIndex(DIM)
    index.upsert(np.arange(100, 105), prototypes)
    ranking = index.rank(queries, k=5)
    expected = squared_euclidean(torch.from_numpy(queries), torch.from_numpy(prototypes)).numpy()
    np.testing.assert_allclose(
        ranking.distances, np.take_along_axis(expected, ranking.class_ids - 100, axis=1), rtol=1e-5
    )
    assert (np.diff(ranking.distances, axis=1) >= 0).all()
    softmax = torch.softmax(-torch.from_numpy(expected).double(), dim=1).numpy()
    np.testing.assert_allclose(
        ranking.probabilities(),
        np.take_along_axis(softmax, ranking.class_ids - 100, axis=1),
        rtol=1e-6,
    )


def test_rank_over_many_classes_is_exact_for_the_top_k_and_the_softmax():
    """Past the refined candidates the normalizer still sums every class (float64 reference)."""
    rng = np.random.default_rng(2)
    # Large norms, small distances: where |p|^2 - 2 q.p + |q|^2 loses digits in float32.
    prototypes = (10 + rng.standard_normal((5000, DIM)) * 0.05).astype(np.float32)
    queries = prototypes[[3, 4000]] + rng.standard_normal((2, DIM)).astype(np.float32) * 0.01
    index = ExactIndex(DIM)
    index.upsert(np.arange(5000), prototypes)
    ranking = index.rank(queries, k=3)
    exact = ((queries[:, None, :].astype(np.float64) - prototypes[None]) ** 2).sum(axis=2)
    order = np.argsort(exact, axis=1)[:, :3]
    np.testing.assert_array_equal(ranking.class_ids, order)
    np.testing.assert_allclose(
        ranking.distances, np.take_along_axis(exact, order, axis=1), rtol=1e-5
    )
    softmax = torch.softmax(-torch.from_numpy(exact), dim=1).numpy()
    np.testing.assert_allclose(
        ranking.probabilities(), np.take_along_axis(softmax, order, axis=1), rtol=1e-4
    )


def test_many_queries_at_once_rank_as_each_alone():
    """From WIDE_BATCH_ROWS queries on the distances are computed as [n, c]: same answers."""
    rng = np.random.default_rng(3)
    prototypes = rng.standard_normal((500, DIM)).astype(np.float32)
    queries = rng.standard_normal((WIDE_BATCH_ROWS + 36, DIM)).astype(np.float32)
    index = ExactIndex(DIM)
    index.upsert(np.arange(500), prototypes)
    together = index.rank(queries, k=5)
    for i in (0, 37, len(queries) - 1):
        alone = index.rank(queries[i : i + 1], k=5)
        np.testing.assert_array_equal(together.class_ids[i], alone.class_ids[0])
        np.testing.assert_allclose(together.distances[i], alone.distances[0], rtol=1e-6)
        np.testing.assert_allclose(together.probabilities()[i], alone.probabilities()[0], rtol=1e-5)


@pytest.mark.parametrize("refined", [1, 4, 32])
def test_nearest_is_rank_without_the_softmax(refined):
    rng = np.random.default_rng(4)
    prototypes = rng.standard_normal((300, DIM)).astype(np.float32)
    queries = rng.standard_normal((80, DIM)).astype(np.float32)
    index = ExactIndex(DIM)
    index.upsert(np.arange(300), prototypes)
    distances, class_ids = index.nearest(queries, 3, refined=refined)
    ranking = index.rank(queries, 3)
    np.testing.assert_array_equal(class_ids, ranking.class_ids)
    np.testing.assert_array_equal(distances, ranking.distances)


def test_updates_and_removals_keep_every_other_class_intact():
    """Rows move (swap-with-last removal, growth): ids must keep pointing at their vectors."""
    rng = np.random.default_rng(3)
    vectors = {i: rng.standard_normal(DIM).astype(np.float32) for i in range(1, 101)}
    index = ExactIndex(DIM)
    for i, vector in vectors.items():  # one class per call: the arrays grow many times
        index.upsert(np.array([i]), vector[None])
    removed = np.array([1, 50, 100, 7])
    index.remove(removed)
    for i in removed.tolist():
        del vectors[i]
    vectors[20] = np.full(DIM, 3.0, dtype=np.float32)
    index.upsert(np.array([20]), vectors[20][None])
    assert len(index) == len(vectors) and 50 not in index and 20 in index
    for i, vector in vectors.items():
        np.testing.assert_array_equal(index.prototype(i), vector)
        assert index.rank(vector[None], k=1).class_ids[0, 0] == i


def test_adding_examples_updates_only_the_affected_prototypes(monkeypatch):
    """Registering classes one request at a time never touches the others: not quadratic."""
    live = LiveCollection(1, "c", DIM)
    upserted: list[list[int]] = []
    original = ExactIndex.upsert

    def spy(self, class_ids, prototypes):
        upserted.append(list(class_ids))
        original(self, class_ids, prototypes)

    monkeypatch.setattr(ExactIndex, "upsert", spy)
    for class_id in range(1, 6):
        live.update_classes({class_id: f"label{class_id}"}, stored([class_id] * 3, class_id))
    live.update_classes({3: "label3"}, stored([3] * 4, 33))
    assert upserted == [[1], [2], [3], [4], [5], [3]]
    assert live.status().n_classes == 5
    assert live.class_table()[3].n_examples == 4


def test_prototype_is_the_mean_of_the_class_embeddings():
    live = LiveCollection(1, "c", DIM)
    rows = stored([7, 9, 7, 7])
    live.update_classes({7: "a", 9: "b"}, rows)
    result = live.rank(rows.embeddings[1:2], top_k=2)
    assert result is not None
    mean = rows.embeddings[[0, 2, 3]].mean(axis=0)
    expected = float(((rows.embeddings[1] - mean) ** 2).sum())
    by_label = {p.label: p.distance for p in result[0].ranked}
    assert by_label["a"] == pytest.approx(expected, rel=1e-5)
    assert by_label["b"] == pytest.approx(0.0, abs=1e-5)


def test_readers_never_see_a_class_missing_while_it_is_updated():
    live = LiveCollection(1, "c", DIM)
    live.update_classes({1: "steady", 2: "busy"}, stored([1, 2]))
    stop = threading.Event()
    problems: list[str] = []

    def read() -> None:
        query = np.zeros((1, DIM), dtype=np.float32)
        while not stop.is_set():
            result = live.rank(query, top_k=10)
            labels = sorted(p.label for p in result[0].ranked) if result else []
            if labels != ["busy", "steady"]:
                problems.append(repr(labels))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for thread in readers:
        thread.start()
    for seed in range(300):
        live.update_classes({2: "busy"}, stored([2, 2], seed))
    stop.set()
    for thread in readers:
        thread.join()
    assert not problems, problems[:5]


def test_loading_leaves_out_embeddings_of_classes_listed_after_it():
    """At startup the class list and the embeddings are two reads; a class another process
    created in between has embeddings but no label yet: the change feed brings it in later."""
    live = LiveCollection(1, "c", DIM)
    embeddings = stored([1, 1, 2, 3])  # class 3 came after the listing
    live.load([StoredClass(1, "a", 2), StoredClass(2, "b", 1)], embeddings)
    summary = live.status()
    assert (summary.n_classes, summary.n_examples) == (2, 3)
    assert live.class_id("a") == 1 and live.class_id("b") == 2
