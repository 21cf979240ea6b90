"""Prototype math: the whole of the Prototypical Networks classifier.

A class's prototype is the mean embedding of its support examples; a query is scored
by minus its squared Euclidean distance to each prototype (Snell et al. 2017, eq. 1-2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_prototypes(
    support_embeddings: torch.Tensor, support_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean embedding per class, for labels of any values.

    Args:
        support_embeddings: ``[n_support, dim]``.
        support_labels: ``[n_support]`` integer labels (any values, any order).

    Returns:
        ``(prototypes [n_classes, dim], classes [n_classes])`` where ``classes`` are the
        sorted distinct labels and row ``i`` of ``prototypes`` belongs to ``classes[i]``.
    """
    if support_embeddings.shape[0] != support_labels.shape[0]:
        raise ValueError(
            f"{support_embeddings.shape[0]} support embeddings but {support_labels.shape[0]} labels"
        )
    classes, class_index = torch.unique(support_labels, return_inverse=True)
    n_classes = classes.shape[0]
    sums = torch.zeros(
        n_classes,
        support_embeddings.shape[1],
        dtype=support_embeddings.dtype,
        device=support_embeddings.device,
    )
    sums.index_add_(0, class_index, support_embeddings)
    counts = torch.bincount(class_index, minlength=n_classes).to(support_embeddings.dtype)
    return sums / counts.unsqueeze(1), classes


def squared_euclidean(queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[n_query, n_classes]`` between two sets of rows.

    Computed as a direct difference rather than the ``|a|^2 - 2ab + |b|^2`` expansion:
    episodes are small, and the direct form never goes negative through cancellation.
    """
    return (queries.unsqueeze(1) - prototypes.unsqueeze(0)).pow(2).sum(dim=2)


def prototype_logits(queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Logits ``[n_query, n_classes]``: minus the squared distance (the paper's metric)."""
    return -squared_euclidean(queries, prototypes)


def episode_loss(
    support_embeddings: torch.Tensor,
    support_labels: torch.Tensor,
    query_embeddings: torch.Tensor,
    query_labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the queries against the support prototypes, and accuracy.

    Shapes: support ``[n_support, dim]`` / ``[n_support]``, query ``[n_query, dim]`` /
    ``[n_query]``. Every query label must appear among the support labels.

    Returns:
        ``(loss, accuracy)``: scalar tensors; accuracy is detached.
    """
    prototypes, classes = compute_prototypes(support_embeddings, support_labels)
    # Map query labels to prototype rows; searchsorted works because ``classes`` is sorted.
    targets = torch.searchsorted(classes, query_labels).clamp(max=classes.shape[0] - 1)
    if not torch.equal(classes[targets], query_labels):
        raise ValueError("every query label must appear among the support labels")
    logits = prototype_logits(query_embeddings, prototypes)
    loss = F.cross_entropy(logits, targets)
    accuracy = (logits.argmax(dim=1) == targets).float().mean().detach()
    return loss, accuracy
