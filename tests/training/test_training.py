"""End-to-end: train on a synthetic folder dataset through the CLI, then evaluate and resume."""

import json

import pytest
import torch

from protonet.checkpoint import load_checkpoint, save_checkpoint
from protonet.preprocessing import InputSpec
from training import folder
from training.cli import main
from training.config import TrainConfig
from training.trainer import Trainer

from .evaluate_cli import evaluate_json
from .synthetic import write_folder_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_folder_dataset(tmp_path_factory.mktemp("synthetic"), n_classes=30, per_class=10)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """New classes, never seen in training: what evaluation must be run on."""
    return write_folder_dataset(tmp_path_factory.mktemp("heldout"), 10, per_class=10, seed=99)


def quick_config(dataset, out, **overrides):
    values = dict(
        data=str(dataset),
        split="folder",
        out=str(out),
        way=10,
        shot=2,
        query=3,
        episodes=80,
        val_every=40,
        val_episodes=100,
        val_way=5,
        val_shot=1,
        val_query=5,
        cache_dir=str(out / "cache"),
        threads=1,
        progress=False,
        val_fraction=0.3,
    )
    values.update(overrides)
    return TrainConfig(**values)


def heldout_accuracy(checkpoint_path, heldout, capsys):
    """5-way 1-shot accuracy on never-seen classes, through the evaluate command's --json."""
    return evaluate_json(
        capsys,
        "--checkpoint",
        str(checkpoint_path),
        "--data",
        str(heldout),
        "--way",
        "5",
        "--shot",
        "1",
        "--query",
        "5",
        "--episodes",
        "200",
    )


def test_training_raises_accuracy_far_above_chance(dataset, heldout, tmp_path, capsys):
    config = quick_config(dataset, tmp_path / "run")
    untrained = save_checkpoint(Trainer(config).checkpoint(0.0, {}), tmp_path / "untrained.pt")
    before = heldout_accuracy(untrained, heldout, capsys)["accuracy"]
    args = [
        f"--{k.replace('_', '-')}={v}"
        for k, v in config.to_dict().items()
        if not isinstance(v, bool)
    ]
    assert main(["train", *args, "--no-progress"]) == 0
    checkpoint = load_checkpoint(tmp_path / "run" / "best.pt")
    assert checkpoint.metadata["episodes_trained"] in (40, 80)
    assert checkpoint.data_fingerprint.startswith("sha256:")
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000
    log = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [r["episode"] for r in map(json.loads, log) if r["kind"] == "val"] == [40, 80]

    summary = heldout_accuracy(tmp_path / "run" / "best.pt", heldout, capsys)
    print(f"held-out 5-way 1-shot: untrained {before:.3f}, trained {summary['accuracy']:.3f}")
    # Chance is 20%; an untrained Conv-4 already separates these strokes somewhat.
    assert summary["accuracy"] >= 0.85, summary
    assert summary["accuracy"] > before + 0.07, (before, summary["accuracy"])
    assert 0 < summary["ci95"] < 0.05


def test_resume_continues_from_saved_state(dataset, tmp_path):
    out = tmp_path / "run"
    Trainer(quick_config(dataset, out, episodes=40)).train()
    resumed = Trainer(quick_config(dataset, out, episodes=80, resume=True))
    assert resumed.episode == 40
    first_weight = next(iter(resumed.encoder.state_dict().values())).clone()
    resumed.train()
    assert resumed.episode == 80
    assert not torch.equal(first_weight, next(iter(resumed.encoder.state_dict().values())))


def test_a_cpu_budget_stops_training_early(dataset, tmp_path):
    # 0.001 CPU minutes (60 ms) runs out after a few episodes, long before 100000.
    trainer = Trainer(
        quick_config(dataset, tmp_path / "run", episodes=100000, max_cpu_minutes=0.001)
    )
    trainer.train()
    assert 1 <= trainer.episode < 100000
    assert (tmp_path / "run" / "best.pt").exists()


def test_folder_split_is_disjoint_and_seeded(dataset, tmp_path):
    images, _ = folder.load_folder(dataset, InputSpec(), tmp_path, progress=False)
    train, val = folder.split_classes(images, 0.3, seed=0)
    assert not set(train.class_names) & set(val.class_names)
    assert train.n_classes + val.n_classes == 30 and val.n_classes == 9
    assert folder.split_classes(images, 0.3, seed=0)[1].class_names == val.class_names


def test_bad_flags_are_reported_without_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--split", "nope", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert (
        "--split: invalid choice: 'nope' "
        "(choose from 'lake', 'vinyals', 'folder', 'banking77', 'emoji')"
        in (capsys.readouterr().err)
    )
    with pytest.raises(
        ValueError, match="--split must be one of lake, vinyals, folder, banking77, emoji, not 'x'"
    ):
        Trainer(TrainConfig(split="x"))  # the same rule for configs built in code
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_augmented_training_runs_and_records_the_setting(dataset, tmp_path):
    augment = {"augment_shift": 2, "augment_rotate": 10.0, "augment_scale": 0.1}
    trainer = Trainer(quick_config(dataset, tmp_path / "run", episodes=10, **augment))
    best = trainer.train()
    assert trainer.episode == 10
    training_config = load_checkpoint(best).training_config
    assert {name: training_config[name] for name in augment} == augment


def test_open_set_training_fine_tunes_from_a_checkpoint_and_reports_auroc(dataset, tmp_path):
    first = Trainer(quick_config(dataset, tmp_path / "first", episodes=10, val_every=10)).train()
    start = load_checkpoint(first)
    open_set = {"way": 5, "unknown_way": 5, "val_way": 4, "init": str(first)}
    config = quick_config(dataset, tmp_path / "open", episodes=20, val_every=10, **open_set)
    trainer = Trainer(config)
    for name, weights in start.state_dict.items():  # --init: the first run's weights
        assert torch.equal(trainer.encoder.state_dict()[name], weights), name
    checkpoint = load_checkpoint(trainer.train())
    assert checkpoint.metadata["initialized_from"] == start.version
    assert checkpoint.training_config["unknown_way"] == 5
    validation = checkpoint.metadata["validation"]
    assert validation["unknown_way"] == 4 and 0.0 <= validation["auroc"] <= 1.0
    log = [json.loads(line) for line in (tmp_path / "open" / "metrics.jsonl").open()]
    assert all("auroc" in record for record in log if record["kind"] == "val")


def test_open_set_and_init_settings_that_cannot_work_are_refused(dataset, tmp_path):
    first = Trainer(quick_config(dataset, tmp_path / "first", episodes=10, val_every=10)).train()
    with pytest.raises(ValueError, match=r"--init .*encoder_config"):
        Trainer(quick_config(dataset, tmp_path / "a", init=str(first), hidden_channels=8))
    with pytest.raises(ValueError, match="--method protonet, not maml"):
        Trainer(quick_config(dataset, tmp_path / "b", unknown_way=5, method="maml"))
    with pytest.raises(ValueError, match="--init starts afresh"):
        Trainer(quick_config(dataset, tmp_path / "c", init=str(first), resume=True))
    # 9 validation classes cannot hold 5 known + 5 unknown: the flag to lower is named.
    with pytest.raises(ValueError, match="--val-way must be <= 4"):
        Trainer(quick_config(dataset, tmp_path / "d", unknown_way=5))
