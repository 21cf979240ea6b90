"""What a running app holds: settings, model, storage, collections, and readiness.

Opening (checkpoint + database schema) is quick and fails fast on bad configuration. Preparing
(re-embedding after a model change, rebuilding every index) may take long, so it runs in a
background thread while ``/healthz`` already answers and ``/readyz`` says 503.
"""

from __future__ import annotations

import logging
import threading
from typing import Literal

import faiss
import torch

from protonet.errors import NotReadyError
from service.encoder import Encoder
from service.registry import CollectionRegistry
from service.settings import Settings
from service.storage import Storage
from service.upgrade import reembed_stale_examples

logger = logging.getLogger(__name__)

Readiness = Literal["starting", "ready", "failed"]


def configure_threads(threads: int | None) -> None:
    """Cap torch's and FAISS's intra-op threads (process-wide)."""
    if threads is not None:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)


class ServiceState:
    """Readiness goes ``starting`` -> ``ready`` (or ``failed``); ``detail`` says why not ready."""

    def __init__(self, settings: Settings, encoder: Encoder, storage: Storage) -> None:
        self.settings = settings
        self.encoder = encoder
        self.storage = storage
        self.registry: CollectionRegistry | None = None
        self.status: Readiness = "starting"
        self.detail = "loading collections"
        self._stop = threading.Event()
        self._prepared = threading.Event()

    @classmethod
    def open(cls, settings: Settings) -> ServiceState:
        """Load the checkpoint and open storage; raises on bad configuration."""
        configure_threads(settings.torch_threads)
        encoder = Encoder.load(
            settings.checkpoint,
            settings.device,
            settings.embed_batch_size,
            settings.max_image_pixels,
        )
        storage = Storage(settings.resolved_database_url())
        return cls(settings, encoder, storage)

    def prepare(self) -> None:
        """Re-embed stale examples, then rebuild every collection's index; never raises."""
        try:
            reembed_stale_examples(
                self.storage,
                self.encoder,
                self.settings.embed_batch_size,
                on_progress=self._report_progress,
                should_stop=self._stop.is_set,
            )
            if self._stop.is_set():
                return
            registry = CollectionRegistry(
                self.storage,
                self.encoder,
                self.settings.max_items_per_request,
                self.settings.max_request_pixels,
            )
            registry.load_all()
            self.registry, self.status, self.detail = registry, "ready", "ready"
            logger.info("ready: model %s", self.encoder.version)
        except Exception as error:
            logger.exception("startup failed")
            self.status, self.detail = "failed", f"startup failed: {error}"
        finally:
            self._prepared.set()

    def _report_progress(self, done: int, total: int) -> None:
        self.detail = (
            f"re-embedding stored examples for model {self.encoder.version}: {done}/{total}"
        )

    def wait_prepared(self, timeout: float | None = None) -> bool:
        """Block until :meth:`prepare` has finished (ready or failed)."""
        return self._prepared.wait(timeout)

    def require_registry(self) -> CollectionRegistry:
        """The registry, or :class:`NotReadyError` while starting (or after a failed start)."""
        if self.registry is None:
            raise NotReadyError(f"service not ready: {self.detail}")
        return self.registry

    def request_stop(self) -> None:
        """Make a running :meth:`prepare` stop after its current batch (at shutdown)."""
        self._stop.set()

    def close(self) -> None:
        """Release storage; call after :meth:`prepare` has returned."""
        self.storage.close()
