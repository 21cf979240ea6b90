"""The request path to a model's encoder: decode -> encode (-> rank), each stage a
micro-batcher. Each served model has its own pipeline (its own batches and threads).

* ``decode`` (a thread): base64 and image decoding, resizing, or text cleaning (stage 1 of the
  core's preprocessing) of each request's items; a request with a bad item fails alone, its
  item named.
* ``encode`` (a thread): one encoder call for the rows of every request in the batch.
* ``rank`` (a thread): for queries, one ranking per collection in the batch.

A query crosses the stages by :class:`~service.collections.batching.Handoff` from thread to thread
and comes back to the event loop once. Separate threads keep the encoder (torch, which releases the
GIL) busy while the next batch is decoded and the last one ranked (Python, which holds it); the
event loop only parses HTTP and queues jobs. The encode stage waits (``max_wait``) only while the
decode stage still holds requests for it. Every call of a model's encoder in the running service
goes through its encode thread, so no two run at once (startup re-embedding runs before any
request is served); two models' encoders may run side by side.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from service.collections.batching import BatchStats, Handoff, MicroBatcher
from service.collections.encoder import Encoder, StageOneBatch
from service.collections.live_collection import LiveCollection, QueryAnswer
from service.collections.payloads import InputPayload, decode_payloads


@dataclass(frozen=True)
class DecodeJob:
    payloads: Sequence[InputPayload]
    field: str  # request field, for error locations: "queries", "examples", "inputs"
    collection: LiveCollection | None = None  # a query: go on to encode and rank against it
    top_k: int = 1


@dataclass(frozen=True)
class EncodeJob:
    inputs: StageOneBatch  # uint8 [m, *pixel_shape], or m texts
    collection: LiveCollection | None = None  # rank against it (a query) or not
    top_k: int = 1


@dataclass(frozen=True)
class RankJob:
    embeddings: np.ndarray  # float32 [m, dim]
    collection: LiveCollection
    top_k: int


class InferencePipeline:
    """Decode, encode and rank stages over one model's :class:`Encoder`."""

    def __init__(
        self,
        encoder: Encoder,
        max_rows: int,
        max_wait: float,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_encode: Callable[[float], None] | None = None,
    ) -> None:
        self.encoder = encoder
        self._on_encode = on_encode
        self.decoder: MicroBatcher[DecodeJob, StageOneBatch] = MicroBatcher(
            "decode",
            self._decode_batch,
            rows_of=lambda job: len(job.payloads),
            max_rows=max_rows,
            on_batch=on_batch,
        )
        self.embedder: MicroBatcher[EncodeJob, np.ndarray] = MicroBatcher(
            "encode",
            self._encode_batch,
            rows_of=lambda job: len(job.inputs),
            max_rows=max_rows,
            max_wait=max_wait,
            incoming=lambda: self.decoder.in_flight,
            on_batch=on_batch,
        )
        self.ranker: MicroBatcher[RankJob, list[QueryAnswer]] = MicroBatcher(
            "rank",
            rank_by_collection,
            rows_of=lambda job: len(job.embeddings),
            max_rows=max_rows,
            on_batch=on_batch,
        )
        self._stages = (self.decoder, self.embedder, self.ranker)  # upstream first

    def start(self) -> None:
        for stage in self._stages:
            stage.start()

    async def stop(self) -> None:
        for stage in self._stages:  # each may still hand jobs on to the next
            await stage.stop()

    async def decode(self, payloads: Sequence[InputPayload], field: str) -> StageOneBatch:
        """Stage 1 of every item (a stage-1 batch); raises ``InvalidInputError`` naming the
        first bad item."""
        return cast(StageOneBatch, await self.decoder.submit(DecodeJob(payloads, field)))

    async def embed(self, inputs: StageOneBatch) -> np.ndarray:
        """A stage-1 batch of ``n`` rows -> float32 ``[n, dim]``."""
        return await self.embedder.submit(EncodeJob(inputs))

    async def query(
        self, collection: LiveCollection, payloads: Sequence[InputPayload], top_k: int
    ) -> list[QueryAnswer]:
        """Decode, embed and rank ``payloads`` against ``collection``'s prototypes."""
        # Decode hands the job on to encode, encode to rank, whose results answer.
        job = DecodeJob(payloads, "queries", collection, top_k)
        return cast(list[QueryAnswer], await self.decoder.submit(job))

    def _decode_batch(self, jobs: list[DecodeJob]) -> list[StageOneBatch | Exception | Handoff]:
        outcomes: list[StageOneBatch | Exception | Handoff] = []
        for job in jobs:
            try:
                inputs = decode_payloads(job.payloads, job.field, self.encoder)
            except Exception as error:
                outcomes.append(error)
                continue
            if job.collection is None:
                outcomes.append(inputs)
            else:
                encode = EncodeJob(inputs, job.collection, job.top_k)
                outcomes.append(Handoff(self.embedder, encode))
        return outcomes

    def _encode_batch(self, jobs: list[EncodeJob]) -> list[np.ndarray | Handoff]:
        """One encoder call for the rows of all jobs; queries go on to the rank stage."""
        inputs = self.encoder.join([job.inputs for job in jobs])
        started = time.perf_counter()
        embeddings = self.encoder.embed_batch(inputs)  # [rows, dim]
        if self._on_encode is not None:
            self._on_encode(time.perf_counter() - started)
        offsets = itertools.accumulate((len(job.inputs) for job in jobs), initial=0)
        rows = [embeddings[a:b] for a, b in itertools.pairwise(offsets)]
        return [
            rows[i]
            if job.collection is None
            else Handoff(self.ranker, RankJob(rows[i], job.collection, job.top_k))
            for i, job in enumerate(jobs)
        ]


def rank_by_collection(jobs: list[RankJob]) -> list[list[QueryAnswer] | Exception]:
    """Rank the jobs' embeddings with one ``rank`` call per collection (one GEMM over its
    prototypes for all of them); each job gets its own ``top_k``."""
    by_collection: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        by_collection.setdefault(id(job.collection), []).append(i)
    outcomes: list[list[QueryAnswer] | Exception] = [[] for _ in jobs]
    for members in by_collection.values():
        collection = jobs[members[0]].collection
        queries = [jobs[i].embeddings for i in members]
        ranked = collection.rank(
            queries[0] if len(queries) == 1 else np.concatenate(queries),
            max(jobs[i].top_k for i in members),
        )
        start = 0
        for i in members:
            if ranked is None:  # its last class was deleted meanwhile
                outcomes[i] = collection.no_classes_error()
                continue
            mine = ranked[start : start + len(jobs[i].embeddings)]
            start += len(jobs[i].embeddings)
            k = jobs[i].top_k
            outcomes[i] = [answer.top(k) for answer in mine]
    return outcomes
