"""Feedback: queries that remember their inputs for a while, and confirmations or corrections
that turn a remembered input into a support example of the right class.

A query sent with ``"remember": true`` is decoded, embedded and ranked in the same batches as
any other; then its stage-1 inputs and embeddings are stored (``remembered_inputs``, in the
database: every replica sees them) for ``PROTONET_REMEMBER_SECONDS``, each under a random id
that its result carries. ``POST .../feedback`` with that id and a label adds the input as an
example of the label, in one transaction that also uses the input up, so the client need not
hold the input, and feedback counts once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from anyio import to_thread

from service.collections.encoder import StageOneBatch
from service.collections.live_collection import LiveCollection, QueryAnswer
from service.collections.models import ServedModel
from service.collections.payloads import InputPayload
from service.storage.repository import RememberLimits, Storage


async def remembered_query(
    storage: Storage,
    limits: RememberLimits,
    model: ServedModel,
    live: LiveCollection,
    queries: Sequence[InputPayload],
    top_k: int,
    tenant: str,
) -> tuple[list[QueryAnswer], list[int]]:
    """The answers to ``queries``, and the ids under which their inputs are remembered
    (:class:`~service.errors.RememberLimitError` past the tenant's limits)."""
    inputs = await model.pipeline.decode(queries, "queries")
    embeddings = await model.pipeline.embed(inputs)
    answers = await model.pipeline.rank(live, embeddings, top_k)
    version = model.encoder.version
    ids = await to_thread.run_sync(
        storage.remember_inputs, tenant, live.id, list(inputs), embeddings, version, limits
    )
    return answers, ids


async def feedback_example(
    storage: Storage, model: ServedModel, tenant: str, collection_id: int, input_id: int
) -> tuple[StageOneBatch, np.ndarray]:
    """The remembered input ``input_id`` as a support example of the served ``model``: a
    stage-1 batch of one and its embedding ``[1, dim]``, made again only where another version
    answered the query (a rolling upgrade). :class:`~service.errors.ForgottenInputError` if
    it is not remembered."""
    remembered = await to_thread.run_sync(storage.remembered_input, tenant, collection_id, input_id)
    encoder = model.encoder
    batch = encoder.conform([remembered.input])
    if remembered.model_version == encoder.version:
        return batch, np.frombuffer(remembered.vector, dtype=np.float32)[None, :].copy()
    return batch, await model.pipeline.embed(batch)
