"""Whether the database answers now, for the readiness probe and the metrics.

A daemon thread makes one round trip (``SELECT 1``) every ``interval`` seconds; readers only
read its last result, so probes, scrapes and load balancers may ask as often as they like
without touching the database or waiting on it. A round trip still in flight after
``timeout`` seconds counts as down: a database behind a partition may keep a connection
attempt waiting for the operating system's TCP timeout, minutes.
"""

from __future__ import annotations

import logging
import threading
import time

from service.storage.repository import Storage

logger = logging.getLogger(__name__)


class DatabaseProbe:
    """:meth:`up`: whether the database answered the last round trip (and the one in flight,
    if any, is not overdue). Assumed up until the first round trip: it just opened."""

    def __init__(self, storage: Storage, interval: float = 1.0, timeout: float = 2.0) -> None:
        self.storage = storage
        self.interval = interval
        self.timeout = timeout
        self._answered = True
        self._pinging_since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="protonet-db-probe", daemon=True)

    def up(self) -> bool:
        since = self._pinging_since  # one read: the thread may clear it meanwhile
        overdue = since is not None and time.monotonic() - since > self.timeout
        return self._answered and not overdue

    def check_now(self) -> bool:
        """One round trip now (blocking); updates :meth:`up`."""
        self._pinging_since = time.monotonic()
        try:
            self.storage.ping()
            answered = True
        except Exception as error:  # whatever the driver raises, the answer is "down"
            logger.debug("database ping failed: %s", error)
            answered = False
        if answered != self._answered:
            log = logger.info if answered else logger.error
            log("database %s", "reachable again" if answered else "unreachable")
        self._answered, self._pinging_since = answered, None
        return answered

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check_now()
