"""An adaptation trained in a child process: the same outcome as in process, its progress
relayed, stopped at once by an exception of the progress callback or by its timeout, and a
failure reported with the child's last words."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from protonet.adaptation import AdaptationConfig, adapt
from service.collections.adaptation_process import _child_environment, train_in_process
from tests.service.helpers import PATIENCE, wait_until

QUICK = AdaptationConfig(steps=30)


def support(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """6 classes of 4 examples: apart in 4 dimensions, spread along 4 others."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(6), 4)
    embeddings = rng.normal(size=(24, 8)).astype(np.float32)
    embeddings[:, :4] += 3 * rng.normal(size=(6, 4)).astype(np.float32)[labels]
    return embeddings, labels.astype(np.int64)


def test_the_childs_outcome_is_the_one_of_the_same_training_in_process():
    embeddings, labels = support()
    reports: list[tuple[int, int, int]] = []
    child = train_in_process(embeddings, labels, QUICK, lambda *r: reports.append(r), 120)
    here = adapt(torch.from_numpy(embeddings), torch.from_numpy(labels), QUICK)
    assert child.held_out.adapted_correct == here.held_out.adapted_correct
    torch.testing.assert_close(child.held_out.scores, here.held_out.scores)
    assert (child.adapter is None) == (here.adapter is None)
    if child.adapter is not None and here.adapter is not None:
        torch.testing.assert_close(child.adapter.up, here.adapter.up)
    done, total, examples = reports[-1]
    assert done == total and examples > 0


def test_an_exception_of_the_progress_callback_stops_the_child():
    embeddings, labels = support()

    class Stop(Exception):
        pass

    def stop(*_report: int) -> None:
        raise Stop

    started = time.monotonic()
    with pytest.raises(Stop):
        train_in_process(embeddings, labels, AdaptationConfig(steps=10**8), stop, 120)
    assert time.monotonic() - started < 60  # not the 10^8 steps


def test_a_child_past_its_timeout_is_killed():
    embeddings, labels = support()
    with pytest.raises(TimeoutError, match="longer than 3 s"):
        train_in_process(embeddings, labels, AdaptationConfig(steps=10**8), lambda *_: None, 3)


def test_a_failing_child_says_why():
    embeddings, labels = support()
    with pytest.raises(RuntimeError, match="at least 2 classes"):
        train_in_process(embeddings, np.zeros_like(labels), QUICK, lambda *_: None, 120)


PARENT = """
import sys
import numpy as np
from protonet.adaptation import AdaptationConfig
from service.collections.adaptation_process import _child_environment, train_in_process
from tests.service.helpers import PATIENCE, wait_until
labels = np.repeat(np.arange(6), 4)
embeddings = np.random.default_rng(0).normal(size=(24, 8)).astype(np.float32)
train_in_process(embeddings, labels, AdaptationConfig(steps=10**8), lambda *_: None, 600)
"""


def children_of(parent: int) -> list[int]:
    """Adaptation processes whose parent is ``parent`` (Linux: read from /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines())
            command = (status.parent / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(fields["PPid"]) == parent and b"adaptation_process" in command:
            found.append(int(status.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_child_whose_service_was_killed_ends_by_itself():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], env=_child_environment())
    try:
        children = wait_until(lambda: children_of(parent.pid), PATIENCE, "the child started")
    finally:
        parent.kill()
        parent.wait()
    wait_until(
        lambda: not Path(f"/proc/{children[0]}").exists() or zombie(children[0]),
        PATIENCE,
        "the orphaned child ended",
    )


def zombie(pid: int) -> bool:
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
