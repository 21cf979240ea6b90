"""The change feed: applies changes that other processes committed to this process's indexes.

A daemon thread polls ``changes`` after the last id it applied and hands each change to the
registry's replication (service/collections/replication.py); change ids are committed in order
(service/storage/repository.py), so nothing is skipped. On PostgreSQL a second thread LISTENs on
the changes channel and wakes the poller the moment a write commits; polling stays on as the
fallback (and is the only mechanism on SQLite, whose processes share one WAL database on one
host). The same thread refreshes this process's heartbeat in ``replicas`` and now and then
prunes changes older than the retention (and idempotency keys older than theirs, expired
remembered query inputs, and snapshot restores abandoned for an hour).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.engine import make_url

from service.collections.replication import Replication
from service.storage.repository import CHANGES_CHANNEL, Replica, Storage

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
SAVE_INDEXES_EVERY_SECONDS = 60.0  # persisted IVF indexes, for a quick start
CHANGE_RETENTION = timedelta(hours=24)
PRUNE_EVERY_SECONDS = 600.0
# A snapshot's restore that wrote nothing for this long was abandoned (its process died, or
# its client stalled): what it wrote, never visible, is deleted.
RESTORE_ABANDONED_AFTER = timedelta(hours=1)
BATCH = 1000


def new_replica(model_versions: list[str]) -> Replica:
    """This process, as it appears in ``replicas`` (not ready yet), with the versions of the
    models it serves (``replicas.model_version`` lists them, separated by commas)."""
    versions = ",".join(model_versions)
    return Replica(str(uuid.uuid4()), versions, socket.gethostname(), os.getpid(), False, None)


class ChangeFeed:
    """Keeps the registry's collections (through its ``replication``) in step with the changes
    in ``storage`` made after ``cursor``."""

    def __init__(
        self,
        storage: Storage,
        replication: Replication,
        cursor: int,
        poll_interval: float,
        on_poll: Callable[[int, int], None] | None = None,
    ) -> None:
        self.storage = storage
        self.replication = replication
        self.cursor = cursor
        self.poll_interval = poll_interval
        self.on_poll = on_poll  # (cursor, changes applied) after each poll: for the metrics
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_poll = time.monotonic()
        self._last_save = time.monotonic()

    def start(self) -> None:
        targets = [self._poll_forever]
        if self.storage.dialect == "postgresql":
            targets.append(self._listen_forever)
        for target in targets:
            thread = threading.Thread(target=target, name=f"protonet-{target.__name__}")
            thread.daemon = True
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def poll_once(self) -> int:
        """Apply every change after the cursor; returns how many."""
        if time.monotonic() - self._last_poll > CHANGE_RETENTION.total_seconds():
            # Changes older than the retention may be pruned: this process can no longer
            # tell what it missed, so it rebuilds everything.
            logger.warning("change feed was stalled past the retention: reloading")
            self.cursor = self.replication.reload_all()
        applied = 0
        while True:
            changes = self.storage.changes_after(self.cursor, BATCH)
            for change in changes:
                self.replication.apply_change(change)
                self.cursor = change.id
            applied += len(changes)
            if len(changes) < BATCH:
                break
        self._last_poll = time.monotonic()
        if self.on_poll is not None:
            self.on_poll(self.cursor, applied)
        return applied

    def _poll_forever(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.wait(self.poll_interval if not failures else min(5.0, 0.5 * failures))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.poll_once()
                failures = 0
                if time.monotonic() - self._last_save > SAVE_INDEXES_EVERY_SECONDS:
                    self._last_save = time.monotonic()
                    self.replication.save_indexes()
            except Exception:  # the database is away: keep serving, retry with backoff
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    logger.exception("change feed: poll failed (%d in a row)", failures)

    def _listen_forever(self) -> None:
        """LISTEN for commits' notifications; reconnects (and wakes the poller) after errors."""
        import psycopg

        url = make_url(self.storage.engine.url).set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self._wake.set()  # anything committed while not listening
                    while not self._stop.is_set():
                        for _ in connection.notifies(timeout=1.0):
                            self._wake.set()
            except Exception:
                logger.warning("change feed: LISTEN connection lost; polling meanwhile")
                self._stop.wait(1.0)


class Heartbeat:
    """Keeps this process's row in ``replicas`` fresh, and prunes old changes now and then."""

    def __init__(self, storage: Storage, replica: Replica) -> None:
        self.storage = storage
        self.replica = replica
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="protonet-heartbeat", daemon=True)
        self._last_prune = 0.0

    def start(self) -> None:
        self._thread.start()

    def mark_ready(self) -> None:
        self.replica = dataclasses.replace(self.replica, ready=True)
        self.beat()

    def beat(self) -> None:
        try:
            self.storage.heartbeat(self.replica)
            if time.monotonic() - self._last_prune > PRUNE_EVERY_SECONDS:
                self._last_prune = time.monotonic()
                if pruned := self.storage.prune_changes(CHANGE_RETENTION):
                    logger.info("pruned %d changes older than %s", pruned, CHANGE_RETENTION)
                self.storage.prune_replicas(CHANGE_RETENTION)
                self.storage.prune_idempotency_keys()
                self.storage.prune_remembered()
                if pruned := self.storage.prune_restores(RESTORE_ABANDONED_AFTER):
                    logger.warning("deleted %d abandoned snapshot restores", pruned)
        except Exception:
            logger.warning("heartbeat failed; retrying", exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self.beat()

    def stop(self) -> None:
        """Stop beating and remove the row (a clean stop: this process serves no more)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            self.storage.remove_replica(self.replica.id)
        except Exception:
            logger.warning("could not remove this process from replicas", exc_info=True)
