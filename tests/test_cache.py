"""The block cache: reused on a second run, invalidated by any change of plugin, params or content."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
from medfuse.cache import BlockCache, make_key
from medfuse.contracts import SampleTable
from medfuse.pipeline import PipelineRunner
from PIL import Image
from test_pipeline import BLOCKS, HOST, TinyStats, study_of, write_samples


def test_put_get_counts_and_atomic_files(tmp_path):
    cache = BlockCache(tmp_path / "c")
    key = make_key("image-sha", "chain", "plugin")
    assert cache.get(key) is None
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    cache.put(key, arr)
    assert np.array_equal(cache.get(key), arr)
    assert cache.stats() == {"hits": 1, "misses": 1, "writes": 1}
    assert not list((tmp_path / "c").rglob(".*")), "temporary files must not remain"
    cache.path(key).write_bytes(b"garbage")  # a corrupt entry is a miss, not a crash
    assert cache.get(key) is None
    assert make_key("a", {"x": 1}) == make_key("a", {"x": 1}) != make_key("a", {"x": 2})
    keys = [make_key(i) for i in range(100)]
    for k in keys[::2]:
        cache.put(k, np.full(3, 1.0))
    before = cache.stats()
    got = cache.get_many(keys)
    assert [g is not None for g in got] == [i % 2 == 0 for i in range(100)]
    assert cache.hits - before["hits"] == 50 and cache.misses - before["misses"] == 50
    cache.clear()
    assert not list((tmp_path / "c").rglob("*.npy"))


@pytest.fixture()
def samples(tmp_path):
    rng = np.random.default_rng(0)
    return write_samples(tmp_path / "img", rng.uniform(60, 200, 20), np.asarray(["a", "b"] * 10))


def _materialize(samples, cache_dir, blocks=BLOCKS, transforms=()):
    pipe = {"blocks": ["stats"], "mask": "dataset", "classifier": {"plugin": "logreg"},
            "transforms": [{"plugin": t} for t in transforms]}
    runner = PipelineRunner(study_of({"p": pipe}, blocks), "p", HOST, cache_dir=cache_dir, progress=False)
    return runner.materialize(SampleTable(samples.copy())), runner.cache


def test_second_run_reads_the_cache(samples, tmp_path):
    TinyStats.calls = 0
    first, c1 = _materialize(samples, tmp_path / "cache")
    assert TinyStats.calls == 20 and c1.stats() == {"hits": 0, "misses": 20, "writes": 20}
    assert first.cache_stats["writes"] == 20
    second, c2 = _materialize(samples, tmp_path / "cache")
    assert TinyStats.calls == 20, "a cached block must not be recomputed"
    assert c2.hits == 20 and c2.misses == 0 and second.cache_stats["hits"] == 20
    assert np.array_equal(first.blocks["stats"], second.blocks["stats"])


def test_changed_params_version_transforms_or_content_invalidate(samples, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    base, _ = _materialize(samples, cache_dir)
    TinyStats.calls = 0
    scaled, c = _materialize(samples, cache_dir, {"stats": {"plugin": "tiny_stats", "params": {"scale": 2.0}}})
    assert c.hits == 0 and TinyStats.calls == 20
    assert np.allclose(scaled.blocks["stats"], 2 * base.blocks["stats"])

    monkeypatch.setattr(TinyStats, "version", "0.2.0")
    _, c = _materialize(samples, cache_dir)
    assert c.hits == 0 and c.misses == 20
    monkeypatch.undo()
    _, c = _materialize(samples, cache_dir)
    assert c.hits == 20, "the old version's entries are still valid for the old version"

    _, c = _materialize(samples, cache_dir, transforms=["tiny_invert"])
    assert c.hits == 0

    # new pixels under the same path (no sha1 column): only that sample is recomputed
    path = samples["path"].iloc[0]
    img = np.asarray(Image.open(path)).copy()
    img[6, 6] = 255 - img[6, 6]  # inside the disc mask
    Image.fromarray(img).save(path)
    changed, c = _materialize(samples, cache_dir)
    assert c.hits == 19 and c.misses == 1
    assert not np.array_equal(changed.blocks["stats"][0], base.blocks["stats"][0])

    # a changed dataset mask file is a new key too
    mask_path = samples["mask_path"].iloc[1]
    Image.fromarray(np.zeros((12, 12), np.uint8) + 255).save(mask_path)
    _, c = _materialize(samples, cache_dir)
    assert c.hits == 19 and c.misses == 1


def test_no_cache_dir_means_no_cache(samples):
    prepared, cache = _materialize(samples, None)
    assert cache is None and prepared.cache_stats["hits"] == 0


def test_ensemble_members_share_one_cache(samples, tmp_path):
    pipes = {"a": {"blocks": ["stats"], "classifier": {"plugin": "logreg"}},
             "b": {"blocks": ["stats"], "classifier": {"plugin": "svm"}},
             "ab": {"members": ["a", "b"]}}
    runner = PipelineRunner(study_of(pipes, BLOCKS), "ab", HOST, cache_dir=tmp_path / "c", progress=False)
    assert runner.members["a"].cache is runner.cache is runner.members["b"].cache
    prepared = runner.materialize(SampleTable(samples.copy()))
    assert runner.cache.stats() == {"hits": 20, "misses": 20, "writes": 20}  # b reads what a wrote
    assert prepared.cache_stats == {"hits": 20, "misses": 20, "writes": 20}


def test_get_many_reads_again_serially_when_threaded_header_parsing_fails(tmp_path, monkeypatch):
    """CPython < 3.11.8 can raise SystemError in ast.literal_eval (np.load's header parser) under threads."""
    import threading

    cache = BlockCache(tmp_path)
    keys = [f"k{i:03d}" for i in range(100)]
    for i, k in enumerate(keys):
        cache.put(k, np.full(3, i, np.float32))
    read = cache._read

    def flaky(key):
        if threading.current_thread() is not threading.main_thread():
            raise SystemError("AST constructor recursion depth mismatch (before=33, after=30)")
        return read(key)

    monkeypatch.setattr(cache, "_read", flaky)
    out = cache.get_many(keys)
    assert [int(a[0]) for a in out] == list(range(100)) and cache.hits == 100


EXTRACTOR = '''
import numpy as np
from medfuse.contracts import Extractor

class Edited(Extractor):
    """A one-feature extractor whose source the test edits."""
    name = "kit_edited"
    block = "edited"
    version = "0.1.0"

    def feature_names(self):
        return ["value"]

    def _prepare(self, image, mask):
        return np.array([{value}], np.float32)
'''


def test_editing_a_plugin_without_a_version_bump_changes_its_cache_key(tmp_path, monkeypatch):
    """The block cache must not serve features computed by the plugin's previous source."""
    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "kit_edited_plugin.py"
    module.write_text(EXTRACTOR.replace("{value}", "1.0"))
    first = importlib.import_module("kit_edited_plugin").Edited()
    key = first.cache_key()
    assert key == first.cache_key()
    module.write_text(EXTRACTOR.replace("{value}", "12.0"))
    sys.modules.pop("kit_edited_plugin")
    second = importlib.import_module("kit_edited_plugin").Edited()
    assert second.version == first.version and second.get_params() == first.get_params()
    assert second.cache_key() != key
