"""A new user's own small folder (10 classes x 30 images), through the command line: settings
are checked before the first episode, runs never mix in one --out, and evaluation defaults to
the classes the model never trained on."""

import contextlib
import io
import json

import pytest

from protonet.checkpoint import load_checkpoint
from training import omniglot
from training.cli import main
from training.trainer import Trainer

from .evaluate_cli import evaluate_json
from .synthetic import write_folder_dataset, write_omniglot_zip

# Small and quick: validation after 10 and 20 episodes, 50 episodes each.
QUICK = ["--episodes", "20", "--val-every", "10", "--val-episodes", "50"]
RUN_FILES = ["best.pt", "resume_state.pt", "metrics.jsonl", "learning_curve.png", "config.json"]


@pytest.fixture(scope="module")
def mydata(tmp_path_factory):
    return write_folder_dataset(tmp_path_factory.mktemp("mydata"), n_classes=10, per_class=30)


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    """Decoded images go to a test directory (evaluate uses the default cache)."""
    path = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("PROTONET_CACHE_DIR", str(path))
    return path


def train(data, out, *flags: str) -> int:
    """``python -m training train --split folder ...``, as the README has it."""
    common = ["--split", "folder", "--data", str(data), "--out", str(out), "--no-progress"]
    return main(["train", *common, "--threads", "1", *flags])


@pytest.fixture(scope="module")
def readme_run(mydata, tmp_path_factory):
    """The README's own-data command (with a small --episodes): its run directory and stderr."""
    out = tmp_path_factory.mktemp("runs") / "mine"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert train(mydata, out, "--way", "5", "--shot", "5", *QUICK) == 0
    return out, stderr.getvalue()


def test_readme_command_fits_validation_to_the_held_out_classes(readme_run):
    out, stderr = readme_run
    assert (
        "note: validation holds 2 classes (20% of 10): validating 2-way, not 20-way "
        "(--val-way sets it)"
    ) in stderr
    checkpoint = load_checkpoint(out / "best.pt")
    assert checkpoint.metadata["validation"]["way"] == 2
    assert len(checkpoint.metadata["held_out_classes"]) == 2
    assert checkpoint.training_config["val_way"] == 2  # what ran, not the open setting
    assert json.loads((out / "config.json").read_text())["val_way"] == 2


@pytest.fixture(scope="module")
def open_way_run(mydata, tmp_path_factory):
    """``train --split folder --data ROOT`` without --way, with the progress bar on; a last
    validation after episode 15 (--val-every 10 does not divide --episodes 15)."""
    out = tmp_path_factory.mktemp("runs") / "open-way"
    stderr = io.StringIO()
    flags = ["--progress", "--episodes", "15", "--val-every", "10", "--val-episodes", "20"]
    with contextlib.redirect_stderr(stderr):
        assert train(mydata, out, *flags) == 0
    return out, stderr.getvalue()


def test_without_way_a_small_folder_trains_as_wide_as_it_allows(open_way_run):
    out, stderr = open_way_run
    assert (
        "note: training holds 8 classes (10 minus 2 held out for validation): training 8-way, "
        "not 60-way (--way sets it)"
    ) in stderr
    assert load_checkpoint(out / "best.pt").training_config["way"] == 8  # what ran


def test_the_progress_bar_shows_the_last_validation(open_way_run):
    out, stderr = open_way_run
    records = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    last = [r for r in records if r["kind"] == "val"][-1]
    assert last["episode"] == 15
    final_bar = stderr.split("\r")[-1]  # what the terminal shows once the bar is closed
    assert f"val={100 * last['accuracy']:.2f}%" in final_bar


def test_a_folder_of_classes_without_split_folder_is_told_to_add_it(mydata, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(mydata), "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"error: {mydata} holds folders of images, not the Omniglot zips that --split lake "
        "reads: to train on your own classes, add --split folder\n"
    )
    assert not out.exists()


