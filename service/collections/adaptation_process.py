"""An adaptation's training in a process of its own: ``python -m
service.collections.adaptation_process INPUTS OUTPUT``, started by :func:`train_in_process`.

Why a process and not a thread of the service: a thread's training loop holds the interpreter
lock between its tensor operations, and every query's request waits for that lock too; at a
lower scheduling priority the thread would also keep the lock while the CPU serves others. A
child process shares no lock with the service, runs on one torch thread at a lower priority
(``NICENESS``), and is stopped at once (terminated) when its job is cancelled, runs out of time,
or the service stops; a crash or an out-of-memory kill takes the child, never the service.
Starting it costs about 2 s (importing torch) and 250 MB while it runs.

The parent writes the embeddings, labels and configuration to ``INPUTS`` (``.npz``); the child
prints its progress to stdout, one ``done total examples`` line at most every
``PROGRESS_EVERY_SECONDS`` (and at the end), and writes the outcome (protonet/adaptation.py's
:class:`~protonet.adaptation.Adaptation`) to ``OUTPUT`` (``.npz``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from protonet.adaptation import Adaptation, AdaptationConfig, Adapter, HeldOut, adapt

NICENESS = 10  # the child's priority below the service's threads
PROGRESS_EVERY_SECONDS = 0.1
SERVICE_ROOT = Path(__file__).resolve().parent.parent.parent  # what ``import service`` needs

Progress = Callable[[int, int, int], None]


def train_in_process(
    embeddings: np.ndarray,
    labels: np.ndarray,
    config: AdaptationConfig,
    progress: Progress,
    timeout: float,
) -> Adaptation:
    """:func:`protonet.adaptation.adapt` of ``embeddings [n, dim]`` float32 with ``labels [n]``
    int64, in a child process; ``progress`` is called with its reports and may raise to stop
    it (the child is terminated, the exception propagates). :class:`TimeoutError` after
    ``timeout`` seconds; :class:`RuntimeError` with the child's last words if it fails."""
    with tempfile.TemporaryDirectory(prefix="protonet-adaptation-") as directory:
        inputs, output, errors = (Path(directory) / name for name in ("in.npz", "out.npz", "err"))
        np.savez(inputs, embeddings=embeddings, labels=labels, config=_config_json(config))
        with open(errors, "w+b") as stderr:
            child = subprocess.Popen(
                [sys.executable, "-m", __name__, str(inputs), str(output)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=_child_environment(),
                text=True,
            )
            _follow(child, progress, timeout)
            if child.returncode != 0:
                stderr.seek(0)
                last = stderr.read().decode(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"its process ended with {child.returncode}: {' | '.join(last)}")
        return _read_outcome(output)


def _follow(child: subprocess.Popen[str], progress: Progress, timeout: float) -> None:
    """Relay the child's progress until it exits; terminate it on any exception (``progress``'s,
    or the timeout's: a watchdog kills a child past it, however silent)."""
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        child.kill()

    watchdog = threading.Timer(timeout, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        assert child.stdout is not None
        for line in child.stdout:
            done, total, examples = (int(part) for part in line.split())
            progress(done, total, examples)
        child.wait()
        if expired.is_set():
            raise TimeoutError(f"the adaptation took longer than {timeout:g} s")
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()


def _child_environment() -> dict[str, str]:
    """The service's environment, with its packages importable and one OpenMP thread."""
    path = os.pathsep.join(filter(None, [str(SERVICE_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def _config_json(config: AdaptationConfig) -> str:
    return json.dumps(dataclasses.asdict(config))


def _read_outcome(path: Path) -> Adaptation:
    with np.load(path) as saved:
        examples, folds, unadapted, adapted = (int(n) for n in saved["counts"])
        scores, shots = torch.from_numpy(saved["scores"]), torch.from_numpy(saved["shots"])
        held_out = HeldOut(examples, folds, unadapted, adapted, scores, shots)
        adapter = None
        if "down" in saved:
            adapter = Adapter(torch.from_numpy(saved["down"]), torch.from_numpy(saved["up"]))
    return Adaptation(held_out, adapter)


def _write_outcome(path: Path, result: Adaptation) -> None:
    held_out = result.held_out
    counts = [
        held_out.examples,
        held_out.folds,
        held_out.unadapted_correct,
        held_out.adapted_correct,
    ]
    arrays = {"counts": np.array(counts), "scores": held_out.scores, "shots": held_out.shots}
    if result.adapter is not None:
        arrays |= {"down": result.adapter.down, "up": result.adapter.up}
    np.savez(path, **{name: np.asarray(value) for name, value in arrays.items()})  # type: ignore[arg-type]


class _Reports:
    """The child's progress lines, at most one per ``PROGRESS_EVERY_SECONDS`` (and the last).
    They also end a child whose service was killed: its end of the pipe is closed then, and the
    next line fails (BrokenPipeError), well before the job's time is up."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, done: int, total: int, examples: int) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_SECONDS or done == total:
            self.last = now
            print(done, total, examples, flush=True)


def main(argv: list[str]) -> int:
    """The child: read the inputs, adapt, write the outcome."""
    inputs, output = Path(argv[0]), Path(argv[1])
    os.nice(NICENESS)
    torch.set_num_threads(1)
    with np.load(inputs) as saved:
        embeddings, labels = saved["embeddings"], saved["labels"]
        config = AdaptationConfig(**json.loads(str(saved["config"])))
    result = adapt(torch.from_numpy(embeddings), torch.from_numpy(labels), config, _Reports())
    _write_outcome(output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
