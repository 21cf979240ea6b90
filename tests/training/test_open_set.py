"""Open-set evaluation and rejection calibration, on small synthetic data and an untrained
(random-weight) encoder: the numbers mean nothing, the plumbing and the rules are tested."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from protonet.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from protonet.model import EncoderConfig, build_encoder
from protonet.preprocessing import InputSpec
from training import omniglot
from training.calibrate import cross_validated_levels, held_out_acceptance
from training.cli import main
from training.evaluate import auroc

from .evaluate_cli import evaluate_json
from .synthetic import write_folder_dataset, write_omniglot_zip

HELD_OUT = [f"class_{c:03d}" for c in (4, 5, 6, 7)]


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    """Decoded images go to a test directory."""
    monkeypatch.setenv("PROTONET_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("data"), n_classes=8, per_class=12)


def write_checkpoint(path: Path, split: str, **metadata) -> Path:
    """A small random-weight checkpoint that says it was trained with ``--split split``."""
    torch.manual_seed(0)
    config = EncoderConfig(hidden_channels=8, out_channels=8)
    checkpoint = Checkpoint(
        config,
        InputSpec(),
        build_encoder(config).state_dict(),
        training_config={"split": split} if split else {},
        metadata=metadata,
    )
    return save_checkpoint(checkpoint, path)


@pytest.fixture
def folder_model(tmp_path, folder) -> Path:
    """Trained (so it says) on ``folder``, with 4 of its 8 classes held out."""
    metadata = {"data_path": str(folder.resolve()), "held_out_classes": HELD_OUT}
    return write_checkpoint(tmp_path / "model.pt", "folder", **metadata)


def calibrate(*args: str) -> int:
    return main(["calibrate", *args, "--episodes", "20", "--threads", "1", "--no-progress"])


def test_auroc_perfect_inverse_and_ties():
    assert auroc(np.array([0.1, 0.2]), np.array([0.3, 0.9])) == 1.0
    assert auroc(np.array([0.3, 0.9]), np.array([0.1, 0.2])) == 0.0
    assert auroc(np.array([1.0, 1.0]), np.array([1.0, 1.0, 1.0])) == 0.5
    # One tie of four pairs counts half: (1 + 1 + 0.5 + 0) / 4.
    assert auroc(np.array([1.0, 2.0]), np.array([2.0, 3.0])) == pytest.approx(0.875)
    with pytest.raises(ValueError, match="at least one"):
        auroc(np.array([1.0]), np.array([]))


def test_auroc_is_the_share_of_pairs_ranked_right():
    rng = np.random.default_rng(0)
    known, unknown = rng.integers(0, 5, 40).astype(float), rng.integers(2, 8, 30).astype(float)
    pairs = (unknown[None, :] > known[:, None]) + 0.5 * (unknown[None, :] == known[:, None])
    assert auroc(known, unknown) == pytest.approx(pairs.mean())


def test_open_set_evaluation_reports_auroc_and_without_calibration_no_shares(
    folder_model, folder, capsys
):
    common = ["--checkpoint", str(folder_model), "--data", str(folder), "--episodes", "10"]
    assert main(["evaluate", *common, "--way", "2", "--query", "5", "--open-set", "--json"]) == 0
    output = capsys.readouterr()
    assert "no rejection calibration for nearest_distance" in output.err
    summary = json.loads(output.out)
    (result,) = summary["results"]
    assert summary["open_set"] and summary["classes"] == "heldout"
    assert (result["way"], result["unknown_way"], result["score"]) == (2, 2, "nearest_distance")
    assert (result["query"], result["episodes"]) == (5, 10)
    assert 0 <= result["auroc"] <= 1 and summary["auroc"] == result["auroc"]
    assert 0 <= result["accuracy"] <= 1 and result["auroc_ci95"] >= 0
    assert result["known_accepted"] is None and result["threshold"] is None
    # Four held-out classes hold 2 known + 2 unknown, not 3 + 3.
    assert main(["evaluate", *common, "--way", "3", "--open-set"]) == 2
    assert "--way must be <= 2 (--way 3 + 3 unknown)" in capsys.readouterr().err
    assert main(["evaluate", *common, "--way", "2", "--score", "nearest_distance"]) == 2
    assert "--score and --acceptance are for --open-set" in capsys.readouterr().err


def test_calibration_is_stored_in_checkpoint_and_card_and_judges_open_set_queries(
    folder_model, folder, capsys
):
    version = load_checkpoint(folder_model).version
    assert calibrate("--checkpoint", str(folder_model), "--data", str(folder), "--json") == 0
    assert load_checkpoint(folder_model).calibration is None  # measured, not written
    summary = json.loads(capsys.readouterr().out)
    assert summary["rejection"]["shots"] == [1, 2, 3, 5, 10] and not summary["written"]

    assert calibrate("--checkpoint", str(folder_model), "--data", str(folder), "--write-card") == 0
    assert "written to" in capsys.readouterr().out
    checkpoint = load_checkpoint(folder_model)
    rejection = checkpoint.calibration
    assert checkpoint.version == version and rejection is not None
    assert rejection.method == "nearest_distance" and rejection.default_acceptance == 0.95
    assert rejection.acceptances == (0.80, 0.90, 0.95, 0.98, 0.99, 0.995, 0.999)
    # 4 held-out classes: 4-way episodes; 12 images per class: 11 queries beside 1 shot.
    assert rejection.source == (
        f"{folder}: the classes held out for validation in training, 4 classes; 20 closed-set "
        "4-way episodes per shot count, 11 known queries per class (10 at 2-shot, 9 at 3-shot, "
        "7 at 5-shot, 2 at 10-shot); seed 0"
    )
    for row in rejection.thresholds:
        assert list(row) == sorted(row)  # a higher acceptance never lowers the threshold
    card = json.loads(folder_model.with_suffix(".card.json").read_text())
    assert card["rejection"] == rejection.to_dict() and card["model_version"] == version

    common = ["--checkpoint", str(folder_model), "--data", str(folder), "--episodes", "10"]
    common += ["--way", "2", "--query", "5", "--open-set"]
    summary = evaluate_json(capsys, *common, "--shot", "5")
    (result,) = summary["results"]
    assert result["acceptance"] == 0.95 and result["threshold"] == rejection.threshold(5)
    assert 0 <= result["known_accepted"] <= 1 and 0 <= result["unknown_rejected"] <= 1
    summary = evaluate_json(capsys, *common, "--acceptance", "0.999")
    assert summary["results"][0]["threshold"] == rejection.threshold(1, 0.999)
    assert main(["evaluate", *common, "--acceptance", "0.5"]) == 2
    assert "--acceptance must be within the calibrated 0.8 to 0.999" in capsys.readouterr().err


def test_calibration_refuses_classes_of_unknown_standing(folder_model, tmp_path, capsys):
    other = write_folder_dataset(tmp_path / "other", n_classes=4, per_class=6, seed=3)
    assert calibrate("--checkpoint", str(folder_model), "--data", str(other)) == 2
    assert "not the folder the checkpoint was trained on" in capsys.readouterr().err
    unlabelled = write_checkpoint(tmp_path / "unlabelled.pt", "")
    assert calibrate("--checkpoint", str(unlabelled), "--data", str(other)) == 2
    assert "does not say which classes it was validated on" in capsys.readouterr().err
    lake = write_checkpoint(tmp_path / "lake.pt", "lake")
    assert calibrate("--checkpoint", str(lake), "--data", str(other)) == 2
    assert "--data must be the Omniglot directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no way to ask for the evaluation classes
        calibrate("--checkpoint", str(lake), "--split", "evaluation")


def test_an_omniglot_model_is_calibrated_on_its_validation_alphabets_only(
    tmp_path, monkeypatch, capsys
):
    root = tmp_path / "omniglot"
    root.mkdir()
    write_omniglot_zip(root / "images_background.zip", "background", {"Latin": 3, "Greek": 6})
    monkeypatch.setattr(omniglot, "LAKE_VALIDATION_ALPHABETS", ("Greek",))
    lake = write_checkpoint(tmp_path / "lake.pt", "lake")
    # No images_evaluation.zip at all: calibration cannot have read it.
    assert calibrate("--checkpoint", str(lake), "--data", str(root), "--write") == 0
    rejection = load_checkpoint(lake).calibration
    assert rejection is not None and rejection.shots == (1, 2, 3)  # 4 drawings per character
    assert rejection.source.startswith(
        "Omniglot lake-validation: the lake split's validation classes (Greek), 6 classes; 20 "
        "closed-set 5-way episodes per shot count, 3 known queries per class"
    )
    assert "no 5-shot thresholds" in capsys.readouterr().err


def test_thresholds_are_cross_validated_over_groups_so_a_new_group_gets_the_acceptance():
    rng = np.random.default_rng(0)
    # Three alphabets drawn more or less loosely: their known queries score apart.
    scores = np.concatenate([rng.normal(shift, 1.0, 2000) for shift in (0.0, 0.5, 1.5)])
    groups = np.repeat(["a", "b", "c"], 2000)
    pooled = held_out_acceptance(scores, groups, 0.95)
    assert pooled < 0.94  # the pooled 95% quantile accepts less in a group it never saw
    [level] = cross_validated_levels(scores, groups, (0.95,))
    assert level > 0.95
    assert held_out_acceptance(scores, groups, level) == pytest.approx(0.95, abs=0.002)
    one_group = np.repeat(["a"], len(scores))
    assert cross_validated_levels(scores, one_group, (0.9, 0.95)) == [0.9, 0.95]
