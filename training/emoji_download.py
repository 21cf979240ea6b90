"""Fetching the emoji data that training/emoji.py reads, with checksums as Omniglot's.

From the public npm registry: ``emoji-datasource-google`` and ``emoji-datasource-twitter``
16.0.0 (each vendor's 64 px PNGs, ``img/<style>/64/``, and the catalogue ``emoji.json`` with
its MIT licence) and twelve Iconify emoji sets (``@iconify-json/<set>``), each tarball pinned
by sha256. The vendor tarballs are unpacked into ``google/``, ``twitter/``, ``emoji.json``
and ``LICENSE.emoji-datasource`` (what the trainer reads: 26 MB of 136); the Iconify tarballs
stay whole under ``iconify/``, as the trainer reads them. Or ``--from DIR``: a copy of that
layout, or a folder of the same npm tarballs. Either way the result is checked (PNG counts
and size, the catalogue's fields, each Iconify tarball's checksum or content) and written
whole (``DEST.part``, renamed when complete) or not at all.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from protonet.files import file_hexdigest
from training.download import copy_verdict, fetch_checked, written_whole

REGISTRY = "https://registry.npmjs.org"
COPY_OF = "a copy of the emoji folder or of its npm tarballs"
LICENCE = "LICENSE.emoji-datasource"
CATALOGUE_FIELDS = ("unified", "short_name", "subcategory")  # what read_catalogue reads
PNG_NAME = re.compile(r"[0-9a-f]+(-[0-9a-f]+)*\.png")  # code points; never a path


@dataclass(frozen=True)
class Tarball:
    """One npm package version, named as ``npm pack`` names it, as the registry serves it."""

    package: str  # "emoji-datasource-google", "@iconify-json/noto"
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.package.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    @property
    def url(self) -> str:
        return f"{REGISTRY}/{self.package}/-/{self.package.split('/')[-1]}-{self.version}.tgz"


# sha256 of each tarball as `npm pack` wrote it on 2026-12-06; each file's sha512 equalled the
# registry's `dist.integrity` for that version (`npm view <package>@<version> dist.integrity`).
VENDORS = {
    "google": Tarball(
        "emoji-datasource-google",
        "16.0.0",
        "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
    ),
    "twitter": Tarball(
        "emoji-datasource-twitter",
        "16.0.0",
        "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877",
    ),
}
# The catalogue and its licence are the same files in both vendor tarballs (and in the
# `emoji-datasource` package itself); they are taken from this one.
CATALOGUE_VENDOR = "google"
CATALOGUE_MEMBERS = {"package/emoji.json": "emoji.json", "package/LICENSE": LICENCE}
ICONIFY = tuple(
    Tarball(f"@iconify-json/{name}", version, sha256)
    for name, version, sha256 in (
        ("emojione", "1.2.3", "26a14f44284407e8bcde91799388dca2bfd91dbcd55a97f425524a1c5b73610e"),
        (
            "emojione-monotone",
            "1.2.1",
            "40b90004bafb406b59266155ef9b7e1dd67bf2947fc8db8d07388776f4d0d04e",
        ),
        (
            "emojione-v1",
            "1.2.3",
            "6641d59d48a42823fdc2b84e7427e9f302944eb98d2c7d94d6e67c139e7b37b3",
        ),
        (
            "fluent-emoji",
            "1.2.7",
            "8044210dbf11e016d4de85f15d01a243423bd832457e7e2491df1b751c0e272b",
        ),
        (
            "fluent-emoji-flat",
            "1.2.6",
            "7d064769dee690815f823bc5bcc511d957198caf9f5edd8dd9c1aa48a6aeb175",
        ),
        (
            "fluent-emoji-high-contrast",
            "1.2.6",
            "0b92d48c90d2200bd499e3cdd09a127ca6a8c8ddefd34c35eb5a1e4994012ae0",
        ),
        ("fxemoji", "1.2.2", "f3e72b3c59d05e1db03b7e308d55c0d05bd7ba3f625a90da1b79313c12858eef"),
        ("noto", "1.2.9", "3e918d88fc945c0bb3d468dbace6f88caef67f01c9f0e7bcae0915a042e8f1ad"),
        ("noto-v1", "1.2.5", "2bf62c26c2c2884aa99e90aec942cdaee17a5921f05690694f4978ad4b017c37"),
        ("openmoji", "1.2.29", "03181e2c156cab35cf4a62f1f7886bd971d59212e75ac3f189d5a4cae3930fc5"),
        (
            "streamline-emojis",
            "1.2.4",
            "5dac87c876b322500989828c5823143e0100d78881627a2e4081a4b897cbfdbc",
        ),
        ("twemoji", "1.2.5", "19046dff7d8707ce96212ec86468b36ac5f8e60409629dd13f809265c6d0ebb7"),
    )
)


@dataclass(frozen=True)
class Content:
    """What the layout holds for emoji-datasource 16.0.0."""

    pngs: int = 3786  # per vendor (img/<style>/64/)
    png_size: int = 64
    emoji: int = 1911  # entries of emoji.json
    catalogue_sha256: str = "1d602e65be88772bf8cc368ce16b855d719eeddbafe128d471b80203f494d29f"


CONTENT = Content()


def download_emoji(dest: Path) -> list[str]:
    """Download the pinned tarballs (sha256 checked) and write the trainer's layout to ``dest``."""
    with written_whole(dest) as stage:
        fetched, iconify = stage / ".npm", stage / "iconify"
        fetched.mkdir()
        iconify.mkdir()
        report = [_fetch(t, fetched) for t in VENDORS.values()]
        for tarball in ICONIFY:  # reported by check_layout, below
            _fetch(tarball, iconify)
        for style, tarball in VENDORS.items():
            _unpack(fetched / tarball.filename, style, stage)
        shutil.rmtree(fetched)
        report += check_layout(stage)
    return [*report, f"written to {dest}"]


