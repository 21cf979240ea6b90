"""Torch's intra-op threads around work on tiny tensors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one intra-op thread inside: an episode's math is a few tiny tensors, which
    threads only slow down (35x for the prototypes' ``index_add_`` on a busy 2-core machine,
    0.26 against 9.4 ms: the threads wait for a core, then for each other). With OpenMP (torch's
    CPU builds) the setting is the calling thread's own, so other threads keep theirs: a
    service's encoder runs on as configured beside an adaptation job."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
