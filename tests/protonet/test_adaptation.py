"""The core's adapter: a residual map that starts as the identity, trained by episodes over one
support set, adopted only when it wins on held-out folds."""

from __future__ import annotations

import pytest
import torch

from protonet.adaptation import (
    AdaptationConfig,
    Adapter,
    adapt,
    episode_rows,
    episode_split,
    fold_of,
    train_adapter,
    why_not_adaptable,
)
from protonet.errors import InvalidInputError
from protonet.prototypes import compute_prototypes, squared_euclidean

QUICK = AdaptationConfig(steps=50)  # enough for these small sets, and quick to test


def nuisance_set(
    n_classes: int, shots: int, seed: int, dim: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes apart in the first 4 dimensions (by 1), with every example also spread widely
    along 4 nuisance dimensions (std 3): plain prototypes confuse them; a map that shrinks the
    nuisance separates them."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.zeros(n_classes, dim)
    centres[:, :4] = torch.randn(n_classes, 4, generator=generator)
    labels = torch.arange(n_classes).repeat_interleave(shots)
    noise = 0.15 * torch.randn(len(labels), dim, generator=generator)
    noise[:, 4:8] *= 20
    return centres[labels] + noise, labels


def accuracy(support, labels, queries, query_labels, adapter: Adapter | None = None) -> float:
    if adapter is not None:
        support, queries = adapter.apply(support), adapter.apply(queries)
    prototypes, classes = compute_prototypes(support, labels)
    predicted = classes[squared_euclidean(queries, prototypes).argmin(dim=1)]
    return float((predicted == query_labels).float().mean())


def test_an_untrained_adapter_is_the_identity():
    embeddings, labels = nuisance_set(4, 3, seed=0)
    config = AdaptationConfig(steps=0)
    adapter = train_adapter(embeddings, labels, config, torch.Generator().manual_seed(0))
    assert adapter.down.shape == (16, 16) and adapter.up.shape == (16, 16)  # rank capped at dim
    torch.testing.assert_close(adapter.apply(embeddings), embeddings)


def test_training_learns_to_ignore_the_nuisance_on_new_examples():
    support, labels = nuisance_set(10, 5, seed=1)
    queries, query_labels = nuisance_set(10, 20, seed=1)  # the same centres, new examples
    adapter = train_adapter(support, labels, AdaptationConfig(), torch.Generator().manual_seed(0))
    plain = accuracy(support, labels, queries, query_labels)
    adapted = accuracy(support, labels, queries, query_labels, adapter)
    assert adapted > plain + 0.2, (plain, adapted)


def test_an_adapter_that_wins_on_held_out_folds_is_adopted_and_its_figures_say_so():
    support, labels = nuisance_set(10, 5, seed=2)
    steps: list[tuple[int, int]] = []
    result = adapt(support, labels, QUICK, lambda done, total, _: steps.append((done, total)))
    held_out = result.held_out
    assert result.adapter is not None
    assert held_out.examples == 50 and held_out.folds == 5
    assert held_out.adapted_accuracy > held_out.unadapted_accuracy + 0.1
    assert held_out.scores.shape == (50,) and bool((held_out.scores >= 0).all())
    assert held_out.shots.tolist() == [4] * 50  # each held out of its class's other 4
    assert steps[-1][0] == steps[-1][1] == 6 * QUICK.steps  # 5 folds, then all


def test_an_adapter_that_cannot_beat_a_perfect_classifier_is_not_adopted():
    generator = torch.Generator().manual_seed(3)
    labels = torch.arange(6).repeat_interleave(4)
    support = 10 * torch.eye(6)[labels] + 0.01 * torch.randn(24, 6, generator=generator)
    steps: list[tuple[int, int]] = []
    result = adapt(support, labels, QUICK, lambda done, total, _: steps.append((done, total)))
    assert result.adapter is None
    assert result.held_out.unadapted_accuracy == 1.0
    assert steps[-1][0] == steps[-1][1]  # the progress ends at 1 without the last training


def test_the_margin_is_both_a_share_and_a_count():
    support, labels = nuisance_set(10, 5, seed=2)
    held_out = adapt(support, labels, QUICK).held_out
    gain = held_out.adapted_correct - held_out.unadapted_correct
    assert held_out.adapter_wins(AdaptationConfig(margin=0.0, min_gain=gain))
    assert not held_out.adapter_wins(AdaptationConfig(margin=0.0, min_gain=gain + 1))
    assert not held_out.adapter_wins(AdaptationConfig(margin=(gain + 1) / 50, min_gain=0))


def test_the_same_seed_gives_the_same_adapter():
    support, labels = nuisance_set(5, 4, seed=4)
    first, second = adapt(support, labels, QUICK), adapt(support, labels, QUICK)
    assert first.held_out.adapted_correct == second.held_out.adapted_correct
    assert torch.equal(first.held_out.scores, second.held_out.scores)
    assert first.adapter is not None and second.adapter is not None
    torch.testing.assert_close(first.adapter.down, second.adapter.down)
    torch.testing.assert_close(first.adapter.up, second.adapter.up)


def test_a_progress_callback_that_raises_stops_the_work():
    support, labels = nuisance_set(5, 4, seed=5)

    class Stop(Exception):
        pass

    def progress(done: int, total: int, examples: int) -> None:
        if done == 3:
            raise Stop

    with pytest.raises(Stop):
        adapt(support, labels, QUICK, progress)


def test_folds_keep_an_example_of_every_class_out_of_each_fold_and_never_hold_out_singletons():
    labels = torch.tensor([0] * 2 + [1] * 7 + [2] * 1 + [3] * 5)
    fold = fold_of(labels, 5, torch.Generator().manual_seed(0))
    assert fold[labels == 2].tolist() == [-1]
    for f in range(5):
        for c in (0, 1, 3):
            assert int(((labels == c) & (fold != f)).sum()) >= 1
    assert sorted(torch.bincount(fold[labels == 3]).tolist()) == [1] * 5  # 5 over 5 folds


def test_an_episode_splits_each_class_into_support_and_queries():
    labels = torch.tensor([0] * 8 + [1] * 2 + [2] * 1)
    is_query = episode_split(labels, 0.5, torch.Generator().manual_seed(0))
    assert int(is_query[labels == 0].sum()) == 4
    assert int(is_query[labels == 1].sum()) == 1
    assert not bool(is_query[labels == 2].any())  # one example: support only


def test_a_support_set_with_nothing_to_hold_out_is_refused():
    assert why_not_adaptable(torch.tensor([0, 1, 2])) is not None  # single examples
    assert why_not_adaptable(torch.tensor([0, 0, 0])) is not None  # one class
    assert why_not_adaptable(torch.tensor([0, 0, 1])) is None
    with pytest.raises(InvalidInputError, match="at least 2 classes"):
        adapt(torch.zeros(3, 4), torch.tensor([0, 1, 2]))


def test_a_large_collection_trains_on_way_classes_of_two_or_more_per_episode():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4, 5])
    generator = torch.Generator().manual_seed(0)
    assert episode_rows(labels, 10, generator).tolist() == list(range(9))  # all: few classes
    for _ in range(5):
        rows = episode_rows(labels, 2, generator)
        chosen = set(labels[rows].tolist())
        assert len(chosen) == 2 and chosen <= {0, 1, 2}  # singletons only as support, all in
        assert len(rows) == 4


def test_held_out_classification_is_the_same_in_chunks(monkeypatch):
    support, labels = nuisance_set(10, 5, seed=6)
    whole = adapt(support, labels, QUICK).held_out
    monkeypatch.setattr("protonet.adaptation.CLASSIFY_ROWS", 7)
    chunked = adapt(support, labels, QUICK).held_out
    assert chunked.unadapted_correct == whole.unadapted_correct
    torch.testing.assert_close(chunked.scores, whole.scores)