def _fetch(tarball: Tarball, folder: Path) -> str:
    return fetch_checked(tarball.url, folder / tarball.filename, "sha256", tarball.sha256, COPY_OF)


def copy_emoji(source: Path, dest: Path) -> list[str]:
    """Check a local copy (the layout, or a folder of the npm tarballs) and write the layout
    to ``dest``; what is wrong with the copy is a ``ValueError`` or ``FileNotFoundError``."""
    if not source.is_dir():
        raise FileNotFoundError(f"{source} not found")
    if (source / "emoji.json").is_file():
        report = check_layout(source)
        if source.resolve() == dest.resolve():
            return [*report, f"checked in place: {dest}"]
        with written_whole(dest) as stage:
            _copy_layout(source, stage)
        return [*report, *_left_out(source), f"copied to {dest}"]
    if any(_local_tarball(source, t) for t in VENDORS.values()):
        with written_whole(dest) as stage:
            report = _unpack_local(source, stage)
        return [*report, f"written to {dest}"]
    vendors = ", ".join(t.filename for t in VENDORS.values())
    raise FileNotFoundError(
        f"{source} holds neither the emoji folder's layout (emoji.json, google/, twitter/, "
        f"iconify/) nor its npm tarballs ({vendors}, iconify-json-<set>-<version>.tgz)"
    )


def check_layout(root: Path) -> list[str]:
    """One report line per part of the layout in ``root``; what is missing or wrong raises
    ``ValueError`` or ``FileNotFoundError`` with a message that names it."""
    return [
        _check_catalogue(root / "emoji.json"),
        _check_licence(root / LICENCE),
        *(_check_pngs(root / style) for style in VENDORS),
        *(_check_iconify(root / "iconify", tarball) for tarball in ICONIFY),
    ]


def _check_catalogue(path: Path) -> str:
    entries = _read_json(path)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of emoji, found {type(entries).__name__}")
    for index, entry in enumerate(entries):
        fields = entry if isinstance(entry, dict) else {}
        missing = [f for f in CATALOGUE_FIELDS if not isinstance(fields.get(f), str)]
        if missing:
            raise ValueError(f"{path}: entry {index} has no {', '.join(missing)} (a string)")
    if len(entries) != CONTENT.emoji:
        raise ValueError(
            f"{path}: {len(entries)} emoji, expected {CONTENT.emoji} (emoji-datasource 16.0.0)"
        )
    found = f"content ok ({len(entries)} emoji with {', '.join(CATALOGUE_FIELDS)})"
    same = file_hexdigest(path) == CONTENT.catalogue_sha256
    # emoji_pretty.json, beside it in the package, is the same catalogue laid out otherwise.
    difference = "which means it was written out again, not that emoji are missing"
    return "emoji.json: " + copy_verdict(found, "sha256", same, "the npm package's", difference)


def _read_json(path: Path) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        return json.loads(path.read_bytes())
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path} is not JSON: {error}") from None


def _check_licence(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the catalogue's MIT licence (package/LICENSE of "
            f"{VENDORS[CATALOGUE_VENDOR].filename}) travels with it"
        )
    return f"{LICENCE}: present"


def _check_pngs(folder: Path) -> str:
    pngs = sorted(folder.glob("*.png")) if folder.is_dir() else []
    size = (CONTENT.png_size, CONTENT.png_size)
    if len(pngs) != CONTENT.pngs:
        raise ValueError(
            f"{folder}: {len(pngs)} PNGs, expected {CONTENT.pngs} "
            f"(img/{folder.name}/64/ of {VENDORS[folder.name].filename})"
        )
    for png in pngs:
        width, height = _png_size(png)
        if (width, height) != size:
            raise ValueError(
                f"{png}: {width}x{height} pixels, expected {size[0]}x{size[1]} "
                f"(the PNGs of img/{folder.name}/64/)"
            )
    return f"{folder.name}/: {len(pngs)} PNGs, {size[0]}x{size[1]}"


def _png_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:  # reads the header only
            return image.size
    except (OSError, SyntaxError):  # UnidentifiedImageError is an OSError
        raise ValueError(f"{path} is not a readable image") from None


