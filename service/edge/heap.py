"""glibc's heap in a service process: encoders keep their working memory between batches,
large request bodies give theirs back.

Every block comes from the heap (:func:`tune_malloc_for_encoders`), where freed memory stays in
the process's RSS until ``malloc_trim`` returns the free pages, wherever they lie in the heap
(glibc's automatic trim only returns its top).
"""

from __future__ import annotations

import ctypes
from functools import cache

# A request that reserved at least this much for its body (its size times the body memory
# factor, service/edge/body_size.py) trims the heap once the last such request is done.
TRIM_AFTER_BYTES = 4 * 1024 * 1024


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# Free memory above this at the heap's top is returned to the system at once. Kept small: a
# larger one (256 MiB) saved another 7% of a picture batch's CPU but left RSS 11-15% above idle
# after bursts of requests (benchmarks/request_memory.py), memory freed after the last trim.
TRIM_BLOCK = 128 * 1024


def tune_malloc_for_encoders() -> None:
    """Serve every block from the heap, where an encoder's next batch finds its last batch's
    memory.

    By default glibc mmaps large blocks (from 128 KiB, its threshold rising up to 32 MiB as
    they are freed) and unmaps them on free, so each batch's activations (MobileNetV2 at
    224 px, 16 pictures: tensors up to 77 MB) were fresh pages the kernel zeroed again. Through
    HTTP, 64 pictures cost 0.43 M page faults and 1.87 s of CPU; from the heap 0.14 M and
    1.16 s, the server holding about 150 MB more once it has served pictures
    (benchmarks/picture_service.py). Large request bodies, on the heap too, are given back
    after each burst by :func:`trim_heap`, which returns every free page wherever it lies:
    after bursts of 16 MB bodies RSS is back at idle (benchmarks/request_memory.py).
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_BLOCK)


@cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018  (not glibc, e.g. musl: AttributeError)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune or trim
        return None
    return libc


def trim_heap() -> None:
    """Return the free pages of every heap arena to the system (no-op off glibc)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
