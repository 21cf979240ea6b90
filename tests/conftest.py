"""Shared fixtures: the real-data location, and its CI rule (fail, never skip, when CI=true)."""

from __future__ import annotations

import os
from collections.abc import Iterator
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
    if ci():
        pytest.fail(f"{message} (CI=true: real data must be present)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    """``../shared/data/omniglot`` (the public zips and Vinyals split files)."""
    return require_path(SHARED_DATA / "omniglot", "Omniglot data")


@pytest.fixture(scope="session")
def emoji_dir() -> Path:
    """``../shared/data/emoji`` (the vendors' PNGs, the catalogue and the Iconify tarballs)."""
    return require_path(SHARED_DATA / "emoji", "emoji data")


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    return require_path(BUNDLED_MODEL, "bundled model")


# The one place tests learn where PostgreSQL is (a server, with rights to create databases).
POSTGRES_URL_VARIABLE = "TEST_POSTGRES_URL"


def ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database (dropped afterwards) on the server that
    ``TEST_POSTGRES_URL`` names (default: 127.0.0.1:5432, user root, trust auth). Skips on a
    machine without PostgreSQL; fails when ``CI=true``."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    from service.launcher import POSTGRES_ADMIN_URL, throwaway_postgres

    admin_url = os.environ.get(POSTGRES_URL_VARIABLE, POSTGRES_ADMIN_URL)
    probe = create_engine(admin_url)
    try:
        with probe.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as error:
        message = f"PostgreSQL not reachable at {admin_url} ({POSTGRES_URL_VARIABLE}): {error}"
        if ci():
            pytest.fail(f"{message} (CI=true: PostgreSQL must be running)")
        pytest.skip(message)
    finally:
        probe.dispose()
    with throwaway_postgres(admin_url) as url:
        yield url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
