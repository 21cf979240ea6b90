"""SNAIL (Mishra et al. 2018): the model-based meta-learner, over the Conv-4 features.

An episode is read as a sequence: the support items in the sampler's order, each its Conv-4
feature with the one-hot of its class appended, then one query with an all-zero label. Dilated
causal convolutions (temporal-convolution blocks) and causal soft attention turn the sequence
into the query's class logits in one forward pass: no fine-tuning, no distance.

The paper's Omniglot network: AttentionBlock(64, 32), TCBlock(T, 128), AttentionBlock(256,
128), TCBlock(T, 128), AttentionBlock(512, 256), then a linear layer of N outputs; T is the
training sequence length N*K + 1, and a TC block has ceil(log2 T) dense layers of dilation
2, 4, 8, ... (Mishra et al., appendix). Here N is ``--way``: an n-way episode (n <= N) uses
the first n one-hot slots and outputs.

Every query's sequence starts with the same support items and every layer is causal, so the
support positions are computed once per episode and each query adds only its own last
position: each block maps ``(support [S, C], queries [Q, C])`` to ``(support [S, C'],
queries [Q, C'])``, which equals Q sequences of length S + 1 (``tests/training/test_snail.py``
checks it) at the cost of S + Q positions instead of Q * (S + 1): 320 instead of 6300 for
20-way 1-shot episodes of 15 queries per class.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SNAIL = "snail"
# (key size, value size) of the three attention blocks; filters of the two TC blocks.
ATTENTION_SIZES = ((64, 32), (256, 128), (512, 256))
TC_FILTERS = 128

Sequences = tuple[torch.Tensor, torch.Tensor]  # (support [S, C], queries [Q, C])


class CausalConv(nn.Module):
    """Kernel-2 causal convolution of dilation ``d``: ``out[t] = now(x[t]) + past(x[t - d])``,
    the past term zero before the sequence starts (a ``Conv1d(kernel_size=2, dilation=d)``
    over the sequence padded with ``d`` zeros in front)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.now = nn.Linear(in_channels, out_channels)
        self.past = nn.Linear(in_channels, out_channels, bias=False)

    def forward(self, support: torch.Tensor, queries: torch.Tensor) -> Sequences:
        n, d = len(support), self.dilation
        earlier = F.pad(support[: max(n - d, 0)], (0, 0, min(d, n), 0))  # x[t - d], or zeros
        support_out = self.now(support) + self.past(earlier)
        queries_out = self.now(queries)  # a query sits at position n: it sees x[n - d]
        if d <= n:
            queries_out = queries_out + self.past(support[n - d])
        return support_out, queries_out


class DenseBlock(nn.Module):
    """A gated causal convolution whose ``filters`` outputs are appended to its input."""

    def __init__(self, in_channels: int, filters: int, dilation: int) -> None:
        super().__init__()
        self.conv = CausalConv(in_channels, 2 * filters, dilation)

    def forward(self, support: torch.Tensor, queries: torch.Tensor) -> Sequences:
        convolved = self.conv(support, queries)
        gated = [torch.tanh(f) * torch.sigmoid(g) for f, g in (y.chunk(2, -1) for y in convolved)]
        return torch.cat([support, gated[0]], -1), torch.cat([queries, gated[1]], -1)


class TCBlock(nn.Module):
    """ceil(log2 T) dense blocks of dilation 2, 4, 8, ...: the last one reaches T back."""

    def __init__(self, in_channels: int, sequence_length: int, filters: int) -> None:
        super().__init__()
        n_layers = max(1, math.ceil(math.log2(sequence_length)))
        self.layers = nn.ModuleList(
            DenseBlock(in_channels + i * filters, filters, 2 ** (i + 1)) for i in range(n_layers)
        )
        self.out_channels = in_channels + n_layers * filters

    def forward(self, support: torch.Tensor, queries: torch.Tensor) -> Sequences:
        for layer in self.layers:
            support, queries = layer(support, queries)
        return support, queries


class AttentionBlock(nn.Module):
    """Causal single-head soft attention; what it reads is appended to its input. Position t
    of the support attends to positions 0..t, a query to the whole support and itself."""

    def __init__(self, in_channels: int, key_size: int, value_size: int) -> None:
        super().__init__()
        self.sizes = [key_size, value_size]
        # The paper's query and value maps as one matrix product. The key map has no bias: a
        # bias b would add q.b to every logit of a row, which softmax ignores; its gradient is
        # zero up to rounding, which Adam would blow up into steps of the full learning rate.
        self.query_value = nn.Linear(in_channels, key_size + value_size)
        self.key = nn.Linear(in_channels, key_size, bias=False)
        self.out_channels = in_channels + value_size

    def forward(self, support: torch.Tensor, queries: torch.Tensor) -> Sequences:
        s_query, s_value = self.query_value(support).split(self.sizes, -1)
        q_query, q_value = self.query_value(queries).split(self.sizes, -1)
        s_key, q_key = self.key(support), self.key(queries)
        scale = self.sizes[0] ** -0.5
        n = len(support)
        later = torch.ones(n, n, dtype=torch.bool, device=support.device).triu(1)
        support_logits = (s_query @ s_key.T * scale).masked_fill(later, float("-inf"))
        support_read = support_logits.softmax(-1) @ s_value
        own = (q_query * q_key).sum(-1, keepdim=True)  # each query's attention to itself
        weights = (torch.cat([q_query @ s_key.T, own], -1) * scale).softmax(-1)
        query_read = weights[:, :n] @ s_value + weights[:, n:] * q_value
        return torch.cat([support, support_read], -1), torch.cat([queries, query_read], -1)


class Snail(nn.Module):
    """Support features and classes, query features -> query logits ``[Q, n_way]``."""

    def __init__(self, feature_dim: int, way: int, sequence_length: int) -> None:
        super().__init__()
        self.way = way
        channels = feature_dim + way
        blocks: list[nn.Module] = []
        for i, (key_size, value_size) in enumerate(ATTENTION_SIZES):
            if i:  # a TC block between attention blocks
                convolutions = TCBlock(channels, sequence_length, TC_FILTERS)
                blocks.append(convolutions)
                channels = convolutions.out_channels
            attention = AttentionBlock(channels, key_size, value_size)
            blocks.append(attention)
            channels = attention.out_channels
        self.blocks = nn.ModuleList(blocks)
        self.output = nn.Linear(channels, way)

    def inputs(
        self, support: torch.Tensor, targets: torch.Tensor, queries: torch.Tensor
    ) -> Sequences:
        """Features with their label slots: the one-hot of ``targets`` (0..n_way-1) for the
        support ``[S, dim]``, zeros for the queries ``[Q, dim]``."""
        labels = F.one_hot(targets, self.way).to(support.dtype)
        unlabelled = queries.new_zeros(len(queries), self.way)
        return torch.cat([support, labels], -1), torch.cat([queries, unlabelled], -1)

    def forward(
        self, support: torch.Tensor, targets: torch.Tensor, queries: torch.Tensor, n_way: int
    ) -> torch.Tensor:
        if n_way > self.way:
            raise ValueError(f"this SNAIL reads at most {self.way}-way episodes, not {n_way}-way")
        support, queries = self.inputs(support, targets, queries)
        for block in self.blocks:
            support, queries = block(support, queries)
        return F.linear(queries, self.output.weight[:n_way], self.output.bias[:n_way])
