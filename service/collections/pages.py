"""Keyset pagination of a collection's listings: its classes and its stored examples.

A page lists items in id order (a class's id is its creation order; so is an example's) after
the id its cursor names, so pages are stable under concurrent writes: no item that exists
throughout is listed twice or skipped, a deleted one simply is not listed, and one created while
a client pages through comes after every id listed so far (writes to one collection are
ordered, so ids grow with commits; SQLite alone may give a new row the id of the newest row
deleted before it, behind a cursor that passed it). The cursor is opaque to clients: the
listing it belongs to, the collection's id and the last id listed.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from protonet.errors import InvalidInputError

Listing = Literal["classes", "examples"]
PAGE_DEFAULT = 100  # items per page when a request does not say
PAGE_MAX = 1000  # most items one page may ask for
T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """Up to a page's limit of items, and the cursor of the next page (``None``: this is the
    last page)."""

    items: list[T]
    next_cursor: str | None


def encode_cursor(listing: Listing, collection_id: int, after: int) -> str:
    """The cursor of the page that starts after id ``after``."""
    raw = f"{listing}:{collection_id}:{after}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def resume_after(cursor: str | None, listing: Listing, collection_id: int) -> int:
    """The id that the page of ``cursor`` starts after (0 without one: the first page);
    :class:`InvalidInputError` for a cursor that no answer of this listing gave."""
    if cursor is None:
        return 0
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        kind, owner, after = base64.urlsafe_b64decode(padded).decode("ascii").split(":")
        if kind == listing and int(owner) == collection_id and int(after) >= 0:
            return int(after)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidInputError(
        f"cursor {cursor!r} is not a cursor of this collection's {listing}: send the "
        "next_cursor of its previous page as it came, or none for the first page"
    )


def page_of(
    items: list[tuple[int, T]], limit: int, listing: Listing, collection_id: int
) -> Page[T]:
    """A page from up to ``limit + 1`` ``(id, item)`` pairs in id order: the first ``limit``,
    with a next cursor if there were more."""
    shown = items[:limit]
    more = len(items) > limit and shown
    cursor = encode_cursor(listing, collection_id, shown[-1][0]) if more else None
    return Page([item for _, item in shown], cursor)
