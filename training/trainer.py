"""Episodic meta-training of the Prototypical Network encoder."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from protonet.checkpoint import Checkpoint, atomic_torch_save, load_checkpoint, save_checkpoint
from protonet.embedding import pick_device
from protonet.model import EncoderConfig, build_encoder, embedding_dim
from protonet.open_set import DEFAULT_SCORE
from protonet.preprocessing import InputSpec, pixels_to_tensor
from training import distributed, folder, meta_learning, omniglot
from training.augment import random_rotate_scale, random_shift
from training.checks import ClassSet, fit_to_data
from training.config import TrainConfig, validate
from training.episodes import Episode, EpisodeSampler, EpisodeShape
from training.evaluate import EpisodeItems, evaluate_open_set, image_items
from training.plots import plot_learning_curve

BEST_CHECKPOINT = "best.pt"
RESUME_STATE = "resume_state.pt"
METRICS_LOG = "metrics.jsonl"
LEARNING_CURVE = "learning_curve.png"
CONFIG_FILE = "config.json"
# What a run writes into --out: what --overwrite deletes and a failed run takes back.
RUN_FILES = (BEST_CHECKPOINT, RESUME_STATE, METRICS_LOG, LEARNING_CURVE, CONFIG_FILE)


@dataclass(frozen=True)
class TrainingData:
    train: ClassSet
    validation: ClassSet
    fingerprint: str


def _folder_data(config: TrainConfig, spec: InputSpec, cache_dir: Path | None) -> TrainingData:
    images, fingerprint = folder.load_folder(Path(config.data), spec, cache_dir, config.progress)
    train, validation = folder.split_classes(images, config.val_fraction, config.seed)
    n, n_val = images.n_classes, validation.n_classes
    return TrainingData(
        ClassSet(train, "training", f"{n} minus {n_val} held out for validation"),
        ClassSet(validation, "validation", f"{100 * config.val_fraction:g}% of {n}"),
        fingerprint,
    )


def load_training_data(config: TrainConfig, spec: InputSpec) -> TrainingData:
    """Train and validation classes for ``config.split``; evaluation data is never touched."""
    data_dir = Path(config.data)
    cache_dir = Path(config.cache_dir) if config.cache_dir else None
    if config.split == "folder":
        return _folder_data(config, spec, cache_dir)
    if not omniglot.is_omniglot_dir(data_dir) and folder.holds_class_folders(data_dir):
        # Not "download Omniglot into it": a folder of class folders is the user's own data.
        raise ValueError(
            f"{data_dir} holds folders of images, not the Omniglot zips that --split "
            f"{config.split} reads: to train on your own classes, add --split folder"
        )
    if config.split == "lake":
        train, validation = omniglot.lake_train_val(data_dir, spec, cache_dir, config.progress)
        train_origin = "the background alphabets outside validation, at 4 rotations each"
        validation_origin = "the held-out background alphabets"
        subsets: tuple[str, ...] = ("background",)
    else:
        train = omniglot.load_split(data_dir, "vinyals-train", spec, cache_dir, config.progress)
        validation = omniglot.load_split(data_dir, "vinyals-val", spec, cache_dir, config.progress)
        train_origin, validation_origin = "the Vinyals train split", "the Vinyals val split"
        subsets = omniglot.SUBSETS
    return TrainingData(
        ClassSet(train, "training", train_origin),
        ClassSet(validation, "validation", validation_origin),
        omniglot.data_fingerprint(data_dir, subsets, config.split),
    )


def check_out_dir(config: TrainConfig) -> None:
    """Refuse to mix two runs in one ``--out``: a rerun would append to the old metrics."""
    out = Path(config.out)
    if config.resume:
        if not (out / RESUME_STATE).is_file():
            raise FileNotFoundError(f"--resume: {out / RESUME_STATE} not found")
        return
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not config.overwrite:
        raise ValueError(
            f"{out} already holds a training run ({', '.join(existing)}): pass --resume to "
            "continue it or --overwrite to replace it (or choose another --out)"
        )


def prepare_out_dir(config: TrainConfig) -> Path | None:
    """Create ``--out`` (after deleting an old run's files under ``--overwrite``); return the
    topmost directory this created, or None where ``--out`` already existed."""
    out = Path(config.out)
    if config.overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    missing = [path for path in (out, *out.parents) if not path.exists()]
    out.mkdir(parents=True, exist_ok=True)
    return missing[-1] if missing else None


def discard_run(out: Path, created: Path | None) -> None:
    """Take back what a run that wrote no checkpoint left: the directories it created, or,
    in a directory that was there before, only its own files (never anything else there)."""
    if created is None:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        return
    shutil.rmtree(out, ignore_errors=True)
    directory = out.parent
    while created in (directory, *directory.parents):  # created parents, if empty now
        try:
            directory.rmdir()
        except OSError:
            break
        directory = directory.parent


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where the hardware runs it natively (about 2x faster here), else fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name() -> str:
    """The CPU model (``platform.processor()`` is empty on most Linux systems)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def episode_items(episode: Episode, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """An episode's item indices ``[n_support + n_query + n_unknown]`` (support first, then
    known queries, then unknown ones) and query labels ``[n_query + n_unknown]`` on
    ``device``, the unknown queries labelled ``UNKNOWN_LABEL``."""
    indices = np.concatenate(
        [episode.support_indices, episode.query_indices, episode.unknown_indices]
    )
    unknown = np.full(len(episode.unknown_indices), meta_learning.UNKNOWN_LABEL)
    query_labels = np.concatenate([episode.query_labels, unknown])
    return torch.from_numpy(indices), torch.from_numpy(query_labels).to(device)


class Trainer:
    """Owns the model, optimiser, sampler and logs of one training run."""

    def __init__(self, config: TrainConfig) -> None:
        # Every check that can fail runs before --out is touched and before the first episode.
        validate(config)
        check_out_dir(config)
        self.out = Path(config.out)
        torch.set_num_threads(config.threads or distributed.threads_per_process())
        torch.manual_seed(config.seed)
        # Under torchrun: join the process group (one process: no group, device unchanged).
        self.dist, self.device = distributed.start(pick_device(config.device))
        self.data = self._load_data(config)
        config, notes = fit_to_data(config, self.data.train, self.data.validation)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        self.config = config  # with the validation settings that fit the data filled in
        self.encoder_config = self._encoder_config()
        self.encoder = self._build_encoder()
        self.amp_dtype = self._amp_dtype()
        self.learner = self._build_learner()
        meta_learning.check_validation_way(self.learner, config.val_way)
        self.init_version = self._load_init(config.init) if config.init else None
        # The episode's (loss, accuracy); in DDP for several processes: gradients averaged.
        if config.freeze_encoder:  # no gradients, no Adam steps, running statistics kept
            self.encoder.requires_grad_(False)
        self.model = distributed.wrap(self.learner, self.dist, self.device)
        trained = [p for p in self.learner.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trained, lr=config.lr)
        self.scheduler = self._make_scheduler()
        self.commit = git_commit()  # the code that starts training, not whatever HEAD is later
        self.episode = 0  # optimizer steps: each trains one episode per process
        self.episodes_seen = 0  # episodes of all processes together
        self.best_score = -1.0  # the best validation's selection figure
        self.validations_without_improvement = 0
        self.elapsed_before = 0.0
        if config.resume:
            self._load_resume_state()

    # What differs between image and text training (TextTrainer overrides these).

    def _load_data(self, config: TrainConfig) -> TrainingData:
        self.spec = InputSpec(image_size=config.image_size, channels=config.channels)
        seed = distributed.augment_seed(config.seed, self.dist.rank)  # each rank its own
        self.augment_generator = torch.Generator().manual_seed(seed)
        data = load_training_data(config, self.spec)
        self.train_pixels = torch.from_numpy(data.train.items.pixels)
        return data

    def _encoder_config(self) -> EncoderConfig:
        return EncoderConfig(
            in_channels=self.config.channels,
            hidden_channels=self.config.hidden_channels,
            out_channels=self.config.out_channels,
        )

    def _build_encoder(self) -> nn.Module:
        encoder = build_encoder(self.encoder_config).to(self.device)
        return encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def _amp_dtype(self) -> torch.dtype | None:
        return autocast_dtype(self.config.precision, self.device)

    def _build_learner(self) -> meta_learning.EpisodeLearner:
        """What turns an episode into its (loss, accuracy) for ``--method``."""
        config = self.config
        meta = config.method != meta_learning.PROTONET  # only a head over it needs the width
        dim = embedding_dim(self.encoder_config, config.image_size) if meta else 0
        learner = meta_learning.build_learner(
            config.method,
            self.encoder,
            dim,
            config.way,
            config.shot,
            config.inner_steps,
            config.inner_lr,
            self.amp_dtype,
            config.open_set_weight if config.unknown_way else 0.0,
            config.finetune_steps,
        )
        return learner.to(self.device)

    def _validation_items(self) -> EpisodeItems:
        """The validation classes' items as the learner reads them (embedded in eval mode)."""
        return image_items(self.data.validation.items, self.spec, self.encoder)

    def _model_fields(self) -> dict[str, Any]:
        """The checkpoint's fields that say what the encoder reads."""
        return {"input_spec": self.spec}

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        if self.config.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=self.config.episodes, eta_min=self.config.lr * 0.01
            )
        return torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=self.config.lr_step, gamma=self.config.lr_gamma
        )

    def _load_init(self, path: str) -> str:
        """Copy ``--init``'s encoder weights into the encoder, and its head (MAML family,
        SNAIL) where it was trained by this run's method; return the encoder's model version.
        Refused unless the checkpoint's architecture and input are this run's."""
        checkpoint = load_checkpoint(path, modality=None)
        wanted = {"encoder_config": self.encoder_config, **self._model_fields()}
        for name, value in wanted.items():
            if getattr(checkpoint, name) != value:
                raise ValueError(
                    f"--init {path}: its {name} is {getattr(checkpoint, name)}, this run's is "
                    f"{value}; start from a checkpoint of the same architecture and input"
                )
        self.encoder.load_state_dict(checkpoint.state_dict)
        if checkpoint.method == self.config.method and checkpoint.classifier_head:
            try:
                self.learner.load_head(checkpoint.classifier_head)
            except RuntimeError:  # load_state_dict's shape mismatch, a page long
                raise ValueError(
                    f"--init {path}: its {checkpoint.method} head does not fit this run's; "
                    "train with the --way and --shot it was trained with"
                ) from None
        return checkpoint.version

    def _load_resume_state(self) -> None:
        state = torch.load(self.out / RESUME_STATE, map_location=self.device, weights_only=True)
        self.encoder.load_state_dict(state["encoder"])
        self.learner.load_head(state.get("classifier_head", state.get("head", {})))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.episode = int(state["episode"])
        self.episodes_seen = int(state.get("episodes_seen", self.episode))
        # Runs saved before open-set training called the selection figure best_accuracy.
        self.best_score = float(state.get("best_score", state.get("best_accuracy", -1.0)))
        self.validations_without_improvement = int(state["validations_without_improvement"])
        self.elapsed_before = float(state["elapsed_seconds"])

    def _save_resume_state(self, elapsed: float) -> None:
        atomic_torch_save(
            {
                "encoder": self.encoder.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "episode": self.episode,
                "best_score": self.best_score,
                "validations_without_improvement": self.validations_without_improvement,
                "elapsed_seconds": elapsed,
                "classifier_head": self.learner.head_state(),
                "episodes_seen": self.episodes_seen,
            },
            self.out / RESUME_STATE,
        )

    def _batch(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        indices, query_labels = episode_items(episode, self.device)
        images = pixels_to_tensor(self.train_pixels[indices], self.spec)
        images = random_rotate_scale(
            images, self.config.augment_rotate, self.config.augment_scale, self.augment_generator
        )
        images = random_shift(images, self.config.augment_shift, self.augment_generator)
        images = images.to(self.device)
        images = images.contiguous(memory_format=torch.channels_last)
        support_labels = torch.from_numpy(episode.support_labels).to(self.device)
        return images, support_labels, query_labels

    def train_step(self, episode: Episode) -> tuple[float, float]:
        """One episode: the method's loss on it (meta_learning.py), Adam step. Under torchrun
        the gradients are the average over every process's episode."""
        images, support_labels, query_labels = self._batch(episode)
        loss, accuracy = self.model(images, support_labels, query_labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.item(), accuracy.item()

    def validate(self) -> dict[str, float]:
        """Validation's ``accuracy`` and ``ci95``, for open-set runs its ``auroc`` and
        ``auroc_ci95`` too, and ``selection``: the figure the best checkpoint is chosen by."""
        config = self.config
        shape = EpisodeShape(config.val_way, config.val_shot, config.val_query)
        validation = self._validation_items()
        result = self.learner.evaluate(validation, shape, config.val_episodes, config.seed + 1)
        scores = {"accuracy": result.accuracy, "ci95": result.ci95, "selection": result.accuracy}
        if config.unknown_way:
            scores |= self._open_set_validation(validation.embeddings, result.accuracy)
        return scores

    def _open_set_validation(self, embeddings: torch.Tensor, accuracy: float) -> dict[str, float]:
        """AUROC of the served score on open-set validation episodes (as many unknown classes
        as known, from their alphabet with --within-alphabet). Open-set runs are selected on
        accuracy + AUROC: a ranking bought with accuracy is not wanted."""
        c = self.config
        result = evaluate_open_set(
            embeddings,
            self.data.validation.items,
            EpisodeShape(c.val_way, c.val_shot, c.val_query, c.val_way),
            DEFAULT_SCORE,
            n_episodes=c.val_episodes,
            seed=c.seed + 1,
            within_group=c.within_alphabet,
        )
        return {
            "auroc": result.auroc,
            "auroc_ci95": result.auroc_ci95,
            "selection": accuracy + result.auroc,
        }

    def checkpoint(self, wall_seconds: float, validation: dict[str, Any]) -> Checkpoint:
        return Checkpoint(
            encoder_config=self.encoder_config,
            **self._model_fields(),
            state_dict={k: v.detach().cpu().clone() for k, v in self.encoder.state_dict().items()},
            training_config=self.config.to_dict(),
            data_fingerprint=self.data.fingerprint,
            classifier_head=self.learner.head_state(),
            metadata={
                **self._split_metadata(),
                "method": self.config.method,
                "initialized_from": self.init_version,
                "world_size": self.dist.world_size,
                "backend": self.dist.backend,
                "seed": self.config.seed,
                "commit": self.commit,
                "episodes_trained": self.episodes_seen,
                "steps_trained": self.episode,
                "training_wall_seconds": round(wall_seconds, 1),
                "validation": validation,
                "train_classes": self.data.train.items.n_classes,
                "validation_classes": self.data.validation.items.n_classes,
                "torch": str(torch.__version__),
                "hardware": f"{cpu_name()}, {os.cpu_count()} cores, device={self.device}",
                "precision": str(self.amp_dtype or torch.float32),
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )

    def _split_metadata(self) -> dict[str, Any]:
        """For folder data, which classes validation held out: evaluation defaults to them.
        (Omniglot's held-out classes follow from the split's name.)"""
        if self.config.split != "folder":
            return {}
        return {
            "data_path": str(Path(self.config.data).resolve()),
            "held_out_classes": self.data.validation.items.class_names,
        }

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with open(self.out / METRICS_LOG, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def _should_stop(self, elapsed: float, cpu_seconds: float) -> bool:
        config = self.config
        if self.episode >= config.episodes:
            return True
        if config.max_minutes and elapsed >= config.max_minutes * 60:
            return True
        if config.max_cpu_minutes and cpu_seconds >= config.max_cpu_minutes * 60:
            return True
        return bool(config.patience) and self.validations_without_improvement >= config.patience

    def _after_validation(self, elapsed: float) -> str:
        scores = self.validate()
        selection = scores.pop("selection")
        improved = selection > self.best_score
        self._log(
            {"kind": "val", "episode": self.episode, **scores, "elapsed_seconds": round(elapsed, 1)}
        )
        if improved:
            self.best_score = selection
            self.validations_without_improvement = 0
            c = self.config
            validation = {
                "way": c.val_way,
                "shot": c.val_shot,
                "query": c.val_query,
                "episodes": c.val_episodes,
                **scores,
                "episode": self.episode,
            }
            if c.unknown_way:
                validation |= {"unknown_way": c.val_way, "within_alphabet": c.within_alphabet}
            save_checkpoint(self.checkpoint(elapsed, validation), self.out / BEST_CHECKPOINT)
        else:
            self.validations_without_improvement += 1
        self._save_resume_state(elapsed)
        plot_learning_curve(self.out / METRICS_LOG, self.out / LEARNING_CURVE)
        auroc = f" AUROC {scores['auroc']:.3f}" if "auroc" in scores else ""
        return f"{100 * scores['accuracy']:.2f}%{auroc}" + (" *" if improved else "")

    def _validate_and_show(self, elapsed: float, bar: tqdm, shown: dict[str, str]) -> None:
        """Validate, and show the result in the bar at once: not at the next training record,
        which the last validation never gets."""
        shown["val"] = self._after_validation(elapsed)
        bar.set_postfix(shown)

    def train(self) -> Path:
        """Train until the episode budget, time budget or early stop; return the best checkpoint.

        A run that fails or is interrupted before its first checkpoint leaves nothing behind,
        so rerunning it needs no --overwrite."""
        # Every rank has checked --out (and read --resume's state) before rank 0 touches it.
        distributed.barrier(self.dist)
        created = prepare_out_dir(self.config) if self.dist.is_main else None
        try:
            best = self._train()
            distributed.barrier(self.dist)  # the other ranks return once best.pt is written
            return best
        except BaseException:
            if self.dist.is_main and not (self.out / BEST_CHECKPOINT).exists():
                discard_run(self.out, created)
            raise
        finally:
            distributed.stop(self.dist)

    def _train(self) -> Path:
        config = self.config
        if self.dist.is_main:
            (self.out / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
        sampler = EpisodeSampler(
            self.data.train.items,
            EpisodeShape(config.way, config.shot, config.query, config.unknown_way),
            seed=distributed.episode_seed(config.seed, self.episode, self.dist.rank),
            within_group=config.within_alphabet,
        )
        self.encoder.train(not config.freeze_encoder)
        start = time.perf_counter() - self.elapsed_before
        # CPU time of this process from here (a resumed run starts its CPU budget afresh).
        cpu_start = time.process_time()
        losses: list[float] = []
        accuracies: list[float] = []
        shown = {"loss": "-", "acc": "-", "val": "-"}  # the bar's postfix
        bar = tqdm(
            total=config.episodes,
            initial=self.episode,
            desc="training",
            unit="ep",
            disable=not config.progress or not self.dist.is_main,
            dynamic_ncols=True,
        )
        while not distributed.agree(
            self.dist,
            self._should_stop(time.perf_counter() - start, time.process_time() - cpu_start),
        ):
            loss, accuracy = self.train_step(sampler.sample())
            self.episode += 1
            self.episodes_seen += self.dist.world_size
            losses.append(loss)
            accuracies.append(accuracy)
            bar.update()
            if self.episode % 50 == 0:
                record = {
                    "kind": "train",
                    "episode": self.episode,
                    "loss": float(np.mean(losses)),
                    "accuracy": float(np.mean(accuracies)),
                    "lr": self.scheduler.get_last_lr()[0],
                }
                self._log(record)
                shown |= {"loss": f"{record['loss']:.3f}", "acc": f"{record['accuracy']:.3f}"}
                bar.set_postfix(shown)
                losses.clear()
                accuracies.clear()
            if self.episode % config.val_every == 0 and self.dist.is_main:
                self._validate_and_show(time.perf_counter() - start, bar, shown)
        if (self.episode % config.val_every != 0 or self.best_score < 0) and self.dist.is_main:
            self._validate_and_show(time.perf_counter() - start, bar, shown)
        bar.close()
        return self.out / BEST_CHECKPOINT
