"""The app factory. Importing this module reads no settings and loads nothing.

uvicorn --factory service.app:create_server_app      # or: python -m service
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI

from service.errors import install_error_handlers
from service.limits import BodySizeLimitMiddleware
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.routers import collections, embed, health, metrics, model
from service.settings import Settings
from service.state import ServiceState, freeze_startup_objects

DESCRIPTION = """\
Few-shot image classification with a Prototypical Network: register a handful of labelled
examples per class in a collection, then classify new images by their nearest class prototype
(the mean embedding of a class's examples).

Images are sent either as `image` (base64 of a PNG/JPEG/... file) or as `pixels` (a 2-D list of
numbers in [0, 1], 0 = black ink, 1 = white paper). Errors share one shape (`ErrorResponse`)
whose `detail` names the offending item, e.g. `examples[3].image: not a decodable image`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load model and storage (fail fast), then prepare collections in the background."""
    state = await to_thread.run_sync(ServiceState.open, app.state.settings, app.state.metrics)
    app.state.service = state
    state.metrics.watch_collections(state.collection_summaries)
    state.pipeline.start()

    def prepare() -> None:
        state.prepare()
        if getattr(app.state, "owns_process", False):
            freeze_startup_objects()

    preparer = threading.Thread(target=prepare, name="protonet-prepare", daemon=True)
    preparer.start()
    try:
        yield
    finally:
        await state.pipeline.stop()
        state.request_stop()
        await to_thread.run_sync(preparer.join)
        state.close()


def create_server_app() -> FastAPI:
    """The app of a ``python -m service`` process: it owns the process, so its lifespan also
    tunes the garbage collector (an app embedded elsewhere, e.g. in tests, leaves it alone)."""
    app = create_app()
    app.state.owns_process = True
    return app


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app; ``settings`` default to ``PROTONET_*`` environment variables."""
    app = FastAPI(
        title="Protonet few-shot classification",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings or Settings()
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=app.state.settings.max_body_bytes)
    app.state.metrics = ServiceMetrics()
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: times all
    for router in (health.router, model.router, collections.router, embed.router, metrics.router):
        app.include_router(router)
    return app
