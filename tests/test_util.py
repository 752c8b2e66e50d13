"""medfuse.util: one helper for each small job (hashing, JSON values, versions, progress bars),
and the modules that had their own copy now use it."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from medfuse.util.hashing import file_digest, sha1_file, sha256_file, source_sha256
from medfuse.util.jsonable import to_jsonable
from medfuse.util.progress import new_progress, progress_bar
from medfuse.util.versions import LIBRARIES, dist_version, installed_versions, library_versions


@dataclass
class _Spec:
    path: Path
    values: np.ndarray


def test_to_jsonable_gives_plain_json():
    value = {1: _Spec(Path("a/b"), np.arange(3, dtype=np.int64)), "x": (np.float32(0.5), np.bool_(True), {2}),
             "nan": float("nan"), "other": object}
    out = to_jsonable(value)
    assert out["1"] == {"path": "a/b", "values": [0, 1, 2]} and out["x"] == [0.5, True, [2]]
    assert math.isnan(out["nan"]) and out["other"] == repr(object)
    assert json.dumps(to_jsonable(value, finite=True), allow_nan=False)
    assert to_jsonable(value, finite=True)["nan"] is None


def test_hashes_and_versions(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"x" * (3 << 20))
    assert sha1_file(f) == hashlib.sha1(f.read_bytes()).hexdigest() == file_digest(f, "sha1", chunk=7)
    assert sha256_file(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    assert source_sha256(_Spec) == sha256_file(__file__) and source_sha256(int) is None
    assert dist_version("numpy") == np.__version__ and dist_version("no-such-dist-x", "none") == "none"
    versions = installed_versions(["numpy", "no-such-dist-x"], python=True)
    assert list(versions) == ["python", "platform", "numpy"]


def test_progress_helpers():
    advance, close = progress_bar(10, "work", True)  # stderr is not a terminal under pytest
    advance(3)
    close()
    seen = []
    advance, close = progress_bar(5, "work", lambda done, total, what: seen.append((done, total, what)), completed=1)
    advance(2)
    close()
    assert seen == [(3, 5, "work")]
    bar = new_progress()
    assert [type(c).__name__ for c in bar.columns] == ["TextColumn", "BarColumn", "MofNCompleteColumn",
                                                       "TimeRemainingColumn"]


def test_former_copies_use_the_one_helper():
    import medfuse.bundle
    import medfuse.evaluation
    import medfuse.imageio
    import medfuse.pipeline
    import medfuse.scan

    assert medfuse.bundle._jsonable is medfuse.pipeline._jsonable is to_jsonable
    assert medfuse.bundle.sha256_file is sha256_file and medfuse.bundle.source_sha256 is source_sha256
    # imageio.file_sha1 only adds object references (IMAGE#box=...) on top of the one helper
    assert "hashlib" not in Path(medfuse.imageio.__file__).read_text()
    assert medfuse.imageio.file_sha1(medfuse.imageio.__file__) == sha1_file(medfuse.imageio.__file__)
    assert medfuse.scan.progress_bar is progress_bar
    # one list of libraries, one helper: a bundle's manifest and a results file record the same ones
    assert medfuse.bundle.library_versions is medfuse.evaluation.library_versions is library_versions
    assert library_versions() == installed_versions(LIBRARIES)
    env = library_versions(environment=True)
    assert list(env)[:3] == ["python", "platform", "medfuse"] and env["numpy"] == np.__version__
    assert not hasattr(medfuse.evaluation, "versions") and not hasattr(medfuse.bundle, "LIBRARIES")
