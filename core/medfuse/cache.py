"""Disk cache of per-image prepared arrays (the stateless part of feature extraction).

One ``.npy`` file per entry, under ``<root>/<key[:2]>/<key>.npy``. A key is a hash of
everything the array depends on: the image's content hash, the cache keys (name, version,
params) of every transform, of the mask maker (or the mask file's content hash) and of the
block plugin. Changing any of them gives a new key, so a stale array is never served; old
entries are simply left behind (``BlockCache.clear`` removes everything).

Writes are atomic (a temporary file in the same folder, then ``os.replace``), so parallel
workers and interrupted runs never leave a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .outputs import atomic_output

CACHE_ENV = "MEDFUSE_CACHE"


def default_cache_dir() -> Path:
    """``$MEDFUSE_CACHE`` or ``~/.cache/medfuse/blocks``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "medfuse" / "blocks"


def make_key(*parts: Any) -> str:
    """Stable hex key (sha256, 32 chars) of JSON-serialisable parts."""
    payload = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class BlockCache:
    """Content-addressed store of numpy arrays; counts hits, misses and writes.

    Parameters
    ----------
    root : Path
        Folder of the cache (created on first write).
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        self.writes = 0

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def _read(self, key: str) -> np.ndarray | None:
        try:
            return np.load(self.path(key), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None

    def get(self, key: str) -> np.ndarray | None:
        """The array stored under ``key``, or ``None`` (a miss). Unreadable entries are misses."""
        arr = self._read(key)
        if arr is None:
            self.misses += 1
        else:
            self.hits += 1
        return arr

    def put(self, key: str, array: np.ndarray) -> None:
        """Store ``array`` under ``key`` atomically."""
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(p, durable=False) as tmp, open(tmp, "wb") as fh:  # a cache: no fsync
            np.save(fh, np.asarray(array), allow_pickle=False)
        self.writes += 1

    def get_many(self, keys: Iterable[str], threads: int = 8) -> list[np.ndarray | None]:
        """Entries for ``keys``, in order (``None`` for misses); read by ``threads`` threads."""
        keys = list(keys)
        if threads > 1 and len(keys) > 64:
            from concurrent.futures import ThreadPoolExecutor

            try:
                with ThreadPoolExecutor(threads) as pool:
                    out = list(pool.map(self._read, keys, chunksize=64))
            except SystemError:
                # CPython 3.11 before 3.11.8: ast.literal_eval, which np.load uses to parse the .npy
                # header, can fail under threads ("AST constructor recursion depth mismatch",
                # gh-106905). Reads are idempotent: read them again, one at a time.
                out = [self._read(k) for k in keys]
        else:
            out = [self._read(k) for k in keys]
        hits = sum(a is not None for a in out)
        self.hits += hits
        self.misses += len(out) - hits
        return out

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "writes": self.writes}

    def clear(self) -> None:
        """Delete every entry."""
        if self.root.exists():
            shutil.rmtree(self.root)
