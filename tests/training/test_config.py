import pytest

from training.config import PRESETS, TrainConfig, apply_preset, validate


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_valid_config(name):
    config = apply_preset(TrainConfig(), name)
    validate(config)
    assert config.out == PRESETS[name]["out"]


def test_presets_write_to_separate_directories():
    outs = [preset["out"] for preset in PRESETS.values()]
    assert len(set(outs)) == len(outs)


def test_vinyals_presets_match_training_shot_to_validation_shot():
    for name in ("omniglot-vinyals", "omniglot-vinyals-5shot"):
        config = apply_preset(TrainConfig(), name)
        assert config.split == "vinyals"
        assert config.shot == config.val_shot


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="omniglot-lake"):
        apply_preset(TrainConfig(), "omniglot-typo")


def test_vinyals_presets_are_the_recipes_the_readme_measured():
    one_shot = apply_preset(TrainConfig(), "omniglot-vinyals")
    assert (one_shot.augment_shift, one_shot.episodes, one_shot.schedule) == (3, 28000, "cosine")
    five_shot = apply_preset(TrainConfig(), "omniglot-vinyals-5shot")
    assert (five_shot.augment_shift, five_shot.episodes, five_shot.shot) == (2, 18000, 5)


def test_images_too_small_for_the_encoder_are_refused():
    with pytest.raises(ValueError, match="--image-size must be >= 16: 4 conv blocks halve it"):
        validate(TrainConfig(image_size=8))


def test_fixed_sets_are_checked_for_configs_built_in_code():
    with pytest.raises(ValueError, match="--channels must be one of 1, 3, not 2"):
        validate(TrainConfig(split="folder", channels=2))
