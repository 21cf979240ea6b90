"""Request body size limit: a small pure-ASGI middleware.

A declared ``Content-Length`` over the limit is refused before any of the body is read; a
chunked (or lying) body is counted while it streams in and refused as soon as it passes the
limit. Either way the app never sees the request, and the client gets 413.

The body (at most the limit) is buffered and replayed to the app, which reads all of it anyway
to parse the JSON.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """Answer 413 to HTTP requests whose body exceeds ``max_body_bytes``."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = self._declared_length(scope)
        try:
            if declared is not None and declared > self.max_body_bytes:
                raise BodyTooLarge(
                    f"request body is {declared} bytes; the limit is {self.max_body_bytes}"
                )
            first_messages = await self._read_body(receive)
        except BodyTooLarge as error:
            await self._refuse(send, str(error))
            return
        await self.app(scope, self._replay(first_messages, receive), send)

    @staticmethod
    def _declared_length(scope: Scope) -> int | None:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    async def _read_body(self, receive: Receive) -> list[Message]:
        """Every message up to the end of the body (or a disconnect), counting bytes."""
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages  # http.disconnect: let the app see it
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise BodyTooLarge(f"request body exceeds the limit of {self.max_body_bytes} bytes")
            if not message.get("more_body", False):
                return messages

    @staticmethod
    def _replay(messages: list[Message], receive: Receive) -> Receive:
        """A ``receive`` that returns the buffered messages, then defers to the server."""
        pending = list(messages)

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        return replay

    @staticmethod
    async def _refuse(send: Send, detail: str) -> None:
        body = json.dumps({"error": "too_large", "detail": detail, "errors": []}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