def test_evaluate_defaults_to_the_held_out_classes(readme_run, mydata, tmp_path, capsys):
    best = str(readme_run[0] / "best.pt")
    common = ["--checkpoint", best, "--data", str(mydata), "--episodes", "20"]
    summary = evaluate_json(capsys, *common, "--way", "2")
    assert (summary["classes"], summary["n_classes"]) == ("heldout", 2)
    for wanted, n in (("all", 10), ("training", 8)):
        summary = evaluate_json(capsys, *common, "--way", "2", "--classes", wanted)
        assert (summary["classes"], summary["n_classes"]) == (wanted, n)

    assert main(["evaluate", *common, "--way", "2", "--no-progress"]) == 0
    assert f"classes: the 2 classes of {mydata} held out from training" in capsys.readouterr().out

    assert main(["evaluate", *common, "--way", "5"]) == 2
    assert capsys.readouterr().err == (
        "error: the held-out set holds 2 classes (held out for validation in training; "
        "--classes all adds the other 8): --way must be <= 2\n"
    )


def test_evaluate_shows_a_bar_while_it_embeds(readme_run, mydata, capsys):
    best = str(readme_run[0] / "best.pt")
    flags = ["--checkpoint", best, "--data", str(mydata), "--way", "2", "--episodes", "5"]
    assert main(["evaluate", *flags]) == 0
    assert "embedding: 100%" in capsys.readouterr().err  # 60 held-out images, 1 batch


def test_evaluate_on_another_folder_uses_all_its_classes(readme_run, tmp_path, capsys):
    other = write_folder_dataset(tmp_path / "other", n_classes=6, per_class=20, seed=5)
    common = ["--checkpoint", str(readme_run[0] / "best.pt"), "--data", str(other)]
    summary = evaluate_json(capsys, *common, "--episodes", "20")
    assert (summary["classes"], summary["n_classes"]) == ("all", 6)
    assert main([*["evaluate", *common], "--classes", "heldout"]) == 2
    assert capsys.readouterr().err == (
        f"error: --classes heldout: unknown for {other} (not the folder the checkpoint was "
        "trained on); use --classes all\n"
    )


def test_the_training_folder_is_recognised_after_images_are_added(mydata, tmp_path, capsys):
    data = write_folder_dataset(tmp_path / "data", n_classes=10, per_class=30)
    out = tmp_path / "run"
    assert train(data, out, "--way", "5", "--episodes", "10", "--val-episodes", "20") == 0
    (data / "class_000" / "extra.png").write_bytes((data / "class_000" / "00.png").read_bytes())
    common = ["--checkpoint", str(out / "best.pt"), "--data", str(data), "--way", "2"]
    summary = evaluate_json(capsys, *common, "--episodes", "10")
    assert (summary["classes"], summary["n_classes"]) == ("heldout", 2)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--way", "5", "--val-way", "20"],
            "validation holds 2 classes (20% of 10): --val-way must be <= 2",
        ),
        (
            ["--way", "20", "--shot", "5"],
            "training holds 8 classes (10 minus 2 held out for validation): --way must be <= 8",
        ),
        (
            ["--way", "5", "--shot", "20", "--query", "15"],
            "--way 5 needs 5 classes of at least --shot + --query = 20 + 15 = 35 images; "
            "training has 8 classes, none of them that large (they hold 30 images each): lower "
            "--shot + --query to <= 30",
        ),
        (
            ["--way", "5", "--val-shot", "10", "--val-query", "25"],
            "--val-way 2 needs 2 classes of at least --val-shot + --val-query = 10 + 25 = 35 "
            "images; validation has 2 classes, none of them that large (they hold 30 images "
            "each): lower --val-shot + --val-query to <= 30",
        ),
        (
            ["--way", "5", "--val-fraction", "0.9"],
            "the data has 10 classes: --val-fraction 0.9 holds out 9 for validation and leaves "
            "1 for training, which needs at least 2",
        ),
    ],
)
def test_impossible_settings_fail_before_the_first_episode_and_leave_no_out(
    mydata, tmp_path, capsys, monkeypatch, flags, message
):
    def no_episodes(*_):
        raise AssertionError("an episode ran before the settings were checked")

    monkeypatch.setattr(Trainer, "train_step", no_episodes)
    out = tmp_path / "runs" / "mine"
    assert train(mydata, out, *flags) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "runs").exists()


