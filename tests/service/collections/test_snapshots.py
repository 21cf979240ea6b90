"""The snapshot format (service/collections/snapshots.py): what the writer writes, the reader
reads back whatever the chunk sizes, and every kind of damage is refused with where it is."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import orjson
import pytest
from PIL import Image

from service.collections.rejection import RejectionSetting
from service.collections.snapshots import SnapshotHeader, SnapshotReader, SnapshotWriter
from service.errors import InvalidSnapshotError
from service.storage.repository import SnapshotRow

HEADER = SnapshotHeader("shapes", "ivf", RejectionSetting(True, 0.99), "omniglot", ["v1"], 7)
MAX_LINE = 1 << 20


def vector(*values: float) -> bytes:
    return np.array(values, dtype="<f4").tobytes()


def rows() -> list[SnapshotRow]:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    color = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    return [
        SnapshotRow("ring", gray, {"v1": vector(1, 2), "v0": vector(3, 4, 5)}),
        SnapshotRow("ring", color, {}),
        SnapshotRow("b/é", "a text, as stored", {"v1": vector(6, 7)}),
    ]


def snapshot(items: list[SnapshotRow] | None = None, header: SnapshotHeader = HEADER) -> bytes:
    writer = SnapshotWriter()
    return writer.header(header) + writer.rows(rows() if items is None else items) + writer.end()


def read(data: bytes, chunk: int | None = None) -> tuple[SnapshotReader, list[SnapshotRow]]:
    reader = SnapshotReader(MAX_LINE)
    step = chunk or max(1, len(data))
    found = [
        row
        for start in range(0, len(data), step)
        for row in reader.feed(data[start : start + step])
    ]
    reader.finish()
    return reader, found


def same_rows(found: list[SnapshotRow], wanted: list[SnapshotRow]) -> None:
    assert [r.label for r in found] == [r.label for r in wanted]
    assert [r.embeddings for r in found] == [r.embeddings for r in wanted]
    for got, expected in zip(found, wanted, strict=True):
        if isinstance(expected.input, str):
            assert got.input == expected.input
        else:
            assert isinstance(got.input, np.ndarray) and np.array_equal(got.input, expected.input)


@pytest.mark.parametrize("chunk", [None, 1, 7, 4096])
def test_what_is_written_reads_back_whatever_the_chunks(chunk):
    reader, found = read(snapshot(), chunk)
    same_rows(found, rows())
    assert reader.header == HEADER
    assert (reader.classes, reader.examples) == (2, 3)
    assert reader.widths == {"v1": 2, "v0": 3}


def test_the_format_is_json_lines_with_png_images_and_an_end_line():
    lines = [json.loads(line) for line in snapshot().splitlines()]
    assert lines[0] == {
        "format": "protonet-snapshot",
        "version": 1,
        "collection": {
            "name": "shapes",
            "index": "ivf",
            "rejection": {"acceptance": 0.99},
            "model": "omniglot",
        },
        "model_versions": ["v1"],
        "revision": 7,
    }
    image = Image.open(io.BytesIO(base64.b64decode(lines[1]["image"])))
    assert (image.format, image.mode, image.size) == ("PNG", "L", (28, 28))
    assert np.frombuffer(base64.b64decode(lines[1]["embeddings"]["v1"]), "<f4").tolist() == [1, 2]
    assert lines[3] == {
        "label": "b/é",
        "text": "a text, as stored",
        "embeddings": lines[3]["embeddings"],
    }
    assert lines[4]["end"]["classes"] == 2 and lines[4]["end"]["examples"] == 3
    assert len(lines[4]["end"]["sha256"]) == 64


def test_an_empty_collection_and_settings_without_acceptance_round_trip():
    header = SnapshotHeader("empty", "auto", RejectionSetting(True), "m", [], 0)
    reader, found = read(snapshot([], header))
    assert found == [] and reader.header == header
    plain = SnapshotHeader("plain", "exact", RejectionSetting(), "m", [], 3)
    assert read(snapshot([], plain))[0].header == plain


def edited(line: int, change) -> bytes:
    """The snapshot with line ``line`` (0-based) changed, the end line rewritten to match
    (so that only the change itself is wrong)."""
    lines = snapshot().splitlines(keepends=True)
    value = orjson.loads(lines[line])
    change(value)
    lines[line] = orjson.dumps(value) + b"\n"
    writer = SnapshotWriter()
    body = b"".join(lines[:-1])
    writer.digest.update(body)
    end = orjson.loads(lines[-1])["end"]
    return body + orjson.dumps({"end": {**end, "sha256": writer.digest.hexdigest()}}) + b"\n"


def refused(data: bytes, message: str) -> None:
    with pytest.raises(InvalidSnapshotError, match=message) as error:
        read(data)
    assert str(error.value).startswith("invalid snapshot: ")
    assert str(error.value).endswith("; nothing was restored")


def test_a_file_cut_anywhere_is_refused_as_cut_short():
    data = snapshot()
    newlines = [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    for cut in [*newlines[:-1], 10, newlines[1] + 5, len(data) - 3]:
        with pytest.raises(InvalidSnapshotError, match=r"cut short|incomplete"):
            read(data[:cut])
    refused(b"", "the file is empty")
    read(data.rstrip(b"\n"))  # only the last newline missing: complete


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (snapshot().replace(b'"ring"', b'"rinG"', 1), "SHA-256 does not match"),
        (snapshot() + b"{}\n", "line 6 comes after the end line"),
        (b"{}\n" + snapshot(), "line 1 is not a snapshot header"),
        (b"not json\n", "line 1 is not JSON"),
        (b"[1]\n", "line 1 is not a JSON object"),
        (
            snapshot().replace(b'"version":1', b'"version":2'),
            "format version 2: this service reads version 1",
        ),
        (snapshot().replace(b'"index":"ivf"', b'"index":"hnsw"'), "index"),
        (snapshot().replace(b'"acceptance":0.99', b'"acceptance":"high"'), "rejection"),
    ],
)
def test_damage_and_foreign_files_are_refused_saying_where(data, message):
    refused(data, message)


@pytest.mark.parametrize(
    ("line", "change", "message"),
    [
        (1, lambda v: v.update(extra=1), r"line 2 has unknown fields \['extra'\]"),
        (1, lambda v: v.update(text="also"), "line 2 has not exactly one of 'image' and 'text'"),
        (1, lambda v: v.pop("image"), "line 2 has not exactly one of 'image' and 'text'"),
        (1, lambda v: v.update(label=""), "line 2: the label is not a string of 1-200"),
        (1, lambda v: v.update(label="x" * 201), "line 2: the label"),
        (1, lambda v: v.update(image="%%%"), "line 2: a base64 field is not valid base64"),
        (
            1,
            lambda v: v.update(image=base64.b64encode(b"no image").decode()),
            "line 2: not a decodable image",
        ),
        (3, lambda v: v.update(text=""), "line 4: the text is not a non-empty string"),
        (
            3,
            lambda v: v["embeddings"].update(v1=base64.b64encode(vector(1, 2, 3)).decode()),
            "line 4: the embedding of v1 is not 2 float32s",
        ),
        (
            3,
            lambda v: v["embeddings"].update(v1=base64.b64encode(vector(1, np.nan)).decode()),
            "line 4: the embedding of v1 is not finite",
        ),
        (3, lambda v: v.update(embeddings=[1]), "line 4: 'embeddings' is not an object"),
        (4, lambda v: v["end"].update(examples=4), "its end line counts"),
    ],
)
def test_an_example_line_that_does_not_hold_is_refused_saying_which(line, change, message):
    refused(edited(line, change), message)


def test_images_must_be_grayscale_or_rgb_pngs():
    jpeg = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(jpeg, format="JPEG")
    refused(
        edited(2, lambda v: v.update(image=base64.b64encode(jpeg.getvalue()).decode())),
        "line 3: the image is not a grayscale or RGB PNG",
    )


def test_a_line_longer_than_the_limit_is_refused_before_it_ends():
    reader = SnapshotReader(max_line_bytes=100)
    reader.feed(snapshot().splitlines(keepends=True)[0])
    with pytest.raises(InvalidSnapshotError, match="line 2 is longer than 100 bytes"):
        reader.feed(b"x" * 101)
