import numpy as np
import pytest

from training.episodes import EpisodeSampler, EpisodeShape
from training.imageset import ImageSet


def make_set(n_classes: int = 12, per_class: int = 6, groups: int = 3) -> ImageSet:
    labels = np.repeat(np.arange(n_classes), per_class)
    return ImageSet(
        pixels=np.zeros((len(labels), 4, 4), dtype=np.uint8),
        labels=labels,
        class_names=[f"c{i}" for i in range(n_classes)],
        class_groups=[f"g{i % groups}" for i in range(n_classes)],
    )


def test_episode_shapes_and_labels():
    images = make_set()
    episode = EpisodeSampler(images, EpisodeShape(5, 2, 3), seed=1).sample()
    assert episode.support_indices.shape == (10,) and episode.query_indices.shape == (15,)
    assert len(set(episode.support_labels)) == 5
    assert set(episode.query_labels) == set(episode.support_labels)
    # Indices point at images of the labelled class, and support/query never overlap.
    assert (images.labels[episode.support_indices] == episode.support_labels).all()
    assert (images.labels[episode.query_indices] == episode.query_labels).all()
    assert not set(episode.support_indices) & set(episode.query_indices)


def test_same_seed_same_episodes_other_seed_other_episodes():
    images = make_set()

    def draw(seed):
        return EpisodeSampler(images, EpisodeShape(5, 1, 1), seed=seed).sample().support_indices

    np.testing.assert_array_equal(draw(7), draw(7))
    assert any(not np.array_equal(draw(7), draw(s)) for s in range(8, 12))


def test_within_group_episodes_are_pure():
    images = make_set(n_classes=30, groups=3)
    sampler = EpisodeSampler(images, EpisodeShape(5, 1, 1), seed=0, within_group=True)
    seen = set()
    for _ in range(50):
        groups = {images.class_groups[c] for c in sampler.sample().support_labels}
        assert len(groups) == 1
        seen |= groups
    assert seen == {"g0", "g1", "g2"}


def test_impossible_episodes_are_refused_clearly():
    with pytest.raises(ValueError, match="20-way"):
        EpisodeSampler(make_set(n_classes=12), EpisodeShape(20, 1, 1))
    with pytest.raises(ValueError, match="no group"):
        EpisodeSampler(make_set(n_classes=12, groups=3), EpisodeShape(5, 1, 1), within_group=True)
    with pytest.raises(ValueError, match="images each"):
        EpisodeSampler(make_set(per_class=3), EpisodeShape(5, 2, 2))


def test_rotations_make_four_classes_per_character():
    images = make_set(n_classes=2, per_class=1)
    pixels = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    images = ImageSet(
        np.concatenate([pixels, pixels]), images.labels, images.class_names, images.class_groups
    )
    rotated = images.with_rotations()
    assert rotated.n_classes == 8 and rotated.class_names[:2] == ["c0/rot000", "c0/rot090"]
    index = rotated.class_names.index("c0/rot090")
    np.testing.assert_array_equal(rotated.pixels[rotated.labels == index][0], np.rot90(pixels[0]))


def test_open_set_episodes_add_queries_of_as_many_other_classes():
    images = make_set(n_classes=12, per_class=6)
    sampler = EpisodeSampler(images, EpisodeShape(4, 2, 3, n_unknown=4), seed=0)
    for _ in range(20):
        episode = sampler.sample()
        known, unknown = set(episode.support_labels), set(episode.unknown_labels)
        assert len(known) == 4 and len(unknown) == 4 and not known & unknown
        assert episode.query_indices.shape == episode.unknown_indices.shape == (12,)
        assert (images.labels[episode.unknown_indices] == episode.unknown_labels).all()
        assert len(set(episode.unknown_indices)) == 12


def test_closed_set_episodes_are_unchanged_by_the_open_set_option():
    images = make_set()
    closed = EpisodeSampler(images, EpisodeShape(5, 2, 3), seed=4).sample()
    opened = EpisodeSampler(images, EpisodeShape(5, 2, 3, n_unknown=5), seed=4).sample()
    assert closed.unknown_indices.size == 0
    np.testing.assert_array_equal(closed.support_indices, opened.support_indices)
    np.testing.assert_array_equal(closed.query_indices, opened.query_indices)


def test_within_group_unknowns_are_look_alikes_and_small_groups_sit_out():
    # g0 holds 10 classes, g1 only 6: 5 known + 5 unknown fit g0 alone.
    images = make_set(n_classes=16, groups=1)
    images = ImageSet(images.pixels, images.labels, images.class_names, ["g0"] * 10 + ["g1"] * 6)
    sampler = EpisodeSampler(images, EpisodeShape(5, 1, 1, n_unknown=5), within_group=True)
    for _ in range(20):
        episode = sampler.sample()
        labels = np.concatenate([episode.support_labels, episode.unknown_labels])
        assert {images.class_groups[c] for c in labels} == {"g0"}
    with pytest.raises(ValueError, match=r"no group has 14 classes .*\(7-way \+ 7 unknown\)"):
        EpisodeSampler(images, EpisodeShape(7, 1, 1, n_unknown=7), within_group=True)
    with pytest.raises(ValueError, match="10-way \\+ 10 unknown episodes need 20 classes"):
        EpisodeSampler(images, EpisodeShape(10, 1, 1, n_unknown=10))
