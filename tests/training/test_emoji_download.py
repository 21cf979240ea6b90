"""``data emoji``: the pinned npm tarballs unpacked into the trainer's layout, or a local copy
checked and copied; written whole or not at all. The network is a ``file://`` registry of
small synthetic tarballs, pinned by monkeypatch, or a closed local port."""

import gzip
import io
import json
import shutil
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protonet.files import file_hexdigest
from protonet.preprocessing import picture_spec
from training import emoji_download
from training.cli import main
from training.emoji import emoji_fingerprint, is_emoji_dir, load_emoji
from training.emoji_download import LICENCE, Content, download_emoji

from .emoji_data import publish_emoji, write_emoji_folder


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A synthetic emoji folder (4 emoji, 16 px PNGs, two Iconify sets) served by a
    ``file://`` registry, with the module's pins and expected counts set to match it."""
    root = write_emoji_folder(tmp_path / "source", ["face", "animal"], png_sizes=(16, 16))
    registry = tmp_path / "registry"
    vendors, iconify = publish_emoji(root, registry)
    monkeypatch.setattr(emoji_download, "REGISTRY", registry.as_uri())
    monkeypatch.setattr(emoji_download, "VENDORS", vendors)
    monkeypatch.setattr(emoji_download, "ICONIFY", iconify)
    expected = Content(4, 16, 4, file_hexdigest(root / "emoji.json"))
    monkeypatch.setattr(emoji_download, "CONTENT", expected)
    return root


