"""The request path to a model's encoder: decode -> encode (-> rank), each stage a
micro-batcher. Each served model has its own pipeline (its own batches and threads).

* ``decode`` (a thread): base64 and image decoding, resizing, or text cleaning (stage 1 of the
  core's preprocessing) of each request's items; a request with a bad item fails alone, its
  item named.
* ``encode`` (a thread): one encoder call for the rows of every request in the batch.
* ``rank`` (a thread): for queries, one ranking per collection in the batch.

Decode and encode cut a large request into parts that take turns with other requests' parts
(:class:`~service.collections.batching.Split`): a batch decodes about ``max_rows`` small items
(a large image counts as many: :func:`~service.collections.payloads.decode_cost`), and encodes
at most ``max_rows`` images or about ``max_tokens`` word pieces of text (a long text costs the
encoder up to a hundred times what a short one does). So a small query beside a
request of 256 long texts waits for about one batch, not for all of them, and the encoder's
memory stays that of one batch.

A query crosses the stages by :class:`~service.collections.batching.Handoff` from thread to thread
and comes back to the event loop once. Separate threads keep the encoder (torch, which releases the
GIL) busy while the next batch is decoded and the last one ranked (Python, which holds it); the
event loop only parses HTTP and queues jobs. The encode stage waits (``max_wait``) only while the
decode stage still holds requests for it. Requests reach a model's encoder through its encode
thread; re-embedding during a rolling upgrade calls it from the change feed's thread and from
request threads, so each encoder holds a lock around its forward pass and no two of one model
run at once (:attr:`~service.collections.encoder.ImageEncoder.forward_lock`); two models'
encoders may run side by side.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from service.collections.batching import BatchStats, Handoff, MicroBatcher, Split
from service.collections.encoder import Encoder, StageOneBatch
from service.collections.live_collection import LiveCollection, QueryAnswer
from service.collections.payloads import InputPayload, decode_cost, decode_payloads


@dataclass(frozen=True)
class DecodeJob:
    payloads: Sequence[InputPayload]
    field: str  # request field, for error locations: "queries", "examples", "inputs"
    collection: LiveCollection | None = None  # a query: go on to encode and rank against it
    top_k: int = 1
    first: int = 0  # position of payloads[0] in the request (a part of it), for error locations


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
        *,
        max_tokens: int,
    ) -> None:
        self.encoder = encoder
        self._on_encode = on_encode
        self.decoder: MicroBatcher[DecodeJob, StageOneBatch] = MicroBatcher(
            "decode",
            self._decode_batch,
            budget=max_rows,
            on_batch=on_batch,
            split=Split(_decode_costs, _decode_part, self._finish_decode),
        )
        self.embedder: MicroBatcher[EncodeJob, np.ndarray] = MicroBatcher(
            "encode",
            self._encode_batch,
            budget=max_tokens if encoder.modality == "text" else max_rows,
            max_wait=max_wait,
            incoming=lambda: self.decoder.in_flight,
            on_batch=on_batch,
            split=Split(lambda job: encoder.costs(job.inputs), _encode_part, self._finish_encode),
        )
        self.ranker: MicroBatcher[RankJob, list[QueryAnswer]] = MicroBatcher(
            "rank",
            rank_by_collection,
            rows_of=lambda job: len(job.embeddings),
            budget=max_rows,
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

    async def rank(
        self, collection: LiveCollection, embeddings: np.ndarray, top_k: int
    ) -> list[QueryAnswer]:
        """Rank embeddings made already (a query that keeps its inputs) in the rank stage."""
        return await self.ranker.submit(RankJob(embeddings, collection, top_k))

    def _decode_batch(self, jobs: list[DecodeJob]) -> list[StageOneBatch | Exception]:
        outcomes: list[StageOneBatch | Exception] = []
        for job in jobs:
            try:
                outcomes.append(decode_payloads(job.payloads, job.field, self.encoder, job.first))
            except Exception as error:
                outcomes.append(error)
        return outcomes

    def _finish_decode(self, job: DecodeJob, parts: list[StageOneBatch]) -> StageOneBatch | Handoff:
        """A request's decoded items; a query goes on to encode."""
        inputs = self.encoder.join(parts)
        if job.collection is None:
            return inputs
        return Handoff(self.embedder, EncodeJob(inputs, job.collection, job.top_k))

    def _encode_batch(self, jobs: list[EncodeJob]) -> list[np.ndarray]:
        """One encoder call for the rows of all jobs (or parts of jobs)."""
        inputs = self.encoder.join([job.inputs for job in jobs])
        started = time.perf_counter()
        embeddings = self.encoder.embed_batch(inputs)  # [rows, dim]
        if self._on_encode is not None:
            self._on_encode(time.perf_counter() - started)
        ends = np.cumsum([len(job.inputs) for job in jobs])
        return np.split(embeddings, ends[:-1])

    def _finish_encode(self, job: EncodeJob, parts: list[np.ndarray]) -> np.ndarray | Handoff:
        """A request's embeddings; a query goes on to rank."""
        embeddings = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if job.collection is None:
            return embeddings
        return Handoff(self.ranker, RankJob(embeddings, job.collection, job.top_k))


def _decode_costs(job: DecodeJob) -> list[int]:
    # Reads each image's header (base64 decoded once more): small next to decoding it.
    return [decode_cost(payload) for payload in job.payloads]


def _decode_part(job: DecodeJob, start: int, stop: int) -> DecodeJob:
    return dataclasses.replace(job, payloads=job.payloads[start:stop], first=job.first + start)


def _encode_part(job: EncodeJob, start: int, stop: int) -> EncodeJob:
    return dataclasses.replace(job, inputs=job.inputs[start:stop])


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
