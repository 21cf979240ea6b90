"""Shared fixtures: the real-data location, and its CI rule (fail, never skip, when CI=true)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
BUNDLED_MODEL = REPO_ROOT / "models" / "omniglot-conv4.pt"


def require_path(path: Path, what: str) -> Path:
    """``path`` if it exists; else skip on a user's machine, fail in CI (which always has it)."""
    if path.exists():
        return path
    message = f"{what} not found at {path}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: real data must be present)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    """``../shared/data/omniglot`` (the public zips and Vinyals split files)."""
    return require_path(SHARED_DATA / "omniglot", "Omniglot data")


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    return require_path(BUNDLED_MODEL, "bundled model")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
