"""The inference pipeline's batches of text: a large request is encoded in parts of bounded
(estimated) word pieces, rows in order."""

from __future__ import annotations

import pytest
import torch

from protonet.text import TextSpec, token_estimate
from service.collections.encoder import TextModelEncoder
from service.collections.inference import InferencePipeline

pytestmark = pytest.mark.anyio


class RecordingTextEncoder:
    """Stands for base and head: records each call's texts; row ``i`` embeds as its length."""

    spec = TextSpec()

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts: list[str], batch_size: int) -> torch.Tensor:
        self.calls.append(list(texts))
        return torch.tensor([[float(len(text)), 0.0] for text in texts])


async def test_a_request_of_long_texts_is_encoded_in_parts_of_bounded_word_pieces():
    """256 texts of 1000 characters went to the encoder at once (25 s and 1 GB): now each
    call holds at most ``max_tokens`` estimated word pieces (a single text may exceed it)."""
    recording = RecordingTextEncoder()
    encoder = TextModelEncoder("t", None, recording, batch_size=256)  # type: ignore[arg-type]
    pipeline = InferencePipeline(encoder, max_rows=16, max_wait=0.0, max_tokens=600)
    texts = ["x" * n for n in (1000, 10, 500, 300, 700, 20, 1000, 5)]
    pipeline.start()
    try:
        embeddings = await pipeline.embed(texts)
    finally:
        await pipeline.stop()
    costs = [[token_estimate(text, recording.spec) for text in call] for call in recording.calls]
    assert len(costs) > 1 and all(sum(call) <= 600 for call in costs), costs
    assert embeddings[:, 0].tolist() == [len(text) for text in texts]  # the callers' order
