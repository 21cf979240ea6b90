"""Evaluation episodes run their tiny tensor math on one torch thread, whatever the caller set:
threads only add waiting there (benchmarks/episode_threads.py measures it)."""

import numpy as np
import pytest
import torch

from protonet import prototypes
from training import evaluate
from training.episodes import EpisodeShape
from training.imageset import ImageSet


@pytest.fixture
def two_threads():
    """Torch on 2 threads, as on CI's 2 cores; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def threads_seen(monkeypatch):
    """The torch thread count each prototype computation ran with."""
    seen: list[int] = []

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return prototypes.compute_prototypes(*args, **kwargs)

    monkeypatch.setattr(evaluate, "compute_prototypes", recording)
    return seen


def items(n_classes: int = 6, per_class: int = 4) -> ImageSet:
    return ImageSet(
        pixels=np.zeros((n_classes * per_class, 4, 4), dtype=np.uint8),
        labels=np.repeat(np.arange(n_classes), per_class),
        class_names=[f"c{i}" for i in range(n_classes)],
        class_groups=[""] * n_classes,
    )


def test_closed_set_episodes_run_on_one_thread_and_give_it_back(two_threads, threads_seen):
    images = items()
    embeddings = torch.randn(len(images.labels), 8)
    evaluate.episode_accuracies(embeddings, images, EpisodeShape(3, 1, 2), 5, seed=0)
    assert threads_seen == [1] * 5
    assert torch.get_num_threads() == 2


def test_open_set_episodes_run_on_one_thread_and_give_it_back(two_threads, threads_seen):
    images = items()
    embeddings = torch.randn(len(images.labels), 8)
    shape = EpisodeShape(2, 1, 2, n_unknown=2)
    for _ in evaluate.scored_episodes(embeddings, images, shape, 3, 0, False, "nearest_distance"):
        assert torch.get_num_threads() == 2  # the caller's setting between episodes
    assert threads_seen == [1] * 3
