import pytest
import torch

from protonet.model import EncoderConfig, build_encoder, embedding_dim


def test_conv4_maps_28x28_grayscale_to_64_dims():
    encoder = build_encoder(EncoderConfig())
    out = encoder(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 64)
    assert embedding_dim(EncoderConfig(), 28) == 64


def test_config_controls_width_and_rejects_unknown_architecture():
    wide = EncoderConfig(hidden_channels=32, out_channels=128)
    assert build_encoder(wide)(torch.rand(2, 1, 28, 28)).shape == (2, 128)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_encoder(EncoderConfig(architecture="resnet999"))
    with pytest.raises(ValueError, match="unknown encoder config"):
        EncoderConfig.from_dict({"architecture": "conv4", "depth": 3})
