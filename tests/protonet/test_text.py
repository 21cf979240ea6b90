"""The text path: cleaning and limits, tokenization, the base encoder and its identity check,
the head, and text checkpoints (weights_only, modality)."""

import os
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from protonet.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from protonet.errors import CheckpointError, InvalidInputError
from protonet.model import HEAD_SCALE, build_encoder, linear_head_config
from protonet.preprocessing import InputSpec
from protonet.text import (
    TOKENIZER_FILE,
    BaseTextEncoder,
    TextSpec,
    _load_tokenizer,
    base_identity,
    base_model_dir,
    length_batches,
    load_base_encoder,
    normalize_text,
    text_inputs,
)

SPEC = TextSpec(max_chars=20)


@pytest.fixture(scope="module")
def identity() -> TextSpec:
    return base_identity()


@pytest.fixture(scope="module")
def base(identity):
    torch.set_num_threads(1)
    return load_base_encoder(identity)


def test_whitespace_is_stripped_and_collapsed():
    assert normalize_text("  where is\n\tmy   card?  ", SPEC) == "where is my card?"
    # NFC: a composed and a decomposed "é" are one text.
    assert normalize_text("cafe\u0301", SPEC) == normalize_text("caf\u00e9", SPEC)


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", "\u200b", "\u00a0\u2003"])
def test_empty_or_whitespace_only_text_is_refused(text):
    with pytest.raises(InvalidInputError, match="empty or only whitespace"):
        normalize_text(text, SPEC)


def test_text_over_the_limit_is_refused_with_the_numbers():
    assert normalize_text("a" * 20, SPEC) == "a" * 20
    assert normalize_text("  " + "a" * 20 + "   ", SPEC) == "a" * 20  # counted after cleaning
    with pytest.raises(InvalidInputError, match="21 characters long; the limit is 20"):
        normalize_text("a" * 21, SPEC)


def test_non_strings_are_refused():
    with pytest.raises(InvalidInputError, match="must be a string, not int"):
        normalize_text(42, SPEC)


def test_text_inputs_clean_tokenize_truncate_and_pad(identity):
    spec = replace(identity, max_tokens=6)
    tokenizer = _load_tokenizer(base_model_dir(spec.base_encoder) / TOKENIZER_FILE, spec)
    batch = text_inputs(["  Hi  ", "my card is lost and I need a new one"], tokenizer, spec)
    assert batch.input_ids.shape == batch.attention_mask.shape == (2, 6)
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]
    assert batch.input_ids[:, 0].tolist() == [101, 101]  # [CLS]
    assert batch.input_ids[0, 2].item() == batch.input_ids[1, 5].item() == 102  # [SEP]
    assert batch.input_ids[0, 3:].tolist() == [0, 0, 0]  # [PAD]
    with pytest.raises(InvalidInputError):
        text_inputs(["ok", " "], tokenizer, spec)


def test_base_embeddings_are_unit_length_and_independent_of_the_batch(base):
    texts = ["I lost my card", "how do I top up?", "my transfer has not arrived yet, why?"]
    together = base.embed(texts)
    assert together.shape == (3, 384)
    torch.testing.assert_close(together.norm(dim=1), torch.ones(3))
    alone = torch.cat([base.embed([text]) for text in texts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    # The same text, however it is spaced, is the same input.
    torch.testing.assert_close(base.embed(["  I lost\n my card "]), together[:1])


def test_length_batches_sort_by_length_and_bound_rows_and_padded_tokens():
    lengths = [30, 5, 12, 5, 100, 7, 12]
    batches = length_batches(lengths, max_rows=3, max_tokens=40)
    assert batches == [[1, 3, 5], [2, 6], [0], [4]]  # [4] alone: longer than 40 by itself
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))


