"""The worst-case-requests benchmark runs (smoke sizes): every case answers, none with a 5xx,
and the image longer than the side limit is refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def statuses(report: str) -> dict[str, str]:
    """The report's table: each big request's name -> its status."""
    cells = [line.split(" | ") for line in report.splitlines() if line.startswith("| ")]
    return {row[0].removeprefix("| "): row[1] for row in cells[1:]}  # after the heading


@pytest.mark.slow
def test_the_worst_case_benchmark_runs_in_smoke_mode():
    script = REPO_ROOT / "benchmarks" / "worst_case_requests.py"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PROTONET_")}
    result = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = statuses(result.stdout)
    assert rows["8 texts of 1000 characters"] == "200"
    assert rows["2 images of 1x65536"] == "422"  # longer than PROTONET_MAX_IMAGE_SIDE
    assert len(rows) == 5, result.stdout
