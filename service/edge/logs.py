"""Structured logs: JSON lines carrying the request id, and one access line per request.

Every request gets an id: the client's ``X-Request-ID`` when it is well-formed (so a caller can
follow its request through its own logs and ours), else a fresh one. It is returned as the
``X-Request-ID`` response header and added to every log line written while serving the request,
worker threads included (anyio copies the context into them).

What is never logged: headers (API keys travel in them), bodies (images), query strings. Keys
appear only as ``key_id``, a prefix of their SHA-256. Messages are cut to about ``MAX_MESSAGE``
characters, so an exception that quotes its input cannot dump an image into the log.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from protonet.errors import ProtonetError
from service.edge.admission import PROBE_PATHS, principal_of
from service.edge.asgi import ASGIApp, Message, Receive, Scope, Send
from service.edge.error_responses import handle_unexpected_error

REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
MAX_MESSAGE = 2000
# A cut keeps the start and, larger, the end: a traceback ends with the exception it is about.
KEPT_HEAD = MAX_MESSAGE // 4

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
access_logger = logging.getLogger("service.access")  # the access log (a name, not a module)

# Attributes every LogRecord has; anything else on a record came from ``extra=`` (uvicorn's
# ``color_message`` is its message again, with terminal colours).
STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "color_message",
}


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id (``None`` outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def truncated(text: str) -> str:
    """``text``, or its first and last characters around a note of how many were cut."""
    if len(text) <= MAX_MESSAGE:
        return text
    tail = MAX_MESSAGE - KEPT_HEAD
    return f"{text[:KEPT_HEAD]} ... [{len(text) - MAX_MESSAGE} characters cut] ... {text[-tail:]}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": truncated(record.getMessage()),
        }
        extra = {k: v for k, v in vars(record).items() if k not in STANDARD_ATTRIBUTES}
        entry.update(extra)
        if record.exc_info:
            entry["exception"] = truncated(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return truncated(super().format(record))


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the service and uvicorn (``uvicorn.run(log_config=)``).

    Our loggers and uvicorn's at ``level``; other libraries' chatter (e.g. faiss.loader) at
    WARNING. uvicorn's own access log is off: :class:`RequestContextMiddleware` writes one
    with the request id, the key id and the duration.
    """
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "default",
        "filters": ["request_id"],
        "stream": "ext://sys.stderr",
    }
    ours = {"level": level.upper(), "handlers": ["default"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"default": {"()": formatter}},
        "handlers": {"default": handler},
        "root": {"level": "WARNING", "handlers": ["default"]},
        "loggers": {"service": ours, "uvicorn": ours, "uvicorn.error": {"propagate": True}},
    }


class StartupFailureReport:
    """A start that fails on an error raised on purpose (a :class:`ProtonetError`, e.g. a
    checkpoint that does not load or a database that cannot be reached) is logged as one line:
    ``startup failed: <its message>``, which names what is wrong and where.

    uvicorn logs the message of the ASGI ``lifespan.startup.failed`` event, which Starlette
    fills with the whole traceback: dozens of framework frames around the one line that says
    what to fix. Any other error (a bug) keeps its traceback.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        failure: Message | None = None

        async def hold_the_failure(message: Message) -> None:
            nonlocal failure
            if message["type"] == "lifespan.startup.failed":
                failure = message  # sent below, once the exception raised after it is known
            else:
                await send(message)

        try:
            await self.app(scope, receive, hold_the_failure)
        except ProtonetError as error:
            if failure is not None:
                failure = {**failure, "message": f"startup failed: {error}"}
            raise
        finally:
            if failure is not None:
                await send(failure)


def request_id_of(scope: Scope) -> str:
    """The client's ``X-Request-ID`` if well-formed, else a new random id."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if REQUEST_ID_PATTERN.fullmatch(candidate):
                return candidate
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Outermost middleware: request id (context + response header) and the access log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        token = request_id_var.set(request_id)
        started, status = time.perf_counter(), 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            if status:  # the response had begun: nothing left to answer with
                raise
            # Answered here rather than by Starlette's outermost handler, so that the 500 has
            # its X-Request-ID and the error is logged with the request id.
            response = await handle_unexpected_error(Request(scope), error)
            await response(scope, receive, send_with_id)
        finally:
            log_access(scope, status or 500, time.perf_counter() - started)
            request_id_var.reset(token)


def log_access(scope: Scope, status: int, seconds: float) -> None:
    principal = principal_of(scope)
    client = scope.get("client")
    access_logger.log(
        logging.DEBUG if scope["path"] in PROBE_PATHS else logging.INFO,  # kubelet polls them
        "%s %s %d",
        scope["method"],
        scope["path"],
        status,
        extra={
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "client": client[0] if client else None,
            "key_id": principal.key_id if principal else None,
            "tenant": principal.tenant if principal else None,
        },
    )
