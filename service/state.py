"""What a running app holds: settings, models, storage, collections, and readiness.

The composition root: the one place that reads :class:`~service.settings.Settings` to build
encoders, inference pipelines, storage and the collection registry (the domain gets plain
values), sets the thread counts and tunes the garbage collector. The HTTP side (``api``) reads
the running service through :class:`ServiceState`.

Opening (checkpoints + database schema) is quick and fails fast on bad configuration: a
checkpoint that does not load (a text model's base encoder that is not the one its head was
trained on included), or a database whose collections are bound to a model that is not served.
Preparing (re-embedding after a model change, rebuilding every index) may take long, so it runs in a
background thread while ``/healthz`` already answers and ``/readyz`` says 503.
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Literal, Protocol

import faiss
import torch

from protonet.checkpoint import with_article
from protonet.errors import CheckpointError
from service.collections.adaptation import AdaptationLimits, AdaptationRunner
from service.collections.batching import BatchStats
from service.collections.diagnostics import DiagnosticsLimits
from service.collections.encoder import Encoder, load_encoder
from service.collections.index_files import IndexFiles
from service.collections.inference import InferencePipeline
from service.collections.live_collection import IndexPolicy
from service.collections.models import ModelSet, ServedModel
from service.collections.reembed import embed_stored_examples
from service.collections.registry import AllTenantsSummary, CollectionRegistry
from service.collections.sync import ChangeFeed, Heartbeat, new_replica
from service.errors import NotReadyError, UnknownModelError
from service.settings import Settings
from service.storage.probe import DatabaseProbe
from service.storage.repository import RememberLimits, Storage
from service.threads import default_threads

logger = logging.getLogger(__name__)

Readiness = Literal["starting", "ready", "failed"]


class Observer(Protocol):
    """What the running service reports while it works (the metrics: the edge's
    ``ServiceMetrics`` implements it, so the domain need not know how they are exported),
    each by model name."""

    def observe_batch(self, stats: BatchStats, model: str) -> None: ...

    def observe_encoder(self, seconds: float, model: str) -> None: ...

    def observe_backfill(self, done: int, total: int, model: str) -> None: ...

    def observe_feed(self, position: int, applied: int) -> None: ...

    def observe_adaptation(self, outcome: str, seconds: float, model: str) -> None: ...

    def observe_adaptations_running(self, running: int) -> None: ...


def configure_threads(threads: int | None, workers: int = 1) -> int:
    """Set torch's intra-op threads (process-wide; the encoder and the prototype search both
    run in torch); ``None`` means :func:`default_threads`. Returns the number set."""
    threads = threads or default_threads(workers)
    torch.set_num_threads(threads)
    # FAISS has its own OpenMP runtime: the same budget, so the two never oversubscribe.
    # Both calls set the calling thread's count only; every other thread (the encoder's, a
    # background IVF build) takes OMP_NUM_THREADS, which python -m service sets to the same
    # number before either library loads (service/threads.py).
    faiss.omp_set_num_threads(threads)
    return threads


def freeze_startup_objects() -> None:
    """Exempt everything loaded so far (torch, the model, the app, the collections' class
    tables) from cyclic garbage collection, and run young-generation passes less often.

    Requests allocate many short-lived containers: with the default thresholds a collection
    ran every few requests, and the older-generation passes rescanned all of torch. At 32
    concurrent queries 13% of the event loop's profile samples were in the collector, and
    freezing cut the p99 latency several-fold. Objects made later are collected as usual.
    """
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, 20_000), middle, old)


def serve_models(encoders: Sequence[Encoder], settings: Settings, metrics: Observer) -> ModelSet:
    """Each encoder with its own inference pipeline, metrics labelled with its name."""
    served = [
        ServedModel(
            encoder.name,
            encoder,
            InferencePipeline(
                encoder,
                settings.batch_max_rows,
                settings.batch_max_wait_ms / 1000,
                on_batch=functools.partial(metrics.observe_batch, model=encoder.name),
                on_encode=functools.partial(metrics.observe_encoder, model=encoder.name),
                max_tokens=settings.batch_max_tokens,
            ),
        )
        for encoder in encoders
    ]
    return ModelSet(served, settings.resolved_default_model())


def check_bindings(storage: Storage, models: ModelSet) -> None:
    """Refuse to serve a database whose collections are bound to models this configuration
    does not serve (renamed or dropped from PROTONET_MODELS), or to a model whose modality
    changed under its name: serving them with another model would answer with another
    model's notion of similarity, or could not read their examples at all."""
    unserved = {n: c for n, c in storage.collection_models().items() if n not in models.names}
    if unserved:
        bound = ", ".join(f"{name!r} ({count} collections)" for name, count in unserved.items())
        raise UnknownModelError(
            f"the database has collections bound to models that are not served: {bound}; "
            f"served: {', '.join(models.names)}. Serve each under its name in PROTONET_MODELS "
            f"(e.g. {next(iter(unserved))}=path/to/its/checkpoint.pt), or use another database"
        )
    for model in models:
        other = storage.stored_input_kinds(model.name) - {model.encoder.modality}
        if other:
            raise CheckpointError(
                f"model {model.name!r} is now {with_article(model.encoder.modality)} model, but "
                f"its collections hold {', '.join(sorted(other))} examples: serve a checkpoint of "
                "their modality under that name"
            )


