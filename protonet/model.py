"""The embedding network. Imports only torch, so it can be read (and reused) on its own.

The default backbone is the paper's Conv-4 (Snell et al. 2017, after Vinyals et al. 2016):
four blocks of 3x3 conv (64 filters) -> batch norm -> ReLU -> 2x2 max-pool. On a 28x28
grayscale input the spatial size goes 28 -> 14 -> 7 -> 3 -> 1, so the flattened output is
exactly ``hidden_channels`` wide (64-d).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
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


# A registry rather than if/else at call sites: a new backbone is one entry here.
ARCHITECTURES: dict[str, type[ConvEncoder]] = {"conv4": ConvEncoder}


def build_encoder(config: EncoderConfig) -> nn.Module:
    """Build an (untrained) encoder for ``config``."""
    try:
        architecture = ARCHITECTURES[config.architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {config.architecture!r}; known: {sorted(ARCHITECTURES)}"
        ) from None
    return architecture(config)


def embedding_dim(config: EncoderConfig, image_size: int) -> int:
    """Width of the flattened embedding for square inputs of ``image_size`` pixels."""
    side = image_size
    for _ in range(config.n_blocks):
        side //= 2
    return config.out_channels * side * side
