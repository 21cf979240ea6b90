import pytest
import torch

from training.augment import random_shift
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
