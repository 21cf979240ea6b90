"""The embedding network. Imports only torch, so it can be read (and reused) on its own.

The default backbone is the paper's Conv-4 (Snell et al. 2017, after Vinyals et al. 2016):
four blocks of 3x3 conv (64 filters) -> batch norm -> ReLU -> 2x2 max-pool. On a 28x28
grayscale input the spatial size goes 28 -> 14 -> 7 -> 3 -> 1, so the flattened output is
exactly ``hidden_channels`` wide (64-d).

Text checkpoints hold a :class:`LinearHead` instead (architecture ``linear``): a head over the
frozen base sentence encoder's embeddings (``protonet.text``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class EncoderConfig:
    """Everything needed to rebuild the encoder; stored inside every checkpoint."""

    architecture: str = "conv4"
    in_channels: int = 1
    hidden_channels: int = 64
    out_channels: int = 64
    n_blocks: int = 4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EncoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown encoder config fields: {sorted(unknown)}")
        return cls(**values)


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv -> BN -> ReLU -> 2x2 max-pool: halves the spatial size."""
    return nn.Sequential(
        # No conv bias: batch norm's shift makes it redundant.
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class ConvEncoder(nn.Module):
    """Stack of ``n_blocks`` conv blocks, flattened.

    Input ``[batch, in_channels, H, W]`` float; output ``[batch, embedding_dim]``.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.in_channels] + [config.hidden_channels] * (config.n_blocks - 1)
        widths.append(config.out_channels)
        self.blocks = nn.Sequential(
            *(conv_block(widths[i], widths[i + 1]) for i in range(config.n_blocks))
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.blocks(images).flatten(start_dim=1)


# Squared distances between L2-normalised head outputs lie in [0, 4]; scaled by 4 (16 on the
# squared distance), episode softmaxes are sharp enough to learn from, without a learnable
# scale that training would inflate (it overfit the 40 training intents).
HEAD_SCALE = 4.0


class LinearHead(nn.Module):
    """A linear map of base embeddings, L2-normalised and scaled: ``[batch, in_channels]`` ->
    ``[batch, out_channels]``.

    Initialised to the identity (where square), so training starts from the base encoder's own
    metric and only adjusts it: randomly initialised heads, linear or MLP, lost accuracy on
    intents outside training (README, "Text: few-shot intents").
    """

    scale: torch.Tensor

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.in_channels, config.out_channels)
        if config.in_channels == config.out_channels:
            with torch.no_grad():
                self.linear.weight.copy_(torch.eye(config.in_channels))
                self.linear.bias.zero_()
        self.register_buffer("scale", torch.tensor(HEAD_SCALE))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(embeddings), dim=-1) * self.scale


# A registry rather than if/else at call sites: a new backbone is one entry here.
ARCHITECTURES: dict[str, type[nn.Module]] = {"conv4": ConvEncoder, "linear": LinearHead}


def build_encoder(config: EncoderConfig) -> nn.Module:
    """Build an (untrained) encoder for ``config``."""
    try:
        architecture = ARCHITECTURES[config.architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {config.architecture!r}; known: {sorted(ARCHITECTURES)}"
        ) from None
    return architecture(config)


def linear_head_config(base_dim: int) -> EncoderConfig:
    """A head over a frozen base of ``base_dim``-wide embeddings, text or picture (square:
    identity start)."""
    return EncoderConfig(
        architecture="linear",
        in_channels=base_dim,
        hidden_channels=base_dim,
        out_channels=base_dim,
        n_blocks=1,
    )


def embedding_dim(config: EncoderConfig, image_size: int) -> int:
    """Width of the flattened embedding for square inputs of ``image_size`` pixels (a text
    head's output width, whatever ``image_size``)."""
    if config.architecture == "linear":
        return config.out_channels
    side = image_size
    for _ in range(config.n_blocks):
        side //= 2
    return config.out_channels * side * side
