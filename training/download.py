"""Fetching datasets: the steps every dataset shares (a download with progress, a checksum
check, a folder written whole or not at all, the verdict on a local copy), and Omniglot, from
its public source (with checksums) or from a local copy. The emoji set: emoji_download.py."""

from __future__ import annotations

import shutil
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from protonet.files import file_hexdigest

ZIP_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{name}"
# MD5 of the public zips, as published with torchvision's Omniglot dataset.
ZIP_MD5 = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
}
# Expected content: (alphabets, characters, drawings). A copy whose files were re-encoded has
# other checksums but must still hold exactly this.
ZIP_CONTENT = {
    "images_background.zip": (30, 964, 19280),
    "images_evaluation.zip": (20, 659, 13180),
}
SPLITS_URL = (
    "https://raw.githubusercontent.com/jakesnell/prototypical-networks/master/"
    "data/omniglot/splits/vinyals/{name}"
)
SPLIT_FILES = ("train.txt", "val.txt", "test.txt", "trainval.txt")


def check_zip_content(path: Path) -> None:
    """Raise ``ValueError`` unless the zip holds the canonical layout and counts."""
    try:
        with zipfile.ZipFile(path) as archive:
            pngs = [n.split("/") for n in archive.namelist() if n.lower().endswith(".png")]
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not a zip file") from None
    pngs = [p for p in pngs if len(p) == 4]
    counts = (len({p[1] for p in pngs}), len({(p[1], p[2]) for p in pngs}), len(pngs))
    expected = ZIP_CONTENT[path.name]
    if counts != expected:
        raise ValueError(
            f"{path}: found {counts[0]} alphabets / {counts[1]} characters / {counts[2]} drawings,"
            f" expected {expected[0]} / {expected[1]} / {expected[2]}"
        )


class DownloadError(OSError):
    """A file could not be fetched (no network, refused, HTTP error): the message says which
    and what to do instead."""


def download_file(url: str, target: Path, copy_of: str) -> None:
    """Fetch ``url`` into ``target`` through ``target.part`` (renamed when complete); a
    failure is a :class:`DownloadError` that offers ``--from DIR`` with ``copy_of`` instead."""
    temp = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(temp, "wb") as out:
            total = int(response.headers.get("Content-Length", 0)) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
    except OSError as error:  # URLError, HTTPError, timeouts and resets are all OSErrors
        temp.unlink(missing_ok=True)
        reason = getattr(error, "reason", None) or error
        raise DownloadError(
            f"download failed: {url}: {reason}; use --from DIR with {copy_of} fetched elsewhere"
        ) from None
    temp.replace(target)


def fetch_checked(url: str, target: Path, algorithm: str, expected: str, copy_of: str) -> str:
    """``target`` holding ``url``'s file, whose ``algorithm`` digest must be ``expected`` (a
    file already there that matches is kept); a mismatch deletes it and raises ``ValueError``.
    Returns the report line."""
    if not (target.is_file() and file_hexdigest(target, algorithm) == expected):
        download_file(url, target, copy_of)
    if file_hexdigest(target, algorithm) != expected:
        target.unlink()
        raise ValueError(
            f"{target.name}: checksum mismatch after download from {url} "
            f"(expected {algorithm} {expected})"
        )
    return f"{target.name}: {algorithm} {expected} ok"


def copy_verdict(found: str, algorithm: str, same: bool, original: str, difference: str) -> str:
    """What the check of a local copy ``found``, and whether a checksum differing from
    ``original``'s matters: ``difference`` says what it means, and what it does not."""
    if same:
        return f"{found}; {algorithm} matches {original} (a byte-identical copy)"
    return f"{found}, fine to use; its {algorithm} differs from {original}, {difference}"


@contextmanager
def written_whole(dest: Path) -> Iterator[Path]:
    """A folder to fill in place of ``dest``, which appears only if the block ends without
    an error (``dest.part`` renamed); otherwise nothing is left. A non-empty ``dest`` is
    refused rather than replaced: it may hold the user's files."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} already exists; remove it or choose another --dest")
    stage = dest.with_name(dest.name + ".part")
    shutil.rmtree(stage, ignore_errors=True)  # left behind by a run that was killed
    stage.mkdir(parents=True)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if dest.exists():
        dest.rmdir()  # empty, checked above
    stage.rename(dest)


ZIPS = "a copy of the zips"


def download_omniglot(dest: Path) -> list[str]:
    """Download the public zips (verified by MD5) and the Vinyals split files into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    report = []
    for name, expected_md5 in ZIP_MD5.items():
        report.append(
            fetch_checked(ZIP_URL.format(name=name), dest / name, "md5", expected_md5, ZIPS)
        )
        check_zip_content(dest / name)
    (dest / "splits" / "vinyals").mkdir(parents=True, exist_ok=True)
    for name in SPLIT_FILES:
        download_file(SPLITS_URL.format(name=name), dest / "splits" / "vinyals" / name, ZIPS)
    report.append(f"splits/vinyals: {len(SPLIT_FILES)} files")
    return report


def _content_verdict(name: str, same_md5: bool) -> str:
    alphabets, characters, drawings = ZIP_CONTENT[name]
    found = f"content ok ({alphabets} alphabets, {characters} characters, {drawings} drawings)"
    # A zip packed again (other timestamps, compression or PNG encoder) has other bytes around
    # the same drawings; what training reads is checked by check_zip_content.
    return copy_verdict(
        found,
        "md5",
        same_md5,
        "the public zip's",
        "which means it was packed or encoded again, not that drawings are missing",
    )


def copy_omniglot(source: Path, dest: Path) -> list[str]:
    """Validate a local copy (layout and counts; MD5 compared and reported) and copy it."""
    report = []
    for name in ZIP_MD5:
        path = source / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        check_zip_content(path)
        same = file_hexdigest(path, "md5") == ZIP_MD5[name]
        report.append(f"{name}: {_content_verdict(name, same)}")
    dest.mkdir(parents=True, exist_ok=True)
    if source.resolve() != dest.resolve():
        for name in ZIP_MD5:
            shutil.copyfile(source / name, dest / name)
        splits = source / "splits" / "vinyals"
        if splits.is_dir():
            shutil.copytree(
                splits,
                dest / "splits" / "vinyals",
                dirs_exist_ok=True,
                copy_function=shutil.copyfile,
            )
    report.append(f"copied to {dest}")
    return report
