"""Adaptation jobs and adopted adapters (:class:`AdaptationStore`), over the tables
``adaptation_jobs`` and ``adapters``; every public method is one transaction.

A job belongs to the process that runs it (``replica_id``). Jobs survive no process: one whose
process is no longer live (``replicas``: a clean stop removes its row, a killed one stops
refreshing it), or that has reported no progress for ``STALLED_AFTER`` (it reports twice a
second), is shown as failed, and is written so when the next job of its collection starts.
Adopting an adapter is one transaction: the adapter's row, the job's outcome and an ``adapter``
change in the change feed, so every process rebuilds the collection in the adapted space (a
job cancelled before that transaction adopts nothing). Removing an adapter is another such
change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.errors import ConflictError, NotFoundError
from service.storage.records import (
    AdaptationJobRecord,
    AdapterRecord,
    ChangeRecord,
    ReplicaRecord,
    utcnow,
)
from service.storage.repository import Storage

RUNNING = "running"
COMPLETED = "completed"
CANCELLED = "cancelled"
FAILED = "failed"
ADOPTED = "adopted"
KEPT_UNADAPTED = "kept_unadapted"
ORPHANED = (
    "the process that ran this adaptation stopped before it finished (a restart, or a crash): "
    "nothing was adopted; start a new one"
)
STALLED = (
    "the adaptation reported no progress for too long (its process hung, or lost the "
    "database): nothing was adopted; start a new one"
)
STALLED_AFTER = timedelta(seconds=60)
# Changes to a collection's examples (after them, an adapter no longer reflects its examples).
SUPPORT_CHANGES = ("support", "delete_class")


@dataclass(frozen=True)
class StoredJob:
    """An adaptation job as stored; ``result``: its held-out figures (once known)."""

    id: int
    collection_id: int
    status: str
    decision: str | None
    cancel_requested: bool
    model_version: str
    trained_revision: int
    n_examples: int
    n_classes: int
    progress: float
    examples_per_second: float
    result: dict[str, Any] | None
    error: str | None
    revision: int | None  # of the change that adopted its adapter
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class NewAdapter:
    """What a job adopts: the map's ``down [dim, rank]`` and ``up [rank, dim]``, the held-out
    ``scores [m]`` and prototype sizes ``shots [m]``, and the held-out figures."""

    down: np.ndarray
    up: np.ndarray
    scores: np.ndarray
    shots: np.ndarray
    result: dict[str, Any]


@dataclass(frozen=True)
class StoredAdapter(NewAdapter):
    """A collection's adopted adapter: made by job ``version`` on the embeddings of
    ``model_version``, from the collection as it was at ``trained_change_id`` (its tenant's
    revision ``trained_revision``); ``stale`` once examples changed since."""

    collection_id: int
    version: int
    model_version: str
    trained_change_id: int
    trained_revision: int
    stale: bool
    created_at: datetime


@dataclass(frozen=True)
class JobStart:
    """The collection state a new job trains on, and who runs it."""

    collection_id: int
    replica_id: str
    model_version: str
    trained_change_id: int
    trained_revision: int
    n_examples: int
    n_classes: int


class AdaptationStore:
    """Jobs and adapters in ``storage``'s database; ``live_within``: how recent a process's
    heartbeat must be for its jobs to count as running."""

    def __init__(self, storage: Storage, live_within: timedelta) -> None:
        self.storage = storage
        self.live_within = live_within

    # -- jobs ------------------------------------------------------------------------------

    def start_job(self, start: JobStart) -> StoredJob:
        """A new running job; :class:`ConflictError` while another job of the collection runs
        (:class:`NotFoundError` if the collection is gone)."""
        with self.storage.writing() as session:
            self.storage.locked_collection(session, start.collection_id)
            self._fail_orphans(session, start.collection_id)
            running = session.scalars(_running(start.collection_id)).first()
            if running is not None:
                raise ConflictError(
                    f"adaptation {running.id} of this collection is running: wait for it to "
                    f"finish, or cancel it (DELETE .../adaptations/{running.id})"
                )
            now = utcnow()
            record = AdaptationJobRecord(
                **vars(start),
                status=RUNNING,
                cancel_requested=False,
                progress=0.0,
                examples_per_second=0.0,
                created_at=now,
                updated_at=now,
            )
            session.add(record)
            session.flush()
            return _job(record, {start.replica_id})

    def _fail_orphans(self, session: Session, collection_id: int) -> None:
        live = self._live_replicas(session)
        for record in session.scalars(_running(collection_id)):
            if (error := _gone(record, live)) is not None:
                _finish(record, FAILED, error=error)

    def _live_replicas(self, session: Session) -> set[str]:
        seen = utcnow() - self.live_within
        return set(session.scalars(select(ReplicaRecord.id).where(ReplicaRecord.seen_at >= seen)))

    def report_progress(self, job_id: int, progress: float, examples_per_second: float) -> bool:
        """Record a running job's progress; returns whether it should stop (cancelled, or its
        collection deleted)."""
        with self.storage.writing() as session:
            record = session.get(AdaptationJobRecord, job_id)
            if record is None or record.status != RUNNING:
                return True
            record.progress, record.examples_per_second = progress, examples_per_second
            record.updated_at = utcnow()
            return record.cancel_requested

    def finish_job(
        self,
        job_id: int,
        status: str,
        decision: str | None = None,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """End a running job (a finished one, or a deleted one, stays as it is)."""
        with self.storage.writing() as session:
            record = session.get(AdaptationJobRecord, job_id)
            if record is not None and record.status == RUNNING:
                _finish(record, status, decision, result, error)

    def fail_jobs_of(self, replica_id: str, error: str) -> int:
        """Fail every job that ``replica_id`` runs (it stops); returns how many."""
        with self.storage.writing() as session:
            records = session.scalars(
                select(AdaptationJobRecord).where(
                    AdaptationJobRecord.replica_id == replica_id,
                    AdaptationJobRecord.status == RUNNING,
                )
            ).all()
            for record in records:
                _finish(record, FAILED, error=error)
            return len(records)

    def request_cancel(self, collection_id: int, job_id: int) -> StoredJob | None:
        """Ask a running job to stop (its process sees it at its next progress report); the
        job as it is now, ``None`` if the collection has no such job."""
        with self.storage.writing() as session:
            record = session.get(AdaptationJobRecord, job_id)
            if record is None or record.collection_id != collection_id:
                return None
            if record.status == RUNNING:
                record.cancel_requested = True
            return _job(record, self._live_replicas(session))

    def get_job(self, collection_id: int, job_id: int) -> StoredJob | None:
        with self.storage.reading() as session:
            record = session.get(AdaptationJobRecord, job_id)
            if record is None or record.collection_id != collection_id:
                return None
            return _job(record, self._live_replicas(session))

    def list_jobs(self, collection_id: int, limit: int) -> list[StoredJob]:
        """The collection's latest ``limit`` jobs, newest first."""
        query = (
            select(AdaptationJobRecord)
            .where(AdaptationJobRecord.collection_id == collection_id)
            .order_by(AdaptationJobRecord.id.desc())
            .limit(limit)
        )
        with self.storage.reading() as session:
            live = self._live_replicas(session)
            return [_job(record, live) for record in session.scalars(query)]

    # -- adapters --------------------------------------------------------------------------

    def adopt(self, job_id: int, adapter: NewAdapter) -> int | None:
        """Adopt a running job's adapter: store it as its collection's (replacing any), end
        the job and record an ``adapter`` change; returns the change's revision. ``None`` if
        the job was asked to stop meanwhile (it is then cancelled, and nothing adopted);
        :class:`NotFoundError` if the collection is gone."""
        with self.storage.writing() as session:
            job = session.get(AdaptationJobRecord, job_id, with_for_update=True)
            if job is None:
                raise NotFoundError(f"adaptation {job_id} no longer exists")
            collection = self.storage.locked_collection(session, job.collection_id)
            if job.cancel_requested or job.status != RUNNING:
                if job.status == RUNNING:
                    _finish(job, CANCELLED, result=adapter.result)
                return None
            session.merge(_adapter_record(job, adapter, self._changed_since(session, job)))
            _finish(job, COMPLETED, ADOPTED, adapter.result)
            job.revision = self.storage.record_change(session, collection, "adapter")
            return job.revision

    @staticmethod
    def _changed_since(session: Session, job: AdaptationJobRecord) -> bool:
        """Whether the collection's examples changed after the state the job trained on."""
        later = select(ChangeRecord.id).where(
            ChangeRecord.collection_id == job.collection_id,
            ChangeRecord.id > job.trained_change_id,
            ChangeRecord.kind.in_(SUPPORT_CHANGES),
        )
        return session.scalars(later.limit(1)).first() is not None

    def get_adapter(self, collection_id: int) -> StoredAdapter | None:
        with self.storage.reading() as session:
            record = session.get(AdapterRecord, collection_id)
            return None if record is None else _stored_adapter(record)

    def delete_adapter(self, collection_id: int, name: str) -> int:
        """Remove the collection's adapter (queries go back to the plain model); returns the
        ``adapter`` change's revision. :class:`NotFoundError` if it has none."""
        with self.storage.writing() as session:
            collection = self.storage.locked_collection(session, collection_id)
            removed = session.execute(
                delete(AdapterRecord).where(AdapterRecord.collection_id == collection_id)
            )
            if not removed.rowcount:  # type: ignore[attr-defined]
                raise NotFoundError(f"collection {name!r} has no adapter")
            return self.storage.record_change(session, collection, "adapter")


