"""Snapshots: one portable file per collection, written and read a batch at a time, so a
collection of a million examples is never held in memory (docs/service.md, "Snapshots").

The file is UTF-8 JSON Lines, version 1:

* a header: ``{"format": "protonet-snapshot", "version": 1, "collection": {"name", "index",
  "rejection", "model"}, "model_versions": [...], "revision": N}`` (the collection's settings,
  the name of the model it is bound to, the versions of that model whose embeddings the file
  may carry, and the collection's revision when the export began);
* one line per example, class by class (oldest first), in the order they were added:
  ``{"label", "image": base64 of a PNG}`` or ``{"label", "text"}``, with ``"embeddings":
  {version: base64 of little-endian float32}`` when the export carries them. The input is the
  example as stored: the model's preprocessed pixels (grayscale or RGB PNG), or the cleaned
  text;
* an end line: ``{"end": {"classes", "examples", "sha256"}}``, the SHA-256 of every byte
  before it. A file without it was cut short; one whose counts or checksum differ was damaged.

:class:`SnapshotReader` takes a file in chunks of any size and checks everything as it goes,
but the checksum and the counts only hold at the end: a restore writes into an invisible
collection and makes it visible only then (service/collections/restore.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import numpy as np
import orjson

from protonet.errors import InvalidInputError
from protonet.preprocessing import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, decode_image
from service.collections.labels import MAX_LENGTH, MIN_LENGTH
from service.collections.rejection import RejectionSetting
from service.collections.stored_examples import png_bytes
from service.errors import InvalidSnapshotError
from service.storage.repository import SnapshotRow, Storage, StoredCollection

FORMAT = "protonet-snapshot"
VERSION = 1
MEDIA_TYPE = "application/x-ndjson"
EXPORT_BATCH = 256  # examples read from storage per step of an export
INDEX_KINDS = ("auto", "exact", "ivf")
EXAMPLE_FIELDS = frozenset({"label", "image", "text", "embeddings"})
MAX_NAME = 64  # characters of a collection's or model's name, and of a model version


@dataclass(frozen=True)
class SnapshotHeader:
    """What a snapshot says about its collection (the first line)."""

    name: str
    index: str
    rejection_setting: RejectionSetting
    model: str
    model_versions: list[str]
    revision: int

    def to_json(self) -> dict[str, Any]:
        choice = self.rejection_setting.to_choice()
        collection = {"name": self.name, "index": self.index, "rejection": choice}
        return {
            "format": FORMAT,
            "version": VERSION,
            "collection": {**collection, "model": self.model},
            "model_versions": self.model_versions,
            "revision": self.revision,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> SnapshotHeader:
        """The header of a first line; :class:`InvalidSnapshotError` saying what is wrong."""
        if value.get("format") != FORMAT:
            raise damaged(f'line 1 is not a snapshot header (no "format": "{FORMAT}")')
        if value.get("version") != VERSION:
            raise damaged(
                f"snapshot format version {value.get('version')!r}: this service "
                f"reads version {VERSION}"
            )
        collection = value.get("collection")
        versions = value.get("model_versions")
        revision = value.get("revision")
        if not isinstance(collection, dict) or not _names(versions) or type(revision) is not int:
            raise damaged('line 1: "collection", "model_versions" or "revision" is malformed')
        name, index, model = (collection.get(key) for key in ("name", "index", "model"))
        if not _names([name, model]) or index not in INDEX_KINDS:
            raise damaged('line 1: the collection\'s "name", "index" or "model" is malformed')
        rejection = _rejection(collection.get("rejection"))
        return cls(str(name), str(index), rejection, str(model), versions, revision)


def _names(values: Any) -> TypeGuard[list[str]]:
    """A list of non-empty strings of at most :data:`MAX_NAME` characters."""
    return isinstance(values, list) and all(
        isinstance(v, str) and 0 < len(v) <= MAX_NAME for v in values
    )


def _rejection(choice: Any) -> RejectionSetting:
    if isinstance(choice, dict) and set(choice) == {"acceptance"}:
        choice = choice["acceptance"]
    if not isinstance(choice, str | float) or isinstance(choice, bool):
        raise damaged(f"line 1: rejection {choice!r} is not 'none', 'default' or an acceptance")
    try:
        return RejectionSetting.from_choice(choice)
    except ValueError as error:
        raise damaged(f"line 1: {error}") from None


def damaged(message: str) -> InvalidSnapshotError:
    return InvalidSnapshotError(f"invalid snapshot: {message}; nothing was restored")


def json_line(value: Any) -> bytes:
    return orjson.dumps(value) + b"\n"


def example_json(row: SnapshotRow) -> dict[str, Any]:
    """One example's line: its label, its input (a PNG of its pixels, or its text) and the
    embeddings it carries."""
    item: dict[str, Any] = {"label": row.label}
    if isinstance(row.input, str):
        item["text"] = row.input
    else:
        item["image"] = base64.b64encode(png_bytes(row.input)).decode("ascii")
    if row.embeddings:
        item["embeddings"] = {
            version: base64.b64encode(vector).decode("ascii")
            for version, vector in sorted(row.embeddings.items())
        }
    return item


@dataclass
class SnapshotWriter:
    """Lines out, counted and hashed for the end line."""

    digest: Any = field(default_factory=hashlib.sha256)
    classes: int = 0
    examples: int = 0
    _label: str | None = None

    def header(self, header: SnapshotHeader) -> bytes:
        return self._hashed(json_line(header.to_json()))

    def rows(self, rows: list[SnapshotRow]) -> bytes:
        for row in rows:  # rows come class by class: a new label is a new class
            self.classes += row.label != self._label
            self._label = row.label
        self.examples += len(rows)
        return self._hashed(b"".join(json_line(example_json(row)) for row in rows))

    def end(self) -> bytes:
        counts = {"classes": self.classes, "examples": self.examples}
        return json_line({"end": {**counts, "sha256": self.digest.hexdigest()}})

    def _hashed(self, data: bytes) -> bytes:
        self.digest.update(data)
        return data


def export_chunks(
    storage: Storage, stored: StoredCollection, embeddings: bool = True
) -> Generator[bytes, None, None]:
    """The snapshot of a collection, a batch of examples per chunk (blocking: storage reads;
    close the iterator to end the read early)."""
    versions = storage.embedding_versions(stored.id) if embeddings else []
    header = SnapshotHeader(
        stored.name,
        stored.index_kind,
        RejectionSetting.from_column(stored.rejection),
        stored.model,
        versions,
        stored.revision,
    )
    writer = SnapshotWriter()
    yield writer.header(header)
    for rows in storage.snapshot_rows(stored.id, embeddings, EXPORT_BATCH):
        yield writer.rows(rows)
    yield writer.end()


class SnapshotReader:
    """A snapshot checked as its chunks come in (:meth:`feed`), and at its end (:meth:`finish`).

    Lines are limited to ``max_line_bytes`` and images to ``max_pixels`` and ``max_side``; an
    embedding's width must be the same on every line of its model version.
    """

    def __init__(
        self,
        max_line_bytes: int,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_side: int = DEFAULT_MAX_SIDE,
    ) -> None:
        self.max_line_bytes = max_line_bytes
        self.max_pixels, self.max_side = max_pixels, max_side
        self.header: SnapshotHeader | None = None
        self.widths: dict[str, int] = {}  # model version -> its embeddings' width
        self.classes = self.examples = self.lines = 0
        self._digest = hashlib.sha256()
        self._pending = b""
        self._label: str | None = None
        self._ended = False

    def feed(self, chunk: bytes) -> list[SnapshotRow]:
        """The examples of the lines this chunk completes."""
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        if len(self._pending) > self.max_line_bytes:
            raise damaged(f"line {self.lines + 1} is longer than {self.max_line_bytes} bytes")
        rows = [self._line(line + b"\n") for line in lines]
        return [row for row in rows if row is not None]

    def finish(self) -> None:
        """The file is complete: :class:`InvalidSnapshotError` if it was cut short."""
        if self._pending.strip():  # a last line without its newline: whole, or cut short
            try:
                orjson.loads(self._pending)
            except orjson.JSONDecodeError:
                raise damaged(
                    f"line {self.lines + 1} is cut short: the file is incomplete"
                ) from None
            self.feed(b"\n")
        if self.header is None:
            raise damaged("the file is empty")
        if not self._ended:
            raise damaged(
                f"the end line is missing after line {self.lines}: the file was cut short"
            )

    def _line(self, line: bytes) -> SnapshotRow | None:
        self.lines += 1
        if self._ended:
            raise damaged(f"line {self.lines} comes after the end line")
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise damaged(f"line {self.lines} is not JSON") from None
        if not isinstance(value, dict):
            raise damaged(f"line {self.lines} is not a JSON object")
        if self.header is None:
            self.header = SnapshotHeader.from_json(value)
            self._digest.update(line)
            return None
        if "end" in value:
            self._end(value["end"])
            return None
        row = self._example(value)
        self.classes += row.label != self._label
        self._label = row.label
        self.examples += 1
        self._digest.update(line)
        return row

    def _end(self, end: Any) -> None:
        if not isinstance(end, dict) or end.get("sha256") != self._digest.hexdigest():
            raise damaged(
                "its SHA-256 does not match its end line's: the file was changed or damaged"
            )
        counted = {"classes": self.classes, "examples": self.examples}
        if {key: end.get(key) for key in counted} != counted:
            raise damaged(f"its end line counts {end}, the file holds {counted}")
        self._ended = True

    def _example(self, value: dict[str, Any]) -> SnapshotRow:
        where = f"line {self.lines}"
        if unknown := set(value) - EXAMPLE_FIELDS:
            raise damaged(f"{where} has unknown fields {sorted(unknown)}")
        label = value.get("label")
        if not isinstance(label, str) or not MIN_LENGTH <= len(label) <= MAX_LENGTH:
            raise damaged(
                f"{where}: the label is not a string of {MIN_LENGTH}-{MAX_LENGTH} characters"
            )
        return SnapshotRow(label, self._input(value, where), self._embeddings(value, where))

    def _input(self, value: dict[str, Any], where: str) -> np.ndarray | str:
        image, text = value.get("image"), value.get("text")
        if (image is None) == (text is None):
            raise damaged(f"{where} has not exactly one of 'image' and 'text'")
        if text is not None:
            if not isinstance(text, str) or not text:
                raise damaged(f"{where}: the text is not a non-empty string")
            return text
        try:
            decoded = decode_image(_base64(image, where), self.max_pixels, self.max_side)
        except InvalidInputError as error:
            raise damaged(f"{where}: {error}") from None
        if decoded.format != "PNG" or decoded.mode not in ("L", "RGB"):
            raise damaged(f"{where}: the image is not a grayscale or RGB PNG")
        return np.array(decoded, dtype=np.uint8)

    def _embeddings(self, value: dict[str, Any], where: str) -> dict[str, bytes]:
        given = value.get("embeddings", {})
        if not isinstance(given, dict) or not _names(list(given)):
            raise damaged(f"{where}: 'embeddings' is not an object of model versions")
        vectors = {version: _base64(text, where) for version, text in given.items()}
        for version, vector in vectors.items():
            width = self.widths.setdefault(version, len(vector) // 4)
            if len(vector) != 4 * width or not width:
                raise damaged(f"{where}: the embedding of {version} is not {width} float32s")
            if not np.isfinite(np.frombuffer(vector, dtype="<f4")).all():
                raise damaged(f"{where}: the embedding of {version} is not finite")
        return vectors


def _base64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise damaged(f"{where}: a base64 field is not a string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise damaged(f"{where}: a base64 field is not valid base64") from None
