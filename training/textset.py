"""Labelled text sets, Banking77, its fixed intent split, and cached base embeddings.

Banking77 (``--data DIR``): ``train.csv`` and ``test.csv`` with columns ``text,category``, and
``categories.json``, the 77 intent names. Meta-training sees :data:`TRAIN_INTENTS` of them;
:data:`VALIDATION_INTENTS` more, from the same train file, select the checkpoint; the rest are
never used before evaluation. Which are which follows from the seed alone and is recorded in
the checkpoint.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from protonet.errors import InvalidInputError
from protonet.files import file_hexdigest
from protonet.text import TextSpec, load_base_encoder, normalize_text
from training.cache import cached_tensor, default_cache_dir
from training.imageset import select_labels

BANKING77_FILES = ("train.csv", "test.csv", "categories.json")
TRAIN_INTENTS = 40
VALIDATION_INTENTS = 10
GROUP = "banking77"  # one group: intents have no alphabets


@dataclass(frozen=True)
class TextSet:
    """Texts (cleaned by :func:`~protonet.text.normalize_text`) with a class per text.

    Attributes:
        texts: ``n`` strings.
        labels: ``[n]`` int64 index into ``class_names``.
        class_names: one name per class (an intent).
        class_groups: one group per class, for the episode sampler (all one group here).
    """

    texts: list[str]
    labels: np.ndarray
    class_names: list[str]
    class_groups: list[str]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def select_classes(self, names: Sequence[str]) -> TextSet:
        """The classes named, in that order, relabelled 0..len(names)-1."""
        return self.select_rows(names)[0]

    def select_rows(self, names: Sequence[str]) -> tuple[TextSet, np.ndarray]:
        """:meth:`select_classes`, and which of this set's texts it kept (``[n]`` bool)."""
        keep, labels, old_ids = select_labels(self.labels, self.class_names, names)
        selected = TextSet(
            texts=[t for t, k in zip(self.texts, keep, strict=True) if k],
            labels=labels,
            class_names=list(names),
            class_groups=[self.class_groups[i] for i in old_ids],
        )
        return selected, keep


def select_embedded(
    texts: TextSet, embeddings: torch.Tensor, names: Sequence[str]
) -> tuple[TextSet, torch.Tensor]:
    """The classes ``names`` of ``texts`` and the rows of their ``[n, dim]`` embeddings."""
    selected, keep = texts.select_rows(names)
    return selected, embeddings[torch.from_numpy(keep)]


def read_texts(path: Path, class_names: Sequence[str], spec: TextSpec) -> TextSet:
    """A ``text,category`` CSV file as a :class:`TextSet` over ``class_names``; a row with
    an unknown category or an unusable text is refused with its line number."""
    index_of = {name: i for i, name in enumerate(class_names)}
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"text", "category"} <= set(reader.fieldnames):
            raise ValueError(f"{path} needs the columns text,category; has {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            if row["category"] not in index_of:
                raise ValueError(f"{path}, line {line}: unknown category {row['category']!r}")
            try:
                texts.append(normalize_text(row["text"], spec))
            except InvalidInputError as error:
                raise ValueError(f"{path}, line {line}: {error}") from None
            labels.append(index_of[row["category"]])
    return TextSet(
        texts, np.array(labels, dtype=np.int64), list(class_names), [GROUP] * len(class_names)
    )


def is_banking77_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in BANKING77_FILES)


def banking77_intents(data_dir: Path) -> list[str]:
    """The 77 intent names, in ``categories.json``'s order."""
    if not is_banking77_dir(data_dir):
        raise FileNotFoundError(
            f"{data_dir} is not Banking77: it needs {', '.join(BANKING77_FILES)}"
        )
    return [str(name) for name in json.loads((data_dir / "categories.json").read_text())]


def load_banking77(data_dir: Path, part: str, spec: TextSpec) -> TextSet:
    """``part`` "train" or "test" of Banking77, over all 77 intents."""
    return read_texts(data_dir / f"{part}.csv", banking77_intents(data_dir), spec)


def banking77_fingerprint(data_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in BANKING77_FILES:
        digest.update(f"{name}:{file_hexdigest(data_dir / name)}\n".encode())
    return "sha256:" + digest.hexdigest()[:24]


@dataclass(frozen=True)
class IntentSplit:
    """Which intents meta-training uses (``train``), which select the checkpoint
    (``validation``, from the train file) and which it never sees (``held_out``)."""

    train: list[str]
    validation: list[str]
    held_out: list[str]

    def to_dict(self) -> dict[str, list[str]]:
        return {"train": self.train, "validation": self.validation, "held_out": self.held_out}


def split_intents(intents: Sequence[str], seed: int) -> IntentSplit:
    """A seeded shuffle of ``intents``: the first :data:`TRAIN_INTENTS` train, the next
    :data:`VALIDATION_INTENTS` validate, the rest are held out (each list sorted)."""
    if len(intents) < TRAIN_INTENTS + VALIDATION_INTENTS + 2:
        raise ValueError(f"{len(intents)} intents are too few to split")
    order = [intents[i] for i in np.random.default_rng(seed).permutation(len(intents))]
    end = TRAIN_INTENTS + VALIDATION_INTENTS
    return IntentSplit(
        sorted(order[:TRAIN_INTENTS]), sorted(order[TRAIN_INTENTS:end]), sorted(order[end:])
    )


def embeddings_key(spec: TextSpec, texts: Sequence[str]) -> str:
    """What base embeddings depend on: the base (its hashes), the text settings, the texts."""
    digest = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode())
    for text in texts:
        digest.update(text.encode() + b"\0")
    return digest.hexdigest()[:24]


def base_embeddings(
    texts: TextSet, spec: TextSpec, cache_dir: Path | None = None, progress: bool = False
) -> torch.Tensor:
    """Frozen base embeddings ``[n, base_dim]`` of ``texts``, cached on disk under the key of
    :func:`embeddings_key`: the base runs once per text set, head training reads the cache."""
    directory = (cache_dir or default_cache_dir()) / "text-embeddings"
    path = directory / f"{embeddings_key(spec, texts.texts)}.pt"
    build: Callable[[], torch.Tensor] = lambda: _embed(texts, spec, progress)  # noqa: E731
    return cached_tensor(path, build)


def _embed(texts: TextSet, spec: TextSpec, progress: bool) -> torch.Tensor:
    if progress:
        print(f"embedding {len(texts.texts)} texts with {spec.base_encoder} (cached after)")
    return load_base_encoder(spec).embed(texts.texts)