@pytest.fixture
def layout(source: Path, tmp_path: Path) -> Path:
    """The folder ``data emoji`` downloads from the synthetic registry."""
    download_emoji(tmp_path / "downloaded")
    return tmp_path / "downloaded"


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["data", "emoji", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_download_writes_what_the_trainer_reads(source, tmp_path, capsys):
    dest = tmp_path / "emoji"
    status, out, _ = run(capsys, "--dest", str(dest))
    assert status == 0
    google = emoji_download.VENDORS["google"]
    lines = out.splitlines()
    assert lines[0] == f"emoji-datasource-google-16.0.0.tgz: sha256 {google.sha256} ok"
    assert "google/: 4 PNGs, 16x16" in lines and lines[-1] == f"written to {dest}"
    assert "iconify/iconify-json-set1-1.0.0.tgz: sha256 matches the npm tarball's" in out
    got, before = files(dest), files(source)
    iconify = {
        f"iconify/iconify-json-{n}-1.0.0.tgz": before.pop(f"iconify/{n}.tgz")
        for n in ("set0", "set1")
    }
    assert got == {**before, **iconify}  # the 64 px PNGs, catalogue, licence; nothing else
    assert not list(tmp_path.rglob("escaped.png")) and not (tmp_path / "emoji.part").exists()
    # The trainer reads the same drawings from it as from the folder it was packed from.
    spec = picture_spec(16)
    ours = load_emoji(dest, spec, cache_dir=tmp_path / "cache", progress=False)
    theirs = load_emoji(source, spec, cache_dir=tmp_path / "cache", progress=False)
    assert is_emoji_dir(dest) and ours.class_names == theirs.class_names
    np.testing.assert_array_equal(ours.pixels, theirs.pixels)


def test_a_checksum_mismatch_is_an_error_and_leaves_nothing(source, tmp_path, capsys):
    """The last tarball fetched was changed on the server: refused, and what was already
    fetched and unpacked is gone with the rest."""
    last = emoji_download.ICONIFY[-1]
    served = tmp_path / "registry" / last.package / "-" / f"set1-{last.version}.tgz"
    served.write_bytes(served.read_bytes() + b"\0")
    dest = tmp_path / "emoji"
    status, _, err = run(capsys, "--dest", str(dest))
    assert status == 2
    assert err.splitlines()[-1] == (  # after the progress bars of what was fetched
        f"error: iconify-json-set1-1.0.0.tgz: checksum mismatch after download from "
        f"{last.url} (expected sha256 {last.sha256})"
    )
    assert not dest.exists() and not (tmp_path / "emoji.part").exists()


def test_a_failed_download_is_one_line_that_offers_from(source, tmp_path, monkeypatch, capsys):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(emoji_download, "REGISTRY", f"http://127.0.0.1:{port}")
    status, _, err = run(capsys, "--dest", str(tmp_path / "emoji"))
    assert status == 2
    url = f"http://127.0.0.1:{port}/emoji-datasource-google/-/emoji-datasource-google-16.0.0.tgz"
    assert err.startswith(f"error: download failed: {url}: ")
    assert err.endswith(
        "; use --from DIR with a copy of the emoji folder or of its npm tarballs fetched "
        "elsewhere\n"
    )
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not list(tmp_path.glob("emoji*"))  # no folder, no .part


def npm_pack_folder(tmp_path: Path) -> Path:
    """Every published tarball in one folder, named as ``npm pack`` names them."""
    folder = tmp_path / "tarballs"
    folder.mkdir()
    for tarball in [*emoji_download.VENDORS.values(), *emoji_download.ICONIFY]:
        served = tmp_path / "registry" / tarball.url.removeprefix(emoji_download.REGISTRY + "/")
        shutil.copyfile(served, folder / tarball.filename)
    return folder


def test_from_a_folder_of_npm_tarballs(source, layout, tmp_path, capsys):
    folder = npm_pack_folder(tmp_path)
    status, out, _ = run(capsys, "--from", str(folder), "--dest", str(tmp_path / "emoji"))
    assert status == 0
    assert "emoji-datasource-twitter-16.0.0.tgz: sha256 matches the npm tarball's" in out
    assert files(tmp_path / "emoji") == files(layout)


def test_from_npm_tarballs_says_which_is_missing_or_broken(source, tmp_path, capsys):
    folder = npm_pack_folder(tmp_path)
    twitter = folder / "emoji-datasource-twitter-16.0.0.tgz"
    twitter.rename(tmp_path / "aside.tgz")
    dest = str(tmp_path / "emoji")
    status, _, err = run(capsys, "--from", str(folder), "--dest", dest)
    assert status == 2
    assert err == (
        f"error: emoji-datasource-twitter-16.0.0.tgz not found in {folder} (nor in its "
        "iconify/); npm pack emoji-datasource-twitter@16.0.0 fetches it\n"
    )
    (tmp_path / "aside.tgz").rename(twitter)
    (folder / "emoji-datasource-google-16.0.0.tgz").write_bytes(b"not a tarball")
    status, _, err = run(capsys, "--from", str(folder), "--dest", dest)
    assert status == 2
    assert err.splitlines()[-1] == (
        f"error: {folder}/emoji-datasource-google-16.0.0.tgz is not a readable npm tarball "
        "(tar.gz): not a gzip file"
    )
    assert not list(tmp_path.glob("emoji*"))


def test_from_a_copy_of_the_layout_copies_what_the_trainer_reads(layout, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(layout, copy)
    (copy / "iconify" / "extra.tgz").write_bytes(b"")
    (copy / "notes.txt").write_text("mine")
    status, out, _ = run(capsys, "--from", str(copy), "--dest", str(tmp_path / "emoji"))
    assert status == 0
    assert files(tmp_path / "emoji") == files(layout)
    assert (
        "iconify/extra.tgz: not one of the pinned sets, left out (the trainer reads every "
        "iconify/*.tgz as one more style)"
    ) in out.splitlines()
    assert "emoji.json: content ok (4 emoji with unified, short_name, subcategory); sha256 " in out


def tarball_of(members: dict[str, bytes]) -> bytes:
    """A tar.gz of ``members``, with no gzip timestamp and another level than npm's."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), compresslevel=1, mtime=0)


def repacked(path: Path) -> bytes:
    """The same members, packed again: other bytes, the same content."""
    with tarfile.open(path) as archive:
        return tarball_of({m.name: archive.extractfile(m).read() for m in archive if m.isfile()})


def resized(path: Path, size: int) -> None:
    with Image.open(path) as image:
        image.resize((size, size)).save(path)


def catalogue_without(root: Path, field: str) -> None:
    entries = json.loads((root / "emoji.json").read_text())
    del entries[0][field]
    (root / "emoji.json").write_text(json.dumps(entries))


SET1 = "iconify/iconify-json-set1-1.0.0.tgz"
DAMAGES = {
    "a PNG missing": (
        lambda root: next((root / "google").glob("*.png")).unlink(),
        "google: 3 PNGs, expected 4 (img/google/64/ of emoji-datasource-google-16.0.0.tgz)",
    ),
    "a PNG of another size": (
        lambda root: resized(sorted((root / "twitter").glob("*.png"))[-1], 32),
        "32x32 pixels, expected 16x16 (the PNGs of img/twitter/64/)",
    ),
    "a catalogue that is not JSON": (
        lambda root: (root / "emoji.json").write_text("[{"),
        "emoji.json is not JSON: ",
    ),
    "a catalogue entry without a field": (
        lambda root: catalogue_without(root, "subcategory"),
        "emoji.json: entry 0 has no subcategory (a string)",
    ),
    "no licence": (lambda root: (root / LICENCE).unlink(), f"{LICENCE} not found: "),
    "an Iconify set missing": (
        lambda root: (root / SET1).unlink(),
        "iconify-json-set1-1.0.0.tgz not found (npm pack @iconify-json/set1@1.0.0)",
    ),
    "an Iconify set that is not a tarball": (
        lambda root: (root / SET1).write_bytes(b"not a tarball"),
        "iconify-json-set1-1.0.0.tgz is not a readable npm tarball (tar.gz): ",
    ),
    "an Iconify set without icons.json": (
        lambda root: (root / SET1).write_bytes(tarball_of({"package/info.json": b"{}"})),
        "iconify-json-set1-1.0.0.tgz: no Iconify icon set in package/icons.json",
    ),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_from_a_damaged_copy_says_what_is_wrong(layout, tmp_path, capsys, damage):
    copy = tmp_path / "copy"
    shutil.copytree(layout, copy)
    spoil, message = DAMAGES[damage]
    spoil(copy)
    status, _, err = run(capsys, "--from", str(copy), "--dest", str(tmp_path / "emoji"))
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "emoji").exists() and not (tmp_path / "emoji.part").exists()


def test_a_repacked_iconify_set_is_fine_and_the_report_says_why(layout, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(layout, copy)
    (copy / SET1).write_bytes(repacked(copy / SET1))
    status, out, _ = run(capsys, "--from", str(copy), "--dest", str(tmp_path / "emoji"))
    assert status == 0
    assert (
        f"{SET1}: content ok (package/icons.json, 4 icons), fine to use; its sha256 differs "
        "from the npm tarball's, which means it was packed again, not that the trainer's "
        "icons.json is missing"
    ) in out.splitlines()


def test_a_dest_that_holds_files_is_left_alone(layout, tmp_path, capsys):
    dest = tmp_path / "emoji"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    status, _, err = run(capsys, "--from", str(layout), "--dest", str(dest))
    assert status == 2
    assert err == f"error: {dest} already exists; remove it or choose another --dest\n"
    assert files(dest) == {"mine.txt": b"keep"}


def test_from_a_folder_that_is_neither_says_what_it_expects(source, tmp_path, capsys):
    status, _, err = run(capsys, "--from", str(tmp_path), "--dest", str(tmp_path / "emoji"))
    assert status == 2
    assert "holds neither the emoji folder's layout (emoji.json, google/, twitter/, " in err


def test_from_the_shared_copy(emoji_dir, tmp_path, capsys):
    """The real folder: every file is the pinned one, and the trainer sees the same data."""
    dest = tmp_path / "emoji"
    status, out, _ = run(capsys, "--from", str(emoji_dir), "--dest", str(dest))
    assert status == 0
    lines = out.splitlines()
    assert "google/: 3786 PNGs, 64x64" in lines and "twitter/: 3786 PNGs, 64x64" in lines
    assert sum("sha256 matches" in line for line in lines) == 13  # catalogue + 12 sets
    assert is_emoji_dir(dest) and emoji_fingerprint(dest) == emoji_fingerprint(emoji_dir)
