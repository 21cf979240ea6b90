"""The trainer's methods: Prototypical Networks; the MAML family and SNAIL as baselines.

Every method is an :class:`EpisodeLearner` whose ``forward(images, support_labels,
query_labels)`` returns an episode's ``(loss, accuracy)``: the trainer (and
``DistributedDataParallel`` around it) runs them all alike, on the same Conv-4 backbone and the
same episode sampler, and validation, evaluation and checkpoints use one interface for all.
Only the factories (:func:`build_learner`, :func:`learner_from_checkpoint`,
:func:`evaluation_learner`) ask which method it is.

* ``protonet``: squared distances to the support prototypes (Snell et al. 2017).
* ``maml``: a linear head of ``--way`` outputs on the backbone; the inner loop takes
  ``--inner-steps`` SGD steps of size ``--inner-lr`` on the support set, for every weight;
  the outer loss is the adapted model's on the queries, differentiated through the inner loop
  (second order: ``torch.autograd.grad(create_graph=True)``) (Finn et al. 2017).
* ``fomaml``: the same, with the inner gradients taken as constants (first order).
* ``anil``: only the head adapts in the inner loop; second order (Raghu et al. 2020).
* ``snail``: the model-based family: the SNAIL network (``training/snail.py``) reads the
  support features with their labels and answers every query in one forward pass, no
  fine-tuning (Mishra et al. 2018). Batch norm as for protonet: batch statistics in
  training, running statistics at evaluation, where every image is embedded once.

MAML-family batch norm uses each batch's own statistics, in training and when fine-tuning at
evaluation (support and queries are normalised as separate batches), as in Finn et al.'s code.
Class ``c`` of an episode is head row (SNAIL: label slot and output) ``c``'s position among
the episode's sorted class indices, so an N-way evaluation uses the head's first N rows
(N <= ``--way``).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm import tqdm

from protonet.checkpoint import Checkpoint
from protonet.model import embedding_dim
from protonet.open_set import open_set_ranking_loss
from protonet.prototypes import episode_loss
from training.episodes import EpisodeSampler, EpisodeShape
from training.evaluate import (
    EpisodeItems,
    EvaluationResult,
    evaluate,
    mean_and_ci95,
    nearest_prototype,
)
from training.snail import SNAIL, Snail

PROTONET = "protonet"
MAML_FAMILY = ("maml", "fomaml", "anil")
METHODS = (PROTONET, *MAML_FAMILY, SNAIL)
SECOND_ORDER = ("maml", "anil")

Params = dict[str, torch.Tensor]
# The label of an open-set episode's queries of no support class (class indices are >= 0).
UNKNOWN_LABEL = -1


def _autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


class EpisodeLearner(nn.Module):
    """A ``--method``'s learner. ``forward(images, support_labels, query_labels)`` trains it;
    what validation, evaluation and the checkpoint need of it is the same for every method
    (as easyfsl's ``FewShotClassifier``), so none of them asks which method it is:

    * :attr:`max_way`: the most classes an episode may have (a head's outputs), None for any;
    * :meth:`classify` an episode's queries from their embeddings, :meth:`evaluate` over
      seeded episodes (the MAML family fine-tunes on each episode's inputs instead);
    * :meth:`head_state` / :meth:`load_head`: its weights beyond the embedding, the
      checkpoint's ``classifier_head`` (none for protonet).
    """

    method: str
    encoder: nn.Module

    @property
    def max_way(self) -> int | None:
        return None

    def check_way(self, n_way: int) -> None:
        """A head of N outputs (SNAIL: N label slots) reads episodes of at most N classes."""
        if self.max_way is not None and n_way > self.max_way:
            raise ValueError(
                f"this {self.method} model's head has {self.max_way} outputs: it evaluates at "
                f"most {self.max_way}-way episodes, not {n_way}-way (train with --way {n_way})"
            )

    def classify(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor
    ) -> torch.Tensor:
        """The class label ``[Q]`` of each query embedding ``[Q, dim]``, given the support's
        embeddings ``[S, dim]`` and labels ``[S]``."""
        raise NotImplementedError

    def evaluate(
        self,
        items: EpisodeItems,
        shape: EpisodeShape,
        n_episodes: int,
        seed: int,
        within_group: bool = False,
        progress: bool = False,
    ) -> EvaluationResult:
        """Mean accuracy and 95% interval over ``n_episodes`` seeded episodes of ``items``:
        each item embedded once, every episode classified by :meth:`classify`."""
        return evaluate(
            items.embeddings,
            items.items,
            shape,
            n_episodes,
            seed,
            within_group,
            progress=progress,
            classify=self.classify,
        )

    def head_state(self) -> dict[str, torch.Tensor]:
        """The weights beyond the embedding, for the checkpoint (``{}``: none)."""
        return {}

    def load_head(self, head: dict[str, torch.Tensor]) -> None:
        """Restore a head saved by :meth:`head_state` (nothing to restore here)."""


class HeadLearner(EpisodeLearner):
    """A learner with weights beyond the embedding, ``classifier_head`` (a MAML-family linear
    head, SNAIL's network): the checkpoint keeps them, and its outputs bound the way."""

    classifier_head: nn.Module

    @property
    def way(self) -> int:
        raise NotImplementedError

    @property
    def max_way(self) -> int:
        return self.way

    def head_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.classifier_head.state_dict().items()}

    def load_head(self, head: dict[str, torch.Tensor]) -> None:
        if head:
            self.classifier_head.load_state_dict(head)


class PrototypeLearner(EpisodeLearner):
    """Prototypical Networks: the loss the trainer has always computed, plus, on open-set
    episodes, ``open_set_weight`` times the ranking loss of unknown against known queries.
    Episodes are classified by the nearest prototype, as the service classifies."""

    method = PROTONET

    def __init__(
        self, encoder: nn.Module, amp_dtype: torch.dtype | None, open_set_weight: float = 0.0
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.amp_dtype = amp_dtype
        self.open_set_weight = open_set_weight

    def forward(
        self, images: torch.Tensor, support_labels: torch.Tensor, query_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images ``[n_support + n_query, C, H, W]`` (support first) -> (loss, accuracy).

        Queries labelled ``UNKNOWN_LABEL`` belong to no support class: they take no part in
        the classification loss or the accuracy, only in the open-set ranking loss."""
        n_support = support_labels.shape[0]
        with _autocast(images.device, self.amp_dtype):
            embeddings = self.encoder(images)
        # Distances and the loss in fp32: they are cheap, and bf16 rounding would blur them.
        support, queries = embeddings.float().split([n_support, len(query_labels)])
        known = query_labels != UNKNOWN_LABEL
        known_queries, unknown_queries = queries[known], queries[~known]
        loss, accuracy = episode_loss(support, support_labels, known_queries, query_labels[known])
        if self.open_set_weight and len(unknown_queries):
            ranking = open_set_ranking_loss(support, support_labels, known_queries, unknown_queries)
            loss = loss + self.open_set_weight * ranking
        return loss, accuracy

    def classify(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor
    ) -> torch.Tensor:
        return nearest_prototype(support, support_labels, queries)


def query_loss(
    logits: torch.Tensor, classes: torch.Tensor, query_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and accuracy of query logits ``[Q, n_way]`` whose column ``i`` is class
    ``classes[i]`` (the sorted classes of the episode)."""
    targets = torch.searchsorted(classes, query_labels)
    loss = F.cross_entropy(logits, targets)
    return loss, (logits.argmax(dim=1) == targets).float().mean().detach()


class MetaLearner(HeadLearner):
    """The MAML family: backbone + linear head ``[way, dim]``, adapted per episode; evaluated
    fine-tuned ``finetune_steps`` steps on each episode's support images."""

    classifier_head: nn.Linear

    def __init__(
        self,
        encoder: nn.Module,
        embedding_dim: int,
        way: int,
        method: str,
        inner_steps: int,
        inner_lr: float,
        amp_dtype: torch.dtype | None = None,
        finetune_steps: int = 3,
    ) -> None:
        super().__init__()
        if method not in MAML_FAMILY:
            raise ValueError(f"{method!r} is not a MAML-family method ({', '.join(MAML_FAMILY)})")
        self.encoder = encoder
        self.classifier_head = nn.Linear(embedding_dim, way)
        self.method, self.inner_steps, self.inner_lr = method, inner_steps, inner_lr
        self.amp_dtype = amp_dtype
        self.finetune_steps = finetune_steps

    @property
    def way(self) -> int:
        """The most classes an episode may have: the head's outputs."""
        return self.classifier_head.out_features

    def _features(self, params: Params, images: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, dim]`` fp32, the backbone run with ``params``."""
        prefix = "encoder."
        weights = {k.removeprefix(prefix): v for k, v in params.items() if k.startswith(prefix)}
        with _autocast(images.device, self.amp_dtype):
            features = functional_call(self.encoder, weights, (images,))
        return features.float()

    def _logits(
        self, params: Params, images: torch.Tensor, n_way: int, features: torch.Tensor | None
    ) -> torch.Tensor:
        """``[B, n_way]``, from the head's first ``n_way`` rows."""
        if features is None:
            features = self._features(params, images)
        weight, bias = params["classifier_head.weight"], params["classifier_head.bias"]
        return F.linear(features, weight[:n_way], bias[:n_way])

    def adapt(
        self, support: torch.Tensor, targets: torch.Tensor, n_way: int, steps: int, graph: bool
    ) -> Params:
        """The inner loop: ``steps`` SGD steps on the support loss; ``graph`` keeps them
        differentiable (second order). support ``[S, C, H, W]``, targets ``[S]`` in 0..n_way-1."""
        params: Params = dict(self.named_parameters())
        names = [n for n in params if n.startswith("classifier_head.") or self.method != "anil"]
        # ANIL's backbone does not change in the inner loop: its support features are fixed.
        features = self._features(params, support) if self.method == "anil" else None
        for _ in range(steps):
            loss = F.cross_entropy(self._logits(params, support, n_way, features), targets)
            grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=graph)
            steps_taken = zip(names, grads, strict=True)
            params = params | {n: params[n] - self.inner_lr * g for n, g in steps_taken}
        return params

    def forward(
        self, images: torch.Tensor, support_labels: torch.Tensor, query_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images ``[n_support + n_query, C, H, W]`` (support first) -> the adapted model's
        query (loss, accuracy)."""
        n_support = support_labels.shape[0]
        classes, targets = torch.unique(support_labels, return_inverse=True)
        graph = self.method in SECOND_ORDER
        params = self.adapt(images[:n_support], targets, len(classes), self.inner_steps, graph)
        logits = self._logits(params, images[n_support:], len(classes), None)
        return query_loss(logits, classes, query_labels)

    def predict(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, steps: int
    ) -> torch.Tensor:
        """Fine-tune on the support set for ``steps`` steps, then the class label ``[Q]`` of
        each query."""
        classes, targets = torch.unique(support_labels, return_inverse=True)
        with torch.enable_grad():
            params = self.adapt(support, targets, len(classes), steps, graph=False)
        with torch.no_grad():
            logits = self._logits(params, query, len(classes), None)
        return classes[logits.argmax(dim=1)]

    def evaluate(
        self,
        items: EpisodeItems,
        shape: EpisodeShape,
        n_episodes: int,
        seed: int,
        within_group: bool = False,
        progress: bool = False,
    ) -> EvaluationResult:
        """Over the same episodes, each query predicted after fine-tuning on the episode's
        support inputs (:func:`evaluate_finetuned`): batch statistics, so no embedding once."""
        return evaluate_finetuned(
            self, items, shape, n_episodes, seed, self.finetune_steps, within_group, progress
        )


class SnailLearner(HeadLearner):
    """SNAIL over the backbone: the network (``classifier_head``, :class:`training.snail.Snail`)
    reads the support features with their classes and gives every query's logits."""

    method = SNAIL
    classifier_head: Snail

    def __init__(
        self,
        encoder: nn.Module,
        embedding_dim: int,
        way: int,
        shot: int,
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        # The paper's T: a training episode's support and one query.
        self.classifier_head = Snail(embedding_dim, way, way * shot + 1)
        self.amp_dtype = amp_dtype

    @property
    def way(self) -> int:
        """The most classes an episode may have: the network's label slots and outputs."""
        return self.classifier_head.way

    def logits(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``[S, dim]``, ``[Q, dim]`` -> (logits ``[Q, n_way]``, the sorted classes)."""
        classes, targets = torch.unique(support_labels, return_inverse=True)
        return self.classifier_head(support, targets, queries, len(classes)), classes

    def classify(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor
    ) -> torch.Tensor:
        """The network's answer for each query feature, as in training (eval-mode
        embeddings: batch norm's running statistics)."""
        logits, classes = self.logits(support, support_labels, queries)
        return classes[logits.argmax(dim=1)]

    def forward(
        self, images: torch.Tensor, support_labels: torch.Tensor, query_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images ``[n_support + n_query, C, H, W]`` (support first) -> (loss, accuracy)."""
        with _autocast(images.device, self.amp_dtype):
            features = self.encoder(images)
        # The sequence model in fp32: bf16 would round the attention logits.
        support, queries = features.float().split([len(support_labels), len(query_labels)])
        return query_loss(*self.logits(support, support_labels, queries), query_labels)


def build_learner(
    method: str,
    encoder: nn.Module,
    embedding_dim: int,
    way: int,
    shot: int,
    inner_steps: int,
    inner_lr: float,
    amp_dtype: torch.dtype | None,
    open_set_weight: float = 0.0,
    finetune_steps: int = 3,
) -> EpisodeLearner:
    """The module that turns one episode into its (loss, accuracy) for ``method``."""
    if method == PROTONET:
        return PrototypeLearner(encoder, amp_dtype, open_set_weight)
    if method == SNAIL:
        return SnailLearner(encoder, embedding_dim, way, shot, amp_dtype)
    return MetaLearner(
        encoder, embedding_dim, way, method, inner_steps, inner_lr, amp_dtype, finetune_steps
    )


def learner_from_checkpoint(
    checkpoint: Checkpoint, device: torch.device, finetune_steps: int | None = None
) -> HeadLearner:
    """The learner a MAML-family or SNAIL checkpoint holds, fp32, on ``device``; a MAML-family
    one is evaluated with ``finetune_steps`` (default: the checkpoint's ``--finetune-steps``)."""
    config: dict[str, Any] = checkpoint.training_config
    if not checkpoint.classifier_head:
        raise ValueError(f"a {checkpoint.method} checkpoint must hold its head; this one does not")
    encoder = checkpoint.build_encoder(device)
    learner: HeadLearner
    if checkpoint.method == SNAIL:
        dim = embedding_dim(checkpoint.encoder_config, checkpoint.input_spec.image_size)
        learner = SnailLearner(encoder, dim, config["way"], config["shot"])
    else:
        way, dim = checkpoint.classifier_head["weight"].shape
        steps = config.get("finetune_steps", 3) if finetune_steps is None else finetune_steps
        learner = MetaLearner(
            encoder,
            dim,
            way,
            checkpoint.method,
            config["inner_steps"],
            config["inner_lr"],
            finetune_steps=int(steps),
        )
    learner.load_head(checkpoint.classifier_head)
    return learner.to(device)


def evaluation_learner(
    checkpoint: Checkpoint,
    device: torch.device,
    finetune_steps: int | None = None,
    prototypes_only: bool = False,
) -> EpisodeLearner:
    """The learner that evaluates ``checkpoint``, in eval mode: a MAML-family one fine-tuned
    ``finetune_steps`` steps on each episode's support (default: the checkpoint's
    ``--finetune-steps``), SNAIL's network, or the nearest prototype of the checkpoint's
    embeddings, as the service classifies: for protonet, and with ``finetune_steps`` 0 for
    the others. ``prototypes_only`` (open-set episodes score distances to prototypes) refuses
    anything but the nearest prototype."""
    steps = finetune_steps
    if checkpoint.method == PROTONET and steps:
        raise ValueError("--finetune-steps is for MAML-family checkpoints, not protonet")
    if checkpoint.method == SNAIL and steps:
        raise ValueError(
            "--finetune-steps: a snail checkpoint does not fine-tune: leave the flag out for "
            "its own network, or pass 0 for the nearest prototype of its embeddings (as served)"
        )
    if steps is None and checkpoint.method not in (PROTONET, SNAIL):
        steps = int(checkpoint.training_config.get("finetune_steps", 3))
    if checkpoint.method == PROTONET or steps == 0:
        return PrototypeLearner(checkpoint.build_encoder(device), None).eval()
    if prototypes_only:
        raise ValueError("--open-set scores distances to prototypes: add --finetune-steps 0")
    return learner_from_checkpoint(checkpoint, device, steps).eval()


def finetuned_accuracies(
    learner: MetaLearner,
    items: EpisodeItems,
    shape: EpisodeShape,
    n_episodes: int,
    seed: int,
    steps: int,
    within_group: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Query accuracy ``[n_episodes]`` of the learner fine-tuned on each seeded episode's
    support set; the same episodes :func:`training.evaluate.evaluate` draws for a seed."""
    learner.check_way(shape.n_way)
    learner = copy.deepcopy(learner).train()  # batch statistics; the caller's stats untouched
    device = next(learner.parameters()).device
    sampler = EpisodeSampler(items.items, shape, seed=seed, within_group=within_group)
    accuracies = np.empty(n_episodes)
    for i in tqdm(range(n_episodes), desc="episodes", disable=not progress, leave=False):
        episode = sampler.sample()
        support = items.inputs(episode.support_indices).to(device)
        query = items.inputs(episode.query_indices).to(device)
        labels = torch.from_numpy(episode.support_labels).to(device)
        predicted = learner.predict(support, labels, query, steps).cpu()
        accuracies[i] = (predicted == torch.from_numpy(episode.query_labels)).float().mean()
    return accuracies


def evaluate_finetuned(
    learner: MetaLearner,
    items: EpisodeItems,
    shape: EpisodeShape,
    n_episodes: int,
    seed: int,
    steps: int,
    within_group: bool = False,
    progress: bool = False,
) -> EvaluationResult:
    """Mean accuracy and 95% interval over fine-tuned episodes (:func:`finetuned_accuracies`)."""
    accuracies = finetuned_accuracies(
        learner, items, shape, n_episodes, seed, steps, within_group, progress
    )
    accuracy, ci95 = mean_and_ci95(accuracies)
    return EvaluationResult(
        shape.n_way, shape.n_shot, shape.n_query, n_episodes, within_group, accuracy, ci95
    )


def check_validation_way(learner: EpisodeLearner, val_way: int) -> None:
    """A head of N outputs (MAML family, SNAIL: ``--way``) validates at most N-way episodes."""
    way = learner.max_way
    if way is not None and val_way > way:
        raise ValueError(
            f"--method {learner.method}: the head has --way {way} outputs, so validation episodes "
            f"can be at most {way}-way, not {val_way}-way: pass --val-way {way} (or less)"
        )
