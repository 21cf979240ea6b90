"""Text training end to end on a small synthetic Banking77-shaped dataset (the real base
encoder, a few hundred short texts), the intent split, the embedding cache, and the real
Banking77 files and bundled text model (skipped on a user's machine without them, failing
when CI=true)."""

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from protonet.checkpoint import load_checkpoint
from protonet.open_set import RejectionCalibration
from protonet.text import base_identity
from training import text_evaluate, textset
from training.cli import main
from training.config import TrainConfig, validate
from training.episodes import EpisodeSampler, EpisodeShape
from training.head_trainer import whitening_start

from ..conftest import REPO_ROOT, SHARED_DATA, require_path
from .evaluate_cli import evaluate_json

N_INTENTS = 56  # 40 train + 10 validation + 6 held out
TOPICS = ["card", "transfer", "refund", "account", "cash", "rate", "pin", "app"]
ACTIONS = ["lost", "late", "blocked", "wrong", "missing", "new", "closed"]


def intent_texts(intent: int, n: int) -> list[str]:
    """Short texts that share an intent's two words, with varied filler."""
    topic, action = TOPICS[intent % len(TOPICS)], ACTIONS[intent // len(TOPICS)]
    fillers = ["please help", "why is my", "I think my", "what about my", "hello, my", "again"]
    return [f"{fillers[k % len(fillers)]} {topic} {action} {k}" for k in range(n)]


def write_dataset(root, per_train=9, per_test=3):
    root.mkdir()
    names = [f"intent_{i:02d}" for i in range(N_INTENTS)]
    (root / "categories.json").write_text(json.dumps(names))
    for part, n in (("train", per_train), ("test", per_test)):
        with open(root / f"{part}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "category"])
            for i, name in enumerate(names):
                offset = 0 if part == "train" else per_train
                for text in intent_texts(i, offset + n)[offset:]:
                    writer.writerow([text, name])
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("intents") / "banking")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def trained(dataset, cache, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run") / "text"
    args = ["train", "--split", "banking77", "--data", str(dataset), "--out", str(out)]
    args += ["--way", "5", "--shot", "2", "--query", "2", "--episodes", "20", "--lr", "1e-3"]
    args += ["--val-every", "10", "--val-episodes", "20", "--val-way", "5", "--val-shot", "1"]
    args += ["--val-query", "2", "--cache-dir", str(cache), "--threads", "1", "--no-progress"]
    assert main(args) == 0
    return out / "best.pt"


def test_a_tiny_text_run_writes_a_self_describing_head(trained, dataset):
    raw = torch.load(trained, weights_only=True)
    assert raw["modality"] == "text" and set(raw["state_dict"]) == {
        "linear.weight",
        "linear.bias",
        "scale",
    }
    checkpoint = load_checkpoint(trained, modality="text")
    assert checkpoint.text_spec == base_identity()
    intents = checkpoint.metadata["intents"]
    sizes = [len(intents[k]) for k in ("train", "validation", "held_out")]
    assert sizes == [40, 10, 6]
    every = [name for names in intents.values() for name in names]
    assert sorted(every) == sorted(json.loads((dataset / "categories.json").read_text()))
    assert checkpoint.metadata["validation"]["way"] == 5
    assert checkpoint.training_config["split"] == "banking77"


def test_evaluate_runs_held_out_episodes_with_queries_from_the_test_file(trained, dataset, capsys):
    common = ["--checkpoint", str(trained), "--data", str(dataset), "--threads", "1"]
    summary = evaluate_json(
        capsys, *common, "--way", "5", "--shot", "1", "--query", "3", "--episodes", "20"
    )
    assert summary["modality"] == "text" and summary["classes"] == "heldout"
    assert summary["n_classes"] == 6 and summary["all_intents"] == []
    assert 0.2 <= summary["accuracy"] <= 1.0  # 5-way chance is 0.2; the words give it away


def test_evaluate_table_adds_all_intents_against_both_anchors(trained, dataset, capsys):
    common = ["--checkpoint", str(trained), "--data", str(dataset), "--threads", "1"]
    summary = evaluate_json(capsys, *common, "--table", "--query", "3", "--episodes", "10")
    shapes = [(r["way"], r["shot"]) for r in summary["results"]]
    assert shapes == [(5, 1), (5, 5), (5, 8), (6, 1), (6, 5), (6, 8)]
    methods = [r["method"] for r in summary["all_intents"]]
    assert methods == ["head prototypes", "base prototypes", "base logistic regression"]
    for result in summary["all_intents"]:
        assert result["queries"] == N_INTENTS * 3 and result["shot"] == 8
        assert set(result["accuracy_by_intents"]) == {"train", "validation", "held_out"}


def test_within_train_reads_only_the_train_file(trained, dataset, tmp_path, capsys):
    data = tmp_path / "banking"
    data.mkdir()
    for name in ("train.csv", "categories.json"):
        (data / name).write_bytes((dataset / name).read_bytes())
    (data / "test.csv").write_text("text,category\nnot an intent,zzz\n")  # unreadable if read
    common = ["--checkpoint", str(trained), "--data", str(data), "--threads", "1"]
    summary = evaluate_json(capsys, *common, "--within-train")
    head, base = summary["within_train"]
    assert (head["method"], base["method"]) == ("head prototypes", "base prototypes")
    # 9 train texts per intent, 8 of them support: one query for each of the 16 intents.
    assert head["queries"] == 16 and head["shot"] == 8 and head["queries_from"] == "train"
    assert set(head["accuracy_by_intents"]) == {"validation", "held_out"}


def test_within_train_queries_are_the_other_texts_of_the_query_intents():
    labels = np.repeat(np.arange(3), 4)
    texts = textset.TextSet(["t"] * 12, labels, ["a", "b", "c"], ["g"] * 3)
    for support, queries in text_evaluate.within_train_draws(texts, ["b", "c"], 2, 3, seed=0):
        assert sorted(labels[support]) == [0, 0, 1, 1, 2, 2]
        assert not set(support) & set(queries) and len(queries) == 4
        assert set(labels[queries]) == {1, 2}


def test_image_flags_are_refused_for_text(trained, dataset, capsys):
    with pytest.raises(ValueError, match="--augment-shift is for images; --split banking77"):
        validate(TrainConfig(split="banking77", augment_shift=2))
    args = ["evaluate", "--checkpoint", str(trained), "--data", str(dataset), "--within-alphabet"]
    assert main(args) == 2
    assert "--within-alphabet is for image checkpoints" in capsys.readouterr().err


@pytest.fixture(scope="module")
def calibrated(trained, dataset, tmp_path_factory):
    """A copy of the tiny run's head, calibrated on its validation intents."""
    path = tmp_path_factory.mktemp("calibrated") / "text.pt"
    path.write_bytes(trained.read_bytes())
    args = ["calibrate", "--checkpoint", str(path), "--data", str(dataset), "--episodes", "20"]
    assert main([*args, "--threads", "1", "--no-progress", "--write-card"]) == 0
    return path


def test_calibrate_measures_a_text_head_on_its_validation_intents(calibrated):
    rejection = load_checkpoint(calibrated, modality="text").calibration
    assert rejection is not None and rejection.method == "nearest_distance"
    # 9 train texts per intent: 8 shots leave one query, 10 none (noted, not calibrated).
    assert rejection.shots == (1, 2, 3, 5, 8)
    assert "validation intents" in rejection.source
    assert "cross-validated over 10 groups" in rejection.source  # one group per intent
    for row in rejection.thresholds:
        assert list(row) == sorted(row)  # a higher acceptance never lowers the threshold
    card = json.loads(calibrated.with_suffix(".card.json").read_text())
    assert card["rejection"]["shots"] == [1, 2, 3, 5, 8]


def test_calibration_never_reads_the_test_file_or_the_held_out_intents(trained, dataset, tmp_path):
    data = tmp_path / "banking"
    data.mkdir()
    (data / "categories.json").write_bytes((dataset / "categories.json").read_bytes())
    (data / "test.csv").write_text("text,category\nnot an intent,zzz\n")  # unreadable if read
    checkpoint = load_checkpoint(trained, modality="text")
    held_out = set(checkpoint.metadata["intents"]["held_out"])
    with open(dataset / "train.csv") as source, open(data / "train.csv", "w") as kept:
        kept.writelines(line for line in source if line.strip().split(",")[-1] not in held_out)
    classes, embeddings = text_evaluate.validation_intents(checkpoint, data)
    assert classes.items.class_names == checkpoint.metadata["intents"]["validation"]
    assert len(embeddings) == len(classes.items.texts) == 10 * 9


def test_open_set_text_draws_leave_held_out_intents_unknown(calibrated, dataset, capsys):
    common = ["--checkpoint", str(calibrated), "--data", str(dataset), "--threads", "1"]
    summary = evaluate_json(capsys, *common, "--open-set", "--shot", "2", "--episodes", "5")
    result = summary["open_set"]
    # 6 held-out intents: half of them unknown in each draw, the other 53 registered.
    assert (result["unknown_intents"], result["known_intents"]) == (3, 53)
    assert result["acceptance"] == 0.95 and 0.0 <= result["auroc"] <= 1.0
    for source in ("checkpoint_thresholds", "collection_thresholds"):
        shares = result[source]
        assert set(shares) == {"known_accepted", "unknown_rejected", "in_scope_accuracy"}
        assert shares["in_scope_accuracy"] <= min(shares["known_accepted"], result["accuracy"])
    assert set(result["known_accepted_by_intents"]) == {"train", "validation", "held_out"}


def test_open_set_text_needs_a_calibration(trained, dataset, capsys):
    args = ["evaluate", "--checkpoint", str(trained), "--data", str(dataset), "--open-set"]
    assert main(args) == 2
    assert "holds no rejection calibration" in capsys.readouterr().err


def test_zero_episodes_save_the_heads_start(dataset, cache, tmp_path):
    """--head-start identity --episodes 0: the frozen base's own metric, validated and saved
    with the split recorded, so it can be calibrated and evaluated like a trained head."""
    out = tmp_path / "identity"
    args = ["train", "--split", "banking77", "--data", str(dataset), "--out", str(out)]
    args += ["--head-start", "identity", "--episodes", "0", "--shot", "2", "--query", "2"]
    args += ["--val-way", "5", "--val-shot", "1"]
    args += ["--val-query", "2", "--val-episodes", "5", "--cache-dir", str(cache)]
    assert main([*args, "--threads", "1", "--no-progress"]) == 0
    checkpoint = load_checkpoint(out / "best.pt", modality="text")
    weight = checkpoint.state_dict["linear.weight"]
    torch.testing.assert_close(weight, torch.eye(len(weight)))
    assert checkpoint.metadata["validation"]["episode"] == 0
    assert len(checkpoint.metadata["intents"]["held_out"]) == 6
    with pytest.raises(ValueError, match="--episodes must be >= 1"):
        validate(TrainConfig(split="lake", episodes=0))  # a Conv-4 from random weights: no


def test_base_embeddings_are_cached_by_content(dataset, cache, monkeypatch, trained):
    spec = base_identity()
    texts = textset.load_banking77(dataset, "train", spec)
    first = textset.base_embeddings(texts, spec, cache)  # the trained run left it there

    def no_base(*_args):
        raise AssertionError("the base ran although its embeddings were cached")

    monkeypatch.setattr(textset, "load_base_encoder", no_base)
    torch.testing.assert_close(textset.base_embeddings(texts, spec, cache), first)
    other = textset.TextSet(
        texts.texts[:3], texts.labels[:3], texts.class_names, texts.class_groups
    )
    with pytest.raises(AssertionError, match="the base ran"):
        textset.base_embeddings(other, spec, cache)  # other texts: another key


def test_intent_split_is_seeded_and_disjoint():
    names = [f"i{k}" for k in range(77)]
    split = textset.split_intents(names, seed=0)
    assert (len(split.train), len(split.validation), len(split.held_out)) == (40, 10, 27)
    assert sorted(split.train + split.validation + split.held_out) == sorted(names)
    assert textset.split_intents(names, seed=0) == split
    assert textset.split_intents(names, seed=1).held_out != split.held_out


def test_rows_with_unknown_intents_or_empty_text_name_their_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,category\nhello,a\n   ,a\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 3: text is empty"):
        textset.read_texts(path, ["a"], base_identity())
    path.write_text("text,category\nhello,zzz\n")
    with pytest.raises(ValueError, match="line 2: unknown category 'zzz'"):
        textset.read_texts(path, ["a"], base_identity())


def test_the_sampler_draws_queries_from_the_query_set():
    support = textset.TextSet(["s"] * 6, np.array([0, 0, 1, 1, 2, 2]), ["a", "b", "c"], ["g"] * 3)
    queries = textset.TextSet(["q"] * 4, np.array([0, 0, 1, 1]), ["a", "b", "c"], ["g"] * 3)
    sampler = EpisodeSampler(support, EpisodeShape(2, 2, 2), seed=0, query_set=queries)
    episode = sampler.sample()
    # Class 2 has no queries, so only classes 0 and 1 take part.
    assert sorted(set(episode.support_labels)) == [0, 1]
    assert (support.labels[episode.support_indices] == episode.support_labels).all()
    assert (queries.labels[episode.query_indices] == episode.query_labels).all()
    with pytest.raises(ValueError, match="need 3 classes"):
        EpisodeSampler(support, EpisodeShape(3, 2, 2), query_set=queries)


def test_the_whitening_start_centres_the_training_texts():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(60, 8, generator=generator) + 3.0
    labels = torch.arange(60) % 4
    weight, bias = whitening_start(embeddings, labels)
    torch.testing.assert_close(weight, weight.T)  # a symmetric whitening
    centred = embeddings.mean(dim=0) @ weight.T + bias
    torch.testing.assert_close(centred, torch.zeros(8), atol=1e-5, rtol=0)


# Real data: the Banking77 files and the bundled text model.

BUNDLED_TEXT_MODEL = REPO_ROOT / "models" / "banking77-minilm.pt"


def test_the_bundled_text_model_records_the_split_the_real_data_gives():
    data = require_path(SHARED_DATA / "banking77", "Banking77 data")
    model = require_path(BUNDLED_TEXT_MODEL, "bundled text model")
    checkpoint = load_checkpoint(model, modality="text")
    intents = textset.banking77_intents(data)
    split = textset.split_intents(intents, checkpoint.training_config["seed"])
    assert checkpoint.metadata["intents"] == split.to_dict()
    assert checkpoint.data_fingerprint == textset.banking77_fingerprint(data)
    assert checkpoint.text_spec == base_identity()  # the installed base is the one it needs
    assert model.stat().st_size < 2_000_000  # the head only, never the base's 90 MB


def test_real_banking77_files_load():
    data = require_path(SHARED_DATA / "banking77", "Banking77 data")
    spec = base_identity()
    train = textset.load_banking77(data, "train", spec)
    test = textset.load_banking77(data, "test", spec)
    assert train.n_classes == test.n_classes == 77
    assert (len(train.texts), len(test.texts)) == (10003, 3080)
    assert np.bincount(test.labels).tolist() == [40] * 77


def test_open_set_draws_accept_known_texts_and_reject_far_intents():
    """Six intents far apart (two held out): each draw registers five, leaves one held-out
    intent unknown, and a threshold between the spreads separates them exactly."""
    rng = np.random.default_rng(0)
    names = [f"i{k}" for k in range(6)]

    def split(per_class: int) -> text_evaluate.EmbeddedSplit:
        labels = np.repeat(np.arange(6), per_class)
        vectors = torch.eye(6)[labels] * 3 + torch.from_numpy(rng.normal(0, 0.05, (len(labels), 6)))
        texts = textset.TextSet(["t"] * len(labels), labels, names, ["g"] * 6)
        return text_evaluate.EmbeddedSplit(texts, vectors.float(), vectors.float())

    checkpoint = SimpleNamespace(
        metadata={"intents": {"train": names[:3], "validation": names[3:4], "held_out": names[4:]}}
    )
    calibration = RejectionCalibration("nearest_distance", (1, 8), (0.9, 0.95), ((1.0,) * 2,) * 2)
    result = text_evaluate.evaluate_text_open_set(
        split(10),
        split(5),
        checkpoint,
        calibration,
        shots=8,
        draws=4,  # type: ignore[arg-type]
    )
    assert (result.n_known, result.n_unknown, result.draws) == (5, 1, 4)
    assert result.accuracy == 1.0 and result.auroc == 1.0
    for rejected in result.rejected.values():
        assert (rejected.known_accepted, rejected.unknown_rejected) == (1.0, 1.0)
        assert rejected.in_scope_accuracy == 1.0
    assert result.known_accepted_by_intents == {"train": 1.0, "validation": 1.0, "held_out": 1.0}
