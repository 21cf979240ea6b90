"""Training-time augmentation (never used at evaluation or serving)."""

from __future__ import annotations

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
