"""The app factory. Importing this module reads no settings and loads nothing.

uvicorn --factory service.app:create_server_app      # or: python -m service
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from service.api.json_bodies import BodyLimits
from service.api.openapi import install_openapi
from service.api.routers import (
    adaptations,
    collections,
    embed,
    examples,
    feedback,
    health,
    metrics,
    model,
    snapshots,
)
from service.api.ui import install_ui
from service.edge.admission import DOC_ASSETS_PATH, AdmissionMiddleware
from service.edge.auth import Authenticator, load_keys
from service.edge.body_size import BodySizeLimitMiddleware, MemoryBudget, StreamedBodies
from service.edge.error_responses import install_error_handlers
from service.edge.heap import trim_heap, tune_malloc_for_encoders
from service.edge.logs import RequestContextMiddleware, StartupFailureReport
from service.edge.metrics import MetricsMiddleware, ServiceMetrics
from service.edge.rate_limits import ConcurrencyLimit, RateLimiter
from service.settings import Settings, trusted_proxy_list
from service.state import ServiceState, freeze_startup_objects

DESCRIPTION = """\
Few-shot classification of images and texts with a Prototypical Network: register a handful of
labelled examples per class in a collection, then classify new inputs by their nearest class
prototype (the mean embedding of a class's examples). Each collection is bound to one served
model (GET /v1/models), which takes either images or texts.

Images are sent either as `image` (base64 of a PNG/JPEG/... file) or as `pixels` (a 2-D list of
numbers in [0, 1], 0 = black ink, 1 = white paper); texts as `text`. Errors share one shape
(`ErrorResponse`) whose `detail` names the offending item, e.g. `examples[3].image: not a
decodable image`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load model and storage (fail fast), then prepare collections in the background."""
    state = await to_thread.run_sync(ServiceState.open, app.state.settings, app.state.metrics)
    app.state.service = state
    app.state.metrics.watch_collections(state.all_tenants_summary)
    app.state.metrics.watch_database(state.database.up)
    state.start_pipelines()

    def prepare() -> None:
        state.prepare()
        if getattr(app.state, "owns_process", False):
            freeze_startup_objects()
            trim_heap()  # what loading the models freed (tune_malloc_for_encoders keeps it)

    preparer = threading.Thread(target=prepare, name="protonet-prepare", daemon=True)
    preparer.start()
    try:
        yield
    finally:
        await state.stop_pipelines()
        state.request_stop()
        await to_thread.run_sync(preparer.join)
        state.close()


def create_server_app() -> FastAPI:
    """The app of a ``python -m service`` process (each worker's): it owns the process, so it
    also tunes malloc and its lifespan the garbage collector (an app embedded elsewhere, e.g. in
    tests, leaves both alone)."""
    tune_malloc_for_encoders()
    app = create_app()
    app.state.owns_process = True
    return app


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app; ``settings`` default to ``PROTONET_*`` environment variables."""
    # fastapi-offline serves Swagger UI (/docs) and ReDoc (/redoc) with their scripts and
    # styles from its package instead of a CDN, so both work on a machine without internet.
    app = FastAPIOffline(
        static_url=DOC_ASSETS_PATH,
        # No validator badge: Swagger UI would send the schema to validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
        title="Protonet few-shot classification",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # A path that differs by a trailing slash is not redirected: curl's `-L -X DELETE
        # .../classes/..` (normalized to `.../l2/`) was redirected to the collection itself.
        redirect_slashes=False,
    )
    app.state.settings = settings = settings or Settings()
    install_error_handlers(app)
    app.state.body_limits = BodyLimits(settings.max_items_per_request, settings.max_pixel_values)
    app.state.body_budget = MemoryBudget(settings.request_memory_bytes)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        budget=app.state.body_budget,
        streamed=StreamedBodies("POST", snapshots.RESTORE_PATH, settings.max_snapshot_bytes),
    )
    app.state.metrics = ServiceMetrics()
    app.add_middleware(StartupFailureReport)  # sees only the lifespan: its place does not matter
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: times all
    routers = (
        health,
        model,
        collections,
        adaptations,
        examples,
        embed,
        metrics,
        snapshots,
        feedback,
    )
    for module in routers:
        app.include_router(module.router)
    install_ui(app)
    install_access_control(app, app.state.settings)
    # From here on only the keys' hashes (in the authenticator) stay in memory.
    app.state.settings = app.state.settings.model_copy(update={"api_keys": None})
    return app


def authenticator_for(settings: Settings) -> Authenticator:
    """Keys are read (and checked) only when auth is on; a bad key file fails the start."""
    if not settings.auth_enabled:
        return Authenticator([], enabled=False)
    inline = settings.api_keys.get_secret_value() if settings.api_keys else None
    return Authenticator(load_keys(inline, settings.api_keys_file), enabled=True)


def install_access_control(app: FastAPI, settings: Settings) -> None:
    """Auth, rate and concurrency limits, then request ids and access logs (the last middleware
    added runs first), so even a refused request gets an id and a log line; outermost, with
    PROTONET_TRUSTED_PROXIES, the client address from X-Forwarded-For, so that logs and rate
    buckets see the real client. Only a trusted peer's X-Forwarded-For counts: uvicorn's own
    proxy-header handling is off (``python -m service``), so in-process apps and real
    processes see the same client address."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    app.add_middleware(
        AdmissionMiddleware,
        authenticator=authenticator_for(settings),
        key_limiter=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
        address_limiter=RateLimiter(
            settings.address_rate_limit_per_second, settings.address_rate_limit_burst
        ),
        auth_failure_limiter=RateLimiter(
            settings.auth_failure_rate_limit_per_second,
            settings.auth_failure_rate_limit_burst,
            what="failed authentications",
        ),
        concurrency=ConcurrencyLimit(settings.max_concurrent_requests),
        protect_metrics=settings.protect_metrics,
    )
    app.add_middleware(RequestContextMiddleware)
    if proxies := trusted_proxy_list(settings.trusted_proxies):
        # Right-most X-Forwarded-For address that is not itself a trusted proxy; CIDRs work.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=proxies)
    install_openapi(app, settings.auth_enabled, settings.protect_metrics)