def test_an_existing_run_is_neither_mixed_nor_lost(mydata, tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--way", "5", "--episodes", "10", "--val-every", "10", "--val-episodes", "20"]
    assert train(mydata, out, *flags) == 0
    capsys.readouterr()

    assert train(mydata, out, *flags) == 2
    assert capsys.readouterr().err == (
        f"error: {out} already holds a training run (best.pt, resume_state.pt, metrics.jsonl, "
        "learning_curve.png, config.json): pass --resume to continue it or --overwrite to "
        "replace it (or choose another --out)\n"
    )
    assert train(mydata, out, *flags, "--resume", "--overwrite") == 2
    assert "pick one" in capsys.readouterr().err

    def validations():
        records = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        return [r["episode"] for r in records if r["kind"] == "val"]

    assert train(mydata, out, *flags, "--overwrite") == 0
    assert validations() == [10]  # the old run's records are gone, not appended to
    assert train(mydata, out, *flags, "--episodes", "20", "--resume") == 0
    assert validations() == [10, 20]


def test_a_run_that_fails_before_its_first_checkpoint_takes_back_what_it_made(
    mydata, tmp_path, monkeypatch
):
    def fail(*_):
        raise RuntimeError("validation failed")

    monkeypatch.setattr(Trainer, "validate", fail)
    out = tmp_path / "runs" / "mine"
    with pytest.raises(RuntimeError):
        train(mydata, out, "--way", "5", "--episodes", "10")
    assert not (tmp_path / "runs").exists()

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        train(mydata, existing, "--way", "5", "--episodes", "10")
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]


@pytest.fixture
def tiny_omniglot(tmp_path, monkeypatch):
    """Background: Latin (3 characters) and Greek (2) for training, Cyrillic (2) held out."""
    monkeypatch.setattr(omniglot, "LAKE_VALIDATION_ALPHABETS", ("Cyrillic",))
    root = tmp_path / "omniglot"
    root.mkdir()
    alphabets = {"Latin": 3, "Greek": 2, "Cyrillic": 2}
    write_omniglot_zip(root / "images_background.zip", "background", alphabets)
    write_omniglot_zip(root / "images_evaluation.zip", "evaluation", {"Tengwar": 2}, seed=1)
    splits = root / "splits" / "vinyals"
    splits.mkdir(parents=True)
    rotations = ("rot000", "rot090", "rot180", "rot270")
    latin = [f"Latin/character0{c}/{r}" for c in (1, 2, 3) for r in rotations]
    (splits / "train.txt").write_text("\n".join(latin) + "\n")
    (splits / "val.txt").write_text("Greek/character01/rot000\nGreek/character02/rot000\n")
    return root


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--split", "lake", "--way", "60"],
            "training holds 20 classes (the background alphabets outside validation, at 4 "
            "rotations each): --way must be <= 20",
        ),
        (
            ["--split", "lake", "--way", "15", "--within-alphabet", "--shot", "1", "--query", "1"],
            "--within-alphabet: no alphabet of training has 15 classes with 2 images each (the "
            "most is 12): lower --way to <= 12 or drop --within-alphabet",
        ),
        (
            ["--split", "vinyals", "--way", "5", "--shot", "1", "--query", "1", "--val-way", "3"],
            "validation holds 2 classes (the Vinyals val split): --val-way must be <= 2",
        ),
        (
            ["--split", "lake", "--way", "5", "--channels", "3"],
            "--channels 3 needs --split folder: Omniglot is grayscale",
        ),
    ],
)
def test_omniglot_splits_are_checked_alike(tiny_omniglot, tmp_path, capsys, flags, message):
    common = ["--data", str(tiny_omniglot), "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(["train", *common, "--cache-dir", str(tmp_path / "cache"), *flags]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "run").exists()


def test_colour_photos_train_in_colour(tmp_path, capsys):
    photos = write_folder_dataset(tmp_path / "photos", 10, per_class=12, colour=True)
    out = tmp_path / "run"
    flags = ["--way", "3", "--shot", "2", "--query", "2", "--episodes", "10"]
    assert train(photos, out, *flags, "--val-episodes", "20", "--channels", "3") == 0
    checkpoint = load_checkpoint(out / "best.pt")
    assert checkpoint.input_spec.channels == 3 and checkpoint.encoder_config.in_channels == 3

    best = str(out / "best.pt")
    summary = evaluate_json(
        capsys,
        "--checkpoint",
        best,
        "--data",
        str(photos),
        "--way",
        "2",
        "--query",
        "5",
        "--write-card",
    )
    assert summary["classes"] == "heldout" and 0.0 <= summary["accuracy"] <= 1.0
    card = json.loads((out / "best.card.json").read_text())
    assert card["input_mode"] == "RGB" and card["input"]["channels"] == 3
    assert "folder-heldout" in card["evaluation"]
