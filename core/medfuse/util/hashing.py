"""File hashes, streamed: the one place medfuse reads a file to hash it."""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def file_digest(path: str | Path, algorithm: str = "sha256", chunk: int = CHUNK) -> str:
    """Hex digest of a file's bytes, read ``chunk`` bytes at a time."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: str | Path, chunk: int = CHUNK) -> str:
    """SHA-256 of a file's bytes (bundle artifacts, plugin sources)."""
    return file_digest(path, "sha256", chunk)


def sha1_file(path: str | Path, chunk: int = CHUNK) -> str:
    """SHA-1 of a file's bytes: the content hash of images (duplicates, leakage, the block cache)."""
    return file_digest(path, "sha1", chunk)


@functools.lru_cache(maxsize=512)
def _sha256_at(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def source_sha256(cls: Any) -> str | None:
    """SHA-256 of the source file defining ``cls`` (None when unknown, e.g. a class made in a REPL).

    Recorded per plugin in a bundle's manifest, and part of each plugin's block-cache key
    (:meth:`medfuse.contracts.Plugin.cache_key`), so an edited plugin is noticed even when its
    version was not bumped. Memoised on the file's modification time and size."""
    try:
        source = inspect.getsourcefile(cls)
    except (TypeError, OSError):
        return None
    if not source:
        return None
    try:
        st = os.stat(source)
    except OSError:
        return None
    return _sha256_at(source, st.st_mtime_ns, st.st_size)
