"""Rejection of unknowns in the service's domain: settings and their resolution against a
calibration, verdicts, held-out (leave-one-out) scores of a support set, and the adaptation of
the checkpoint's thresholds to a collection whose known queries lie farther than the
calibration classes' did."""

from __future__ import annotations

import numpy as np
import pytest

from protonet.open_set import (
    MIN_LOO_SCORES,
    SCALE_RANGE,
    RejectionCalibration,
    collection_scale,
    held_out_scale,
    leave_one_out_distances,
    shot_threshold,
)
from service.collections.live_collection import LiveCollection
from service.collections.rejection import (
    AdapterScores,
    LeaveOneOutScores,
    RejectionPolicy,
    RejectionSetting,
    judge,
)
from service.errors import AcceptanceOutOfRangeError, RejectionUnavailableError
from service.storage.repository import StoredEmbeddings

DIM = 16
SHOTS = (1, 2, 3, 5, 10)
ACCEPTANCES = (0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def gaussian_calibration(variance: float = 1.0) -> RejectionCalibration:
    """Thresholds of classes whose examples are ``mean + N(0, variance I)`` in ``DIM``
    dimensions: a known query's squared distance to a prototype of ``n`` examples is
    ``variance (1 + 1/n) chi2(DIM)``; its quantiles by simulation."""
    chi2 = (np.random.default_rng(0).standard_normal((400_000, DIM)) ** 2).sum(axis=1)
    quantiles = np.quantile(chi2, ACCEPTANCES)
    rows = tuple(tuple(float(variance * (1 + 1 / n) * q) for q in quantiles) for n in SHOTS)
    return RejectionCalibration("nearest_distance", SHOTS, ACCEPTANCES, rows, 0.95, "gaussian")


CALIBRATION = gaussian_calibration()


def resolve(setting: RejectionSetting, calibration: RejectionCalibration | None):
    """``setting`` resolved for an image model named omniglot."""
    return setting.resolve(calibration, model="omniglot")


def test_settings_round_trip_through_their_stored_form():
    for choice, column in (("none", "none"), ("default", "default"), (0.99, "0.99")):
        setting = RejectionSetting.from_choice(choice)
        assert setting.to_column() == column
        assert RejectionSetting.from_column(column) == setting
    assert RejectionSetting.from_choice(0.99) == RejectionSetting(True, 0.99)
    with pytest.raises(ValueError):
        RejectionSetting.from_choice("sometimes")


def test_settings_resolve_against_the_calibration():
    assert resolve(RejectionSetting(), CALIBRATION) is None
    assert resolve(RejectionSetting(), None) is None  # no rejection needs no calibration
    assert resolve(RejectionSetting(True), CALIBRATION) == RejectionPolicy(CALIBRATION, 0.95)
    assert resolve(RejectionSetting(True, 0.99), CALIBRATION) == RejectionPolicy(CALIBRATION, 0.99)
    assert resolve(RejectionSetting(True, 0.8), CALIBRATION) is not None  # the range's ends
    assert resolve(RejectionSetting(True, 0.999), CALIBRATION) is not None
    with pytest.raises(RejectionUnavailableError, match="model 'omniglot' has no rejection"):
        resolve(RejectionSetting(True), None)
    for outside in (0.5, 0.9999, 0.9999999999999999):
        with pytest.raises(AcceptanceOutOfRangeError, match=r"range \[0.8, 0.999\]") as refused:
            resolve(RejectionSetting(True, outside), CALIBRATION)
        assert f"acceptance {outside!r} is outside" in str(refused.value)  # not "acceptance 1"
    other = RejectionCalibration("softmax", SHOTS, ACCEPTANCES, CALIBRATION.thresholds)
    with pytest.raises(RejectionUnavailableError, match="softmax"):
        resolve(RejectionSetting(True), other)


def test_an_uncalibrated_model_is_named_with_advice_that_works():
    with pytest.raises(RejectionUnavailableError) as image:
        resolve(RejectionSetting(True), None)
    assert "protonet calibrate --checkpoint CKPT --data DIR --write-card" in str(image.value)
    # protonet calibrate measures text checkpoints too: a custom text model gets the same advice.
    with pytest.raises(RejectionUnavailableError) as text:
        RejectionSetting(True).resolve(None, model="intents")
    message = str(text.value)
    assert message.startswith("model 'intents' has no rejection calibration")
    assert "protonet calibrate --checkpoint CKPT --data DIR --write-card" in message


def test_settings_describe_themselves_with_the_default_resolved():
    assert RejectionSetting().describe(CALIBRATION) == {"mode": "none"}
    assert RejectionSetting(True).describe(CALIBRATION) == {
        "mode": "calibrated",
        "acceptance": 0.95,
    }
    assert RejectionSetting(True, 0.99).describe(None) == {"mode": "calibrated", "acceptance": 0.99}
    assert RejectionSetting(True).describe(None) == {"mode": "calibrated", "acceptance": None}


def test_a_verdict_compares_the_nearest_distance_with_its_classs_threshold():
    policy = RejectionPolicy(CALIBRATION, 0.95)
    one_shot, five_shot = CALIBRATION.threshold(1, 0.95), CALIBRATION.threshold(5, 0.95)
    assert one_shot > five_shot  # prototypes of more examples sit closer to their queries
    # Between the two limits: known next to a 1-example class, unknown next to a 5-example one.
    between = (one_shot + five_shot) / 2
    near_one = judge(policy, [between, 99.0], [1, 5], scale=None)
    assert (near_one.known, near_one.threshold) == (True, one_shot)
    assert near_one.score == pytest.approx(between)  # the nearest distance (float32)
    near_five = judge(policy, [between, 99.0], [5, 1], scale=None)
    assert (near_five.known, near_five.threshold) == (False, five_shot)
    scaled = judge(policy, [between, 99.0], [5, 1], scale=2.0)
    assert scaled.known and scaled.threshold == pytest.approx(2 * five_shot)


def test_leave_one_out_distances_equal_recomputing_each_prototype_without_the_example():
    rng = np.random.default_rng(1)
    embeddings = rng.standard_normal((9, DIM)).astype(np.float32)
    rows_class = np.array([0, 1, 0, 2, 1, 0, 1, 1, 0])  # sizes 4, 4 and 1
    counts = np.bincount(rows_class)
    prototypes = np.stack([embeddings[rows_class == c].mean(axis=0) for c in range(3)])
    got = leave_one_out_distances(embeddings, rows_class, prototypes, counts)
    for row, c in enumerate(rows_class):
        others = [i for i in range(9) if rows_class[i] == c and i != row]
        if not others:
            assert np.isnan(got[row])  # a class of one example has nothing left without it
            continue
        held_out = embeddings[others].mean(axis=0)
        assert got[row] == pytest.approx(float(((embeddings[row] - held_out) ** 2).sum()), rel=1e-5)


def gaussian_support(
    n_classes: int, shots: int, variance: float, rng: np.random.Generator
) -> tuple[np.ndarray, StoredEmbeddings]:
    """Class means far apart (``[c, DIM]``) and ``shots`` examples of each around them."""
    means = rng.standard_normal((n_classes, DIM)) * 100.0
    class_ids = np.repeat(np.arange(1, n_classes + 1), shots)
    noise = rng.standard_normal((len(class_ids), DIM)) * np.sqrt(variance)
    embeddings = (means[class_ids - 1] + noise).astype(np.float32)
    example_ids = np.arange(1, len(class_ids) + 1, dtype=np.int64)
    return means, StoredEmbeddings(class_ids.astype(np.int64), embeddings, example_ids)


def collection_of(stored: StoredEmbeddings) -> LiveCollection:
    live = LiveCollection(1, "c", DIM)
    live.update_classes({int(i): f"class-{i}" for i in np.unique(stored.class_ids)}, stored)
    return live


def accepted_share(live: LiveCollection, queries: np.ndarray, scale: float | None) -> float:
    policy = RejectionPolicy(CALIBRATION, 0.95)
    answers = live.rank(queries, top_k=1)
    assert answers is not None
    verdicts = [judge(policy, [a.best.distance], list(a.shots), scale) for a in answers]
    return float(np.mean([v.known for v in verdicts]))


@pytest.mark.parametrize("shots", [3, 5])
def test_thresholds_adapted_to_a_collection_twice_as_spread_accept_the_target_share(shots):
    """The checkpoint was calibrated on classes of unit variance; this collection's known
    queries lie twice as far (variance 2). Its held-out support scores say so, and the scaled
    thresholds accept about the 95% asked for, where the checkpoint's accept about a third.
    (With 5 examples a class's held-out scores come from prototypes of 4, a shot count the
    calibration does not have: interpolated.)"""
    rng = np.random.default_rng(2)
    means, stored = gaussian_support(n_classes=100, shots=shots, variance=2.0, rng=rng)
    live = collection_of(stored)
    assert live.leave_one_out.count() == 100 * shots
    scale = live.leave_one_out.scale(RejectionPolicy(CALIBRATION, 0.95))
    assert scale == pytest.approx(2.0, rel=0.1)
    classes = rng.integers(0, 100, size=4000)
    queries = means[classes] + rng.standard_normal((4000, DIM)) * np.sqrt(2.0)
    adapted = accepted_share(live, queries.astype(np.float32), scale)
    unadapted = accepted_share(live, queries.astype(np.float32), None)
    assert adapted == pytest.approx(0.95, abs=0.025)
    assert unadapted < 0.5


def test_thresholds_between_calibrated_shot_counts_are_interpolated_in_one_over_shot():
    q95 = CALIBRATION.threshold(1, 0.95) / 2  # the chi2 quantile: T(n) = (1 + 1/n) q95
    for shot in SHOTS:
        assert shot_threshold(CALIBRATION, shot, 0.95) == CALIBRATION.threshold(shot, 0.95)
    for shot in (4, 7):  # exact for distances that grow like 1 + 1/n
        assert shot_threshold(CALIBRATION, shot, 0.95) == pytest.approx((1 + 1 / shot) * q95)
    assert CALIBRATION.threshold(4, 0.95) == CALIBRATION.threshold(3, 0.95)  # queries: at or below
    assert shot_threshold(CALIBRATION, 50, 0.95) == CALIBRATION.threshold(10, 0.95)


def test_a_collection_like_the_calibration_classes_keeps_its_thresholds():
    rng = np.random.default_rng(3)
    _, stored = gaussian_support(n_classes=50, shots=3, variance=1.0, rng=rng)
    scale = collection_of(stored).leave_one_out.scale(RejectionPolicy(CALIBRATION, 0.95))
    assert scale == pytest.approx(1.0, rel=0.1)


def test_too_few_held_out_scores_leave_the_checkpoints_thresholds():
    rng = np.random.default_rng(4)
    policy = RejectionPolicy(CALIBRATION, 0.95)
    _, singles = gaussian_support(n_classes=200, shots=1, variance=2.0, rng=rng)
    assert collection_of(singles).leave_one_out.scale(policy) is None  # nothing held out
    pairs = MIN_LOO_SCORES // 2 - 1
    _, few = gaussian_support(n_classes=pairs, shots=2, variance=2.0, rng=rng)
    assert collection_of(few).leave_one_out.count() == MIN_LOO_SCORES - 2
    assert collection_of(few).leave_one_out.scale(policy) is None


def test_the_scale_is_clamped():
    far = [np.full(3, 1000.0)] * 20  # 60 held-out scores, far beyond any threshold
    near = [np.full(3, 1e-3)] * 20
    assert collection_scale(far, CALIBRATION, 0.95) == SCALE_RANGE[1]
    assert collection_scale(near, CALIBRATION, 0.95) == SCALE_RANGE[0]


def test_scores_follow_class_updates_and_removals_and_the_cache_with_them():
    rng = np.random.default_rng(5)
    policy = RejectionPolicy(CALIBRATION, 0.95)
    _, stored = gaussian_support(n_classes=20, shots=3, variance=1.0, rng=rng)
    live = collection_of(stored)
    assert live.leave_one_out.cached(policy) == (False, None)
    before = live.leave_one_out.scale(policy)
    assert before is not None and live.leave_one_out.cached(policy) == (True, before)
    # Class 1 gets a far-off example: its held-out scores grow, and so does the scale.
    far = StoredEmbeddings(
        np.array([1, 1, 1, 1], np.int64),
        np.concatenate([stored.embeddings[:3], stored.embeddings[:1] + 50.0]),
        np.arange(1, 5, dtype=np.int64),
    )
    live.update_classes({1: "class-1"}, far)
    assert live.leave_one_out.count() == 61
    assert live.leave_one_out.cached(policy) == (False, None)  # the change dropped it
    assert live.leave_one_out.scale(policy) > before
    live.remove_classes({1})
    assert live.leave_one_out.count() == 57
    assert live.leave_one_out.scale(policy) == pytest.approx(before, rel=0.2)


def test_scores_filled_in_from_storage_after_a_load_without_embeddings():
    rng = np.random.default_rng(6)
    _, stored = gaussian_support(n_classes=20, shots=3, variance=1.0, rng=rng)
    built = collection_of(stored)
    loaded = LiveCollection(1, "c", DIM)
    loaded.update_classes({i: f"class-{i}" for i in range(1, 21)}, stored)
    scores = LeaveOneOutScores()
    loaded.leave_one_out = scores
    scores.complete = False  # as after load_persisted
    loaded.fill_leave_one_out(stored)
    policy = RejectionPolicy(CALIBRATION, 0.95)
    assert scores.complete and scores.count() == 60
    assert scores.scale(policy) == pytest.approx(built.leave_one_out.scale(policy))


def test_held_out_scores_scale_by_the_size_of_the_prototype_each_was_held_out_of():
    """An adaptation's held-out scores (each with its own prototype size) scale as leave-one-out
    scores do when the sizes agree; a smaller prototype allows larger scores."""
    rng = np.random.default_rng(7)
    by_class = [rng.gamma(4.0, 6.0, size=4) for _ in range(15)]  # 60 scores, 3 shots each
    scores = np.concatenate(by_class)
    expected = collection_scale(by_class, CALIBRATION, 0.95)
    assert held_out_scale(scores, np.full(60, 3), CALIBRATION, 0.95) == pytest.approx(expected)
    one_shot = held_out_scale(scores, np.full(60, 1), CALIBRATION, 0.95)
    assert one_shot is not None and expected is not None and one_shot < expected
    assert held_out_scale(scores[:29], np.full(29, 3), CALIBRATION, 0.95) is None
    adapted = AdapterScores(scores, np.full(60, 3))
    policy = RejectionPolicy(CALIBRATION, 0.95)
    assert adapted.cached(policy) == (False, None)
    assert adapted.scale(policy) == pytest.approx(expected)
    assert adapted.cached(policy) == (True, adapted.scale(policy))
