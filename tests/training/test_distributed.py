"""Distributed training under torchrun: two CPU processes (gloo) train the model that one
process trains on the same episodes with the gradients averaged; resume; disjoint streams."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from protonet.checkpoint import load_checkpoint
from training.distributed import augment_seed, episode_seed
from training.episodes import EpisodeSampler, EpisodeShape
from training.imageset import ImageSet
from training.trainer import Trainer

from .synthetic import write_folder_dataset
from .test_training import quick_config

REPO = Path(__file__).resolve().parents[2]
STEPS = 4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_folder_dataset(tmp_path_factory.mktemp("synthetic"), n_classes=12, per_class=6)


def tiny_config(dataset, out, **overrides):
    """Few small episodes, fp32 (bf16 rounding would hide the comparison), one validation."""
    values = dict(way=4, shot=1, query=2, episodes=STEPS, val_every=STEPS, val_episodes=10)
    values.update(val_way=3, val_query=2, precision="fp32", val_fraction=0.25)
    return quick_config(dataset, out, **{**values, **overrides})


def torchrun(config, processes=2):
    """``torchrun --standalone --nproc-per-node N -m training train`` with ``config``'s flags."""
    flags = [
        f"--{name.replace('_', '-')}={value}"
        for name, value in config.to_dict().items()
        if not isinstance(value, bool)
    ]
    flags += ["--no-progress"] + (["--resume"] if config.resume else [])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={processes}", "-m", "training", "train", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def averaged_run(config, segments, world_size=2):
    """One process: each step, the mean of the ranks' episode losses, one Adam step. Each
    segment ``(first_step, steps)`` re-seeds the rank streams as a (resumed) run does."""
    reference = Trainer(config)
    shape = EpisodeShape(config.way, config.shot, config.query)
    for first_step, steps in segments:
        samplers = [
            EpisodeSampler(
                reference.data.train.items, shape, episode_seed(config.seed, first_step, r)
            )
            for r in range(world_size)
        ]
        for _ in range(steps):
            losses = [reference.learner(*reference._batch(s.sample()))[0] for s in samplers]
            reference.optimizer.zero_grad()
            (sum(losses) / world_size).backward()
            reference.optimizer.step()
            reference.scheduler.step()
    return reference


def assert_same_weights(encoder, head, reference):
    """Parameters match (batch-norm running statistics differ by design: DDP keeps rank 0's)."""
    for name, value in reference.learner.named_parameters():
        if name.startswith("encoder."):
            stored = encoder[name.removeprefix("encoder.")]
        else:
            stored = head[name.removeprefix("classifier_head.")]
        torch.testing.assert_close(stored, value.detach(), rtol=1e-4, atol=1e-5, msg=name)


def val_episodes(out):
    records = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    return [r["episode"] for r in records if r["kind"] == "val"]


def test_two_processes_train_the_single_process_model_with_averaged_gradients(dataset, tmp_path):
    config = tiny_config(dataset, tmp_path / "run")
    torchrun(config)
    checkpoint = load_checkpoint(tmp_path / "run" / "best.pt")
    assert checkpoint.metadata["world_size"] == 2
    assert checkpoint.metadata["backend"] == "gloo"
    assert checkpoint.metadata["steps_trained"] == STEPS
    assert checkpoint.metadata["episodes_trained"] == 2 * STEPS
    assert val_episodes(tmp_path / "run") == [STEPS]  # rank 0 alone validated and logged

    reference = averaged_run(replace(config, out=str(tmp_path / "reference")), [(0, STEPS)])
    assert_same_weights(checkpoint.state_dict, checkpoint.classifier_head, reference)
    # Not trivially equal: one rank's episodes alone train other weights.
    alone = averaged_run(replace(config, out=str(tmp_path / "alone")), [(0, STEPS)], 1)
    first = next(alone.encoder.parameters()).detach()
    assert not torch.allclose(checkpoint.state_dict["blocks.0.0.weight"], first, atol=1e-5)


def test_a_two_process_maml_run_resumes_where_it_stopped(dataset, tmp_path):
    """Resumed at step 2, each rank's stream is re-derived from the step: the result is the
    averaged-gradient run over those episodes (second-order MAML through DDP)."""
    out = tmp_path / "run"
    config = tiny_config(dataset, out, method="maml", val_every=2)
    torchrun(replace(config, episodes=2))
    torchrun(replace(config, resume=True))
    checkpoint = load_checkpoint(out / "best.pt")
    assert checkpoint.method == "maml" and checkpoint.metadata["world_size"] == 2
    assert val_episodes(out) == [2, 4]
    state = torch.load(out / "resume_state.pt", weights_only=True)
    assert (state["episode"], state["episodes_seen"]) == (4, 8)
    reference = averaged_run(replace(config, out=str(tmp_path / "ref")), [(0, 2), (2, 2)])
    assert_same_weights(state["encoder"], state["classifier_head"], reference)  # the last weights


def test_two_processes_train_the_averaged_gradient_snail_model(dataset, tmp_path):
    """SNAIL's network and backbone through DDP: the checkpoint of a 2-process run is the
    one-process model trained on both ranks' episodes with the losses averaged."""
    config = tiny_config(dataset, tmp_path / "run", method="snail", episodes=2, val_every=2)
    torchrun(config)
    checkpoint = load_checkpoint(tmp_path / "run" / "best.pt")
    assert checkpoint.method == "snail" and checkpoint.metadata["world_size"] == 2
    reference = averaged_run(replace(config, out=str(tmp_path / "reference")), [(0, 2)])
    assert_same_weights(checkpoint.state_dict, checkpoint.classifier_head, reference)


def test_rank_episode_streams_are_disjoint_and_rank_zero_is_the_single_process_stream():
    images = ImageSet(
        pixels=np.zeros((600, 28, 28), dtype=np.uint8),
        labels=np.repeat(np.arange(30), 20),
        class_names=[f"c{i}" for i in range(30)],
        class_groups=["a"] * 30,
    )
    shape = EpisodeShape(5, 1, 2)

    def stream(seed):
        sampler = EpisodeSampler(images, shape, seed=seed)
        episodes = (sampler.sample() for _ in range(300))
        return [tuple(np.concatenate([e.support_indices, e.query_indices])) for e in episodes]

    streams = [stream(episode_seed(7, 100, rank)) for rank in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not set(streams[i]) & set(streams[j]), (i, j)
    assert stream([7, 100]) == streams[0]  # rank 0 draws what one process always drew
    assert augment_seed(7, 0) == 7 and len({augment_seed(7, r) for r in range(4)}) == 4
