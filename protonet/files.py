"""Content hashes of files: checksums, cache keys, data fingerprints, and the pretrained
bases' weights (text and image), for the core and the trainer alike."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_hexdigest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of the file's bytes (streamed, so a large zip is never read whole)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()
