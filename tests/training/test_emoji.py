"""The emoji image set: vendors' PNGs and Iconify SVG tarballs joined into one class per emoji."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protonet.preprocessing import picture_spec
from training.emoji import emoji_key, load_emoji, split_emoji, subcategory_split

from .emoji_data import iconify_set

SPEC = picture_spec(16)
CATALOGUE = [
    {"unified": "1F600", "short_name": "grinning", "subcategory": "face-smiling"},
    {"unified": "2764-FE0F", "short_name": "heart", "subcategory": "heart"},
    {"unified": "1F44D", "short_name": "+1", "subcategory": "hand-fingers-closed"},
    {"unified": "1F44D-1F3FB", "short_name": "+1 light", "subcategory": "hand-fingers-closed"},
]
SQUARE = '<rect x="2" y="2" width="12" height="12" fill="#{colour}"/>'


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (8, 8), (*colour, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture()
def emoji_root(tmp_path: Path) -> Path:
    root = tmp_path / "emoji"
    (root / "iconify").mkdir(parents=True)
    (root / "emoji.json").write_text(json.dumps(CATALOGUE))
    for vendor, colour in (("google", (255, 0, 0)), ("twitter", (0, 0, 255))):
        (root / vendor).mkdir()
        for name in ("1f600", "2764-fe0f", "1f44d", "1f44d-1f3fb"):
            (root / vendor / f"{name}.png").write_bytes(png(colour))
    body = {"body": SQUARE.format(colour="00ff00")}
    # A set with a code point map, naming the heart through an alias, and one without a map
    # (joined by icon names), which draws only the grinning face.
    iconify_set(
        root / "iconify" / "a.tgz",
        {
            "icons": {"grinning-face": body, "red-heart": body},
            "aliases": {"heart": {"parent": "red-heart"}},
        },
        {"1f600": "grinning-face", "2764": "heart"},
    )
    iconify_set(root / "iconify" / "b.tgz", {"icons": {"grinning-face": body}}, None)
    return root


def test_each_emoji_is_a_class_with_one_drawing_per_style(emoji_root, tmp_path):
    images = load_emoji(emoji_root, SPEC, cache_dir=tmp_path / "cache", progress=False)
    counts = dict(zip(images.class_names, np.bincount(images.labels).tolist(), strict=True))
    # Skin tones are left out; the variation selector does not split the heart.
    assert counts == {"grinning (1f600)": 4, "heart (2764)": 3, "+1 (1f44d)": 2}
    assert images.class_groups == ["face-smiling", "heart", "hand-fingers-closed"]
    assert images.pixels.shape[1:] == (16, 16, 3)
    # The rendered SVG square is green on white paper: transparency became paper.
    grinning = images.pixels[images.labels == 0]
    greens = [p for p in grinning if (p[8, 8] == (0, 255, 0)).all()]
    assert len(greens) == 2 and (greens[0][0, 0] == 255).all()


def test_min_styles_drops_sparse_emoji_and_the_cache_returns_the_same_set(emoji_root, tmp_path):
    first = load_emoji(emoji_root, SPEC, min_styles=3, cache_dir=tmp_path, progress=False)
    again = load_emoji(emoji_root, SPEC, min_styles=3, cache_dir=tmp_path, progress=False)
    assert first.class_names == again.class_names == ["grinning (1f600)", "heart (2764)"]
    assert (first.pixels == again.pixels).all()


def test_splits_hold_out_whole_subcategories(emoji_root, tmp_path):
    images = load_emoji(emoji_root, SPEC, cache_dir=tmp_path, progress=False)
    parts = {split: split_emoji(images, split) for split in ("train", "val", "test")}
    assert sum(part.n_classes for part in parts.values()) == images.n_classes
    for split, part in parts.items():
        assert all(subcategory_split(group) == split for group in part.class_groups)
    with pytest.raises(ValueError, match="split must be one of"):
        split_emoji(images, "holdout")


def test_keys_ignore_case_and_variation_selectors():
    assert emoji_key("2764-FE0F") == emoji_key("2764") == "2764"
    assert emoji_key("1F468-200D-1F4BB") == "1f468-200d-1f4bb"


def test_a_folder_without_a_catalogue_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no emoji\.json"):
        load_emoji(tmp_path, SPEC, cache_dir=tmp_path, progress=False)
