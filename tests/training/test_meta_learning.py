"""The MAML family beside Prototypical Networks: same backbone, sampler and evaluator."""

import numpy as np
import pytest
import torch

from protonet.checkpoint import load_checkpoint, save_checkpoint
from protonet.model import EncoderConfig, build_encoder
from protonet.open_set import open_set_ranking_loss
from service.collections.encoder import ImageEncoder, load_encoder
from training.meta_learning import UNKNOWN_LABEL, MetaLearner, PrototypeLearner
from training.trainer import Trainer

from .evaluate_cli import evaluate_json
from .synthetic import write_folder_dataset
from .test_training import quick_config


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_folder_dataset(tmp_path_factory.mktemp("synthetic"), n_classes=20, per_class=8)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    return write_folder_dataset(tmp_path_factory.mktemp("heldout"), 8, per_class=8, seed=99)


def meta_config(dataset, out, method, **overrides):
    values = dict(way=5, shot=1, query=3, episodes=24, val_every=24, val_episodes=20)
    values.update(val_way=4, val_query=3, precision="fp32", val_fraction=0.25, method=method)
    return quick_config(dataset, out, **{**values, **overrides})


def heldout_accuracy(capsys, checkpoint, heldout, *flags):
    args = ["--checkpoint", str(checkpoint), "--data", str(heldout), "--way", "5"]
    args += ["--query", "3", "--episodes", "40", "--threads", "1", "--no-progress", *flags]
    return evaluate_json(capsys, *args)["accuracy"]


@pytest.mark.parametrize("method", ["maml", "fomaml", "anil"])
def test_each_method_trains_and_its_checkpoint_is_evaluated_fine_tuned(
    method, dataset, heldout, tmp_path, capsys
):
    config = meta_config(dataset, tmp_path / "run", method)
    trainer = Trainer(config)
    untrained = save_checkpoint(trainer.checkpoint(0.0, {}), tmp_path / "untrained.pt")
    best = trainer.train()

    payload = torch.load(best, weights_only=True)  # plain tensors and primitives only
    assert payload["metadata"]["method"] == method
    head = payload["classifier_head"]
    assert head["weight"].shape == (5, 64) and head["bias"].shape == (5,)
    checkpoint = load_checkpoint(best)
    assert checkpoint.method == method and checkpoint.training_config["inner_lr"] == 0.4

    before = heldout_accuracy(capsys, untrained, heldout)
    after = heldout_accuracy(capsys, best, heldout)
    with capsys.disabled():
        print(f"{method}: held-out 5-way 1-shot fine-tuned {before:.3f} -> {after:.3f}")
    assert after > before + 0.05, (before, after)
    assert after > 0.4  # chance is 0.2
    # The same weights as the service uses them: nearest prototype of the embeddings.
    assert heldout_accuracy(capsys, best, heldout, "--finetune-steps", "0") > 0.4


def test_more_classes_than_the_head_has_are_refused(dataset, tmp_path, capsys):
    best = Trainer(meta_config(dataset, tmp_path / "run", "fomaml", episodes=2)).train()
    args = ["evaluate", "--checkpoint", str(best), "--data", str(dataset), "--way", "6"]
    args += ["--classes", "all"]
    from training.cli import main

    assert main([*args, "--query", "3", "--episodes", "2", "--no-progress"]) == 2
    assert "head has 5 outputs: it evaluates at most 5-way" in capsys.readouterr().err
    with pytest.raises(ValueError, match="pass --val-way 3"):
        Trainer(meta_config(dataset, tmp_path / "other", "maml", way=3, val_way=4))


def episode(n_way=4):
    torch.manual_seed(0)
    images = torch.randn(2 * n_way, 1, 28, 28)
    labels = torch.arange(n_way).repeat(2)
    return images, labels[:n_way], labels[n_way:]


def meta_gradient(method):
    torch.manual_seed(1)
    learner = MetaLearner(build_encoder(EncoderConfig()), 64, 4, method, 2, 0.4)
    loss, _ = learner(*episode())
    loss.backward()
    return {n: p.grad.clone() for n, p in learner.named_parameters()}, learner


def test_second_order_maml_differs_from_first_order_and_anil_adapts_only_the_head():
    maml, _ = meta_gradient("maml")
    fomaml, _ = meta_gradient("fomaml")
    assert all(torch.isfinite(g).all() for g in maml.values())
    assert not torch.allclose(
        maml["encoder.blocks.0.0.weight"], fomaml["encoder.blocks.0.0.weight"]
    )
    _, anil = meta_gradient("anil")
    images, support_labels, _ = episode()
    adapted = anil.adapt(images[:4], support_labels, 4, 2, graph=False)
    for name, value in anil.named_parameters():
        assert (adapted[name] is value) == name.startswith("encoder."), name


def test_the_service_serves_a_maml_checkpoint_through_the_prototype_head(dataset, tmp_path):
    """The service embeds with the backbone and classifies by nearest prototype: a MAML-family
    checkpoint loads like any other; its head is only for the trainer's evaluator."""
    best = Trainer(meta_config(dataset, tmp_path / "run", "anil", episodes=2)).train()
    encoder = load_encoder("maml", best, "cpu", batch_size=8, max_pixels=10**6)
    assert isinstance(encoder, ImageEncoder)
    pixels = np.zeros((3, 28, 28), dtype=np.uint8)
    assert encoder.embed_pixels(pixels).shape == (3, 64)
    assert encoder.card()["metadata"]["method"] == "anil"


def test_protonet_queries_of_no_support_class_only_feed_the_ranking_loss():
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(hidden_channels=8, out_channels=8)).eval()
    images, support_labels, query_labels = episode()  # eval: batch norm sees no batch
    unknown_images = torch.randn(3, 1, 28, 28)
    all_images = torch.cat([images, unknown_images])
    with_unknown = torch.cat([query_labels, torch.full((3,), UNKNOWN_LABEL)])
    closed_loss, closed_accuracy = PrototypeLearner(encoder, None)(
        images, support_labels, query_labels
    )
    ignored, accuracy = PrototypeLearner(encoder, None)(all_images, support_labels, with_unknown)
    assert torch.isclose(ignored, closed_loss) and accuracy == closed_accuracy
    weighted, _ = PrototypeLearner(encoder, None, 2.0)(all_images, support_labels, with_unknown)
    embeddings = encoder(all_images)
    ranking = open_set_ranking_loss(embeddings[:4], support_labels, embeddings[4:8], embeddings[8:])
    assert torch.isclose(weighted, closed_loss + 2.0 * ranking, atol=1e-5)
