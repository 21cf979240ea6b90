"""Model upgrades: re-embed stored examples whose embeddings came from another model version.

Runs at startup, before the service reports ready. Works in batches and commits each one, so
an interrupted upgrade resumes where it stopped on the next start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from service.encoder import Encoder
from service.storage import Storage

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def conform_pixels(pixels: list[np.ndarray], encoder: Encoder) -> np.ndarray:
    """Stored stage-1 pixels -> ``uint8 [m, *pixel_shape]`` of the encoder's input spec
    (re-running stage 1 only for pixels stored under a different spec)."""
    shape = encoder.input_spec.pixel_shape
    return np.stack([p if p.shape == shape else encoder.to_pixels(p) for p in pixels])


def count_stale_examples(storage: Storage, model_version: str) -> int:
    """How many stored examples another model embedded (logged with their versions)."""
    stale = {v: n for v, n in storage.count_examples_by_version().items() if v != model_version}
    if stale:
        logger.info(
            "model is now %s: re-embedding %d stored examples (from %s)",
            model_version,
            sum(stale.values()),
            ", ".join(f"{version}: {count}" for version, count in sorted(stale.items())),
        )
    return sum(stale.values())


def reembed_stale_examples(
    storage: Storage,
    encoder: Encoder,
    batch_size: int,
    on_progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Re-embed every example not embedded by ``encoder.version``; returns how many."""
    total = count_stale_examples(storage, encoder.version)
    if not total:
        return 0
    done, last_id = 0, 0
    while not should_stop():
        batch = storage.stale_pixels(encoder.version, batch_size, after_id=last_id)
        if not batch.example_ids:
            break
        embeddings = encoder.embed_pixels(conform_pixels(batch.pixels, encoder))
        storage.replace_embeddings(batch.example_ids, embeddings, encoder.version)
        done, last_id = done + len(batch.example_ids), batch.example_ids[-1]
        logger.info("re-embedded %d/%d examples", done, total)
        if on_progress:
            on_progress(done, total)
    return done