def _check_iconify(folder: Path, tarball: Tarball) -> str:
    path = folder / tarball.filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (npm pack {tarball.package}@{tarball.version})")
    if file_hexdigest(path) == tarball.sha256:
        return f"iconify/{path.name}: sha256 matches the npm tarball's (a byte-identical copy)"
    # Only a copy packed again is opened: fluent-emoji's icons.json alone is 60 MB.
    found = f"content ok (package/icons.json, {_icon_count(path)} icons)"
    difference = "which means it was packed again, not that the trainer's icons.json is missing"
    verdict = copy_verdict(found, "sha256", False, "the npm tarball's", difference)
    return f"iconify/{path.name}: {verdict}"


def _icon_count(path: Path) -> int:
    icons = _icons_json(path)
    if not isinstance(icons, dict) or not isinstance(icons.get("icons"), dict):
        raise ValueError(
            f"{path}: no Iconify icon set in package/icons.json (is it an @iconify-json npm "
            "tarball?)"
        )
    return len(icons["icons"])


def _icons_json(path: Path) -> object:
    """``package/icons.json`` of an Iconify tarball, parsed; None when missing or not JSON."""
    with _reading(path), tarfile.open(path, "r:gz") as archive:
        if "package/icons.json" not in archive.getnames():
            return None
        member = archive.extractfile("package/icons.json")
        try:
            return json.load(member) if member else None
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            return None


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """The errors of a broken or foreign archive as one ``ValueError`` that names the file."""
    try:
        yield
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(f"{path} is not a readable npm tarball (tar.gz): {error}") from None


def _unpack(tarball: Path, style: str, stage: Path) -> None:
    """The 64 px PNGs of ``style`` (and the catalogue with its licence, from one vendor) out
    of a vendor tarball. Nothing else is extracted, and every name written comes from a strict
    pattern, never from a path in the archive."""
    (stage / style).mkdir()
    bar = tqdm(total=CONTENT.pngs, unit="png", desc=f"{style}/")
    with _reading(tarball), bar, tarfile.open(tarball, "r|gz") as archive:
        for member in archive:
            target = _target(member.name, style, stage)
            content = archive.extractfile(member) if member.isfile() and target else None
            if target and content:
                target.write_bytes(content.read())
                if target.suffix == ".png":
                    bar.update()


def _target(name: str, style: str, stage: Path) -> Path | None:
    """Where a vendor tarball's member goes in the layout; None for what the trainer skips."""
    png = name.removeprefix(f"package/img/{style}/64/")
    if png != name and PNG_NAME.fullmatch(png):
        return stage / style / png
    if style == CATALOGUE_VENDOR and name in CATALOGUE_MEMBERS:
        return stage / CATALOGUE_MEMBERS[name]
    return None


def _local_tarball(source: Path, tarball: Tarball) -> Path | None:
    """``tarball`` in a folder of npm tarballs, at its top or under ``iconify/``."""
    for path in (source / tarball.filename, source / "iconify" / tarball.filename):
        if path.is_file():
            return path
    return None


def _required_tarball(source: Path, tarball: Tarball) -> Path:
    path = _local_tarball(source, tarball)
    if path is None:
        raise FileNotFoundError(
            f"{tarball.filename} not found in {source} (nor in its iconify/); "
            f"npm pack {tarball.package}@{tarball.version} fetches it"
        )
    return path


def _unpack_local(source: Path, stage: Path) -> list[str]:
    # Every tarball is found before any is read: a missing one is named at once.
    vendors = {style: _required_tarball(source, t) for style, t in VENDORS.items()}
    iconify = [_required_tarball(source, t) for t in ICONIFY]
    report = []
    for style, path in vendors.items():
        name, same = path.name, file_hexdigest(path) == VENDORS[style].sha256
        report.append(
            f"{name}: sha256 matches the npm tarball's"
            if same
            else f"{name}: its sha256 differs from the npm tarball's (packed again); what the "
            "trainer reads from it is checked below"
        )
        _unpack(path, style, stage)
    (stage / "iconify").mkdir()
    for path, tarball in zip(iconify, ICONIFY, strict=True):
        shutil.copyfile(path, stage / "iconify" / tarball.filename)
    return report + check_layout(stage)


def _copy_layout(source: Path, stage: Path) -> None:
    """The checked layout's files, and only those (copyfile: not the source's modes)."""
    for name in ("emoji.json", LICENCE):
        shutil.copyfile(source / name, stage / name)
    for style in VENDORS:
        (stage / style).mkdir()
        for png in tqdm(sorted((source / style).glob("*.png")), unit="png", desc=f"{style}/"):
            shutil.copyfile(png, stage / style / png.name)
    (stage / "iconify").mkdir()
    for tarball in ICONIFY:
        name = tarball.filename
        shutil.copyfile(source / "iconify" / name, stage / "iconify" / name)


def _left_out(source: Path) -> list[str]:
    pinned = {t.filename for t in ICONIFY}
    return [
        f"iconify/{path.name}: not one of the pinned sets, left out (the trainer reads every "
        "iconify/*.tgz as one more style)"
        for path in sorted((source / "iconify").glob("*.tgz"))
        if path.name not in pinned
    ]
