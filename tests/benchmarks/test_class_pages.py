"""The class-pages benchmark runs (smoke size): every kind of request answers, and every
class is listed once through the client."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_the_class_pages_benchmark_runs_at_a_small_size():
    script = REPO_ROOT / "benchmarks" / "class_pages.py"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PROTONET_")}
    result = subprocess.run(
        [sys.executable, str(script), "--classes", "2500", "--requests", "3"],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [
        line for line in result.stdout.splitlines() if line.startswith("| ") and "ms" not in line
    ]
    assert len(rows) == 5, result.stdout  # the five kinds of request
    assert "every class through the client (pages of 1000): 2,500 in" in result.stdout
