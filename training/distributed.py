"""Distributed meta-training: one model over several processes, launched by ``torchrun``.

``torchrun --nproc-per-node N -m training train ...`` starts N copies of the trainer with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment. Each copy (a rank) draws
its own episodes from its own seeded stream, computes its loss on them, and
``DistributedDataParallel`` averages the gradients before every optimizer step, so a step
with N ranks is one Adam step on the mean loss of N episodes (a meta-batch of N). Rank 0
alone validates and writes ``--out``; the others wait for it where they must.

Without those variables, or with ``WORLD_SIZE=1``, nothing here changes the trainer: no
process group, rank 0's episode stream and augmentation seed are the single-process ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Context:
    """Where this process stands in a run: ``backend`` is ``none`` for one process."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str = "none"

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that validates and writes ``--out``."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def start(device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); return this
    process's context and device (``cuda:LOCAL_RANK`` on CUDA, one card per process)."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Context(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend)  # MASTER_ADDR/MASTER_PORT come from torchrun
    return Context(rank, local_rank, dist.get_world_size(), backend), device


def stop(context: Context) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()


def threads_per_process() -> int:
    """Torch threads for this training process when ``--threads`` is 0: all cores for one
    process; with N processes on a machine, a share each, so they do not oversubscribe the
    cores (``LOCAL_WORLD_SIZE``: processes on this machine)."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def wrap(module: nn.Module, context: Context, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel (it averages gradients in backward), or the
    module itself for one process. DDP broadcasts rank 0's weights when it wraps them."""
    if not context.active:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def barrier(context: Context) -> None:
    if context.active:
        dist.barrier()


def agree(context: Context, flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank: decisions that depend on validation (early stop) or
    on a clock (``--max-minutes``) must be the same everywhere, or one rank leaves the loop
    while the others wait for it in the next gradient average."""
    if not context.active:
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int64)
    if context.backend == "nccl":
        value = value.cuda()
    dist.broadcast(value, src=0)
    return bool(value.item())


def episode_seed(seed: int, step: int, rank: int) -> list[int]:
    """The seed of rank ``rank``'s episode stream from training step ``step`` on.

    Rank 0 keeps the single-process seed ``[seed, step]``; rank r > 0 gets ``[seed, step, r]``.
    NumPy's SeedSequence hashes the whole list, so the streams are independent: two ranks
    repeat an episode no more often than one stream repeats one of its own. Derived from the
    step, the streams are re-created on ``--resume`` without any saved RNG state.
    """
    return [seed, step] if rank == 0 else [seed, step, rank]


def augment_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s augmentation generator (rank 0: ``seed``, as one process)."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
