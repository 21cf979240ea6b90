"""SNAIL beside ProtoNet and the MAML family: the network, its training, its checkpoint."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from protonet.checkpoint import load_checkpoint, save_checkpoint
from protonet.model import EncoderConfig, build_encoder
from service.collections.encoder import ImageEncoder, load_encoder
from training.cli import main
from training.meta_learning import SnailLearner, learner_from_checkpoint
from training.snail import CausalConv, Snail
from training.trainer import Trainer

from .evaluate_cli import evaluate_json
from .synthetic import write_folder_dataset
from .test_meta_learning import meta_config


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_folder_dataset(tmp_path_factory.mktemp("synthetic"), n_classes=20, per_class=8)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: two on a busy 2-core machine make these tiny steps 50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_logits_have_one_column_per_episode_class():
    torch.manual_seed(0)
    network = Snail(feature_dim=16, way=5, sequence_length=6)
    support, queries = torch.randn(5, 16), torch.randn(7, 16)
    assert network(support, torch.arange(5), queries, 5).shape == (7, 5)
    # Fewer classes than --way: the first label slots and outputs.
    assert network(support[:3], torch.arange(3), queries, 3).shape == (7, 3)
    with pytest.raises(ValueError, match="at most 5-way"):
        network(torch.randn(6, 16), torch.arange(6), queries, 6)


def test_the_causal_convolution_is_a_left_padded_dilated_conv1d():
    torch.manual_seed(0)
    for dilation in (1, 2, 4, 8):
        conv = CausalConv(3, 4, dilation)
        sequence = torch.randn(6, 3)
        support, _ = conv(sequence, sequence[:0])
        kernel = torch.stack([conv.past.weight, conv.now.weight], dim=2)  # [out, in, 2]
        padded = F.pad(sequence.T[None], (dilation, 0))
        expected = F.conv1d(padded, kernel, conv.now.bias, dilation=dilation)[0].T
        torch.testing.assert_close(support, expected)


def test_each_query_is_answered_as_the_last_item_of_its_own_sequence():
    """The support is computed once per episode; each query's logits are those of the
    sequence support + that query alone, run position by position through every block."""
    torch.manual_seed(0)
    network = Snail(feature_dim=8, way=4, sequence_length=9)
    support, targets, queries = torch.randn(8, 8), torch.arange(4).repeat(2), torch.randn(5, 8)
    logits = network(support, targets, queries, 4)
    labelled, unlabelled = network.inputs(support, targets, queries)
    for j in range(len(queries)):
        sequence, none = torch.cat([labelled, unlabelled[j : j + 1]]), unlabelled[:0]
        for block in network.blocks:
            sequence, none = block(sequence, none)
        expected = F.linear(sequence[-1], network.output.weight, network.output.bias)
        torch.testing.assert_close(logits[j], expected, rtol=1e-4, atol=1e-5)


def test_the_loss_falls_on_tiny_episodes():
    """Four 5-way 1-shot episodes of noisy copies of 10 random patterns, each trained on ten
    times: the loss over them falls (learning to match a query to its support item from
    scratch takes SNAIL thousands of episodes; see README)."""
    torch.manual_seed(0)
    patterns = torch.rand(10, 1, 28, 28)
    episodes = []
    for _ in range(4):
        classes = torch.randperm(10)[:5]
        labels = torch.cat([classes, classes.repeat(3)])
        images = patterns[labels] + 0.3 * torch.randn(len(labels), 1, 28, 28)
        episodes.append((images, labels[:5], labels[5:]))
    encoder = build_encoder(EncoderConfig(hidden_channels=8, out_channels=8))
    learner = SnailLearner(encoder, embedding_dim=8, way=5, shot=1)
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    mean_losses = []
    for _ in range(10):
        losses = []
        for episode in episodes:
            loss, _ = learner(*episode)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        mean_losses.append(np.mean(losses))
    assert mean_losses[-1] < 0.5 * mean_losses[0], mean_losses


def test_a_snail_checkpoint_is_self_describing_and_evaluated_as_validation_read_it(
    dataset, tmp_path, capsys
):
    """Trained by the trainer, the checkpoint rebuilds the network that was trained; the
    evaluate command reads validation's episodes (same classes and seed) to the same accuracy
    with it, and serves the embedding through the prototype head with --finetune-steps 0."""
    trainer = Trainer(meta_config(dataset, tmp_path / "run", "snail"))
    best = trainer.train()  # one validation, at the last episode: best.pt is the last weights

    payload = torch.load(best, weights_only=True)  # plain tensors and primitives only
    assert payload["metadata"]["method"] == "snail"
    assert payload["classifier_head"]["output.weight"].shape == (5, 1253)  # --way outputs
    checkpoint = load_checkpoint(best)
    restored = learner_from_checkpoint(checkpoint, torch.device("cpu"))
    assert isinstance(restored, SnailLearner)
    for name, value in trainer.learner.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[name], value, msg=name)

    validation = checkpoint.metadata["validation"]
    args = ["--checkpoint", str(best), "--data", str(dataset), "--seed", "1", "--way", "4"]
    args += ["--query", "3", "--episodes", str(validation["episodes"]), "--no-progress"]
    own = evaluate_json(capsys, *args)
    assert own["accuracy"] == pytest.approx(validation["accuracy"], abs=1e-6)
    served = evaluate_json(capsys, *args, "--finetune-steps", "0")
    assert served["accuracy"] > 0.4  # chance is 0.25

    encoder = load_encoder("snail", best, "cpu", batch_size=8, max_pixels=10**6)
    assert isinstance(encoder, ImageEncoder)
    assert encoder.embed_pixels(np.zeros((3, 28, 28), dtype=np.uint8)).shape == (3, 64)

    command = ["evaluate", *args[:4], "--no-progress", "--query", "3", "--episodes", "2"]
    assert main([*command, "--way", "6", "--classes", "all"]) == 2
    assert "head has 5 outputs: it evaluates at most 5-way" in capsys.readouterr().err
    assert main([*command, "--way", "4", "--finetune-steps", "3"]) == 2
    assert "does not fine-tune" in capsys.readouterr().err


def test_a_frozen_backbone_stays_the_init_checkpoints_while_the_network_trains(dataset, tmp_path):
    other = Trainer(meta_config(dataset, tmp_path / "other", "snail", seed=5))
    init = save_checkpoint(other.checkpoint(0.0, {}), tmp_path / "init.pt")
    config = meta_config(dataset, tmp_path / "run", "snail", episodes=4, val_every=4)
    trainer = Trainer(replace(config, init=str(init), freeze_encoder=True))
    head_before = {k: v.clone() for k, v in trainer.learner.classifier_head.state_dict().items()}
    best = load_checkpoint(trainer.train())
    # Weights and batch-norm statistics alike: the model version is the init's.
    assert best.version == load_checkpoint(init).version
    assert not torch.equal(best.classifier_head["output.weight"], head_before["output.weight"])
    with pytest.raises(ValueError, match="--method snail, not anil"):
        Trainer(meta_config(dataset, tmp_path / "anil", "anil", freeze_encoder=True))


def test_init_from_a_snail_checkpoint_gives_its_network_too(dataset, tmp_path):
    first = Trainer(meta_config(dataset, tmp_path / "first", "snail", episodes=2, val_every=2))
    start = load_checkpoint(first.train())
    config = meta_config(dataset, tmp_path / "run", "snail", init=str(tmp_path / "first/best.pt"))
    network = Trainer(config).learner.classifier_head.state_dict()
    for name, value in start.classifier_head.items():
        torch.testing.assert_close(network[name], value, msg=name)
    with pytest.raises(ValueError, match="head does not fit this run's"):
        Trainer(replace(config, way=4, out=str(tmp_path / "other")))
