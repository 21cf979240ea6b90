"""The inference path: ``embed`` and the oneDNN copy of the encoder that the service runs."""

import pytest
import torch
from torch import nn

from protonet.embedding import OneDnnEncoder, embed, optimize_for_inference
from protonet.model import EncoderConfig, build_encoder


def trained_looking_encoder(seed: int = 0) -> nn.Module:
    """A random encoder whose batch norms have non-trivial running statistics."""
    torch.manual_seed(seed)
    encoder = build_encoder(EncoderConfig())
    encoder.train()
    with torch.no_grad():
        for _ in range(3):
            encoder(torch.rand(16, 1, 28, 28))
    return encoder.eval()


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
def test_optimized_encoder_matches_the_plain_one_for_any_batch():
    encoder = trained_looking_encoder()
    inputs = torch.rand(20, 1, 28, 28)
    optimized = optimize_for_inference(encoder, inputs[:4])
    assert isinstance(optimized, OneDnnEncoder)
    expected = embed(encoder, inputs)
    together = embed(optimized, inputs)
    one_by_one = torch.cat([embed(optimized, inputs[i : i + 1]) for i in range(20)])
    torch.testing.assert_close(together, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(one_by_one, together, rtol=1e-6, atol=1e-6)
    assert embed(encoder, inputs).equal(expected), "the original encoder is left untouched"


class Unsupported(nn.Module):
    """An op oneDNN tensors lack: the optimization must fall back, not break."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images).cumsum(dim=1).flatten(1)


def test_encoders_the_optimization_cannot_handle_are_returned_as_they_are():
    encoder = Unsupported().eval()
    assert optimize_for_inference(encoder, torch.rand(2, 1, 8, 8)) is encoder
