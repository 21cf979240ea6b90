"""Training-time augmentation (never used at evaluation or serving)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random whole-pixel offset in [-max_shift, max_shift].

    images: ``[B, C, H, W]`` -> ``[B, C, H, W]``. Borders are replicated rather than zero-filled,
    so a folder dataset whose background is not 0 gets no artificial frame.
    """
    if max_shift == 0:
        return images
    batch, channels, height, width = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    # Offset 0..2*max_shift into the padded image; max_shift is "no shift".
    dy = torch.randint(0, 2 * max_shift + 1, (batch,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (batch,), generator=generator)
    rows = (dy[:, None] + torch.arange(height))[:, None, :, None]  # [B, 1, H, 1]
    cols = (dx[:, None] + torch.arange(width))[:, None, None, :]  # [B, 1, 1, W]
    batch_index = torch.arange(batch)[:, None, None, None]
    channel_index = torch.arange(channels)[None, :, None, None]
    return padded[batch_index, channel_index, rows, cols]


def random_rotate_scale(
    images: torch.Tensor, max_degrees: float, max_scale: float, generator: torch.Generator
) -> torch.Tensor:
    """Rotate each image by its own angle in [-max_degrees, max_degrees] and zoom it by its own
    factor in [1 - max_scale, 1 + max_scale], about the image centre (bilinear resampling).

    images: ``[B, C, H, W]`` -> ``[B, C, H, W]``. Small angles only: Omniglot's rotation
    classes are 90 degrees apart, and a character tilted by a few degrees is still the same
    character. Borders are replicated, as in :func:`random_shift`. With both limits at 0 the
    images come back unchanged and the generator is not drawn from, so runs without this
    augmentation reproduce exactly.
    """
    if max_degrees == 0 and max_scale == 0:
        return images
    batch = images.shape[0]
    angles = (torch.rand(batch, generator=generator) * 2 - 1) * math.radians(max_degrees)
    scales = 1 + (torch.rand(batch, generator=generator) * 2 - 1) * max_scale
    # affine_grid maps output coordinates to input ones, so zooming in by s samples a grid
    # shrunk by 1/s.
    cos, sin = torch.cos(angles) / scales, torch.sin(angles) / scales
    zeros = torch.zeros(batch)
    theta = torch.stack(
        [torch.stack([cos, -sin, zeros], dim=1), torch.stack([sin, cos, zeros], dim=1)], dim=1
    ).to(images.dtype)  # [B, 2, 3]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
