"""Model upgrades: embed, for each served model's version, every stored example of the
collections bound to that model that has no embedding by it yet (from the stored stage-1
inputs: pixels or normalized text).

:func:`embed_stored_examples` runs at startup, before the process reports ready, while
processes on other versions keep serving their own embeddings from the same database. Works in
batches and commits each one, so an interrupted upgrade resumes where it stopped on the next
start (and two processes of the new version share the work: each skips what the other
stored). The registry embeds what
processes on another version store later with the same routine (:func:`embed_stored_inputs`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from service.collections.encoder import Encoder
from service.storage.repository import Storage

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


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


def embed_stored_inputs(
    storage: Storage,
    encoder: Encoder,
    *,
    class_ids: Sequence[int] | None = None,
    collection_id: int | None = None,
    model: str | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Embed, for the encoder's version, the stored examples (of ``class_ids``, of one
    collection, or of the collections bound to ``model``) that it has not embedded, a batch
    of ``encoder.batch_size`` at a time, each committed; returns how many this call embedded
    (``on_batch`` gets that number after each batch). The one re-embedding routine: at
    startup for a new model version, and for examples that a process on another version
    stored meanwhile (a rolling upgrade) before they count here."""
    if class_ids is not None and not class_ids:
        return 0
    done, last_id = 0, 0
    while not should_stop():
        batch = storage.unembedded_inputs(
            encoder.version,
            encoder.batch_size,
            after_id=last_id,
            class_ids=class_ids,
            collection_id=collection_id,
            model=model,
        )
        if not batch.example_ids:
            break
        # Through the encoder's forward_lock: the change feed's thread and request threads
        # may re-embed at once (service/collections/inference.py).
        embeddings = encoder.embed_batch(encoder.conform(batch.inputs))
        storage.add_embeddings(batch.example_ids, embeddings, encoder.version)
        done, last_id = done + len(batch.example_ids), batch.example_ids[-1]
        if on_batch is not None:
            on_batch(done)
    return done


def embed_stored_examples(
    storage: Storage,
    encoder: Encoder,
    on_progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Embed every stored example of the encoder's model that its version has not embedded
    (at startup, logging progress); returns how many this call embedded."""
    total = count_unembedded_examples(storage, encoder)
    if not total:
        return 0
    if on_progress:
        on_progress(0, total)

    def report(done: int) -> None:
        logger.info(
            "embedded %d/%d stored examples for model %r (%s)",
            done,
            total,
            encoder.name,
            encoder.version,
        )
        if on_progress:
            on_progress(min(done, total), total)

    return embed_stored_inputs(
        storage, encoder, model=encoder.name, should_stop=should_stop, on_batch=report
    )
