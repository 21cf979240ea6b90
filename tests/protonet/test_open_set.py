"""The open-set interface the service uses: scores, thresholds by shot and acceptance, and a
calibration carried by the checkpoint."""

import math

import pytest
import torch

from protonet.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from protonet.model import EncoderConfig, build_encoder
from protonet.open_set import (
    DEFAULT_SCORE,
    SCORES,
    RejectionCalibration,
    is_known,
    open_set_ranking_loss,
    open_set_score,
)
from protonet.preprocessing import InputSpec

CALIBRATION = RejectionCalibration(
    method="nearest_distance",
    shots=(1, 5),
    acceptances=(0.90, 0.95, 0.99),
    thresholds=((10.0, 12.0, 20.0), (6.0, 8.0, 12.0)),
    source="test classes; 10 episodes",
)


def test_the_default_score_is_the_nearest_prototype_distance():
    distances = torch.tensor([[4.0, 1.0, 9.0], [16.0, 25.0, 36.0]])
    assert DEFAULT_SCORE in SCORES
    scores = open_set_score(distances, torch.tensor([1, 1, 1]))
    torch.testing.assert_close(scores, torch.tensor([1.0, 16.0]))
    assert open_set_score(torch.empty(2, 0), torch.empty(0)).isinf().all()  # no class: unknown


def test_threshold_interpolates_acceptance_and_clamps_to_the_calibrated_range():
    assert CALIBRATION.threshold(1) == 12.0  # the default acceptance, 0.95
    assert CALIBRATION.threshold(1, 0.97) == pytest.approx(16.0)  # halfway from 0.95 to 0.99
    assert CALIBRATION.threshold(1, 0.5) == 10.0 and CALIBRATION.threshold(1, 0.999) == 20.0


def test_threshold_takes_the_nearest_calibrated_shot_count_at_or_below():
    assert [CALIBRATION.threshold(shot) for shot in (1, 2, 4, 5, 50)] == [12, 12, 12, 8, 8]
    assert CALIBRATION.threshold(0) == 12.0  # below the first: the 1-shot row
    torch.testing.assert_close(
        CALIBRATION.thresholds_for(torch.tensor([1, 7]), 0.99), torch.tensor([20.0, 12.0])
    )


def test_is_known_judges_each_query_by_its_nearest_class_shot_count():
    distances = torch.tensor([[11.0, 30.0], [30.0, 9.0], [30.0, 7.0]])
    shots = torch.tensor([1, 5])
    assert is_known(distances, shots, CALIBRATION).tolist() == [True, False, True]
    assert is_known(distances, shots, CALIBRATION, acceptance=0.99).tolist() == [True] * 3


def test_calibration_round_trips_through_a_weights_only_checkpoint(tmp_path):
    state = build_encoder(EncoderConfig(hidden_channels=8, out_channels=8)).state_dict()
    config = EncoderConfig(hidden_channels=8, out_channels=8)
    checkpoint = Checkpoint(config, InputSpec(), state)
    version = checkpoint.version
    checkpoint.calibration = RejectionCalibration.from_dict(CALIBRATION.to_dict())
    path = save_checkpoint(checkpoint, tmp_path / "model.pt")
    assert torch.load(path, weights_only=True)["rejection"]["source"] == CALIBRATION.source
    loaded = load_checkpoint(path)
    assert loaded.calibration == CALIBRATION and loaded.version == version


def ranking_episode(unknown_offset: float) -> tuple[torch.Tensor, ...]:
    """Two classes of 1 support each at 0 and 10 on the first axis; known queries close to
    them; unknown queries ``unknown_offset`` away from the first class."""
    support = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    labels = torch.tensor([3, 7])  # any label values, as the trainer's class indices
    known = torch.tensor([[0.5, 0.0], [10.0, 0.5]])
    unknown = torch.tensor([[0.0, unknown_offset], [0.0, -unknown_offset]])
    return support, labels, known, unknown


def test_the_ranking_loss_is_low_when_unknowns_lie_far_and_blind_to_scale():
    far = open_set_ranking_loss(*ranking_episode(4.0))
    near = open_set_ranking_loss(*ranking_episode(0.3))
    assert far < 0.1 < math.log(2) < near  # log 2: known and unknown scored alike
    scaled = open_set_ranking_loss(
        *(t * 10 if t.is_floating_point() else t for t in ranking_episode(4.0))
    )
    assert torch.isclose(far, scaled, atol=1e-6)  # inflating every distance buys nothing


def test_the_ranking_loss_pushes_unknown_queries_away_from_the_prototypes():
    support, labels, known, unknown = ranking_episode(0.3)
    unknown.requires_grad_(True)
    open_set_ranking_loss(support, labels, known, unknown).backward()
    assert unknown.grad is not None
    # Descending the gradient moves each unknown query away from its nearest prototype.
    assert (-unknown.grad[:, 1] * unknown[:, 1].detach().sign() > 0).all()
