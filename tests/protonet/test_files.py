import hashlib

from protonet.files import file_hexdigest


def test_file_hexdigest_matches_hashing_the_bytes_at_once(tmp_path):
    data = bytes(range(256)) * 5000  # more than one read block
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_hexdigest(path) == hashlib.sha256(data).hexdigest()
    assert file_hexdigest(path, "md5") == hashlib.md5(data).hexdigest()