class ServiceState:
    """Readiness goes ``starting`` -> ``ready`` (or ``failed``); ``detail`` says why not ready."""

    def __init__(
        self, settings: Settings, models: ModelSet, storage: Storage, metrics: Observer
    ) -> None:
        self.settings = settings
        self.models = models
        self.storage = storage
        self.metrics = metrics
        self.registry: CollectionRegistry | None = None
        self.adaptations: AdaptationRunner | None = None
        self.feed: ChangeFeed | None = None
        self.heartbeat = Heartbeat(storage, new_replica(models.versions()))
        self.database = DatabaseProbe(storage)  # for /readyz and the metrics
        self.status: Readiness = "starting"
        self.detail = "loading collections"
        self._stop = threading.Event()
        self._prepared = threading.Event()

    @property
    def encoder(self) -> Encoder:
        """The default model's encoder."""
        return self.models.default.encoder

    @property
    def pipeline(self) -> InferencePipeline:
        """The default model's inference pipeline."""
        return self.models.default.pipeline

    @classmethod
    def open(cls, settings: Settings, metrics: Observer) -> ServiceState:
        """Load the checkpoints and open storage; raises on bad configuration."""
        threads = configure_threads(settings.torch_threads, settings.workers)
        logger.info("torch intra-op threads: %d", threads)
        encoders = [
            load_encoder(
                name,
                path,
                settings.device,
                settings.embed_batch_size,
                settings.max_image_pixels,
                settings.max_image_side,
            )
            for name, path in settings.served_models().items()
        ]
        models = serve_models(encoders, settings, metrics)
        storage = Storage(
            settings.resolved_database_url(),
            migrate=settings.migrate_on_start,
            default_model=models.default_name,
            idempotency_retention=timedelta(seconds=settings.idempotency_key_retention_seconds),
        )
        try:
            check_bindings(storage, models)
        except Exception:
            storage.close()
            raise
        return cls(settings, models, storage, metrics)

    def start_pipelines(self) -> None:
        for model in self.models:
            model.pipeline.start()

    async def stop_pipelines(self) -> None:
        for model in self.models:
            await model.pipeline.stop()

    def _embed_stored(self) -> None:
        """Embed every served model's stored examples for its version (stops when asked)."""
        for model in self.models:
            if self._stop.is_set():
                return
            embed_stored_examples(  # batches of the encoder's batch_size: embed_batch_size
                self.storage,
                model.encoder,
                on_progress=functools.partial(self._report_progress, model.encoder),
                should_stop=self._stop.is_set,
            )

    def prepare(self) -> None:
        """Embed stored examples for every served model's version, build every collection's
        index, then follow the change feed; never raises. Processes on other model versions
        keep serving meanwhile (their embeddings stay)."""
        try:
            self.heartbeat.beat()  # live from the start: its versions must not be dropped
            self.heartbeat.start()
            self.database.start()
            self._embed_stored()
            if self._stop.is_set():
                return
            registry = CollectionRegistry(
                self.storage,
                self.models,
                self.settings.max_items_per_request,
                self.settings.max_request_pixels,
                self.settings.min_revision_timeout,
                IndexPolicy(
                    exact_max_classes=self.settings.exact_max_classes,
                    nprobe=self.settings.ivf_nprobe,
                ),
                IndexFiles(self.settings.index_directory()),
                DiagnosticsLimits(
                    self.settings.diagnostics_max_examples,
                    self.settings.diagnostics_max_distances,
                    self.settings.diagnostics_max_concurrent,
                    self.settings.diagnostics_max_concurrent_per_tenant,
                ),
                RememberLimits(
                    timedelta(seconds=self.settings.remember_seconds),
                    self.settings.remember_max_inputs,
                    self.settings.remember_max_bytes,
                ),
            )
            self.feed = ChangeFeed(
                self.storage,
                registry.replication,
                registry.replication.load_all(),
                self.settings.resolved_sync_interval(),
                on_poll=self.metrics.observe_feed,
            )
            self.feed.poll_once()  # what changed while loading
            self.feed.start()
            self.adaptations = self._adaptation_runner(registry)
            self.registry, self.status, self.detail = registry, "ready", "ready"
            self.heartbeat.mark_ready()
            logger.info(
                "ready: models %s",
                ", ".join(f"{m.name} ({m.encoder.version})" for m in self.models),
            )
        except Exception as error:
            logger.exception("startup failed")
            self.status, self.detail = "failed", f"startup failed: {error}"
        finally:
            self._prepared.set()

    def _adaptation_runner(self, registry: CollectionRegistry) -> AdaptationRunner:
        limits = AdaptationLimits(
            self.settings.adapt_max_examples,
            self.settings.adapt_max_seconds,
            self.settings.adapt_max_concurrent,
        )
        return AdaptationRunner(registry, self.heartbeat.replica.id, limits, self.metrics)

    def _report_progress(self, encoder: Encoder, done: int, total: int) -> None:
        self.metrics.observe_backfill(done, total, model=encoder.name)
        self.detail = (
            f"embedding stored examples for model {encoder.name!r} ({encoder.version}): "
            f"{done}/{total}"
        )

    def wait_prepared(self, timeout: float | None = None) -> bool:
        """Block until :meth:`prepare` has finished (ready or failed)."""
        return self._prepared.wait(timeout)

    def all_tenants_summary(self) -> AllTenantsSummary:
        """Totals over every tenant's collections; zero until ready (for the metrics)."""
        registry = self.registry
        return registry.summarize_all_tenants() if registry is not None else AllTenantsSummary()

    def require_registry(self) -> CollectionRegistry:
        """The registry, or :class:`NotReadyError` while starting (or after a failed start)."""
        if self.registry is None:
            raise NotReadyError(f"service not ready: {self.detail}")
        return self.registry

    def require_adaptations(self) -> AdaptationRunner:
        """The adaptation jobs, or :class:`NotReadyError` while starting."""
        self.require_registry()
        assert self.adaptations is not None  # set with the registry
        return self.adaptations

    def request_stop(self) -> None:
        """Make a running :meth:`prepare` stop after its current batch (at shutdown)."""
        self._stop.set()

    def close(self) -> None:
        """Stop following the feed, leave ``replicas`` and release storage; call after
        :meth:`prepare` has returned. Running adaptations stop first (marked failed)."""
        if self.adaptations is not None:
            self.adaptations.stop()
        if self.feed is not None:
            self.feed.stop()
        if self.registry is not None:
            self.registry.save_indexes()  # a quick start next time
        self.heartbeat.stop()
        self.database.stop()
        self.storage.close()
