"""Adaptation jobs: train an adapter for a collection from its stored examples, in the
background, and adopt it only if it classifies held-out examples better (protonet/adaptation.py
has the map, its training and the held-out comparison).

A job reads the collection's embeddings once (no encoder pass), then trains in a child process
of the process that was asked (service/collections/adaptation_process.py: no interpreter lock
shared with the threads that answer queries, a lower scheduling priority), followed by a thread
here. That thread reports its progress to the database about twice a second, and there it
learns that a client (through any process) asked it to stop. Its outcome is written once: kept
unadapted (with both held-out figures), adopted (the adapter stored and an ``adapter`` change in the
feed, in one transaction: service/storage/adaptations.py), cancelled or failed. Nothing of a
job outlives its process: a job of a stopped process has failed, and nothing was adopted.

At most ``max_concurrent`` jobs run in a process (429 adaptation_busy beyond), one per
collection across all processes (409), each over at most ``max_examples`` examples and for at
most ``max_seconds``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from protonet.adaptation import Adaptation, AdaptationConfig, why_not_adaptable
from service.collections.adaptation_process import train_in_process
from service.collections.live_collection import LiveCollection
from service.collections.registry import CollectionRegistry, SupportSnapshot
from service.errors import (
    AdaptationBusyError,
    CollectionTooLargeError,
    ConflictError,
    NotFoundError,
)
from service.storage.adaptations import (
    ADOPTED,
    CANCELLED,
    COMPLETED,
    FAILED,
    KEPT_UNADAPTED,
    RUNNING,
    AdaptationStore,
    JobStart,
    NewAdapter,
    StoredJob,
)

logger = logging.getLogger(__name__)

REPORT_EVERY_SECONDS = 0.5  # progress written to the database, and cancellation read back
LISTED_JOBS = 20  # the latest jobs a listing shows
STOPPED = "the service stopped before the adaptation finished: nothing was adopted"


@dataclass(frozen=True)
class AdaptationLimits:
    """PROTONET_ADAPT_*: the largest collection adapted (examples), the longest a job may run,
    and how many run at once in one process."""

    max_examples: int = 20_000
    max_seconds: float = 600.0
    max_concurrent: int = 1


class AdaptationObserver(Protocol):
    """What the jobs report (the metrics), by model name."""

    def observe_adaptation(self, outcome: str, seconds: float, model: str) -> None: ...

    def observe_adaptations_running(self, running: int) -> None: ...


class _Stop(Exception):
    """Ends a job's training early with ``status`` (cancelled or failed) and ``reason``."""

    def __init__(self, status: str, reason: str | None = None) -> None:
        super().__init__(reason or status)
        self.status, self.reason = status, reason


@dataclass
class _Running:
    """A job running in this process: set ``cancel`` to stop it at its next step."""

    job_id: int
    live: LiveCollection
    model: str
    cancel: threading.Event = field(default_factory=threading.Event)


class _Reporter:
    """The training's progress callback: writes progress now and then, and stops the training
    (:class:`_Stop`) when the job is cancelled (here or through another process), its
    collection deleted, or its time is up."""

    def __init__(self, runner: AdaptationRunner, running: _Running, deadline: float) -> None:
        self.runner, self.running, self.deadline = runner, running, deadline
        self.started = self.last_report = time.monotonic()

    def __call__(self, done: int, total: int, examples: int) -> None:
        now = time.monotonic()
        if self.runner.stopping.is_set():
            raise _Stop(FAILED, STOPPED)
        if self.running.cancel.is_set():
            raise _Stop(CANCELLED)
        if now > self.deadline:
            raise self.runner.overran()
        if now - self.last_report >= REPORT_EVERY_SECONDS or done == total:
            self.last_report = now
            rate = examples / max(now - self.started, 1e-9)
            store = self.runner.registry.adaptations
            if store.report_progress(self.running.job_id, done / total, rate):
                raise _Stop(CANCELLED)


