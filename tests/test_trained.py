"""Trainings shared within one run (medfuse.trained.TrainedCache), never across runs or by a plain fit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from medfuse.study import parse_study
from medfuse.trained import TrainedCache, current


class _Counted:
    """A trainable plugin whose fits are counted; the key is its seed and the training rows."""

    fits = 0

    def __init__(self, random_state: int = 0, shared: bool = True):
        self.random_state, self.shared = random_state, shared

    def training_key(self, X: Any, y: Any) -> str | None:
        return f"{self.random_state}:{np.asarray(X).tobytes().hex()}" if self.shared else None

    def adopt_training(self, other: _Counted) -> _Counted:
        self.coef_, self.reused_ = other.coef_, True
        return self

    def fit(self, X: Any, y: Any) -> _Counted:
        type(self).fits += 1
        self.coef_ = float(np.sum(X)) + self.random_state
        return self


def test_cache_trains_once_per_key_and_remembers_the_owner():
    X, y = np.arange(6.0).reshape(3, 2), np.array([0, 1, 0])
    cache, before = TrainedCache(max_items=2), _Counted.fits
    a = cache.fit(_Counted(), X, y, owner="studies.s.blocks.cnn")
    b = cache.fit(_Counted(), X, y, owner="studies.s.pipelines.deep.classifier")
    assert getattr(b, "reused_", False) and b.coef_ == a.coef_ and _Counted.fits - before == 1
    assert cache.owners == {a.training_key(X, y): "studies.s.blocks.cnn"}
    cache.fit(_Counted(random_state=1), X, y)  # another seed: trained
    cache.fit(_Counted(random_state=2), X, y)  # evicts the oldest (max_items=2)
    assert (cache.trainings, cache.reuses, len(cache)) == (3, 1, 2)
    c = cache.fit(_Counted(), X, y)
    assert not hasattr(c, "reused_") and cache.trainings == 4
    unkeyed = [cache.fit(_Counted(shared=False), X, y) for _ in range(2)]  # no key: always trained
    assert not any(hasattr(u, "reused_") for u in unkeyed) and cache.trainings == 4


def test_shared_scopes_a_cache_to_a_block():
    from medfuse.trained import for_run

    assert current() is None and for_run() is not for_run()
    cache = TrainedCache()
    with cache.shared():
        assert current() is cache and for_run() is cache
    assert current() is None


def test_one_run_trains_the_cnn_once_per_fold_for_the_block_and_the_deep_pipeline(tmp_path):
    """The deep pipeline's classifier names the `cnn` block's network: a run's runners share one
    training per fold; separate runs (or a plain fit) train again, with the same result."""
    pytest.importorskip("keras")
    from medfuse.evaluation import default_runner_factory
    from medfuse.host import get_host
    from medfuse.synthetic import write_dataset

    root = write_dataset(tmp_path / "cells", n_per_class=4, size=32, seed=1)
    cnn = {"size": 16, "width": 4, "depth": 2, "embedding_dim": 8, "epochs": 1, "batch_size": 8,
           "validation_fraction": 0.0}
    study = parse_study("cells", {
        "dataset": {"loader": "folder", "params": {"path": "images"}},
        "blocks": {"cnn": {"plugin": "cnn_embedding", "params": cnn}},
        "pipelines": {"deep": {"classifier": {"plugin": "cnn_classifier", "network": "cnn"}},
                      "fused": {"blocks": ["cnn"], "classifier": {"plugin": "logreg"}}}}, "test.toml")
    host = get_host()
    data = host.create("folder", study.dataset.params, "loader").load(root)
    train = np.arange(0, 12, 2)

    def run(make):
        fitted = {}
        for name in ("deep", "fused"):
            runner = make(study, name)
            fitted[name] = runner.fit(runner.materialize(data), train, 0)
        return runner.trained, fitted

    trained, fitted = run(default_runner_factory(host))
    assert (trained.trainings, trained.reuses) == (1, 1)
    assert list(trained.owners.values()) == ["studies.cells.blocks.cnn"]
    block = fitted["fused"].blocks_[0].plugin
    assert block.history_.get("reused") and block.model_ is fitted["deep"].model_.model_
    other, again = run(default_runner_factory(host))  # another run: its own cache, trained again
    assert other is not trained and other.trainings == 1 and not again["deep"].model_.history_.get("reused")
    P = np.stack([again["deep"].model_.prepare(im, None) for im in [np.full((32, 32, 3), 90, np.uint8)]])
    np.testing.assert_array_equal(again["deep"].model_.predict_proba(P), fitted["deep"].model_.predict_proba(P))
