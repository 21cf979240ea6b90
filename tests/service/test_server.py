"""``python -m service`` as a real uvicorn process on a free port, driven by the client."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from protonet.checkpoint import load_checkpoint
from service.client import ImageLike, ProtonetAPIError, ProtonetClient
from service.launcher import local_server
from tests.service.helpers import PATIENCE, Drawings

BODY_LIMIT = 200_000


@pytest.fixture
def server(tmp_path: Path, bundled_model: Path) -> Iterator[str]:
    """The service with its defaults (bundled model, found from the package, not the CWD)."""
    env = {
        "PROTONET_DATA_DIR": str(tmp_path / "data"),
        "PROTONET_TORCH_THREADS": "1",
        "PROTONET_MAX_BODY_BYTES": str(BODY_LIMIT),
        "PROTONET_LOG_LEVEL": "warning",
    }
    with local_server(env, cwd=tmp_path, ready_timeout=PATIENCE) as running:
        yield running.url
    assert running.process.returncode == 0, "graceful shutdown"


def test_real_server_round_trip(server: str, tmp_path: Path, bundled_model: Path):
    drawings = Drawings(3)
    files = []
    for c in range(3):
        path = tmp_path / f"class{c}.png"
        path.write_bytes(drawings.png(c))
        files.append(path)
    with ProtonetClient(server, timeout=30) as client:
        assert client.health() == {"status": "ok"}
        assert client.model()["version"] == load_checkpoint(bundled_model).version
        client.create_collection("shapes")
        support: dict[str, list[ImageLike]] = {
            "zero": [files[0], drawings.png(0)],
            "one": [str(files[1]), drawings.pixels(1)],
            "two": [(drawings.pixels(2) * 255).astype(np.uint8)],
        }
        added = client.add_support("shapes", support)
        assert added["n_added"] == 5
        result = client.query("shapes", [drawings.png(0), drawings.png(2)], top_k=2)
        assert [r["label"] for r in result["results"]] == ["zero", "two"]
        assert len(client.embed([files[0]])["embeddings"][0]) == 64

        with pytest.raises(ProtonetAPIError) as missing:
            client.query("nothing-here", [files[0]])
        assert missing.value.status_code == 404
        assert "collection 'nothing-here' does not exist" in str(missing.value)
        with pytest.raises(ProtonetAPIError) as too_big:
            client.add_support("shapes", [("big", np.ones((400, 400)))])
        assert too_big.value.status_code == 413 and too_big.value.error == "too_large"
        assert client.get_collection("shapes")["n_examples"] == 5
    assert (tmp_path / "data" / "protonet.sqlite3").exists()


def test_real_server_refuses_a_streamed_body_over_the_limit(server: str):
    def chunks() -> Iterator[bytes]:
        for _ in range(2 * BODY_LIMIT // 1024):
            yield b" " * 1024

    response = httpx.post(
        f"{server}/v1/collections",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413


def test_quickstart_example_against_the_real_server(server: str, omniglot_dir: Path):
    script = Path(__file__).resolve().parents[2] / "examples" / "omniglot_quickstart.py"
    zip_path = omniglot_dir / "images_evaluation.zip"
    output = subprocess.run(
        [sys.executable, str(script), server, "--zip", str(zip_path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    accuracy = float(output.strip().splitlines()[-1].split("accuracy: ")[1].split("%")[0])
    assert accuracy >= 80.0, output
