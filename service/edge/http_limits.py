"""Bounds on a request's header block, in the HTTP protocol: its size and how long it may take.

uvicorn with httptools bounds neither: a 64 MiB header line was answered 200, 8 connections
holding unfinished 16 MiB headers added 128 MB of RSS, and 3,000 connections that never
finished their headers stayed open past 70 s. Behind the bundled nginx its own limits apply
(``large_client_header_buffers``, ``client_header_timeout``); a service exposed without it
needs these:

* ``PROTONET_MAX_HEADER_BYTES``: the request line and header fields of one request together.
  Beyond, **431** and the connection is closed. Counted as the bytes arrive while the block is
  incomplete (so an unfinished huge header costs at most this plus one read), and exactly from
  the parsed fields once it is complete.
* ``PROTONET_HEADER_TIMEOUT``: seconds from a new connection, or from the first byte of the
  next request on a kept-alive one, to the end of the header block. Beyond, **408** (or a
  silent close, for a connection that sent nothing) and the connection is closed.

Why a subclass of uvicorn's httptools protocol rather than uvicorn's h11 protocol, whose
``h11_max_incomplete_event_size`` bounds the header bytes: h11 has no header timeout either,
so the timeout needs a protocol subclass anyway, and h11 parses in Python where httptools
(llhttp) parses in C. The subclass hooks only the parser callbacks and connection events that
uvicorn's protocol is built from (``on_message_begin``, ``on_headers_complete``,
``data_received``, ``connection_made``/``connection_lost``, ``send_400_response``); the
real-process tests (tests/service/edge/test_http_limits.py) run against the installed uvicorn.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from service.edge.error_responses import ErrorResponse

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeaderLimits:
    """What one request's header block may take: bytes, and seconds to arrive."""

    max_bytes: int
    timeout: float


@dataclass(frozen=True)
class Refusal:
    status: int
    error: str
    detail: str


class HeadersTooLargeError(Exception):
    """Raised in a parser callback to stop httptools; uvicorn answers parser errors through
    ``send_400_response``, which sends the refusal instead."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`HeaderLimits` (see the module's docstring)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HeaderLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.awaiting_headers = True  # from the connection (or a request's first byte) on
        self.request_begun = False  # a byte of the next request has arrived
        self.header_bytes = 0  # bytes received while awaiting the end of the header block
        self.header_clock: asyncio.TimerHandle | None = None
        self.refusal: Refusal | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.start_header_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_header_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.awaiting_headers:  # a read that completes the block may hold body bytes too:
            self.header_bytes += len(data)  # only an incomplete block is judged by this count
        super().data_received(data)
        if self.awaiting_headers and self.header_bytes > self.limits.max_bytes:
            self.refuse(self.too_large())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.awaiting_headers = self.request_begun = True
        self.start_header_clock()

    def on_headers_complete(self) -> None:
        self.awaiting_headers = self.request_begun = False
        self.header_bytes = 0
        self.stop_header_clock()
        size = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
        if size > self.limits.max_bytes:
            self.refusal = self.too_large()
            raise HeadersTooLargeError
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self.refusal is None:
            super().send_400_response(msg)
        else:
            self.refuse(self.refusal)

    def too_large(self) -> Refusal:
        return Refusal(
            431,
            "headers_too_large",
            f"the request line and headers exceed {self.limits.max_bytes} bytes "
            "(PROTONET_MAX_HEADER_BYTES)",
        )

    def start_header_clock(self) -> None:
        if self.header_clock is None:
            self.header_clock = self.loop.call_later(self.limits.timeout, self.headers_timed_out)

    def stop_header_clock(self) -> None:
        if self.header_clock is not None:
            self.header_clock.cancel()
            self.header_clock = None

    def headers_timed_out(self) -> None:
        self.header_clock = None
        if not self.awaiting_headers or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.start_header_clock()  # a pipelined request waits for the one being answered
        elif not self.request_begun:
            self.transport.close()  # nothing sent: nobody to answer
        else:
            self.refuse(
                Refusal(
                    408,
                    "header_timeout",
                    f"the request's headers did not arrive within {self.limits.timeout:g} s "
                    "(PROTONET_HEADER_TIMEOUT)",
                )
            )

    def refuse(self, refusal: Refusal) -> None:
        """Answer ``refusal`` in the API's error shape, and close the connection."""
        self.awaiting_headers = False
        self.stop_header_clock()
        if self.transport.is_closing():
            return
        logger.info("%s from %s: %s", refusal.status, self.client, refusal.detail)
        body = ErrorResponse(error=refusal.error, detail=refusal.detail).model_dump_json()
        head = [STATUS_LINE[refusal.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body.encode())
        self.transport.close()


def bounded_http_protocol(limits: HeaderLimits) -> type[asyncio.Protocol]:
    """What ``uvicorn.run(http=...)`` takes to serve with ``limits``.

    uvicorn calls its ``http`` argument like a class (``http(config=..., server_state=...,
    app_state=...)``), so a ``partial`` binding the limits serves; unlike a class made per
    setting it pickles (by reference to the class above), as the worker processes of
    ``PROTONET_WORKERS`` > 1 need.
    """
    return cast(type[asyncio.Protocol], functools.partial(BoundedHttpToolsProtocol, limits=limits))
