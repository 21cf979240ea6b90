"""``python -m service``: serve the app with uvicorn on ``PROTONET_HOST``:``PROTONET_PORT``."""

from __future__ import annotations

import signal
from types import FrameType

import uvicorn

from service.logs import logging_config
from service.settings import Settings


def exit_quietly(_signal: int, _frame: FrameType | None) -> None:
    """After a graceful shutdown uvicorn re-raises the signal it got, expecting the default
    action; for SIGTERM that would end the process with status 143 after a clean drain. This
    handler takes that re-raised SIGTERM, so a drained stop exits 0."""


def main() -> None:
    settings = Settings()
    signal.signal(signal.SIGTERM, exit_quietly)  # uvicorn's own handler replaces it while serving
    uvicorn.run(
        "service.app:create_server_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=logging_config(settings.log_level, settings.log_format),
        access_log=False,  # RequestContextMiddleware logs each request, with its id
        # One worker per process: the prototype indexes live in this process's memory.
        workers=1,
        # SIGTERM stops accepting connections and waits this long for in-flight requests.
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )


if __name__ == "__main__":
    main()
