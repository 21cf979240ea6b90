"""The one preprocessing path from "an image a person drew" to a model input.

Two stages, both used by the trainer, the evaluator and the service alike:

1. :func:`to_pixels` decodes any Pillow-readable file, PIL image or array, flattens alpha onto
   white paper, converts to the checkpoint's channels and resizes to its square size (stretched,
   or padded to keep the aspect ratio). The result is a small ``uint8`` array: what the
   training cache and the service's storage keep.
2. :func:`pixels_to_tensor` scales to [0, 1], inverts where the spec says (so strokes are 1 on
   a 0 background, as the pen-stroke encoders were trained) and normalises where it gives
   per-channel statistics (a pretrained ImageNet base), batched or not.

Keeping stage 1's output as ``uint8`` in both the cache and storage means the trainer and the
service feed the encoder byte-identical inputs for the same drawing: no train/serve skew.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from PIL import Image

from protonet.errors import InvalidInputError

ImageSource = bytes | Image.Image | np.ndarray

DEFAULT_MAX_PIXELS = 4096 * 4096
FITS = ("stretch", "pad")
# The fields a picture model sets; absent from a pen-stroke model's dict.
PICTURE_FIELDS = ("fit", "mean", "std")
# torchvision's ImageNet statistics, which its pretrained weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Longest side accepted. Pillow keeps an image as rows and resizes in passes whose work and
# memory grow with each side, not only with the pixels: a 1 x 16,777,216 PNG took 2 s and
# 500 MB to decode and resize where 4096 x 4096 takes 0.1 s and 30 MB.
DEFAULT_MAX_SIDE = 16384


@dataclass(frozen=True)
class InputSpec:
    """What the encoder expects; stored in the checkpoint so callers never guess.

    A picture model (pretrained ImageNet base) reads RGB at 224 px, padded, not inverted, with
    ImageNet normalisation: :func:`picture_spec`.
    """

    image_size: int = 28
    channels: int = 1
    # Omniglot (and what people draw) is dark ink on light paper; the encoder sees ink as 1.
    invert: bool = True
    # How an image that is not square becomes square: "stretch" (the pen-stroke models) or
    # "pad" (resize keeping the aspect ratio, then white paper around it: a photo of a tall
    # bottle stays a tall bottle, as pretrained bases saw their training pictures).
    fit: str = "stretch"
    # Per-channel normalisation after scaling to [0, 1] (ImageNet's for a pretrained base);
    # empty: none.
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, not {self.fit!r}")
        if len(self.mean) != len(self.std) or len(self.mean) not in (0, self.channels):
            raise ValueError(f"mean and std need {self.channels} values each, or none")

    def to_dict(self) -> dict[str, Any]:
        defaults = {f.name: f.default for f in fields(self)}
        # Checkpoints (and cache keys) of the pen-stroke models stay as they were.
        return {
            k: v for k, v in asdict(self).items() if k not in PICTURE_FIELDS or v != defaults[k]
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> InputSpec:
        values = dict(values)
        for name in ("mean", "std"):
            if name in values:
                values[name] = tuple(float(v) for v in values[name])
        return cls(**values)

    @property
    def pixel_shape(self) -> tuple[int, ...]:
        """Shape of :func:`to_pixels` output: ``[H, W]`` or ``[H, W, C]``."""
        side = (self.image_size, self.image_size)
        return side if self.channels == 1 else (*side, self.channels)


def picture_spec(image_size: int = 224) -> InputSpec:
    """The input of a model over a pretrained ImageNet base: colour photos and drawings."""
    return InputSpec(image_size, 3, invert=False, fit="pad", mean=IMAGENET_MEAN, std=IMAGENET_STD)


def check_image_size(
    width: int, height: int, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int = DEFAULT_MAX_SIDE
) -> None:
    """Refuse an image whose size (from a file header, before decoding) would make decoding
    it expensive: more than ``max_pixels`` pixels, or a side longer than ``max_side``."""
    if width * height > max_pixels:
        raise InvalidInputError(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if max(width, height) > max_side:
        raise InvalidInputError(
            f"image is {width}x{height}; a side may be at most {max_side} pixels: crop or scale it"
        )


def decode_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int = DEFAULT_MAX_SIDE
) -> Image.Image:
    """Decode an encoded image file, refusing empty input, decompression bombs and sizes
    that :func:`check_image_size` refuses."""
    if not data:
        raise InvalidInputError("empty image")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size  # read from the header, before any pixel is decoded
        check_image_size(width, height, max_pixels, max_side)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except InvalidInputError:
        raise
    except Image.DecompressionBombError:  # Image.open refuses headers past 2x Pillow's limit
        raise InvalidInputError(
            f"image is larger than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels; "
            f"the limit is {max_pixels}"
        ) from None
    except Exception as error:  # Pillow raises many types for bad files
        raise InvalidInputError(f"not a decodable image ({type(error).__name__})") from None
    if width == 0 or height == 0:
        raise InvalidInputError("image has no pixels")
    return image


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite transparent images onto white paper, so ink on a clear layer stays ink."""
    if image.mode == "La":  # TIFF's premultiplied ("associated") alpha: Pillow only has La -> LA
        image = image.convert("LA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba)
    return image


def _convert(image: Image.Image, channels: int) -> Image.Image:
    """``image`` flattened and in the spec's mode ("L" or "RGB"); refused if Pillow cannot."""
    if channels == 1 and image.mode == "LAB":
        # The L band is lightness, already 8-bit grey. Pillow has no LAB -> L: it would go
        # through its core's LAB -> RGB, which does not exist (only ImageCms converts LAB).
        return image.getchannel("L")
    try:
        return _flatten_alpha(image).convert("L" if channels == 1 else "RGB")
    except (ValueError, OSError, ImportError):
        # ValueError: a mode Pillow holds but cannot convert. ImportError/OSError: Pillow's
        # LAB -> RGB runs littlecms (ImageCms), which a Pillow build may lack or fail in.
        target = "grayscale" if channels == 1 else "RGB"
        raise InvalidInputError(f"cannot convert a {image.mode} image to {target}") from None


def _array_to_image(array: np.ndarray) -> Image.Image:
    """A ``[H, W]`` (or ``[H, W, C]``) array of floats in [0, 1] or of uint8 -> PIL image."""
    if array.ndim not in (2, 3) or array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidInputError(
            f"pixels must be a non-empty 2-D array, got shape {list(array.shape)}"
        )
    if array.dtype != np.uint8:
        values = array.astype(np.float64, copy=False)
        if not np.isfinite(values).all():
            raise InvalidInputError("pixels contain NaN or infinite values")
        if values.min() < 0.0 or values.max() > 1.0:
            raise InvalidInputError("pixels must be in [0, 1] (0 = black ink, 1 = white paper)")
        array = np.rint(values * 255.0).astype(np.uint8)
    return Image.fromarray(array)


def to_pixels(
    source: ImageSource,
    spec: InputSpec,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
) -> np.ndarray:
    """Stage 1: any image -> ``uint8`` array of ``spec.pixel_shape`` (not yet inverted)."""
    if isinstance(source, bytes):
        image = decode_image(source, max_pixels, max_side)
    elif isinstance(source, np.ndarray):
        if source.size > max_pixels:
            raise InvalidInputError(f"pixels has {source.size} values; the limit is {max_pixels}")
        image = _array_to_image(source)
        check_image_size(*image.size, max_pixels, max_side)
    else:
        image = source
    image = _convert(image, spec.channels)  # now "L" or "RGB", which resize always handles
    if image.size != (spec.image_size, spec.image_size):
        image = _fit_to_square(image, spec)
    return np.array(image, dtype=np.uint8)  # a writable copy: torch refuses read-only views


def _fit_to_square(image: Image.Image, spec: InputSpec) -> Image.Image:
    """``image`` resized to the spec's square, stretched or padded with white paper."""
    side = spec.image_size
    if spec.fit == "stretch":
        # Pillow's bilinear resize is antialiased when shrinking: thin strokes survive.
        return image.resize((side, side), Image.Resampling.BILINEAR)
    width, height = image.size
    scale = side / max(width, height)
    inner = (max(1, round(width * scale)), max(1, round(height * scale)))
    paper = Image.new(image.mode, (side, side), "white")
    paper.paste(
        image.resize(inner, Image.Resampling.BILINEAR),
        ((side - inner[0]) // 2, (side - inner[1]) // 2),
    )
    return paper


def pixels_to_tensor(pixels: np.ndarray | torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Stage 2: uint8 ``[..., H, W(, C)]`` -> float ``[..., C, H, W]`` in [0, 1], inverted."""
    tensor = torch.as_tensor(pixels)
    # [..., H, W] -> [..., 1, H, W]; [..., H, W, C] -> [..., C, H, W]
    tensor = tensor.unsqueeze(-3) if spec.channels == 1 else tensor.movedim(-1, -3)
    tensor = tensor.float() / 255.0
    tensor = 1.0 - tensor if spec.invert else tensor
    if not spec.mean:
        return tensor
    shape = (len(spec.mean), 1, 1)  # broadcast over [..., C, H, W]
    mean = torch.tensor(spec.mean, device=tensor.device).view(shape)
    std = torch.tensor(spec.std, device=tensor.device).view(shape)
    return (tensor - mean) / std


def preprocess(
    source: ImageSource, spec: InputSpec, max_pixels: int = DEFAULT_MAX_PIXELS
) -> torch.Tensor:
    """Any image -> model input ``[C, H, W]``: both stages in one call."""
    return pixels_to_tensor(to_pixels(source, spec, max_pixels), spec)
