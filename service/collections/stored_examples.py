"""A collection's stored examples as they were uploaded: their ids and labels, and their pixels
(what the thumbnail routes serve) or, in a text model's collection, their normalized texts.

Read straight from storage, the source of truth, rather than from this process's in-memory
index: an example stored through another replica a moment ago is listed too, with no
``min_revision`` needed. A tenant sees only its own collections, as everywhere.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from service.collections.pages import PAGE_DEFAULT, Page, page_of, resume_after
from service.errors import NotFoundError
from service.storage.repository import Storage, StoredCollection, StoredExample


def png_bytes(pixels: np.ndarray) -> bytes:
    """``uint8 [H, W]`` (grayscale) or ``[H, W, C]`` (RGB) -> a PNG file (lossless: the
    thumbnails, and the images of snapshots)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _collection(storage: Storage, name: str, tenant: str) -> StoredCollection:
    stored = storage.find_collection(tenant, name)
    if stored is None:
        raise NotFoundError(f"collection {name!r} does not exist")
    return stored


def list_examples(
    storage: Storage,
    name: str,
    *,
    tenant: str,
    label: str | None = None,
    cursor: str | None = None,
    limit: int = PAGE_DEFAULT,
) -> Page[StoredExample]:
    """The page of the collection's examples (of class ``label`` only, if given) after
    ``cursor``, by id (service/collections/pages.py); :class:`NotFoundError` for an unknown
    collection, or for an unknown class on the first page."""
    collection_id = _collection(storage, name, tenant).id
    after = resume_after(cursor, "examples", collection_id)
    examples = storage.list_examples(collection_id, label, after, limit + 1)
    if label is not None and not examples and not after:  # a class exists while it has examples
        raise NotFoundError(f"class {label!r} does not exist in collection {name!r}")
    return page_of([(e.id, e) for e in examples], limit, "examples", collection_id)


def example_pixels(storage: Storage, name: str, example_id: int, *, tenant: str) -> np.ndarray:
    """One example's stored stage-1 pixels, ``uint8 [H, W]`` (or ``[H, W, C]``);
    :class:`NotFoundError` if the collection has no example ``example_id``, or it is a text
    (which has no image: the listing carries it)."""
    stored = storage.example_input(_collection(storage, name, tenant).id, example_id)
    if stored is None:
        raise NotFoundError(f"example {example_id} does not exist in collection {name!r}")
    if isinstance(stored, str):
        raise NotFoundError(
            f"example {example_id} of collection {name!r} is a text and has no image: its "
            f"text is in GET /v1/collections/{name}/examples"
        )
    return stored
