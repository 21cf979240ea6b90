"""Shared helpers of the service tests: checkpoints, settings, an in-process app, drawings."""

from __future__ import annotations

import base64
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import numpy as np
import torch
from fastapi import FastAPI
from PIL import Image, ImageDraw

from protonet.checkpoint import Checkpoint, save_checkpoint
from protonet.model import EncoderConfig, build_encoder, linear_head_config
from protonet.open_set import RejectionCalibration
from protonet.preprocessing import InputSpec
from protonet.text import TextSpec
from service.app import create_app
from service.client import AsyncProtonetClient
from service.settings import Settings
from service.state import ServiceState
from tests.training.synthetic import class_template, draw, png_bytes

T = TypeVar("T")

# How long a test waits for something that must happen: patience, not a target. CI runs the
# suite in two processes on a shared 2-core machine, where a real server can start, and a
# request be answered, many times slower than on an idle one.
PATIENCE = 120.0


def write_checkpoint(path: Path, seed: int, input_spec: InputSpec | None = None) -> Path:
    """A random-init encoder; different seeds give different versions."""
    torch.manual_seed(seed)
    checkpoint = Checkpoint(
        encoder_config=EncoderConfig(),
        input_spec=input_spec or InputSpec(),
        state_dict=build_encoder(EncoderConfig()).state_dict(),
        metadata={"seed": seed},
    )
    return save_checkpoint(checkpoint, path)


def write_text_checkpoint(
    path: Path,
    spec: TextSpec,
    seed: int = 0,
    calibration: RejectionCalibration | None = None,
) -> Path:
    """A text checkpoint over the installed MiniLM base that ``spec`` records: the identity
    head (seed 0: embeds as the base does) or, for other seeds, the identity slightly
    perturbed (another version that still embeds much like the base)."""
    config = linear_head_config(spec.base_dim)
    head = build_encoder(config)
    if seed:
        torch.manual_seed(seed)
        with torch.no_grad():
            head.linear.weight.add_(0.01 * torch.randn_like(head.linear.weight))
    checkpoint = Checkpoint(
        config,
        InputSpec(),
        head.state_dict(),
        text_spec=spec,
        calibration=calibration,
        metadata={"seed": seed},
    )
    return save_checkpoint(checkpoint, path)


def make_settings(data_dir: Path, checkpoint: Path, **overrides: Any) -> Settings:
    """Test settings; the rate limit is off unless a test is about it (tests send requests
    far faster than clients would)."""
    values: dict[str, Any] = {
        "torch_threads": 1,
        "embed_batch_size": 64,
        "rate_limit_per_second": 0,
        **overrides,
    }
    return Settings(checkpoint=checkpoint, data_dir=data_dir, **values)


@dataclass
class Running:
    """An app with its lifespan entered and collections prepared."""

    app: FastAPI
    http: httpx.AsyncClient
    client: AsyncProtonetClient

    @property
    def state(self) -> ServiceState:
        return self.app.state.service

    def stored_versions(self) -> dict[str, int]:
        return self.state.storage.count_embeddings_by_version()


@asynccontextmanager
async def serve(settings: Settings, wait: bool = True) -> AsyncIterator[Running]:
    """Run the app in-process (ASGI transport), lifespan included."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        if wait:
            assert await anyio.to_thread.run_sync(app.state.service.wait_prepared, 60)
            assert app.state.service.status == "ready", app.state.service.detail
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            yield Running(app, http, AsyncProtonetClient(http=http))


class Drawings:
    """Synthetic classes: each a random stroke pattern, each drawing a jittered copy."""

    def __init__(self, n_classes: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.templates = [class_template(rng) for _ in range(n_classes)]
        self.rng = np.random.default_rng(seed + 1000)

    def png(self, class_index: int) -> bytes:
        return png_bytes(draw(self.templates[class_index], self.rng))

    def pixels(self, class_index: int) -> np.ndarray:
        """``[105, 105]`` floats in [0, 1] (0 = ink)."""
        return np.asarray(draw(self.templates[class_index], self.rng), dtype=np.float64) / 255.0


class Shapes:
    """Synthetic classes that the bundled Omniglot model confuses unadapted and that an adapter
    separates (what the adaptation tests need to see one adopted): every drawing is one square
    common to all classes with its class's triangle inside, both filled, in shades that vary
    from drawing to drawing (the square's, and the opposite one for the triangle), shifted at
    random. Measured with the adapter's defaults: 10 classes of 5 drawings, held out 8 to 16 of
    50 right unadapted, 11 to 28 adapted (seeds 0 to 3)."""

    SQUARE = ((20, 20), (85, 25), (80, 85), (25, 80))

    def __init__(self, n_classes: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.triangles = [
            tuple(tuple(int(v) for v in self.rng.integers(15, 90, size=2)) for _ in range(3))
            for _ in range(n_classes)
        ]

    def png(self, class_index: int) -> bytes:
        image = Image.new("L", (105, 105), 255)
        pen = ImageDraw.Draw(image)
        dx, dy = self.rng.integers(-6, 7, size=2)
        shade = int(self.rng.integers(0, 200))
        for polygon in (self.SQUARE, self.triangles[class_index]):
            jitter = self.rng.integers(-3, 4, size=(len(polygon), 2))
            corners = [
                (x + dx + int(a), y + dy + int(b))
                for (x, y), (a, b) in zip(polygon, jitter.tolist(), strict=True)
            ]
            pen.polygon(corners, fill=shade, outline=0)
            shade = 255 - shade
        return png_bytes(image)


def image_item(data: bytes) -> dict[str, str]:
    return {"image": base64.b64encode(data).decode()}


def pixels_item(pixels: np.ndarray) -> dict[str, Any]:
    return {"pixels": pixels.tolist()}


def sample_characters(zip_path: Path, way: int, seed: int) -> dict[str, list[bytes]]:
    """``"Alphabet/characterNN" -> its 20 PNG files`` for ``way`` random characters."""
    with zipfile.ZipFile(zip_path) as archive:
        members: dict[str, list[str]] = {}
        for name in archive.namelist():
            parts = name.split("/")
            if len(parts) == 4 and parts[3].endswith(".png"):
                members.setdefault(f"{parts[1]}/{parts[2]}", []).append(name)
        chosen = np.random.default_rng(seed).choice(sorted(members), size=way, replace=False)
        return {c: [archive.read(m) for m in sorted(members[c])] for c in chosen}


def wait_until(predicate: Callable[[], T], timeout: float, message: str) -> T:
    """Poll ``predicate`` until it returns a true value, and return that; past ``timeout``
    seconds fail with ``message``. A test waits for the event itself this way, where a fixed
    sleep would guess how long it takes (too short on a loaded machine, too long on an idle one)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} (waited {timeout:.0f} s)")
        time.sleep(0.02)
    return value
