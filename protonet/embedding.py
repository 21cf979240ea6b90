"""Running the encoder for inference, shared by the evaluator and the service."""

from __future__ import annotations

import torch
from torch import nn


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` means CUDA when present, else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@torch.inference_mode()
def embed(encoder: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Embeddings ``[n, dim]`` (float32, on CPU) of model inputs ``[n, C, H, W]``.

    Runs in float32 and in chunks of ``batch_size`` so memory stays bounded; eval-mode batch
    norm makes each row's embedding independent of what else is in the batch.
    """
    device = next(encoder.parameters()).device
    chunks = []
    for start in range(0, inputs.shape[0], batch_size):
        batch = inputs[start : start + batch_size].to(device)
        # channels_last is ~2x faster for these convs on CPU (oneDNN), same numbers.
        batch = batch.contiguous(memory_format=torch.channels_last)
        chunks.append(encoder(batch).float().cpu())
    if not chunks:
        return torch.empty(0, 0)
    return torch.cat(chunks)
