"""Every benchmark's smoke mode: ``--smoke`` runs the same code paths at tiny sizes, in seconds.

A benchmark nobody runs rots unseen: an API change breaks it and no one notices until the next
measurement. So every script in ``benchmarks/`` that runs on its own (all but the helpers that
scripts import: this module and ``machine.py``) takes ``--smoke``, and
``tests/benchmarks/test_smoke.py`` runs each one with it in the test suite. A smoke mode must:

- run the same code paths as the full run: every phase, table, server start and subprocess,
  the same data sources; what it leaves out can break unseen;
- at tiny sizes and short durations: a few episodes, requests and classes, fractions of a
  second per timed phase, no waiting for a quiet machine; seconds in all, and little CPU
  beyond the processes it has to start (each one that imports torch costs 2-3 s: the suite
  runs every smoke in every CI run);
- print the same kinds of lines as the full run (their numbers mean nothing: never quote
  them) and exit 0; its exit status must not depend on timings or on targets being met
  (tests never assert timings), only on the code working (no 5xx, no lost write, ...).

How: build the ``argparse`` parser as usual, then ``args = smoke.parse_args(parser, SMOKE)``
with ``SMOKE`` the options' smoke values, e.g. ``{"episodes": 5, "seconds": 0.2}``: it adds
``--smoke``, and with it those values replace the options' defaults (values given on the
command line still win). A size that is no option yet becomes one (``help=argparse.SUPPRESS``
if only the smoke run needs it), or the code reads ``args.smoke``. Real data is read whole
where a full run reads it whole, which is no smoke: :func:`omniglot`, :func:`emoji` and
:func:`banking77` give the script a small copy of the shared folder instead (the same layout,
a few classes or texts). Then give the script an entry in ``tests/benchmarks/test_smoke.py``'s
``SMOKES``: the lines its report must show, and what it needs that CI has and a laptop may not
(shared data, PostgreSQL, wrk), so that the test skips there without it.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HELP = (
    "tiny sizes, seconds: check that the code paths still run (the test suite does); the "
    "numbers mean nothing"
)


def parse_args(
    parser: argparse.ArgumentParser,
    smoke: Mapping[str, Any],
    argv: Sequence[str] | None = None,
) -> argparse.Namespace:
    """``parser``'s arguments plus ``--smoke``; with ``--smoke``, ``smoke`` (option dest ->
    value) replaces those options' defaults, and explicit flags still override them."""
    parser.add_argument("--smoke", action="store_true", help=HELP)
    args = parser.parse_args(argv)
    unknown = sorted(name for name in smoke if not hasattr(args, name))
    if unknown:
        raise ValueError(f"smoke values for options the parser lacks: {', '.join(unknown)}")
    if not args.smoke:
        return args
    parser.set_defaults(**smoke)
    return parser.parse_args(argv)


@contextmanager
def omniglot(data: Path, smoke: bool, alphabets: Mapping[str, int]) -> Iterator[Path]:
    """The Omniglot folder ``data``; in a smoke run, a small copy of it in a temporary folder:
    the zips hold only the first ``alphabets[name]`` characters of each alphabet named (all
    their drawings) and the Vinyals split files list only those. The members are copied as
    stored, so the copy's zips are the same bytes each time (and hit the same decoded-image
    cache)."""
    if not smoke:
        yield Path(data)
        return
    with tempfile.TemporaryDirectory(prefix="omniglot-smoke-") as scratch:
        yield write_omniglot_sample(Path(data), Path(scratch), alphabets)


