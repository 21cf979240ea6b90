"""Prometheus metrics, served at ``GET /metrics``.

Each app has its own ``CollectorRegistry`` (tests run many apps in one process). Names:

* ``protonet_http_requests_total`` and ``protonet_http_request_duration_seconds``, by method,
  route template (``/v1/collections/{name}/query``; ``unmatched`` for unknown paths) and status;
* ``protonet_batch_size`` (rows per batch), ``protonet_batch_queue_wait_seconds`` (submit to
  batch start, per job) and ``protonet_batch_duration_seconds``, by model (its name in
  PROTONET_MODELS) and stage (decode, encode, rank);
* ``protonet_encoder_duration_seconds``: one encoder forward pass over a whole batch, by model;
* ``protonet_embedding_backfill_examples``: startup re-embedding, by model and state;
* ``protonet_tenants`` (tenants with at least one collection), ``protonet_collections``,
  ``protonet_classes``, ``protonet_examples``: totals over all tenants, read at scrape time
  (no per-tenant labels: tenants are unbounded);
* ``protonet_database_up``: 1 while the database answers this process's round trips, else 0
  (queries are still answered from memory; writes get 503);
* ``protonet_adaptations_total`` (finished adaptation jobs of this process, by model and
  outcome: adopted, kept_unadapted, cancelled, failed), ``protonet_adaptation_duration_seconds``
  (by model), ``protonet_adaptations_running`` (now, in this process) and
  ``protonet_adapted_collections`` (collections answering with an adapter, all tenants).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.collections.batching import BatchStats
from service.collections.registry import AllTenantsSummary
from service.edge.asgi import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = CONTENT_TYPE_LATEST
SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
JOB_SECONDS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class CollectionsCollector(Collector):
    """Gauges of what is stored over all tenants, computed at scrape time.

    Deliberately no ``tenant`` label: tenants come and go with API keys, so per-tenant series
    would have unbounded cardinality (and would expose tenant names to whoever scrapes).
    """

    def __init__(self, totals: Callable[[], AllTenantsSummary]) -> None:
        self.totals = totals

    def describe(self) -> list[Metric]:
        return []  # do not call ``collect`` at registration (the service is not ready yet)

    def collect(self) -> Iterator[Metric]:
        totals = self.totals()
        yield GaugeMetricFamily(
            "protonet_tenants", "Tenants with at least one collection.", totals.tenants
        )
        yield GaugeMetricFamily(
            "protonet_collections", "Collections, all tenants.", totals.collections
        )
        yield GaugeMetricFamily("protonet_classes", "Classes, all tenants.", totals.classes)
        yield GaugeMetricFamily(
            "protonet_examples", "Support examples, all tenants.", totals.examples
        )
        yield GaugeMetricFamily(
            "protonet_adapted_collections",
            "Collections answering with an adopted adapter, all tenants.",
            totals.adapted,
        )


class DatabaseCollector(Collector):
    """``protonet_database_up``, read at scrape time."""

    def __init__(self, up: Callable[[], bool]) -> None:
        self.up = up

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "protonet_database_up",
            "1 while the database answers this process (writes need it; queries do not).",
            1.0 if self.up() else 0.0,
        )


class ServiceMetrics:
    """The app's metrics; the ``observe_*`` methods are what the service calls."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["method", "route", "status"]
        self.requests = Counter(
            "protonet_http_requests", "HTTP requests.", labels, registry=self.registry
        )
        self.latency = Histogram(
            "protonet_http_request_duration_seconds",
            "HTTP request latency, first byte in to last byte out.",
            labels,
            buckets=SECONDS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "protonet_batch_size",
            "Rows per batch.",
            ["model", "stage"],
            buckets=ROWS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "protonet_batch_queue_wait_seconds",
            "Time a request's job waited for its batch to start.",
            ["model", "stage"],
            buckets=SECONDS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "protonet_batch_duration_seconds",
            "Time to process one batch.",
            ["model", "stage"],
            buckets=SECONDS,
            registry=self.registry,
        )
        self.encoder_seconds = Histogram(
            "protonet_encoder_duration_seconds",
            "Time of one encoder forward pass over a batch.",
            ["model"],
            buckets=SECONDS,
            registry=self.registry,
        )
        self.feed_position = Gauge(
            "protonet_change_feed_position",
            "Id of the last change this process applied from the shared database.",
            registry=self.registry,
        )
        self.changes_applied = Counter(
            "protonet_change_feed_changes",
            "Changes read from the change feed (made by any process).",
            registry=self.registry,
        )
        self.embedding_backfill = Gauge(
            "protonet_embedding_backfill_examples",
            "Model upgrade at startup: stored examples to embed for a served model's "
            "version ('total') and embedded so far ('done').",
            ["model", "state"],
            registry=self.registry,
        )
        self.adaptations = Counter(
            "protonet_adaptations",
            "Finished adaptation jobs of this process, by outcome (adopted, kept_unadapted, "
            "cancelled, failed).",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.adaptation_seconds = Histogram(
            "protonet_adaptation_duration_seconds",
            "Time from an adaptation job's start to its end.",
            ["model"],
            buckets=JOB_SECONDS,
            registry=self.registry,
        )
        self.adaptations_running = Gauge(
            "protonet_adaptations_running",
            "Adaptation jobs running in this process now.",
            registry=self.registry,
        )
        # ``labels()`` takes a lock and hashes: cache the children per label tuple.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            values = (method, route, str(status))
            children = (self.requests.labels(*values), self.latency.labels(*values))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_batch(self, stats: BatchStats, model: str) -> None:
        self.batch_size.labels(model, stats.stage).observe(stats.rows)
        self.batch_seconds.labels(model, stats.stage).observe(stats.seconds)
        waits = self.queue_wait.labels(model, stats.stage)
        for wait in stats.queue_waits:
            waits.observe(wait)

    def observe_feed(self, position: int, applied: int) -> None:
        self.feed_position.set(position)
        self.changes_applied.inc(applied)

    def observe_backfill(self, done: int, total: int, model: str) -> None:
        self.embedding_backfill.labels(model, "done").set(done)
        self.embedding_backfill.labels(model, "total").set(total)

    def observe_encoder(self, seconds: float, model: str) -> None:
        self.encoder_seconds.labels(model).observe(seconds)

    def observe_adaptation(self, outcome: str, seconds: float, model: str) -> None:
        self.adaptations.labels(model, outcome).inc()
        self.adaptation_seconds.labels(model).observe(seconds)

    def observe_adaptations_running(self, running: int) -> None:
        self.adaptations_running.set(running)

    def watch_database(self, up: Callable[[], bool]) -> None:
        """Serve ``protonet_database_up`` from ``up`` (called at each scrape; must not block)."""
        self.registry.register(DatabaseCollector(up))

    def watch_collections(self, totals: Callable[[], AllTenantsSummary]) -> None:
        """Serve the all-tenant collection gauges from ``totals`` (called at each scrape)."""
        self.registry.register(CollectionsCollector(totals))

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status (pure ASGI)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception escaping the app becomes a 500 further out

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            # The router stores the matched route in the scope: its template bounds the labels.
            route = getattr(scope.get("route"), "path", "unmatched")
            seconds = time.perf_counter() - started
            self.metrics.observe_request(scope["method"], route, status, seconds)
