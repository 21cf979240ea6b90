"""``python -m service``: serve the app with uvicorn on ``PROTONET_HOST``:``PROTONET_PORT``."""

from __future__ import annotations

import logging

import uvicorn

from service.settings import Settings


def main() -> None:
    settings = Settings()
    # Our loggers at the chosen level; other libraries' chatter at WARNING.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("service").setLevel(settings.log_level.upper())
    uvicorn.run(
        "service.app:create_server_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    main()
