"""Dynamic micro-batching: concurrent requests share one call of a batch function, and take
turns when one of them is large.

A request ``await batcher.submit(job)``: the job goes into a thread-safe queue and the event
loop moves on. The batcher's own thread takes the queued jobs, up to ``budget`` (rows, or what
``split.costs`` says rows cost), runs ``process`` on them, and hands the outcomes back to the
loop with one wake-up per batch. While ``process`` runs, new jobs queue up and form the next
batch: batches grow with the load by themselves, and under light load a job starts at once
(continuous batching). Waiting longer only pays when more work is known to be on its way:
``incoming()`` (e.g. the jobs an upstream stage is still preparing) decides whether a batch that
is not full waits for it, for at most ``max_wait`` seconds after its oldest job arrived.

A stage with a :class:`Split` cuts jobs into parts: each batch takes rows from every waiting
job in turns (one row each, oldest job first) while they fit in the budget, so a request that
arrives beside a large one waits for at most about one batch, not for the whole large request
(which would otherwise hold the stage for seconds, and its memory would grow with its size).
Without a split a job is one piece: one larger than the budget goes alone.

``process`` returns one outcome per job (per part, with a split: ``split.finish`` makes the
job's outcome of its parts' results): a result, an exception, or a :class:`Handoff` that
passes the job on to another batcher, whose result then answers the original ``submit`` (so a
request crosses several stages with one round trip through the event loop). If ``process``
raises, the jobs are run again one at a time, so one bad request never fails the others; a
part that fails fails its job, whose other parts are then skipped.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from service.errors import NotReadyError

logger = logging.getLogger(__name__)

JobT = TypeVar("JobT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class BatchStats:
    """What one batch was: for metrics."""

    stage: str
    jobs: int  # jobs, or parts of jobs
    rows: int
    queue_waits: list[float]  # seconds from each job's arrival in this stage to its first batch
    seconds: float  # time ``process`` took


@dataclass(frozen=True)
class Handoff:
    """An outcome that sends the job on to ``stage`` as ``job``; its result will answer the
    request (``stage`` may produce another kind of result than the handing-off stage)."""

    stage: MicroBatcher[Any, Any]
    job: Any


@dataclass(frozen=True)
class Split(Generic[JobT]):
    """How a stage cuts a job into parts that take turns with other jobs' parts.

    ``costs(job)``: what each of the job's rows costs a batch (out of the batcher's budget);
    ``part(job, start, stop)``: rows ``[start, stop)`` as a job of their own; ``finish(job,
    results)``: the job's outcome (a result, an exception or a :class:`Handoff`) from its
    parts' results, in row order (a job that fits one batch is its own one part).
    """

    costs: Callable[[JobT], Sequence[int]]
    part: Callable[[JobT, int, int], JobT]
    finish: Callable[[JobT, list[Any]], Any]


@dataclass(eq=False)
class _Pending:
    job: Any
    arrived: float
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    costs: Sequence[int] = ()  # per row with a split, else one entry: the job's rows
    done: int = 0  # rows (entries of ``costs``) processed
    planned: int = 0  # rows taken into the batch being planned
    parts: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class _Slice:
    pending: _Pending
    start: int
    stop: int


_STOP = object()
_UNFINISHED = object()  # a job with parts still to process
_HANDED_ON = object()  # a job another stage now answers


class MicroBatcher(Generic[JobT, ResultT]):
    """Batches jobs from any event loop in one worker thread; see the module docstring."""

    def __init__(
        self,
        stage: str,
        process: Callable[[list[JobT]], Sequence[Any]],
        *,
        rows_of: Callable[[JobT], int] = lambda _job: 1,
        budget: int = 64,
        max_wait: float = 0.0,
        incoming: Callable[[], int] = lambda: 0,
        on_batch: Callable[[BatchStats], None] | None = None,
        split: Split[JobT] | None = None,
    ) -> None:
        self.stage = stage
        self.budget = budget
        self.max_wait = max_wait
        self._process = process
        self._rows_of = rows_of
        self._incoming = incoming
        self._on_batch = on_batch
        self._split = split
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Jobs taken from the queue and not yet answered (or handed on); only the worker
        # thread changes it, others read its length.
        self._active: collections.deque[_Pending] = collections.deque()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Jobs queued or being processed (approximate while jobs come and go)."""
        return self._queue.qsize() + len(self._active)

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
        self._queue.put(_Pending(job, time.perf_counter(), future, loop))

    def _work(self) -> None:
        """The worker thread: admit queued jobs, process a batch of them, hand out the
        outcomes; after the stop marker, finish the admitted jobs and end."""
        stopping = False
        while True:
            if not stopping:
                stopping = self._admit(wait=not self._active)
            if not self._active:
                break
            batch, stopped = self._collect(stopping)
            stopping |= stopped
            self._run_batch(batch)
        self._fail_queued()

    def _admit(self, wait: bool) -> bool:
        """Move queued jobs to the active ones (waiting for one if ``wait``); True once the
        stop marker came (the jobs queued after it are refused)."""
        try:
            item = self._queue.get() if wait else self._queue.get_nowait()
            while True:
                if item is _STOP:
                    return True
                self._active.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            return False

    def _collect(self, stopping: bool) -> tuple[list[_Slice], bool]:
        """The next batch of the active jobs; while it has room and work is announced, waits
        for it until ``max_wait`` after the oldest active job arrived. Also returns whether
        the stop marker came meanwhile."""
        batch, spent = self._plan()
        deadline = min(pending.arrived for pending in self._active) + self.max_wait
        while not stopping and spent < self.budget and self._incoming() > 0:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            self._active.append(item)
            stopping = self._admit(wait=False)
            batch, spent = self._plan()
        return batch, stopping

    def _plan(self) -> tuple[list[_Slice], int]:
        """Rows of the active jobs in turns, one row each, while they fit in the budget (the
        first row of a batch always does; a job whose next row does not fit waits for the
        next batch); returns the batch and its cost. The jobs that got rows then queue behind
        those that did not, so a job whose row never fits beside another's (a large image
        beside a large request) goes first in the next batch."""
        for pending in self._active:
            pending.planned = 0
            if not pending.costs:
                pending.costs = self._costs(pending.job)
        spent, taking = 0, list(self._active)
        while taking:
            still = []
            for pending in taking:
                row = pending.done + pending.planned
                if row == len(pending.costs) or (
                    spent and spent + pending.costs[row] > self.budget
                ):
                    continue
                pending.planned += 1
                spent += pending.costs[row]
                still.append(pending)
            taking = still
        served = [pending for pending in self._active if pending.planned]
        waiting = [pending for pending in self._active if not pending.planned]
        self._active = collections.deque(waiting + served)
        return [_Slice(p, p.done, p.done + p.planned) for p in served], spent

    def _costs(self, job: Any) -> Sequence[int]:
        if self._split is None:
            return [self._rows_of(job)]
        try:
            return self._split.costs(job) or [0]  # a job without rows is still answered
        except Exception:  # the worker thread must live on: then the job is one piece
            logger.exception("%s: the costs of a job failed; it goes whole", self.stage)
            return [self.budget]

    def _job_of(self, piece: _Slice) -> Any:
        """The job ``process`` gets for ``piece``: the job itself when the piece is all of it."""
        whole = piece.start == 0 and piece.stop == len(piece.pending.costs)
        if whole or self._split is None:
            return piece.pending.job
        return self._split.part(piece.pending.job, piece.start, piece.stop)

    def _run_batch(self, batch: list[_Slice]) -> None:
        """Process ``batch``; finished jobs' outcomes go back to the loops (or on to other
        stages), unfinished ones stay for the next batch."""
        started = time.perf_counter()
        results = self._process_isolated([self._job_of(piece) for piece in batch])
        seconds = time.perf_counter() - started
        replies: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        for piece, result in zip(batch, results, strict=True):
            outcome = self._advance(piece, result)
            if outcome is _UNFINISHED:
                continue
            pending = piece.pending
            if isinstance(outcome, Handoff):
                outcome = _hand_on(outcome, pending)
            if outcome is not _HANDED_ON:
                replies.setdefault(pending.loop, []).append((pending.future, outcome))
            self._active.remove(pending)  # only now: a downstream stage must see it in flight
        for loop, pairs in replies.items():  # one wake-up per loop, not one per request
            _reply(loop, pairs)
        if self._on_batch is not None:
            self._on_batch(self._stats(batch, started, seconds))

    def _advance(self, piece: _Slice, result: Any) -> Any:
        """Record ``piece``'s result; the job's outcome once it is finished (a failed part
        finishes it), else ``_UNFINISHED``."""
        pending = piece.pending
        pending.done = piece.stop
        if self._split is None or isinstance(result, Exception):
            return result
        pending.parts.append(result)
        if pending.done < len(pending.costs):
            return _UNFINISHED
        try:
            return self._split.finish(pending.job, pending.parts)
        except Exception as error:
            return error

    def _stats(self, batch: list[_Slice], started: float, seconds: float) -> BatchStats:
        rows = sum(
            piece.pending.costs[0] if self._split is None else piece.stop - piece.start
            for piece in batch
        )
        waits = [started - piece.pending.arrived for piece in batch if piece.start == 0]
        return BatchStats(self.stage, len(batch), rows, waits, seconds)

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


def _hand_on(handoff: Handoff, pending: _Pending) -> Any:
    """Queue the job at its next stage (``_HANDED_ON``), or the error that refused it."""
    try:
        handoff.stage.put(handoff.job, pending.future, pending.loop)
    except NotReadyError as error:
        return error
    return _HANDED_ON


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