class ShapeRecorder(torch.nn.Module):
    """A base network that records the ``[rows, length]`` of every forward pass."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.inner = network
        self.embeddings = network.embeddings  # the encoder reads its device there
        self.shapes: list[tuple[int, int]] = []

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.shapes.append((ids.shape[0], ids.shape[1]))
        return self.inner(ids, mask)


def test_base_runs_bounded_batches_of_word_pieces_and_keeps_the_order(base):
    """Texts of 3 to 32 word pieces with at most 64 pieces (padding included) per forward
    pass: every pass stays within it, and the rows come back in the callers' order."""
    texts = [" ".join(["card"] * n) for n in range(30, 0, -1)]
    recorder = ShapeRecorder(base.network)
    bounded = BaseTextEncoder(recorder, base.tokenizer, base.spec).embed(texts, 256, 64)
    assert all(rows * length <= 64 for rows, length in recorder.shapes), recorder.shapes
    assert sum(rows for rows, _ in recorder.shapes) == len(texts)
    torch.testing.assert_close(bounded, base.embed(texts), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_base_embeds_as_sentence_transformers_does(base, identity):
    """Our plain-torch forward against the reference implementation, on the same files."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # it must read site-packages, never the hub
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(base_model_dir(identity.base_encoder)), device="cpu")
    texts = ["Why was my card declined?", "exchange rate", "I want to close my account now"]
    expected = torch.from_numpy(reference.encode(texts))
    torch.testing.assert_close(base.embed(texts), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("field", ["base_weights_sha256", "tokenizer_sha256"])
def test_a_base_with_other_weights_or_tokenizer_is_refused(identity, field):
    other = replace(identity, **{field: "0" * 64})
    what = "weights" if field == "base_weights_sha256" else "tokenizer"
    with pytest.raises(CheckpointError, match=f"{what} .* are not those the checkpoint was"):
        load_base_encoder(other)


def test_an_unknown_base_is_refused(identity):
    with pytest.raises(CheckpointError, match="unknown base encoder 'someone/else'"):
        load_base_encoder(replace(identity, base_encoder="someone/else"))


def test_the_head_starts_as_the_identity():
    head = build_encoder(linear_head_config(384)).eval()
    x = F.normalize(torch.randn(5, 384), dim=1)
    torch.testing.assert_close(head(x), x * HEAD_SCALE)


def text_checkpoint(identity: TextSpec) -> Checkpoint:
    torch.manual_seed(0)
    head = build_encoder(linear_head_config(identity.base_dim))
    with torch.no_grad():
        head.linear.weight.add_(0.01 * torch.randn(384, 384))
    return Checkpoint(
        linear_head_config(identity.base_dim),
        InputSpec(),
        head.state_dict(),
        text_spec=identity,
        metadata={"intents": {"train": ["a"], "validation": ["b"], "held_out": ["c"]}},
    )


def test_text_checkpoints_round_trip_with_weights_only(tmp_path, identity, base):
    original = text_checkpoint(identity)
    path = save_checkpoint(original, tmp_path / "text.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["modality"] == "text" and raw["input_spec"] is None
    assert raw["text_spec"]["base_weights_sha256"] == identity.base_weights_sha256
    assert set(raw["state_dict"]) == {"linear.weight", "linear.bias", "scale"}  # no base weights
    loaded = load_checkpoint(path, modality="text")
    assert loaded.modality == "text" and loaded.text_spec == identity
    assert loaded.version == original.version
    encoder = loaded.build_text_encoder()
    texts = ["card not working", "top up failed"]
    with torch.no_grad():
        expected = original.build_encoder()(base.embed(texts))
    torch.testing.assert_close(encoder.embed(texts), expected)


def test_image_only_callers_refuse_text_checkpoints(tmp_path, identity):
    path = save_checkpoint(text_checkpoint(identity), tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="is a text checkpoint; an image one is needed"):
        load_checkpoint(path)
    assert load_checkpoint(path, modality=None).modality == "text"


def test_a_text_checkpoint_trained_on_another_base_is_refused_when_built(tmp_path, identity):
    checkpoint = text_checkpoint(replace(identity, base_weights_sha256="f" * 64))
    loaded = load_checkpoint(save_checkpoint(checkpoint, tmp_path / "text.pt"), modality="text")
    with pytest.raises(CheckpointError, match="retrain the head"):
        loaded.build_text_encoder()


def test_checkpoints_from_before_modalities_load_as_image(tmp_path):
    from protonet.model import EncoderConfig

    checkpoint = Checkpoint(
        EncoderConfig(), InputSpec(), build_encoder(EncoderConfig()).state_dict()
    )
    payload = checkpoint.to_dict()
    del payload["modality"], payload["text_spec"]
    torch.save(payload, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert loaded.modality == "image" and loaded.text_spec is None
    with pytest.raises(CheckpointError, match="is an image checkpoint; a text one is needed"):
        load_checkpoint(tmp_path / "old.pt", modality="text")
