"""Fixtures of the service tests (``omniglot_dir``, ``bundled_model``, ``anyio_backend`` come
from tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protonet.errors import CheckpointError
from protonet.text import TextSpec
from tests.conftest import ci
from tests.service.helpers import make_settings, write_checkpoint


@pytest.fixture(autouse=True)
def hermetic_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings the tests do not pass come from defaults, never from the caller's environment
    (a PROTONET_DATABASE_URL there must not receive test data)."""
    for name in list(os.environ):
        if name.upper().startswith("PROTONET_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def checkpoint_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("models") / "a.pt", seed=0)


@pytest.fixture(scope="session")
def checkpoint_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("models") / "b.pt", seed=1)


@pytest.fixture
def settings(tmp_path: Path, checkpoint_a: Path):
    return make_settings(tmp_path / "data", checkpoint_a)


@pytest.fixture(scope="session")
def text_spec() -> TextSpec:
    """The installed base's identity; skips without the text extra (fails in CI)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from protonet.text import base_identity

        return base_identity()
    except CheckpointError as error:
        if ci():
            pytest.fail(f"the text extra must be installed in CI: {error}")
        pytest.skip(f"text extra not installed: {error}")
