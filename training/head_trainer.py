"""What training a head over a frozen base's cached features shares, text or pictures.

The base embeds every training item once (cached on disk); episodes then index those features,
so only the head's small forward and backward passes run per episode.
"""

from __future__ import annotations

import torch
from torch import nn

from protonet.model import LinearHead, build_encoder
from protonet.text import embed_base
from training.episodes import Episode
from training.evaluate import EpisodeItems
from training.trainer import Trainer, episode_items


class HeadTrainer(Trainer):
    """A :class:`~training.trainer.Trainer` over ``train_features [n_train, base_dim]`` and
    ``validation_features [n_validation, base_dim]``, which ``_load_data`` sets."""

    train_features: torch.Tensor
    validation_features: torch.Tensor

    def _build_encoder(self) -> nn.Module:
        head = build_encoder(self.encoder_config)
        assert isinstance(head, LinearHead)
        # A resumed run loads its weights instead; "identity" is LinearHead's own start.
        if not self.config.resume and self.config.head_start == "whitening":
            labels = torch.from_numpy(self.data.train.items.labels)
            weight, bias = whitening_start(self.train_features, labels)
            with torch.no_grad():
                head.linear.weight.copy_(weight)
                head.linear.bias.copy_(bias)
        return head.to(self.device)

    def _amp_dtype(self) -> torch.dtype | None:
        return None  # a square linear head of a few hundred rows: nothing for bf16 to speed up

    def _batch(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        indices, query_labels = episode_items(episode, self.device)
        support_labels = torch.from_numpy(episode.support_labels).to(self.device)
        return self.train_features[indices].to(self.device), support_labels, query_labels

    def _validation_items(self) -> EpisodeItems:
        """The validation items as the head reads them: their cached base features, and
        through the head (in eval mode) their embeddings."""
        features = self.validation_features
        return EpisodeItems(
            self.data.validation.items, self._validation_embeddings, lambda i: features[i]
        )

    def _validation_embeddings(self) -> torch.Tensor:
        was_training = self.encoder.training
        self.encoder.eval()
        embeddings = embed_base(self.encoder, self.validation_features)
        self.encoder.train(was_training)
        return embeddings


# Shrinkage of the within-class covariance towards its mean eigenvalue, in units of that mean.
WHITENING_SHRINKAGE = 3.0


def whitening_start(
    embeddings: torch.Tensor, labels: torch.Tensor, shrinkage: float = WHITENING_SHRINKAGE
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's starting point: centre on the training texts' mean and whiten by their
    within-intent covariance (shrunk towards isotropy), ``x -> (x - mean) @ W.T``.

    Directions in which texts of one intent vary (paraphrase noise, shared by all banking
    intents) are shrunk, and directions that separate intents stretched: the closed-form
    metric an LDA learns, from the training intents only. Episodes then adjust it.
    ``embeddings [n, d]``, ``labels [n]`` -> ``(weight [d, d], bias [d])``.
    """
    centred = embeddings.clone()
    for label in labels.unique():
        rows = labels == label
        centred[rows] -= embeddings[rows].mean(dim=0)
    within = centred.T @ centred / len(centred)
    eigenvalues, vectors = torch.linalg.eigh(within.double())
    scale = eigenvalues.mean()
    inverse_root = (eigenvalues + shrinkage * scale).rsqrt() * scale.sqrt()  # ~1 on average
    weight = (vectors * inverse_root) @ vectors.T
    return weight.float(), -(embeddings.mean(dim=0) @ weight.float().T)
