import shutil
import socket

import numpy as np
import pytest

from protonet.files import file_hexdigest
from protonet.preprocessing import InputSpec
from training import download, omniglot
from training.cli import main

from .synthetic import write_omniglot_zip

SPEC = InputSpec()


@pytest.fixture
def tiny_omniglot(tmp_path):
    root = tmp_path / "omniglot"
    root.mkdir()
    write_omniglot_zip(root / "images_background.zip", "background", {"Latin": 3, "Greek": 2})
    write_omniglot_zip(root / "images_evaluation.zip", "evaluation", {"Tengwar": 2}, seed=1)
    splits = root / "splits" / "vinyals"
    splits.mkdir(parents=True)
    (splits / "test.txt").write_text("Greek/character01/rot000\nTengwar/character02/rot270\n")
    return root


def test_zip_is_read_in_canonical_layout_and_cached(tiny_omniglot, tmp_path):
    cache = tmp_path / "cache"
    images = omniglot.load_subset(tiny_omniglot, "background", SPEC, cache, progress=False)
    assert images.class_names == [
        "Greek/character01",
        "Greek/character02",
        "Latin/character01",
        "Latin/character02",
        "Latin/character03",
    ]
    assert images.class_groups[0] == "Greek" and images.pixels.shape == (20, 28, 28)
    assert images.pixels.dtype == np.uint8 and np.bincount(images.labels).tolist() == [4] * 5
    assert len(list(cache.glob("omniglot-background-*.npz"))) == 1
    again = omniglot.load_subset(tiny_omniglot, "background", SPEC, cache, progress=False)
    np.testing.assert_array_equal(again.pixels, images.pixels)
    assert again.class_names == images.class_names


def test_vinyals_split_selects_rotated_classes(tiny_omniglot, tmp_path):
    test = omniglot.load_split(tiny_omniglot, "vinyals-test", SPEC, tmp_path, progress=False)
    assert test.class_names == ["Greek/character01/rot000", "Tengwar/character02/rot270"]
    assert test.class_groups == ["Greek", "Tengwar"]
    plain = omniglot.load_subset(tiny_omniglot, "evaluation", SPEC, tmp_path, progress=False)
    original = plain.pixels[plain.labels == plain.class_names.index("Tengwar/character02")]
    np.testing.assert_array_equal(test.pixels[test.labels == 1], np.rot90(original, 3, axes=(1, 2)))


def test_lake_split_never_reads_evaluation(tiny_omniglot, tmp_path, monkeypatch):
    monkeypatch.setattr(omniglot, "LAKE_VALIDATION_ALPHABETS", ("Greek",))
    (tiny_omniglot / "images_evaluation.zip").unlink()
    train, validation = omniglot.lake_train_val(tiny_omniglot, SPEC, tmp_path, progress=False)
    assert {g for g in train.class_groups} == {"Latin"} and train.n_classes == 12
    assert validation.class_names == ["Greek/character01", "Greek/character02"]


def test_missing_zip_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m training data omniglot"):
        omniglot.load_subset(tmp_path, "background", SPEC, tmp_path)


def test_data_from_local_copy_validates_and_copies(omniglot_dir, tmp_path, capsys):
    assert (
        main(["data", "omniglot", "--from", str(omniglot_dir), "--dest", str(tmp_path / "d")]) == 0
    )
    out = capsys.readouterr().out
    # The shared copy was packed again: a differing MD5 is reported as fine, and why.
    assert (
        "images_background.zip: content ok (30 alphabets, 964 characters, 19280 drawings), "
        "fine to use; its md5 differs from the public zip's, which means it was packed or "
        "encoded again, not that drawings are missing"
    ) in out.splitlines()
    assert (tmp_path / "d" / "images_evaluation.zip").is_file()
    assert (tmp_path / "d" / "splits" / "vinyals" / "test.txt").is_file()


def test_data_from_rejects_incomplete_copy(tiny_omniglot, tmp_path, capsys):
    assert (
        main(["data", "omniglot", "--from", str(tiny_omniglot), "--dest", str(tmp_path / "d")]) == 2
    )
    assert "expected 30 / 964 / 19280" in capsys.readouterr().err


def test_a_failed_download_is_one_line_that_offers_from(tmp_path, monkeypatch, capsys):
    """No network: one ``error:`` line and exit 2, not a URLError traceback. The URL points
    at a closed local port, so the test never leaves the machine."""
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(download, "ZIP_URL", f"http://127.0.0.1:{port}/{{name}}")
    assert main(["data", "omniglot", "--dest", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: download failed: http://127.0.0.1:{port}/images_background.zip: "
    )
    assert err.endswith("; use --from DIR with a copy of the zips fetched elsewhere\n")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not list((tmp_path / "d").glob("*.part"))  # no half-written file left behind


def test_download_verifies_checksums(tmp_path, monkeypatch, omniglot_dir):
    """The download path with the network replaced by a local copy: a wrong checksum is refused."""

    def fake_download(url, target, copy_of):
        shutil.copyfile(omniglot_dir / target.name, target)

    monkeypatch.setattr(download, "download_file", fake_download)
    # The shared copy was re-encoded, so its MD5 differs from the public zip's: refused.
    with pytest.raises(ValueError, match="checksum mismatch"):
        download.download_omniglot(tmp_path)
    monkeypatch.setattr(
        download, "ZIP_MD5", {n: file_hexdigest(omniglot_dir / n, "md5") for n in download.ZIP_MD5}
    )
    monkeypatch.setattr(download, "SPLIT_FILES", ())
    report = download.download_omniglot(tmp_path / "ok")
    assert all("ok" in line for line in report[:2])


def test_lake_validation_split_is_the_held_out_background_alphabets(
    tiny_omniglot, tmp_path, monkeypatch
):
    monkeypatch.setattr(omniglot, "LAKE_VALIDATION_ALPHABETS", ("Greek",))
    (tiny_omniglot / "images_evaluation.zip").unlink()
    validation = omniglot.load_split(tiny_omniglot, "lake-validation", SPEC, tmp_path, False)
    assert validation.class_names == ["Greek/character01", "Greek/character02"]
