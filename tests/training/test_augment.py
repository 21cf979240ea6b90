import pytest
import torch

from training.augment import random_rotate_scale, random_shift
from training.config import TrainConfig, validate


def dot_images(batch: int, size: int = 8, row: int = 3, col: int = 4) -> torch.Tensor:
    """``[batch, 1, size, size]`` zeros with a single 1 at (row, col)."""
    images = torch.zeros(batch, 1, size, size)
    images[:, 0, row, col] = 1.0
    return images


def test_shift_zero_returns_the_images_unchanged():
    images = torch.rand(4, 1, 8, 8)
    assert torch.equal(random_shift(images, 0, torch.Generator().manual_seed(0)), images)


def test_each_image_is_translated_by_at_most_max_shift():
    shifted = random_shift(dot_images(64), 2, torch.Generator().manual_seed(0))
    assert shifted.shape == (64, 1, 8, 8)
    offsets = set()
    for image in shifted:
        (row, col), *rest = torch.nonzero(image[0]).tolist()
        assert not rest  # the dot moves, it is neither lost nor duplicated
        offsets.add((row - 3, col - 4))
    assert all(abs(dy) <= 2 and abs(dx) <= 2 for dy, dx in offsets)
    assert len(offsets) > 10  # images get their own offsets, not one per batch


def test_borders_are_replicated_not_zero_filled():
    images = torch.full((8, 3, 6, 6), 0.7)
    assert torch.allclose(random_shift(images, 2, torch.Generator().manual_seed(1)), images)


def test_same_seed_same_shifts():
    images = torch.rand(16, 1, 8, 8)
    first = random_shift(images, 2, torch.Generator().manual_seed(5))
    again = random_shift(images, 2, torch.Generator().manual_seed(5))
    assert torch.equal(first, again)


@pytest.mark.parametrize("shift", [-1, 14])
def test_config_rejects_impossible_shifts(shift):
    with pytest.raises(ValueError, match="--augment-shift"):
        validate(TrainConfig(augment_shift=shift))


def centred_bar(batch: int, size: int = 28) -> torch.Tensor:
    """``[batch, 1, size, size]`` zeros with a horizontal bar through the centre."""
    images = torch.zeros(batch, 1, size, size)
    images[:, 0, size // 2 - 1 : size // 2 + 1, 6:-6] = 1.0
    return images


def test_rotate_scale_zero_returns_the_images_unchanged_and_draws_nothing():
    images = torch.rand(4, 1, 8, 8)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    assert random_rotate_scale(images, 0.0, 0.0, generator) is images
    assert torch.equal(generator.get_state(), state)  # shifts stay as in runs without it


def test_rotate_scale_keeps_uniform_images_uniform():
    images = torch.full((8, 3, 6, 6), 0.7)
    out = random_rotate_scale(images, 20.0, 0.2, torch.Generator().manual_seed(1))
    assert torch.allclose(out, images, atol=1e-6)


def test_rotation_tilts_each_image_by_its_own_small_angle():
    images = centred_bar(32)
    rotated = random_rotate_scale(images, 15.0, 0.0, torch.Generator().manual_seed(2))
    assert rotated.shape == images.shape
    tilts = set()
    for image in rotated[:, 0]:
        rows, cols = torch.nonzero(image > 0.5, as_tuple=True)
        slope = torch.linalg.lstsq(
            torch.stack([cols.float(), torch.ones_like(cols, dtype=torch.float)], 1),
            rows.float()[:, None],
        ).solution[0, 0]
        degrees = float(torch.rad2deg(torch.atan(slope)))
        assert abs(degrees) <= 15.0 + 3.0  # sampled angle plus pixel quantisation
        tilts.add(round(degrees))
    assert len(tilts) > 5  # one angle per image, not one per batch
    assert torch.allclose(rotated.sum((1, 2, 3)), images.sum((1, 2, 3)), rtol=0.15)


def test_scaling_changes_the_ink_by_at_most_the_squared_factor():
    images = centred_bar(64)
    scaled = random_rotate_scale(images, 0.0, 0.2, torch.Generator().manual_seed(3))
    ratios = scaled.sum((1, 2, 3)) / images.sum((1, 2, 3))
    # Bilinear resampling smears the bar edges a little, hence the 0.1 slack.
    assert ratios.min() >= 0.8**2 - 0.1 and ratios.max() <= 1.2**2 + 0.1
    assert ratios.max() - ratios.min() > 0.3  # zooms in and out


def test_rotate_scale_same_seed_same_result():
    images = torch.rand(16, 1, 8, 8)
    first = random_rotate_scale(images, 10.0, 0.1, torch.Generator().manual_seed(5))
    again = random_rotate_scale(images, 10.0, 0.1, torch.Generator().manual_seed(5))
    assert torch.equal(first, again)


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("augment_rotate", -1.0, "--augment-rotate"),
        ("augment_rotate", 45.0, "--augment-rotate"),
        ("augment_scale", -0.1, "--augment-scale"),
        ("augment_scale", 0.5, "--augment-scale"),
    ],
)
def test_config_rejects_impossible_rotations_and_scales(field, value, flag):
    with pytest.raises(ValueError, match=flag):
        validate(TrainConfig(**{field: value}))
