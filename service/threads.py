"""How many threads the numeric libraries get, decided without importing them.

torch's intra-op pool and oneDNN, which its convolutions use, run on OpenMP. OpenMP's thread
count is per thread: ``torch.set_num_threads`` in one thread leaves oneDNN in every other
thread (the encoder's, the rank stage's) at one thread per core, and their spinning threads
then fight the event loop and other worker processes for the cores (measured: throughput
swung from ~300 to ~60 queries/s between runs of benchmarks/scale_out.py). The environment
variable reaches every thread, so ``python -m service`` sets ``OMP_NUM_THREADS`` before torch
is imported (the first thing service/__main__.py does).
"""

from __future__ import annotations

import os


def default_threads(workers: int = 1) -> int:
    """All the cores this process may use but one: that one is left to the event loop and
    image decoding (Python, under the GIL), so torch's threads do not fight them for it.
    With several worker processes on the host, each gets its share of the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if workers > 1:
        return max(1, (cores or 1) // workers)
    return max(1, (cores or 1) - 1)


def set_thread_environment(threads: int | None, workers: int = 1) -> int:
    """Before torch is imported: every OpenMP thread team of this process (and of worker
    processes started from it) gets ``threads`` threads (unless OMP_NUM_THREADS is set), and
    idle OpenMP threads sleep instead of spinning. Returns the number."""
    threads = threads or default_threads(workers)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        # numpy's BLAS too (the IVF index's softmax estimate multiplies matrices with it).
        os.environ.setdefault(variable, str(threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return threads


def thread_environment_from_variables() -> None:
    """:func:`set_thread_environment` from ``PROTONET_TORCH_THREADS`` and ``PROTONET_WORKERS``
    as they are in the environment, read before the settings can be (their validation, which
    reports bad values, needs imports that load torch)."""

    def number(name: str, default: int | None) -> int | None:
        try:
            value = int(os.environ.get(name, ""))
        except ValueError:
            return default
        return value if value > 0 else default

    set_thread_environment(
        number("PROTONET_TORCH_THREADS", None), number("PROTONET_WORKERS", 1) or 1
    )
