"""Diagnostics of a support set on small synthetic embeddings, checked against the definition
(prototypes recomputed without each example, every pair of prototypes)."""

from __future__ import annotations

import itertools
from contextlib import ExitStack

import numpy as np
import pytest
import torch

from protonet.prototypes import compute_prototypes, squared_euclidean
from service.collections.diagnostics import (
    DiagnosticsLimits,
    DiagnosticsSlots,
    diagnose,
    distances_needed,
)
from service.errors import CollectionTooLargeError, DiagnosticsBusyError
from service.storage.repository import StoredEmbeddings

DIM = 16


def stored(class_ids: list[int], embeddings: np.ndarray, first_id: int = 100) -> StoredEmbeddings:
    ids = np.arange(first_id, first_id + len(class_ids), dtype=np.int64)
    return StoredEmbeddings(np.array(class_ids, dtype=np.int64), embeddings.astype(np.float32), ids)


def clusters(
    sizes: dict[int, int], centers: dict[int, np.ndarray], seed: int = 0, noise: float = 0.1
) -> tuple[list[int], np.ndarray]:
    """``sizes[c]`` points around ``centers[c]`` for each class id ``c``."""
    rng = np.random.default_rng(seed)
    class_ids = [c for c, n in sizes.items() for _ in range(n)]
    points = np.stack([centers[c] + noise * rng.standard_normal(DIM) for c in class_ids])
    return class_ids, points


def unit(axis: int, scale: float = 10.0) -> np.ndarray:
    vector = np.zeros(DIM)
    vector[axis] = scale
    return vector


def test_a_mislabelled_example_is_flagged_and_nothing_else():
    centers = {1: unit(0), 2: unit(1), 3: unit(2)}
    class_ids, points = clusters({1: 5, 2: 5, 3: 5}, centers)
    # One more drawing of class 2, labelled as class 1: example id 115.
    class_ids.append(1)
    points = np.vstack([points, centers[2] + 0.1])
    labels = {1: "a", 2: "b", 3: "c"}
    report = diagnose(stored(class_ids, points), labels)

    [suspect] = report.suspected_mislabelled
    assert (suspect.example_id, suspect.label, suspect.closer_to) == (115, "a", "b")
    assert suspect.distance_other < suspect.distance_own
    assert [c.loo_accuracy for c in report.classes] == [5 / 6, 1.0, 1.0]
    assert report.expected_accuracy == pytest.approx(15 / 16)
    assert (report.n_classes, report.n_examples) == (3, 16)
    assert [(c.label, c.n_examples) for c in report.classes] == [("a", 6), ("b", 5), ("c", 5)]


def test_two_near_duplicate_classes_are_the_most_confusable_pair():
    centers = {1: unit(0), 2: unit(1), 3: unit(1) + unit(2, 0.3), 4: unit(3)}
    class_ids, points = clusters({1: 4, 2: 4, 3: 4, 4: 4}, centers)
    report = diagnose(stored(class_ids, points), {1: "a", 2: "b", 3: "b-again", 4: "d"})

    assert report.confusable_pairs[0].labels == ("b", "b-again")
    assert len(report.confusable_pairs) == 6  # every pair of 4 classes, each once
    distances = [pair.distance for pair in report.confusable_pairs]
    assert distances == sorted(distances)
    by_label = {c.label: c for c in report.classes}
    assert by_label["b"].nearest_class == "b-again" and by_label["b-again"].nearest_class == "b"
    assert by_label["b"].nearest_class_distance == pytest.approx(distances[0])


def test_a_singleton_class_is_not_judged_but_has_a_nearest_class():
    centers = {1: unit(0), 2: unit(1), 3: unit(2)}
    class_ids, points = clusters({1: 3, 2: 3}, centers)
    class_ids.append(3)  # one example of class 3, nearer class 1 than any other
    points = np.vstack([points, centers[1] + unit(3, 3.0)])
    report = diagnose(stored(class_ids, points), {1: "a", 2: "b", 3: "lonely"})

    lonely = report.classes[2]
    assert (lonely.n_examples, lonely.loo_accuracy, lonely.nearest_class) == (1, None, "a")
    assert report.suspected_mislabelled == []
    assert report.expected_accuracy == 1.0  # over the six examples of classes a and b


def test_only_singletons_have_no_expected_accuracy():
    report = diagnose(stored([1, 2], np.stack([unit(0), unit(1)])), {1: "a", 2: "b"})
    assert report.expected_accuracy is None
    assert [c.loo_accuracy for c in report.classes] == [None, None]
    assert [(p.labels, p.distance) for p in report.confusable_pairs] == [(("a", "b"), 200.0)]


def test_one_class_has_no_neighbours():
    class_ids, points = clusters({7: 3}, {7: unit(0)})
    report = diagnose(stored(class_ids, points), {7: "only"})
    [only] = report.classes
    assert (only.loo_accuracy, only.nearest_class, only.nearest_class_distance) == (1.0, None, None)
    assert report.confusable_pairs == [] and report.suspected_mislabelled == []


def test_an_empty_collection():
    empty = StoredEmbeddings(
        np.zeros(0, np.int64), np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    )
    report = diagnose(empty, {})
    assert (report.n_classes, report.n_examples, report.expected_accuracy) == (0, 0, None)
    assert report.classes == report.confusable_pairs == report.suspected_mislabelled == []


