import pytest
import torch

from protonet.prototypes import (
    compute_prototypes,
    episode_loss,
    prototype_logits,
    squared_euclidean,
)


def test_prototypes_are_class_means_for_arbitrary_labels():
    embeddings = torch.tensor([[0.0, 0.0], [2.0, 4.0], [10.0, 10.0], [1.0, 1.0], [3.0, 5.0]])
    labels = torch.tensor([42, -7, 42, 42, -7])
    prototypes, classes = compute_prototypes(embeddings, labels)
    assert classes.tolist() == [-7, 42]
    # -7: mean of (2,4),(3,5) = (2.5,4.5); 42: mean of (0,0),(10,10),(1,1) = (11/3, 11/3)
    torch.testing.assert_close(prototypes, torch.tensor([[2.5, 4.5], [11 / 3, 11 / 3]]))


def test_squared_euclidean_matches_hand_values():
    queries = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    prototypes = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    expected = torch.tensor([[25.0, 1.0], [8.0, 4.0]])
    torch.testing.assert_close(squared_euclidean(queries, prototypes), expected)
    torch.testing.assert_close(prototype_logits(queries, prototypes), -expected)


def test_episode_loss_is_cross_entropy_over_negative_distances():
    support = torch.tensor([[0.0], [2.0]])
    support_labels = torch.tensor([5, 9])
    query = torch.tensor([[0.0], [1.5]])
    query_labels = torch.tensor([5, 9])
    loss, accuracy = episode_loss(support, support_labels, query, query_labels)
    # Query 0: logits (-0, -4); query 1: logits (-2.25, -0.25).
    logits = torch.tensor([[0.0, -4.0], [-2.25, -0.25]])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
    torch.testing.assert_close(loss, expected)
    assert accuracy.item() == 1.0


def test_episode_loss_rejects_query_labels_missing_from_support():
    with pytest.raises(ValueError, match="support labels"):
        episode_loss(torch.zeros(2, 3), torch.tensor([1, 2]), torch.zeros(1, 3), torch.tensor([3]))


def test_episode_loss_gradient_flows_to_embeddings():
    support = torch.randn(6, 4, requires_grad=True)
    loss, _ = episode_loss(
        support, torch.tensor([0, 0, 1, 1, 2, 2]), torch.randn(3, 4), torch.tensor([0, 1, 2])
    )
    loss.backward()
    assert support.grad is not None and support.grad.abs().sum() > 0
