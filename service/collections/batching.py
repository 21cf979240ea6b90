"""Dynamic micro-batching: concurrent requests share one call of a batch function.

A request ``await batcher.submit(job)``: the job goes into a thread-safe queue and the event
loop moves on. The batcher's own thread takes the queued jobs, up to ``max_rows`` rows (a job
larger than that goes alone), runs ``process`` on them, and hands the outcomes back to the loop
with one wake-up per batch. While ``process`` runs, new jobs queue up and form the next batch:
batches grow with the load by themselves, and under light load a job starts at once
(continuous batching). Waiting longer only pays when more work is known to be on its way:
``incoming()`` (e.g. the jobs an upstream stage is still preparing) decides whether a batch that
is not full waits for it, for at most ``max_wait`` seconds after its first job arrived.

``process`` returns one outcome per job: a result, an exception, or a :class:`Handoff` that
passes the job on to another batcher, whose result then answers the original ``submit`` (so a
request crosses several stages with one round trip through the event loop). If ``process``
raises, the jobs are run again one at a time, so one bad request never fails the others.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from service.errors import NotReadyError

logger = logging.getLogger(__name__)

JobT = TypeVar("JobT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class BatchStats:
    """What one batch was: for metrics."""

    stage: str
    jobs: int
    rows: int
    queue_waits: list[float]  # seconds from each job's arrival in this stage to the batch start
    seconds: float  # time ``process`` took


@dataclass(frozen=True)
class Handoff:
    """An outcome that sends the job on to ``stage`` as ``job``; its result will answer the
    request (``stage`` may produce another kind of result than the handing-off stage)."""

    stage: MicroBatcher[Any, Any]
    job: Any


@dataclass
class _Pending:
    job: Any
    rows: int
    arrived: float
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


_STOP = object()


class MicroBatcher(Generic[JobT, ResultT]):
    """Batches jobs from any event loop in one worker thread; see the module docstring."""

    def __init__(
        self,
        stage: str,
        process: Callable[[list[JobT]], Sequence[ResultT | Exception | Handoff]],
        *,
        rows_of: Callable[[JobT], int] = lambda _job: 1,
        max_rows: int = 64,
        max_wait: float = 0.0,
        incoming: Callable[[], int] = lambda: 0,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self.stage = stage
        self.max_rows = max_rows
        self.max_wait = max_wait
        self._process = process
        self._rows_of = rows_of
        self._incoming = incoming
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._in_process = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Jobs queued or being processed (approximate while jobs come and go)."""
        return self._queue.qsize() + self._in_process

    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._work, name=f"protonet-{self.stage}")
        self._thread.daemon = True
        self._thread.start()

    async def stop(self) -> None:
        """Refuse new jobs, finish the ones already queued, join the thread."""
        self._closed = True
        self._queue.put(_STOP)
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    async def submit(self, job: JobT) -> ResultT:
        """Queue ``job`` and wait for its result (or its exception, raised here)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ResultT] = loop.create_future()
        self.put(job, future, loop)
        return await future

    def put(self, job: Any, future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop) -> None:
        """Queue ``job`` for ``future`` (of ``loop``); callable from any thread."""
        if self._closed:
            raise NotReadyError("the service is shutting down")
        self._queue.put(_Pending(job, self._rows_of(job), time.perf_counter(), future, loop))

    def _work(self) -> None:
        """The worker thread: collect a batch, process it, hand out the outcomes; until stop."""
        carry: _Pending | None = None
        while True:
            first = carry if carry is not None else self._queue.get()
            if first is _STOP:
                break
            batch, carry = self._collect(first)
            self._run_batch(batch)
            if carry is _STOP:
                break
        self._fail_queued()

    def _collect(self, first: _Pending) -> tuple[list[_Pending], Any]:
        """``first`` plus queued jobs while they fit in ``max_rows``, waiting for announced
        work until ``max_wait`` after ``first`` arrived. Returns the batch and the job that
        did not fit (or ``_STOP``), if any."""
        batch, rows = [first], first.rows
        deadline = first.arrived + self.max_wait
        while rows < self.max_rows:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._incoming() == 0:
                    return batch, None
                try:
                    pending = self._queue.get(timeout=remaining)
                except queue.Empty:
                    return batch, None
            if pending is _STOP or rows + pending.rows > self.max_rows:
                return batch, pending
            batch.append(pending)
            rows += pending.rows
        return batch, None

    def _run_batch(self, batch: list[_Pending]) -> None:
        """Process ``batch``; outcomes go back to the loops (or on to other stages)."""
        started = time.perf_counter()
        self._in_process = len(batch)
        outcomes = self._process_isolated([pending.job for pending in batch])
        seconds = time.perf_counter() - started
        replies: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        for pending, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Handoff):
                try:
                    outcome.stage.put(outcome.job, pending.future, pending.loop)
                    continue
                except NotReadyError as error:
                    outcome = error
            replies.setdefault(pending.loop, []).append((pending.future, outcome))
        self._in_process = 0  # only now: a downstream stage waiting for these must see them
        for loop, pairs in replies.items():  # one wake-up per loop, not one per request
            _reply(loop, pairs)
        if self._on_batch is not None:
            waits = [started - pending.arrived for pending in batch]
            rows = sum(pending.rows for pending in batch)
            self._on_batch(BatchStats(self.stage, len(batch), rows, waits, seconds))

    def _process_isolated(self, jobs: list[Any]) -> Sequence[Any]:
        """``process(jobs)``; if it raises, each job alone, so only the failing ones fail."""
        try:
            outcomes = self._process(jobs)
        except Exception as error:
            if len(jobs) == 1:
                return [error]
            logger.warning("%s batch of %d failed (%r): one by one", self.stage, len(jobs), error)
            return [self._process_isolated([job])[0] for job in jobs]
        if len(outcomes) != len(jobs):
            mismatch = RuntimeError(f"{self.stage}: {len(outcomes)} outcomes for {len(jobs)} jobs")
            return [mismatch] * len(jobs)
        return outcomes

    def _fail_queued(self) -> None:
        """After the stop marker: a job that raced past the closed check gets
        :class:`NotReadyError` rather than waiting forever."""
        error = NotReadyError("the service is shutting down")
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                return
            if pending is not _STOP:
                _reply(pending.loop, [(pending.future, error)])


def _reply(loop: asyncio.AbstractEventLoop, pairs: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """Have ``loop`` resolve the futures; a loop that has closed meanwhile has no one waiting."""
    try:
        loop.call_soon_threadsafe(_resolve, pairs)
    except RuntimeError:  # "Event loop is closed"
        logger.debug("dropped %d outcomes for a closed event loop", len(pairs))


def _resolve(pairs: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """On the loop: set each future's result or exception (unless its request was cancelled)."""
    for future, outcome in pairs:
        if future.done():
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
