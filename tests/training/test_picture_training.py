"""Picture training end to end on a small synthetic emoji folder: the real frozen MobileNetV2
base (at 32 px), a head trained on cached features, a self-describing picture checkpoint."""

import pytest
import torch

from protonet.checkpoint import load_checkpoint
from protonet.mobilenet import FEATURE_DIM, PictureEncoder
from protonet.preprocessing import picture_spec
from training.cli import main
from training.emoji import subcategory_split

from .emoji_data import write_emoji_folder
from .evaluate_cli import evaluate_json

SUBCATEGORIES = [f"sub-{i}" for i in range(60)]
TRAIN = [s for s in SUBCATEGORIES if subcategory_split(s) == "train"][:10]
VALIDATION = [s for s in SUBCATEGORIES if subcategory_split(s) == "val"]
TEST = [s for s in SUBCATEGORIES if subcategory_split(s) == "test"][:3]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_emoji_folder(tmp_path_factory.mktemp("data") / "emoji", TRAIN + VALIDATION + TEST)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    torch.set_num_threads(1)
    root = data
    out = tmp_path_factory.mktemp("run") / "pictures"
    args = ["train", "--split", "emoji", "--data", str(root), "--out", str(out)]
    args += ["--image-size", "32", "--way", "5", "--shot", "1", "--query", "2"]
    args += ["--episodes", "20", "--val-every", "10", "--val-episodes", "20", "--val-way", "5"]
    args += ["--val-shot", "1", "--val-query", "2", "--lr", "1e-3"]
    args += [
        "--cache-dir",
        str(tmp_path_factory.mktemp("cache")),
        "--threads",
        "1",
        "--no-progress",
    ]
    assert main(args) == 0
    return out / "best.pt"


def test_a_tiny_picture_run_writes_a_head_over_the_named_base(trained):
    raw = torch.load(trained, weights_only=True)
    assert raw["modality"] == "image"
    assert set(raw["state_dict"]) == {"linear.weight", "linear.bias", "scale"}
    assert raw["image_base"]["feature_dim"] == FEATURE_DIM
    checkpoint = load_checkpoint(trained)
    assert checkpoint.input_spec == picture_spec(32)
    assert checkpoint.metadata["train_classes"] == 2 * len(TRAIN)
    assert checkpoint.metadata["validation_classes"] == 2 * len(VALIDATION)
    encoder = checkpoint.build_encoder()
    assert isinstance(encoder, PictureEncoder)
    with torch.no_grad():
        assert encoder(torch.zeros(1, 3, 32, 32)).shape == (1, FEATURE_DIM)


def test_evaluation_takes_the_test_subcategories(trained, data, capsys):
    args = ["--checkpoint", str(trained), "--data", str(data), "--way", "2", "--query", "1"]
    summary = evaluate_json(capsys, *args, "--episodes", "20")
    assert summary["n_classes"] == 2 * len(TEST)
    assert 0.0 <= summary["results"][0]["accuracy"] <= 1.0
    assert main(["evaluate", *args, "--split", "evaluation"]) == 2
    assert "are not for emoji" in capsys.readouterr().err


def test_calibration_takes_the_validation_subcategories(trained, data, tmp_path):
    copy = tmp_path / "pictures.pt"
    copy.write_bytes(trained.read_bytes())
    args = ["calibrate", "--checkpoint", str(copy), "--data", str(data), "--way", "2"]
    assert main([*args, "--query", "1", "--episodes", "20", "--write", "--no-progress"]) == 0
    rejection = load_checkpoint(copy).calibration
    assert rejection is not None and rejection.shots[0] == 1