def write_omniglot_sample(source: Path, dest: Path, alphabets: Mapping[str, int]) -> Path:
    kept: set[str] = set()  # "Alphabet/characterNN"
    per_alphabet: Counter[str] = Counter()
    for original in sorted(source.glob("images_*.zip")):
        with (
            zipfile.ZipFile(original) as archive,
            zipfile.ZipFile(dest / original.name, "w") as out,
        ):
            characters: dict[str, list[zipfile.ZipInfo]] = {}
            for info in archive.infolist():  # images_<subset>/<Alphabet>/<character>/<n>.png
                parts = info.filename.split("/")
                if len(parts) == 4 and parts[1] in alphabets and parts[3].endswith(".png"):
                    characters.setdefault(f"{parts[1]}/{parts[2]}", []).append(info)
            for name in sorted(characters):
                alphabet = name.split("/")[0]
                if per_alphabet[alphabet] < alphabets[alphabet]:
                    per_alphabet[alphabet] += 1
                    kept.add(name)
                    for info in sorted(characters[name], key=lambda i: i.filename):
                        out.writestr(info, archive.read(info))
    splits = dest / "splits" / "vinyals"
    splits.mkdir(parents=True)
    for split in sorted((source / "splits" / "vinyals").glob("*.txt")):
        lines = [x for x in split.read_text().splitlines() if x.rsplit("/", 1)[0] in kept]
        (splits / split.name).write_text("".join(f"{line}\n" for line in lines))
    return dest


@contextmanager
def emoji(
    data: Path, smoke: bool, count: int, icon_sets: Sequence[str], split: str = "test"
) -> Iterator[Path]:
    """The emoji folder ``data``; in a smoke run, a small copy of it in a temporary folder: the
    catalogue's first ``count`` emoji of ``split``'s subcategories, their vendor PNGs, and the
    Iconify sets named in ``icon_sets`` (e.g. ``"noto"``; linked: only those emoji are drawn
    from them. Sets without code points in their ``chars.json`` join through the names of
    those with: keep one of those)."""
    if not smoke:
        yield Path(data)
        return
    with tempfile.TemporaryDirectory(prefix="emoji-smoke-") as scratch:
        yield write_emoji_sample(Path(data), Path(scratch), count, icon_sets, split)


def write_emoji_sample(
    source: Path, dest: Path, count: int, icon_sets: Sequence[str], split: str
) -> Path:
    from training.emoji import PNG_STYLES, emoji_key, has_skin_tone, subcategory_split

    entries = json.loads((source / "emoji.json").read_text())
    chosen = [
        entry
        for entry in entries
        if subcategory_split(entry["subcategory"]) == split
        and not has_skin_tone(emoji_key(entry["unified"]))
    ][:count]
    (dest / "emoji.json").write_text(json.dumps(chosen))
    keys = {emoji_key(entry["unified"]) for entry in chosen}
    for style in PNG_STYLES:
        (dest / style).mkdir()
        for png in sorted((source / style).glob("*.png")):
            if emoji_key(png.stem) in keys:
                (dest / style / png.name).write_bytes(png.read_bytes())
    (dest / "iconify").mkdir()
    for name in icon_sets:  # iconify-json-<name>-<version>.tgz
        (tarball,) = (source / "iconify").glob(f"iconify-json-{name}-[0-9]*.tgz")
        (dest / "iconify" / tarball.name).symlink_to(tarball.resolve())
    return dest


@contextmanager
def banking77(data: Path, smoke: bool, per_intent: int) -> Iterator[Path]:
    """The Banking77 folder ``data``; in a smoke run, a small copy of it in a temporary folder:
    the first ``per_intent`` texts of every intent in each CSV file, the same categories."""
    if not smoke:
        yield Path(data)
        return
    with tempfile.TemporaryDirectory(prefix="banking77-smoke-") as scratch:
        yield write_banking77_sample(Path(data), Path(scratch), per_intent)


def write_banking77_sample(source: Path, dest: Path, per_intent: int) -> Path:
    shutil.copy(source / "categories.json", dest / "categories.json")
    for name in ("train.csv", "test.csv"):
        with open(source / name, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        taken: Counter[str] = Counter()
        with open(dest / name, "w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=["text", "category"])
            writer.writeheader()
            for row in rows:
                if taken[row["category"]] < per_intent:
                    taken[row["category"]] += 1
                    writer.writerow({"text": row["text"], "category": row["category"]})
    return dest
