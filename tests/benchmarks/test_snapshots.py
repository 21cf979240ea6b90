"""The snapshot benchmark runs (smoke size): every step answers, memory stays within the
target, and the restored copies answer the queries exactly as the original."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_the_snapshot_benchmark_runs_at_a_small_size():
    script = REPO_ROOT / "benchmarks" / "snapshots.py"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PROTONET_")}
    result = subprocess.run(
        [sys.executable, str(script), "--examples", "300", "--queries", "40"],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [line for line in result.stdout.splitlines() if line.endswith("met) |")]
    assert len(steps) == 4 and all("(met)" in step for step in steps), result.stdout
    agreements = [line for line in result.stdout.splitlines() if "same top-5 labels" in line]
    assert len(agreements) == 2 and all("labels 40/40" in line for line in agreements)
    assert "distances equal 40/40" in agreements[0]  # the embeddings travelled
