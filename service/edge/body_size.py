"""Request body limits: a small pure-ASGI middleware.

A declared ``Content-Length`` over the limit is refused before any of the body is read; a
chunked (or lying) body is counted while it streams in and refused as soon as it passes the
limit. Either way the app never sees the request, and the client gets 413.

Before a body is read, its request reserves memory from a :class:`MemoryBudget` shared by all
requests: ``BODY_MEMORY_FACTOR`` times the declared length (or the limit, for a chunked
body), held until the response is sent. A request that does not fit waits, its body unread
(TCP back-pressure keeps it in the client's buffers), so requests in flight together cannot
hold more than the budget however many arrive: the count cap alone (64 in flight) allowed
64 x 16 MiB bodies and everything parsed from them.

The body (at most the limit) is buffered and replayed to the app, which reads all of it anyway
to parse the JSON. The one exception is a route that reads its body as a stream
(:class:`StreamedBodies`: a snapshot's restore, gigabytes maybe): its body goes to the app as it
arrives, counted against its own limit, and it reserves a fixed share of the budget.
"""

from __future__ import annotations

import collections
import json
import re
from dataclasses import dataclass

import anyio
from anyio import to_thread

from service.edge.asgi import ASGIApp, Message, Receive, Scope, Send
from service.edge.error_responses import domain_error_response
from service.edge.heap import TRIM_AFTER_BYTES, trim_heap
from service.errors import LimitExceededError, OverloadedError

# Bytes a request may hold per byte of body, measured (benchmarks/request_memory.py): the
# buffered chunks, the joined body, simdjson's padded copy and tape, and the Python strings
# and numpy arrays parsed from it.
BODY_MEMORY_FACTOR = 6
BUDGET_WAIT_SECONDS = 30.0


class BodyTooLarge(Exception):
    pass


@dataclass(frozen=True)
class StreamedBodies:
    """Requests (``method`` on a path matching ``path``) whose body the app reads as a stream:
    passed on unbuffered, refused with 413 past ``max_bytes``, reserving ``reserve`` bytes of
    the memory budget (what the app holds of such a body at once: its batches)."""

    method: str
    path: re.Pattern[str]
    max_bytes: int
    reserve: int = 64 * 1024 * 1024

    def matches(self, scope: Scope) -> bool:
        return scope["method"] == self.method and bool(self.path.match(scope["path"]))


class MemoryBudget:
    """Bytes that requests in flight may reserve together; reservations wait in FIFO order.

    Used from one event loop (the app's), so no lock is needed. A reservation larger than
    the whole budget is cut to the budget: such a request runs alone.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.available = capacity
        self._waiters: collections.deque[tuple[int, anyio.Event]] = collections.deque()

    async def reserve(self, amount: int, timeout: float = BUDGET_WAIT_SECONDS) -> int:
        """Take ``amount`` bytes (at most the capacity), waiting for room; returns what was
        taken, for :meth:`release`. :class:`OverloadedError` after ``timeout`` seconds."""
        amount = min(amount, self.capacity)
        if not self._waiters and amount <= self.available:
            self.available -= amount
            return amount
        waiter = (amount, anyio.Event())
        self._waiters.append(waiter)
        with anyio.move_on_after(timeout):
            await waiter[1].wait()
        if waiter[1].is_set():
            return amount  # _wake took it for us
        self._waiters.remove(waiter)
        self._wake()  # a smaller request behind this one may fit now
        raise OverloadedError(
            "the requests in flight hold the memory budget for request bodies "
            "(PROTONET_REQUEST_MEMORY_BYTES); retry shortly",
            retry_after=1,
        )

    def release(self, amount: int) -> None:
        self.available += amount
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.available:
            amount, event = self._waiters.popleft()
            self.available -= amount
            event.set()


class BodySizeLimitMiddleware:
    """Answer 413 to HTTP requests whose body exceeds ``max_body_bytes``; admit bodies only
    as far as the memory ``budget`` allows."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        budget: MemoryBudget,
        streamed: StreamedBodies | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.budget = budget
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = self._declared_length(scope)
        if self.streamed is not None and self.streamed.matches(scope):
            await self._stream(scope, receive, send, declared, self.streamed)
            return
        if declared is not None and declared > self.max_body_bytes:
            message = f"request body is {declared} bytes; the limit is {self.max_body_bytes}"
            await self._refuse(send, message)
            return
        expected = self.max_body_bytes if declared is None else declared
        if declared == 0 or (declared is None and not self._is_chunked(scope)):
            expected = 0  # no body: nothing to reserve (probes, GETs)
        try:
            reserved = await self.budget.reserve(expected * BODY_MEMORY_FACTOR) if expected else 0
        except OverloadedError as error:
            await domain_error_response(error)(scope, receive, send)
            return
        try:
            await self._admit(scope, receive, send)
        finally:
            self.budget.release(reserved)
        if reserved >= TRIM_AFTER_BYTES and self.budget.available == self.budget.capacity:
            # The last large body of a burst is done: what parsing it freed leaves the RSS.
            await to_thread.run_sync(trim_heap)

    async def _stream(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        declared: int | None,
        streamed: StreamedBodies,
    ) -> None:
        """A streamed body: counted as the app reads it (past the limit, the app's read raises
        :class:`LimitExceededError`, a 413)."""
        limit = f"the limit is {streamed.max_bytes} bytes (PROTONET_MAX_SNAPSHOT_BYTES)"
        if declared is not None and declared > streamed.max_bytes:
            await self._refuse(send, f"request body is {declared} bytes; {limit}")
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > streamed.max_bytes:
                raise LimitExceededError(f"request body exceeds {limit}")
            return message

        try:
            reserved = await self.budget.reserve(streamed.reserve)
        except OverloadedError as error:
            await domain_error_response(error)(scope, receive, send)
            return
        try:
            await self.app(scope, counted, send)
        finally:
            self.budget.release(reserved)
        if self.budget.available == self.budget.capacity:  # what its batches freed leaves RSS
            await to_thread.run_sync(trim_heap)

    async def _admit(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            buffered = await self._read_body(receive)
        except BodyTooLarge as error:
            await self._refuse(send, str(error))
            return
        await self.app(scope, self._replay(buffered, receive), send)

    @staticmethod
    def _declared_length(scope: Scope) -> int | None:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    @staticmethod
    def _is_chunked(scope: Scope) -> bool:
        return any(
            name == b"transfer-encoding" and b"chunked" in value.lower()
            for name, value in scope.get("headers", [])
        )

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
        """A ``receive`` that hands out the buffered messages (letting go of each), then
        defers to the server."""
        pending = collections.deque(messages)
        messages.clear()  # the deque holds them now; nothing else keeps the chunks alive

        async def replay() -> Message:
            return pending.popleft() if pending else await receive()

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