class AdaptationRunner:
    """Starts, shows and cancels a process's adaptation jobs (see the module docstring)."""

    def __init__(
        self,
        registry: CollectionRegistry,
        replica_id: str,
        limits: AdaptationLimits | None = None,
        observer: AdaptationObserver | None = None,
        config: AdaptationConfig | None = None,
    ) -> None:
        self.registry = registry
        self.replica_id = replica_id
        self.limits = limits or AdaptationLimits()
        self.observer = observer
        self.config = config or AdaptationConfig()
        self._running: dict[int, _Running] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.stopping = threading.Event()  # set at shutdown: every job fails

    @property
    def store(self) -> AdaptationStore:
        return self.registry.adaptations

    # -- the API ---------------------------------------------------------------------------

    def start(self, name: str, *, tenant: str) -> StoredJob:
        """Start adapting the collection (blocking: reads its embeddings); the new job.
        409 if it cannot be adapted or a job of it runs already, 422 if it is too large, 429
        when this process runs as many jobs as it may."""
        live = self.registry.get(name, tenant)
        self._check_size(live)
        running = _Running(0, live, live.model)
        with self._lock:
            if self.stopping.is_set() or len(self._running) >= self.limits.max_concurrent:
                raise AdaptationBusyError(
                    f"this process runs {len(self._running)} adaptation(s), as many as "
                    "PROTONET_ADAPT_MAX_CONCURRENT allows: retry when one has finished",
                    retry_after=5,
                )
            self._running[id(running)] = running  # holds the slot while the job starts
        try:
            job, snapshot = self._create(live, running)
        except BaseException:
            with self._lock:
                del self._running[id(running)]
            raise
        self._launch(running, snapshot)
        return job

    def _check_size(self, live: LiveCollection) -> None:
        examples = live.status().n_examples
        if examples > self.limits.max_examples:
            raise CollectionTooLargeError(
                f"collection {live.name!r} has {examples} examples, more than "
                f"PROTONET_ADAPT_MAX_EXAMPLES ({self.limits.max_examples}) allows to adapt"
            )

    def _create(self, live: LiveCollection, running: _Running) -> tuple[StoredJob, SupportSnapshot]:
        """The job's row, from the collection's state now (its embeddings read after the
        change it reflects: a write in between makes the adapter stale, never fresher than
        it is)."""
        snapshot = self.registry.support_snapshot(live)
        labels = torch.from_numpy(snapshot.embeddings.class_ids)
        if (problem := why_not_adaptable(labels)) is not None:
            raise ConflictError(f"collection {live.name!r}: {problem}")
        job = self.store.start_job(
            JobStart(
                live.id,
                self.replica_id,
                self.registry.encoder_of(live).version,
                snapshot.change_id,
                snapshot.revision,
                len(labels),
                len(torch.unique(labels)),
            )
        )
        running.job_id = job.id
        return job, snapshot

    def _launch(self, running: _Running, snapshot: SupportSnapshot) -> None:
        with self._lock:
            self._running[running.job_id] = self._running.pop(id(running))
            thread = threading.Thread(
                target=self._run,
                args=(running, snapshot),
                name=f"protonet-adaptation-{running.job_id}",
                daemon=True,
            )
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            self._observe_running()
        thread.start()

    def get(self, name: str, job_id: int, *, tenant: str) -> StoredJob:
        stored = self.registry.stored_collection(name, tenant)
        job = self.store.get_job(stored.id, job_id)
        if job is None:
            raise NotFoundError(f"adaptation {job_id} of collection {name!r} does not exist")
        return job

    def list(self, name: str, *, tenant: str) -> list[StoredJob]:
        """The collection's latest jobs, newest first."""
        return self.store.list_jobs(self.registry.stored_collection(name, tenant).id, LISTED_JOBS)

    def cancel(self, name: str, job_id: int, *, tenant: str) -> StoredJob:
        """Ask a running job to stop (wherever it runs); :class:`ConflictError` if it has
        finished already."""
        stored = self.registry.stored_collection(name, tenant)
        job = self.store.request_cancel(stored.id, job_id)
        if job is None:
            raise NotFoundError(f"adaptation {job_id} of collection {name!r} does not exist")
        if job.status != RUNNING:
            raise ConflictError(_finished(name, job))
        with self._lock:
            running = self._running.get(job_id)
        if running is not None:  # here: stop it at its next step
            running.cancel.set()
        return job

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every job of this process (at shutdown): none adopts anything after this."""
        with self._lock:
            self.stopping.set()
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
        try:
            self.store.fail_jobs_of(self.replica_id, STOPPED)
        except Exception:
            logger.warning("could not mark this process's adaptations failed", exc_info=True)

    def overran(self) -> _Stop:
        limit = self.limits.max_seconds
        return _Stop(
            FAILED,
            f"the adaptation took longer than PROTONET_ADAPT_MAX_SECONDS ({limit:g} s): nothing "
            "was adopted; raise the limit, or adapt a smaller collection",
        )

    # -- the job's thread ------------------------------------------------------------------

    def _run(self, running: _Running, snapshot: SupportSnapshot) -> None:
        started = time.monotonic()
        outcome = FAILED
        try:
            outcome = self._train_and_conclude(running, snapshot, started)
        except _Stop as stop:
            outcome = stop.status
            self.store.finish_job(running.job_id, stop.status, error=stop.reason)
        except NotFoundError:  # the collection was deleted: its jobs went with it
            outcome = CANCELLED
        except Exception as error:
            logger.exception("adaptation %d of %r failed", running.job_id, running.live.name)
            self._finish_quietly(running.job_id, FAILED, f"the adaptation failed: {error}")
        finally:
            with self._lock:
                self._running.pop(running.job_id, None)
                self._observe_running()
            if self.observer is not None:
                self.observer.observe_adaptation(outcome, time.monotonic() - started, running.model)
            logger.info("adaptation %d of %r: %s", running.job_id, running.live.name, outcome)

    def _train_and_conclude(
        self, running: _Running, snapshot: SupportSnapshot, started: float
    ) -> str:
        deadline = started + self.limits.max_seconds
        embeddings = snapshot.embeddings
        try:
            result = train_in_process(
                embeddings.embeddings,
                embeddings.class_ids,
                self.config,
                _Reporter(self, running, deadline),
                timeout=max(deadline - time.monotonic(), 0.0),
            )
        except TimeoutError:  # the child said nothing until the deadline
            raise self.overran() from None
        figures = self._figures(result, time.monotonic() - started)
        if result.adapter is None:
            self.store.finish_job(running.job_id, COMPLETED, KEPT_UNADAPTED, figures)
            return KEPT_UNADAPTED
        adapter = NewAdapter(
            result.adapter.down.numpy(),
            result.adapter.up.numpy(),
            result.held_out.scores.numpy(),
            result.held_out.shots.numpy(),
            figures,
        )
        if self.stopping.is_set():
            raise _Stop(FAILED, STOPPED)
        if running.cancel.is_set():
            raise _Stop(CANCELLED)
        adopted = self.registry.adopt(running.live, running.job_id, adapter)
        return ADOPTED if adopted else CANCELLED

    def _figures(self, result: Adaptation, seconds: float) -> dict[str, Any]:
        """The held-out comparison as the job's answer shows it."""
        held_out = result.held_out
        return {
            "examples": held_out.examples,
            "folds": held_out.folds,
            "unadapted_accuracy": held_out.unadapted_accuracy,
            "adapted_accuracy": held_out.adapted_accuracy,
            "margin": self.config.margin,
            "min_gain": self.config.min_gain,
            "seconds": round(seconds, 3),
        }

    def _finish_quietly(self, job_id: int, status: str, error: str) -> None:
        try:
            self.store.finish_job(job_id, status, error=error)
        except Exception:  # the database is away: the job shows failed once its process stops
            logger.warning("could not record the end of adaptation %d", job_id, exc_info=True)

    def _observe_running(self) -> None:
        """(Lock held.)"""
        if self.observer is not None:
            self.observer.observe_adaptations_running(len(self._running))


def _finished(name: str, job: StoredJob) -> str:
    """Why a finished job cannot be cancelled, and what undoes an adopted one."""
    outcome = job.status if job.decision is None else f"{job.status}: {job.decision}"
    message = f"adaptation {job.id} of collection {name!r} has finished ({outcome})"
    if job.decision == ADOPTED:
        return f"{message}; DELETE /v1/collections/{name}/adapter removes its adapter"
    return f"{message}: nothing to cancel"
