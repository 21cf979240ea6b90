"""Model upgrades: embed, for this process's model version, every stored example that has no
embedding by it yet (from the stored stage-1 pixels).

Runs at startup, before the process reports ready, while processes on other versions keep
serving their own embeddings from the same database. Works in batches and commits each one,
so an interrupted upgrade resumes where it stopped on the next start (and two processes of
the new version share the work: each skips what the other stored).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from service.collections.encoder import Encoder
from service.storage.repository import Storage

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def conform_pixels(pixels: list[np.ndarray], encoder: Encoder) -> np.ndarray:
    """Stored stage-1 pixels -> ``uint8 [m, *pixel_shape]`` of the encoder's input spec
    (re-running stage 1 only for pixels stored under a different spec)."""
    shape = encoder.input_spec.pixel_shape
    return np.stack([p if p.shape == shape else encoder.to_pixels(p) for p in pixels])


def count_unembedded_examples(storage: Storage, model_version: str) -> int:
    """How many stored examples have no embedding by ``model_version`` (logged)."""
    missing = storage.count_unembedded(model_version)
    if missing > 0:
        by_version = storage.count_embeddings_by_version()
        logger.info(
            "model is now %s: embedding %d stored examples (stored versions: %s)",
            model_version,
            missing,
            ", ".join(f"{version}: {count}" for version, count in sorted(by_version.items())),
        )
    return missing


def embed_stored_examples(
    storage: Storage,
    encoder: Encoder,
    batch_size: int,
    on_progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Embed every stored example that ``encoder.version`` has not embedded; returns how
    many this call embedded."""
    total = count_unembedded_examples(storage, encoder.version)
    if not total:
        return 0
    done, last_id = 0, 0
    if on_progress:
        on_progress(0, total)
    while not should_stop():
        batch = storage.unembedded_pixels(encoder.version, batch_size, after_id=last_id)
        if not batch.example_ids:
            break
        embeddings = encoder.embed_pixels(conform_pixels(batch.pixels, encoder))
        storage.add_embeddings(batch.example_ids, embeddings, encoder.version)
        done, last_id = done + len(batch.example_ids), batch.example_ids[-1]
        logger.info("embedded %d/%d stored examples for model %s", done, total, encoder.version)
        if on_progress:
            on_progress(min(done, total), total)
    return done
