"""Episode settings are checked against the data, and every refusal names the flag."""

import numpy as np
import pytest

from training.checks import (
    TRAINING_FLAGS,
    VALIDATION_FLAGS,
    ClassSet,
    check_episodes,
    fit_to_data,
    fit_training_way,
    fit_validation,
)
from training.config import TrainConfig
from training.episodes import EpisodeShape
from training.imageset import ImageSet


def class_set(sizes: list[int], label: str = "training", groups: list[str] | None = None):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    images = ImageSet(
        pixels=np.zeros((len(labels), 4, 4), dtype=np.uint8),
        labels=labels,
        class_names=[f"c{i}" for i in range(len(sizes))],
        class_groups=groups or [""] * len(sizes),
    )
    return ClassSet(images, label, "10 minus 2 held out for validation")


def test_too_many_classes_names_the_flag_and_the_count():
    with pytest.raises(ValueError) as error:
        check_episodes(class_set([30] * 8), EpisodeShape(20, 5, 5), TRAINING_FLAGS)
    assert str(error.value) == (
        "training holds 8 classes (10 minus 2 held out for validation): --way must be <= 8"
    )


def test_too_few_images_names_shot_query_and_the_class_sizes():
    with pytest.raises(ValueError) as error:
        check_episodes(class_set([10, 10, 12, 30, 30]), EpisodeShape(4, 5, 15), TRAINING_FLAGS)
    assert str(error.value) == (
        "--way 4 needs 4 classes of at least --shot + --query = 5 + 15 = 20 images; training "
        "has 5 classes, only 2 of them that large (they hold 10 to 30 images): lower --shot + "
        "--query to <= 10 or lower --way to <= 2"
    )
    with pytest.raises(ValueError, match=r"--val-shot \+ --val-query = 1 \+ 15 = 16 images"):
        check_episodes(class_set([10] * 5), EpisodeShape(2, 1, 15), VALIDATION_FLAGS)


def test_classes_too_small_for_the_episodes_are_noted():
    notes = check_episodes(class_set([10, 30, 30]), EpisodeShape(2, 5, 15), TRAINING_FLAGS)
    assert notes == [
        "training: 1 of 3 classes have fewer than 20 images (--shot + --query) and are left "
        "out of its episodes"
    ]


def test_within_alphabet_needs_one_alphabet_with_enough_classes():
    classes = class_set([5] * 6, groups=["a", "a", "a", "b", "b", "b"])
    assert check_episodes(classes, EpisodeShape(3, 1, 1), TRAINING_FLAGS, within_group=True) == []
    with pytest.raises(ValueError) as error:
        check_episodes(classes, EpisodeShape(4, 1, 1), TRAINING_FLAGS, within_group=True)
    assert str(error.value) == (
        "--within-alphabet: no alphabet of training has 4 classes with 2 images each (the most "
        "is 3): lower --way to <= 3 or drop --within-alphabet"
    )


def validation_set(n_classes: int, per_class: int) -> ClassSet:
    classes = class_set([per_class] * n_classes, "validation")
    return ClassSet(classes.items, "validation", f"20% of {5 * n_classes}")


def test_open_validation_settings_fit_the_held_out_classes_with_a_note():
    config, notes = fit_validation(TrainConfig(split="folder"), validation_set(2, 30))
    assert (config.val_way, config.val_query) == (2, 15)
    assert notes == [
        "validation holds 2 classes (20% of 10): validating 2-way, not 20-way (--val-way sets it)"
    ]
    config, notes = fit_validation(TrainConfig(val_shot=5), validation_set(30, 12))
    assert (config.val_way, config.val_query) == (20, 7)
    assert "validation episodes use 7 queries per class, not 15" in notes[0]


def test_explicit_validation_settings_are_kept_and_refused_when_impossible():
    config = TrainConfig(split="folder", way=5, val_way=20)
    validation = validation_set(2, 30)
    with pytest.raises(ValueError) as error:
        fit_to_data(config, class_set([30] * 8), validation)
    assert str(error.value) == "validation holds 2 classes (20% of 10): --val-way must be <= 2"
    with pytest.raises(ValueError, match=r"--val-shot \+ --val-query = 1 \+ 40 = 41"):
        fit_to_data(TrainConfig(way=5, val_query=40), class_set([30] * 8), validation)


def test_a_single_validation_class_cannot_validate():
    with pytest.raises(ValueError, match=r"validation holds 1 class .*raise --val-fraction"):
        fit_validation(TrainConfig(), validation_set(1, 30))


def test_open_set_episodes_count_the_unknown_classes_too():
    with pytest.raises(ValueError) as error:
        check_episodes(class_set([30] * 8), EpisodeShape(5, 1, 5, n_unknown=5), TRAINING_FLAGS)
    assert str(error.value) == (
        "training holds 8 classes (10 minus 2 held out for validation): --way must be <= 4 "
        "(--way 5 + 5 unknown)"
    )
    classes = class_set([5] * 9, groups=["a"] * 6 + ["b"] * 3)
    notes = check_episodes(
        classes, EpisodeShape(3, 1, 1, n_unknown=3), TRAINING_FLAGS, within_group=True
    )
    assert notes == [
        "--within-alphabet, --way 3 + 3 unknown: the unknown classes come from the known ones' "
        "alphabet, so only alphabets with 6 classes take part; 1 of 2 alphabets of training "
        "are left out (b)"
    ]
    with pytest.raises(ValueError, match=r"the most is 6; --way 4 \+ 4 unknown\): lower --way"):
        check_episodes(
            classes, EpisodeShape(4, 1, 1, n_unknown=4), TRAINING_FLAGS, within_group=True
        )


def test_an_open_way_fits_the_training_classes_with_a_note():
    config, notes = fit_training_way(TrainConfig(split="folder"), class_set([30] * 8))
    assert config.way == 8
    assert notes == [
        "training holds 8 classes (10 minus 2 held out for validation): training 8-way, not "
        "60-way (--way sets it)"
    ]
    # Only classes that hold --shot + --query images count; unknown classes need room too.
    config, notes = fit_training_way(TrainConfig(unknown_way=2), class_set([5, 8, 20, 20, 20]))
    assert (config.way, notes) == (3, [])  # 3 large enough, less 2 unknown: 1-way, no fit
    config, notes = fit_training_way(TrainConfig(unknown_way=1), class_set([5, 8, 20, 20, 20]))
    assert config.way == 2
    assert notes == [
        "training holds 5 classes (10 minus 2 held out for validation), 3 of them with --shot "
        "+ --query = 10 images, less --unknown-way 1: training 2-way, not 60-way (--way sets it)"
    ]


def test_an_open_way_is_the_default_where_the_data_fills_it_and_a_given_way_stays():
    assert fit_training_way(TrainConfig(), class_set([10] * 100)) == (TrainConfig(way=60), [])
    assert fit_training_way(TrainConfig(way=20), class_set([10] * 8)) == (TrainConfig(way=20), [])
    # No class large enough: check_episodes names the flags to lower, not the way.
    config, notes = fit_training_way(TrainConfig(), class_set([3] * 8))
    assert (config.way, notes) == (8, [])
    with pytest.raises(ValueError, match="none of them that large"):
        fit_to_data(config, class_set([3] * 8), validation_set(2, 30))