def _running(collection_id: int) -> Any:
    return select(AdaptationJobRecord).where(
        AdaptationJobRecord.collection_id == collection_id,
        AdaptationJobRecord.status == RUNNING,
    )


def _finish(
    record: AdaptationJobRecord,
    status: str,
    decision: str | None = None,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    record.status, record.decision, record.error = status, decision, error
    if result is not None:
        record.result = json.dumps(result)
    if status == COMPLETED:
        record.progress = 1.0
    record.updated_at = record.finished_at = utcnow()


def _gone(record: AdaptationJobRecord, live: set[str]) -> str | None:
    """Why a running job has failed although no process said so (``None``: it runs)."""
    if record.replica_id not in live:
        return ORPHANED
    if record.updated_at < utcnow() - STALLED_AFTER:
        return STALLED
    return None


def _job(record: AdaptationJobRecord, live: set[str]) -> StoredJob:
    """The job as clients see it: a running job whose process is gone, or that stalled, has
    failed (``live``: the processes that are)."""
    status, error = record.status, record.error
    if status == RUNNING and (gone := _gone(record, live)) is not None:
        status, error = FAILED, gone
    return StoredJob(
        record.id,
        record.collection_id,
        status,
        record.decision,
        record.cancel_requested,
        record.model_version,
        record.trained_revision,
        record.n_examples,
        record.n_classes,
        record.progress,
        record.examples_per_second,
        None if record.result is None else json.loads(record.result),
        error,
        record.revision,
        record.created_at,
        record.updated_at,
        record.finished_at,
    )


def _adapter_record(job: AdaptationJobRecord, adapter: NewAdapter, stale: bool) -> AdapterRecord:
    dim, rank = adapter.down.shape
    return AdapterRecord(
        collection_id=job.collection_id,
        version=job.id,
        model_version=job.model_version,
        trained_change_id=job.trained_change_id,
        trained_revision=job.trained_revision,
        stale=stale,
        dim=dim,
        rank=rank,
        down=np.ascontiguousarray(adapter.down, np.float32).tobytes(),
        up=np.ascontiguousarray(adapter.up, np.float32).tobytes(),
        scores=np.ascontiguousarray(adapter.scores, np.float32).tobytes(),
        shots=np.ascontiguousarray(adapter.shots, np.int32).tobytes(),
        result=json.dumps(adapter.result),
        created_at=utcnow(),
    )


def _stored_adapter(record: AdapterRecord) -> StoredAdapter:
    def floats(data: bytes, *shape: int) -> np.ndarray:
        return np.frombuffer(data, dtype=np.float32).reshape(shape).copy()

    return StoredAdapter(
        down=floats(record.down, record.dim, record.rank),
        up=floats(record.up, record.rank, record.dim),
        scores=floats(record.scores, -1),
        shots=np.frombuffer(record.shots, dtype=np.int32).copy(),
        result=json.loads(record.result),
        collection_id=record.collection_id,
        version=record.version,
        model_version=record.model_version,
        trained_change_id=record.trained_change_id,
        trained_revision=record.trained_revision,
        stale=record.stale,
        created_at=record.created_at,
    )
