"""Every image mode Pillow can create, in every format Pillow can write, comes out of
``to_pixels`` as ``uint8`` pixels of the spec's shape or as ``InvalidInputError``: the service
maps that to a 422 naming the item, any other exception would be a 500."""

import io
import sys

import numpy as np
import PIL
import pytest
from PIL import Image, features

from protonet.errors import InvalidInputError
from protonet.preprocessing import InputSpec, to_pixels

SPECS = [InputSpec(image_size=5, channels=1), InputSpec(image_size=5, channels=3)]
# Image.MODES plus the raw modes Pillow's ImageMode knows of; those Image.new refuses are dropped.
CANDIDATE_MODES = [
    *Image.MODES,
    *("I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I;16BS", "I;16LS", "I;16NS"),
    *("I;32", "I;32B", "I;32L", "I;32S", "I;32BS", "I;32LS", "BGR;15", "BGR;16", "BGR;24"),
    *("RGBX", "RGBa", "La", "LAB", "HSV", "YCbCr", "CMYK"),
]


def creatable_modes() -> list[str]:
    modes = []
    for mode in dict.fromkeys(CANDIDATE_MODES):
        try:
            Image.new(mode, (1, 1))
        except ValueError:  # "unrecognized image mode" in this Pillow
            continue
        modes.append(mode)
    return modes


def random_image(mode: str, rng: np.random.Generator) -> Image.Image:
    """2x2 random bytes blown up to 8x8: conversions see varied values, and the encoders
    that upscale (ICNS, to 1024x1024) compress it fast, unlike pixel noise (~5x slower)."""
    n_bytes = len(Image.new(mode, (2, 2)).tobytes())
    blocks = Image.frombytes(mode, (2, 2), rng.integers(0, 256, n_bytes, np.uint8).tobytes())
    return blocks.resize((8, 8), Image.Resampling.NEAREST)


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def lab_tiff(lightness: np.ndarray, a: int = 128, b: int = 128) -> bytes:
    """A CIELab TIFF (opens in mode "LAB") whose L band is ``lightness``; a and b constant
    (128 is 0: neutral grey)."""
    bands = [lightness, np.full_like(lightness, a), np.full_like(lightness, b)]
    return encode(Image.merge("LAB", [Image.fromarray(band) for band in bands]), "TIFF")


def la_tiff(la: np.ndarray) -> bytes:
    """A grey TIFF with premultiplied ("associated") alpha, which Pillow opens in mode "La".

    Pillow writes LA with ExtraSamples = 2 (unassociated); patch that one IFD entry to 1."""
    data = encode(Image.fromarray(la, "LA"), "TIFF")
    entry = b"\x52\x01\x03\x00\x01\x00\x00\x00"  # tag 338 ExtraSamples, SHORT, count 1
    assert data.count(entry + b"\x02\x00") == 1
    return data.replace(entry + b"\x02\x00", entry + b"\x01\x00")


def outcome(source: bytes | Image.Image, spec: InputSpec) -> str:
    """What ``to_pixels`` did: ok (pixels of the spec's shape), refused (InvalidInputError)
    or FAILED (anything else: a 500 in the service)."""
    try:
        pixels = to_pixels(source, spec)
    except InvalidInputError as error:
        return f"refused: {error}"
    except Exception as error:
        return f"FAILED: {type(error).__name__}: {error}"
    if pixels.dtype != np.uint8 or pixels.shape != spec.pixel_shape:
        return f"FAILED: {pixels.dtype} {pixels.shape}"
    return "ok"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Pillow's IM format is deprecated
def test_every_mode_in_every_format_gives_pixels_or_invalid_input():
    Image.init()  # registers every plugin, so SAVE lists every format this Pillow can write
    rng = np.random.default_rng(0)
    outcomes: dict[tuple[str, str, int], str] = {}
    for mode in creatable_modes():
        image = random_image(mode, rng)
        sources: dict[str, bytes | Image.Image] = {"in memory": image}
        for fmt in sorted(Image.SAVE):
            try:
                sources[fmt] = encode(image, fmt)
            except Exception:  # the format cannot hold this mode (or needs a missing tool)
                continue
        for name, source in sources.items():
            for spec in SPECS:
                outcomes[mode, name, spec.channels] = outcome(source, spec)

    failures = [f"{key}: {result}" for key, result in outcomes.items() if "FAILED" in result]
    assert not failures, "\n".join(failures)
    assert all("\n" not in result for result in outcomes.values())  # one-line reasons
    # The reported defect: a LAB TIFF was a 500. It was written, read back as LAB, converted.
    assert outcomes["LAB", "TIFF", 1] == "ok"
    lab_rgb = "ok" if features.check("littlecms2") else "refused: cannot convert a LAB image to RGB"
    assert outcomes["LAB", "TIFF", 3] == lab_rgb
    assert outcomes["LAB", "in memory", 1] == "ok"
    assert outcomes["La", "in memory", 1] == "ok"
    assert len(outcomes) > 300  # ~20 modes x ~10 formats each x 2 specs: the loop really ran


def test_lab_becomes_its_lightness_band_for_one_channel():
    lightness = (np.arange(64, dtype=np.uint8) * 4).reshape(8, 8)
    data = lab_tiff(lightness, a=100, b=150)  # a colour: only its lightness is kept
    assert Image.open(io.BytesIO(data)).mode == "LAB"
    np.testing.assert_array_equal(to_pixels(data, InputSpec(image_size=8)), lightness)


@pytest.mark.skipif(not features.check("littlecms2"), reason="Pillow built without littlecms")
def test_lab_for_three_channels_is_colour_managed_rgb():
    # Pillow converts LAB -> RGB with ImageCms (D50 Lab -> sRGB): paper stays white, ink black.
    lightness = np.full((8, 8), 255, dtype=np.uint8)
    lightness[:, 3:5] = 0
    pixels = to_pixels(lab_tiff(lightness), InputSpec(image_size=8, channels=3))
    assert pixels[:, 0].min() >= 250 and pixels[:, 3].max() <= 5


def test_lab_without_littlecms_is_refused_for_rgb_but_not_for_grey(monkeypatch):
    # A Pillow build without littlecms cannot import ImageCms; LAB -> RGB must then be a 422.
    monkeypatch.setitem(sys.modules, "PIL.ImageCms", None)
    monkeypatch.delattr(PIL, "ImageCms", raising=False)
    data = lab_tiff(np.full((8, 8), 200, dtype=np.uint8))
    with pytest.raises(InvalidInputError, match=r"^cannot convert a LAB image to RGB$"):
        to_pixels(data, InputSpec(image_size=8, channels=3))
    assert (to_pixels(data, InputSpec(image_size=8)) == 200).all()


def test_premultiplied_alpha_tiff_is_flattened_onto_paper():
    la = np.zeros((8, 8, 2), dtype=np.uint8)  # fully transparent
    la[:, 3:5] = (0, 255)  # an opaque black stroke
    data = la_tiff(la)
    assert Image.open(io.BytesIO(data)).mode == "La"
    expected = np.where(la[..., 1] == 255, 0, 255)
    np.testing.assert_array_equal(to_pixels(data, InputSpec(image_size=8)), expected)
    rgb = to_pixels(data, InputSpec(image_size=8, channels=3))
    np.testing.assert_array_equal(rgb, np.repeat(expected[..., None], 3, axis=-1))
