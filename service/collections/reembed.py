"""Model upgrades: embed, for each served model's version, every stored example of the
collections bound to that model that has no embedding by it yet (from the stored stage-1
inputs: pixels or normalized text).

Runs at startup, before the process reports ready, while processes on other versions keep
serving their own embeddings from the same database. Works in batches and commits each one,
so an interrupted upgrade resumes where it stopped on the next start (and two processes of
the new version share the work: each skips what the other stored).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from service.collections.encoder import Encoder, StageOneBatch
from service.storage.repository import Storage, StoredInput

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def conform_inputs(stored: list[StoredInput], encoder: Encoder) -> StageOneBatch:
    """Stored stage-1 inputs -> a batch for the encoder (re-running stage 1 only for pixels
    stored under a different input spec)."""
    return encoder.conform(stored)


def count_unembedded_examples(storage: Storage, encoder: Encoder) -> int:
    """How many stored examples of the encoder's model have no embedding by its version
    (logged)."""
    missing = storage.count_unembedded(encoder.version, encoder.name)
    if missing > 0:
        by_version = storage.count_embeddings_by_version()
        logger.info(
            "model %r is now %s: embedding %d stored examples (stored versions: %s)",
            encoder.name,
            encoder.version,
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
    """Embed every stored example of the encoder's model that its version has not embedded;
    returns how many this call embedded."""
    total = count_unembedded_examples(storage, encoder)
    if not total:
        return 0
    done, last_id = 0, 0
    if on_progress:
        on_progress(0, total)
    while not should_stop():
        batch = storage.unembedded_pixels(
            encoder.version, batch_size, after_id=last_id, model=encoder.name
        )
        if not batch.example_ids:
            break
        embeddings = encoder.embed_batch(conform_inputs(batch.inputs, encoder))
        storage.add_embeddings(batch.example_ids, embeddings, encoder.version)
        done, last_id = done + len(batch.example_ids), batch.example_ids[-1]
        logger.info(
            "embedded %d/%d stored examples for model %r (%s)",
            done,
            total,
            encoder.name,
            encoder.version,
        )
        if on_progress:
            on_progress(min(done, total), total)
    return done
