"""Per-client request rate limits (token buckets) and a cap on requests in flight.

Each client (an API key, or a client address: see service/edge/admission.py for which limit applies
to which request) has a bucket of ``burst`` tokens refilled at ``rate`` per second; a request takes
one, and a request that finds the bucket empty is refused with the seconds until the next token (429
+ Retry-After). Buckets live in a bounded LRU map, so a flood of distinct addresses cannot grow
memory without limit.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from service.errors import OverloadedError, RateLimitedError

MAX_TRACKED_CLIENTS = 10_000


@dataclass
class Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets by client key; ``rate == 0`` turns the limit off. ``what`` names what is
    counted in the 429 message ("requests", "failed authentications")."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_TRACKED_CLIENTS,
        what: str = "requests",
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.what = what
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Take a token for ``client``; :class:`RateLimitedError` if there is none."""
        if self.rate <= 0:
            return
        with self._lock:
            wait = self._take(client, self._clock())
        if wait > 0:
            raise RateLimitedError(
                f"too many {self.what}: at most {self.rate:g} per second "
                f"(bursts of {self.burst}); retry in {math.ceil(wait)} s",
                retry_after=math.ceil(wait),
            )

    def _take(self, client: str, now: float) -> float:
        """Seconds until a token is available (0: one was taken)."""
        bucket = self._buckets.pop(client, None) or Bucket(float(self.burst), now)
        self._buckets[client] = bucket  # most recently used last
        if len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


class ConcurrencyLimit:
    """At most ``limit`` requests in flight (0 = no limit); more get :class:`OverloadedError`.

    Bounds the memory that request bodies and decoded images can take at once: each request
    holds at most PROTONET_MAX_BODY_BYTES of body plus what its parsing makes of it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_flight = 0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take a slot; :class:`OverloadedError` if all are taken. Pair with :meth:`release`."""
        with self._lock:
            if self.limit and self._in_flight >= self.limit:
                raise OverloadedError(
                    f"the server is handling {self.limit} requests already; retry shortly"
                )
            self._in_flight += 1

    def release(self) -> None:
        with self._lock:
            self._in_flight -= 1
