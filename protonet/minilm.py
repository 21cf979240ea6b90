"""A BERT encoder forward pass in plain torch, for the frozen base sentence encoder.

all-MiniLM-L6-v2 is a 6-layer BERT (hidden 384, 12 heads). Running it through ``transformers``
(or ``sentence-transformers``) would add 6 to 10 s of import time and ~160 MB of memory to
every process that embeds text, for a forward pass this short; module names here follow the
Hugging Face layout, so the published ``model.safetensors`` loads as it is. The output is
checked against sentence-transformers in tests/protonet/test_text.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face ``config.json`` that the forward pass needs."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> BertConfig:
        """Read a ``config.json``; refuse variants this forward pass does not implement."""
        if values.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act {values['hidden_act']!r} is not supported (gelu only)")
        if values.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        return cls(**{f.name: values[f.name] for f in fields(cls)})


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[n, L]`` token ids -> ``[n, L, hidden]``; single sentences, so token type 0."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        summed = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings.weight[0]
        )
        return self.LayerNorm(summed)


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def _split(self, states: torch.Tensor) -> torch.Tensor:
        """``[n, L, hidden]`` -> ``[n, heads, L, hidden / heads]``."""
        n, length, hidden = states.shape
        return states.view(n, length, self.heads, hidden // self.heads).transpose(1, 2)

    def forward(self, states: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``states [n, L, hidden]``, ``keep [n, 1, 1, L]`` (False at padding)."""
        q, k, v = (self._split(layer(states)) for layer in (self.query, self.key, self.value))
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keep, scale=1.0 / math.sqrt(q.shape[-1])
        )
        return context.transpose(1, 2).flatten(start_dim=2)


class BertAddNorm(nn.Module):
    """Dense, residual, layer norm: what closes each half of a BERT layer."""

    def __init__(self, config: BertConfig, in_features: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(states) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)  # named as in the published weights
        self.output = BertAddNorm(config, config.hidden_size)

    def forward(self, states: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(states, keep), states)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(states))  # BERT's gelu is the exact (erf) one


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertAddNorm(config, config.intermediate_size)

    def forward(self, states: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        attended = self.attention(states, keep)
        return self.output(self.intermediate(attended), attended)


class BertStack(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, states: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            states = layer(states, keep)
        return states


class BertModel(nn.Module):
    """Token states of a BERT encoder (no pooler: sentence embeddings mean-pool the states)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertStack(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``input_ids``, ``attention_mask``: ``[n, L]`` -> token states ``[n, L, hidden]``."""
        keep = attention_mask.bool()[:, None, None, :]
        return self.encoder(self.embeddings(input_ids), keep)


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states over real (unpadded) tokens: ``[n, L, d]`` -> ``[n, d]``."""
    weights = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


# Keys of the published weights that the forward pass does not use.
UNUSED_KEYS = ("pooler.", "embeddings.position_ids")


def load_bert(config: BertConfig, state_dict: dict[str, torch.Tensor]) -> BertModel:
    """A :class:`BertModel` with ``state_dict`` (Hugging Face names), in eval mode."""
    model = BertModel(config)
    used = {k: v for k, v in state_dict.items() if not k.startswith(UNUSED_KEYS)}
    model.load_state_dict(used)
    return model.eval()
