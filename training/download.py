"""Fetching Omniglot: from the public source (with checksums) or from a local copy."""

from __future__ import annotations

import shutil
import urllib.request
import zipfile
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


def _download(url: str, target: Path) -> None:
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
            f"download failed: {url}: {reason}; use --from DIR with a copy of the zips "
            "fetched elsewhere"
        ) from None
    temp.replace(target)


def download_omniglot(dest: Path) -> list[str]:
    """Download the public zips (verified by MD5) and the Vinyals split files into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    report = []
    for name, expected_md5 in ZIP_MD5.items():
        target = dest / name
        if not (target.is_file() and file_hexdigest(target, "md5") == expected_md5):
            _download(ZIP_URL.format(name=name), target)
        if file_hexdigest(target, "md5") != expected_md5:
            target.unlink()
            raise ValueError(f"{name}: checksum mismatch after download (expected {expected_md5})")
        check_zip_content(target)
        report.append(f"{name}: md5 {expected_md5} ok")
    (dest / "splits" / "vinyals").mkdir(parents=True, exist_ok=True)
    for name in SPLIT_FILES:
        _download(SPLITS_URL.format(name=name), dest / "splits" / "vinyals" / name)
    report.append(f"splits/vinyals: {len(SPLIT_FILES)} files")
    return report


def _content_verdict(name: str, same_md5: bool) -> str:
    """What the check of a local zip found, and whether a differing MD5 matters."""
    alphabets, characters, drawings = ZIP_CONTENT[name]
    found = f"content ok ({alphabets} alphabets, {characters} characters, {drawings} drawings)"
    if same_md5:
        return f"{found}; md5 matches the public zip (a byte-identical copy)"
    # A zip packed again (other timestamps, compression or PNG encoder) has other bytes around
    # the same drawings; what training reads is checked above.
    return (
        f"{found}, fine to use; its md5 differs from the public zip's, which means it was "
        "packed or encoded again, not that drawings are missing"
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
