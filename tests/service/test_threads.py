"""``python -m service`` fixes the OpenMP thread count for every thread before torch loads."""

from __future__ import annotations

import os

import service.__main__ as entry
from service.threads import default_threads, set_thread_environment


def test_python_m_service_sets_the_openmp_environment(monkeypatch):
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("PROTONET_TORCH_THREADS", "3")
    monkeypatch.setattr(entry.uvicorn, "Config", lambda *args, **kwargs: None)
    monkeypatch.setattr(entry, "run_uvicorn", lambda config: 0)
    monkeypatch.setattr(entry.signal, "signal", lambda *args: None)
    entry.main([])
    assert os.environ["OMP_NUM_THREADS"] == os.environ["OPENBLAS_NUM_THREADS"] == "3"
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_an_operators_openmp_setting_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert set_thread_environment(None) == default_threads()
    assert os.environ["OMP_NUM_THREADS"] == "7"


def test_workers_share_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)))
    assert default_threads() == 7
    assert default_threads(workers=2) == 4
    assert default_threads(workers=16) == 1


def test_the_environment_is_set_before_torch_loads():
    """Importing service.__main__ imports torch (through protonet): the thread environment
    must be in place first, or OpenMP keeps one thread per core in every other thread."""
    import subprocess
    import sys

    from service.launcher import REPO_ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "OPENBLAS_", "MKL_"))}
    env.update(PROTONET_TORCH_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    code = (
        "import service.__main__, os, torch; "
        "print(os.environ['OMP_NUM_THREADS'], torch.get_num_threads())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.split() == ["1", "1"], result.stderr
