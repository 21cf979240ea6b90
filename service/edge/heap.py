"""Giving the heap's free memory back to the system after large request bodies (glibc).

Blocks under the mmap threshold (service/__main__.py) come from the heap, where freed memory
stays in the process's RSS until ``malloc_trim`` returns the free pages, wherever they lie in
the heap (glibc's automatic trim only returns its top).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache

# A request that reserved at least this much for its body (its size times the body memory
# factor, service/edge/body_size.py) trims the heap once the last such request is done.
TRIM_AFTER_BYTES = 4 * 1024 * 1024


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    return trim


def trim_heap() -> None:
    """Return the free pages of every heap arena to the system (no-op off glibc)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