def test_rows_of_classes_without_a_label_are_left_out():
    class_ids, points = clusters({1: 2, 2: 2, 3: 2}, {1: unit(0), 2: unit(1), 3: unit(2)})
    report = diagnose(stored(class_ids, points), {1: "a", 3: "c"})
    assert [c.label for c in report.classes] == ["a", "c"] and report.n_examples == 4


def overlapping(seed: int) -> tuple[StoredEmbeddings, dict[int, str]]:
    """40 classes of 1-5 examples that overlap: many leave-one-out mistakes."""
    rng = np.random.default_rng(seed)
    sizes = {c: int(rng.integers(1, 6)) for c in range(10, 50)}
    centers = {c: rng.standard_normal(DIM) for c in sizes}
    class_ids, points = clusters(sizes, centers, seed, noise=0.8)
    return stored(class_ids, points), {c: f"class {c}" for c in sizes}


def test_leave_one_out_matches_prototypes_recomputed_without_each_example():
    examples, labels = overlapping(seed=1)
    report = diagnose(examples, labels)
    embeddings = torch.from_numpy(examples.embeddings)
    class_ids = torch.from_numpy(examples.class_ids)
    _, classes = compute_prototypes(embeddings, class_ids)
    expected: dict[int, tuple[str, float, float]] = {}
    correct = []
    for i in range(len(class_ids)):
        others = torch.arange(len(class_ids)) != i
        if int((class_ids[others] == class_ids[i]).sum()) == 0:
            continue  # a singleton: not judged
        prototypes, kept = compute_prototypes(embeddings[others], class_ids[others])
        distances = squared_euclidean(embeddings[i : i + 1], prototypes)[0]
        own = int(torch.searchsorted(kept, class_ids[i]))
        rivals = distances.clone()
        rivals[own] = torch.inf
        nearest = int(rivals.argmin())
        correct.append(bool(rivals[nearest] >= distances[own]))
        if not correct[-1]:
            expected[int(examples.example_ids[i])] = (
                labels[int(kept[nearest])],
                float(distances[own]),
                float(rivals[nearest]),
            )
    assert 0 < len(expected) < len(correct)  # the data make some mistakes, not only mistakes
    flagged = {
        s.example_id: (s.closer_to, s.distance_own, s.distance_other)
        for s in report.suspected_mislabelled
    }
    assert flagged.keys() == expected.keys()
    for example_id, (closer_to, own, other) in expected.items():
        assert flagged[example_id][0] == closer_to
        assert flagged[example_id][1:] == pytest.approx((own, other), rel=1e-4)
    assert report.expected_accuracy == pytest.approx(np.mean(correct))
    assert len(classes) == report.n_classes


def test_confusable_pairs_are_the_closest_of_all_pairs():
    examples, labels = overlapping(seed=2)
    report = diagnose(examples, labels)
    prototypes, classes = compute_prototypes(
        torch.from_numpy(examples.embeddings), torch.from_numpy(examples.class_ids)
    )
    distances = squared_euclidean(prototypes, prototypes)
    names = [labels[c] for c in classes.tolist()]
    pairs = sorted(
        (float(distances[i, j]), (names[i], names[j]))
        for i, j in itertools.combinations(range(len(names)), 2)
    )[:10]
    assert [p.labels for p in report.confusable_pairs] == [labels_ for _, labels_ in pairs]
    assert [p.distance for p in report.confusable_pairs] == pytest.approx(
        [d for d, _ in pairs], rel=1e-5
    )


@pytest.mark.parametrize("chunk_rows", [1, 3, 17])
def test_chunks_give_the_same_answer(chunk_rows):
    examples, labels = overlapping(seed=3)
    assert diagnose(examples, labels, chunk_rows=chunk_rows) == diagnose(examples, labels)


def test_the_work_counted_and_the_limits():
    # 3 + 2 examples judged against 3 prototypes, plus 3 x 3 prototype pairs.
    assert distances_needed([3, 2, 1]) == 5 * 3 + 9
    assert distances_needed([]) == 0
    DiagnosticsLimits(max_examples=6, max_distances=24).check("c", [3, 2, 1])
    with pytest.raises(CollectionTooLargeError, match=r"6 examples.*at most 5.*MAX_EXAMPLES"):
        DiagnosticsLimits(max_examples=5).check("c", [3, 2, 1])
    with pytest.raises(CollectionTooLargeError, match=r"24 distances.*than 23.*MAX_DISTANCES"):
        DiagnosticsLimits(max_distances=23).check("c", [3, 2, 1])


def test_diagnostics_slots_bound_the_process_and_each_tenant():
    slots = DiagnosticsSlots(per_process=2, per_tenant=1)
    with ExitStack() as held:
        held.enter_context(slots.admit("t1"))
        with pytest.raises(DiagnosticsBusyError, match="PER_TENANT allows") as busy:
            held.enter_context(slots.admit("t1"))
        assert busy.value.retry_after >= 1
        held.enter_context(slots.admit("t2"))
        with pytest.raises(DiagnosticsBusyError, match="MAX_CONCURRENT allows: retry"):
            held.enter_context(slots.admit("t3"))
    with slots.admit("t3"):  # all released, the refused ones included
        pass
