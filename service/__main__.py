"""``python -m service``: serve the app with uvicorn on ``PROTONET_HOST``:``PROTONET_PORT``."""

from __future__ import annotations

import ctypes
import signal
from types import FrameType

import uvicorn

from service.logs import logging_config
from service.settings import Settings


def exit_quietly(_signal: int, _frame: FrameType | None) -> None:
    """After a graceful shutdown uvicorn re-raises the signal it got, expecting the default
    action; for SIGTERM that would end the process with status 143 after a clean drain. This
    handler takes that re-raised SIGTERM, so a drained stop exits 0."""


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
LARGE_BLOCK = 128 * 1024


def return_freed_memory_to_the_os() -> None:
    """Keep glibc from holding on to the memory of large request bodies after they are freed.

    By default glibc raises its mmap threshold (up to 32 MiB) each time a large block is
    freed, so later multi-megabyte bodies come from the heap, whose freed pages stay in RSS:
    after bursts of 16 MB bodies RSS stayed 14-30% above idle (benchmarks/request_memory.py).
    Fixed thresholds keep large blocks mmapped (unmapped on free) and trim the heap's top.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return
    mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)
    mallopt(M_TRIM_THRESHOLD, LARGE_BLOCK)


def main() -> None:
    settings = Settings()
    return_freed_memory_to_the_os()
    signal.signal(signal.SIGTERM, exit_quietly)  # uvicorn's own handler replaces it while serving
    uvicorn.run(
        "service.app:create_server_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=logging_config(settings.log_level, settings.log_format),
        access_log=False,  # RequestContextMiddleware logs each request, with its id
        # The app alone decides whose X-Forwarded-For to believe (PROTONET_TRUSTED_PROXIES);
        # uvicorn's default would trust 127.0.0.1's, letting a local caller pick its address.
        proxy_headers=False,
        # One worker per process: the prototype indexes live in this process's memory.
        workers=1,
        # SIGTERM stops accepting connections and waits this long for in-flight requests.
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )


if __name__ == "__main__":
    main()
