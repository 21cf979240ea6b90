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
    """Conv, batch norm and an op oneDNN tensors lack (MobileNetV2 has ReLU6 and sums)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU6())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images).cumsum(dim=1).flatten(1)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
def test_encoders_oneDNN_cannot_run_get_their_batch_norms_folded_alone():
    encoder = Unsupported()
    encoder.train()
    with torch.no_grad():
        encoder(torch.rand(16, 1, 8, 8))  # non-trivial running statistics
    encoder.eval()
    inputs = torch.rand(6, 1, 8, 8)
    optimized = optimize_for_inference(encoder, inputs[:2])
    assert not isinstance(optimized, OneDnnEncoder)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in optimized.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules()), "original untouched"
    torch.testing.assert_close(embed(optimized, inputs), embed(encoder, inputs))
