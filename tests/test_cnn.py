"""Compact CNN plugins on tiny synthetic cells: shapes, determinism, run-cache reuse, TTA, .keras and
pickle round trips (backbones: test_cnn_backbone.py)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from conftest import prepared
from medfuse.errors import InvalidInputError, MedfuseError
from medfuse.testing import sample_cells

pytest.importorskip("keras")

from medfuse_plugins.cnn import (  # noqa: E402
    CNNClassifier,
    CNNEmbedding,
    dihedral_views,
    resize_square,
)

FAST = dict(CNNEmbedding.conformance_params)


@pytest.fixture(scope="module")
def cells(cnn_cells):
    return cnn_cells


@pytest.fixture(scope="module")
def run_cache():
    """One run's TrainedCache, shared by this module's tests: the FAST network is trained once, by
    :func:`embedding`; the other tests' classifiers adopt that training (as a run's pipelines do)."""
    from medfuse.trained import TrainedCache

    return TrainedCache()


@pytest.fixture(scope="module")
def embedding(cells, run_cache):
    """A cnn_embedding fitted through :func:`run_cache` (owner ``blocks.cnn``), its prepared inputs
    and their embedding."""
    images, masks, y = cells
    P = prepared(CNNEmbedding(**FAST), images, masks)
    ex = run_cache.fit(CNNEmbedding(**FAST), P, y, owner="blocks.cnn")
    return ex, P, ex.transform(P)


def test_module_import_does_not_load_tensorflow():
    code = ("import sys, medfuse_plugins.cnn, medfuse_plugins.unet, medfuse_plugins._keras, medfuse_plugins._keras_train, medfuse.trained, medfuse.segmetrics; "
            "print(any(m in sys.modules for m in ('tensorflow', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_prepare_resizes_and_masks():
    image = np.full((50, 70, 3), 200, np.uint8)
    mask = np.zeros((50, 70), np.uint8)
    mask[10:40, 20:50] = 1
    out = resize_square(image, mask, 32, masked=True)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out[0, 0].max() == 0 and out[16, 16].min() == 200
    assert resize_square(image, mask, 32, masked=False).min() == 200


def test_embedding_shapes_names_and_determinism(cells, embedding):
    _, _, y = cells
    a, P, Ea = embedding
    assert P.shape == (16, 32, 32, 3) and P.dtype == np.uint8
    assert Ea.shape == (16, FAST["embedding_dim"]) and Ea.dtype == np.float32
    assert list(a.get_feature_names_out())[:2] == ["cnn.0", "cnn.1"]
    assert a.history_["epochs_run"] >= 1 and a.n_params_ > 0 and "reused" not in a.history_
    from sklearn.base import clone

    b = clone(a).fit(P, y)  # a plain fit always trains, even after a run's cache trained the same network
    assert "reused" not in b.history_ and b.model_ is not a.model_  # no process-wide memo
    np.testing.assert_array_equal(Ea, b.transform(P))  # same seed, same embedding, bit for bit


def test_keras_and_pickle_round_trips_give_identical_predictions(cells, embedding, run_cache, tmp_path):
    _, _, y = cells
    _, P, _ = embedding
    clf = run_cache.fit(CNNClassifier(**FAST), P, y)  # the embedding's training, adopted
    assert clf.history_.get("reused") is True
    proba = clf.predict_proba(P)
    assert proba.shape == (16, 2) and np.allclose(proba.sum(axis=1), 1)
    assert list(clf.classes_) == ["large", "small"]
    assert set(clf.predict(P)) <= {"large", "small"}

    files = clf.save_artifacts(tmp_path)
    assert [f.name for f in files] == ["cnn_classifier.keras", "cnn_classifier.probs.onnx"]
    assert not list(tmp_path.glob("*.h5"))
    state = clf.__getstate__()
    assert isinstance(state["model_"], bytes) and state["model_"][:2] == b"PK"  # .keras zip, not HDF5
    from medfuse.contracts import saving_state_separately

    with saving_state_separately():  # a bundle's object graph: no network in it
        state = clf.__getstate__()
    assert "model_" not in state and "onnx_" not in state
    bare = CNNClassifier(**FAST)
    bare.__dict__.update(state)
    with pytest.raises(MedfuseError, match="load_artifacts"):
        bare.predict_proba(P)
    bare.load_artifacts(tmp_path)  # the ONNX network only, run by onnxruntime
    assert getattr(bare, "model_", None) is None and set(bare.onnx_) == {"probs"}
    np.testing.assert_allclose(bare.predict_proba(P), proba, atol=1e-5)

    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(P), proba)


def test_embedding_bundle_round_trip(embedding, tmp_path):
    ex, P, E = embedding
    ex.save_artifacts(tmp_path)
    fresh = pickle.loads(pickle.dumps(ex))
    fresh.model_ = None
    fresh.load_artifacts(tmp_path)  # the embedding sub-network as ONNX
    assert {f.name for f in tmp_path.iterdir()} == {"cnn_embedding.keras", "cnn_embedding.embedding.onnx"}
    np.testing.assert_allclose(fresh.transform(P), E, atol=1e-4)


def test_errors_are_clear(cells):
    images, masks, y = cells
    ex = CNNEmbedding(**FAST)
    with pytest.raises(MedfuseError, match="not fitted"):
        ex.transform(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(InvalidInputError, match="prepared images"):
        ex.fit(np.zeros((4, 16, 16, 3), np.uint8), ["a", "b", "a", "b"])
    with pytest.raises(InvalidInputError, match="labels"):
        ex.fit(np.zeros((4, 32, 32, 3), np.uint8), None)


def test_classifier_reuses_the_embeddings_training_only_through_a_run_cache(cells, embedding, run_cache):
    """Same prepared images, labels, parameters and seed: one training per run's TrainedCache; another
    seed is another training (a plain fit always trains: test_embedding_shapes_names_and_determinism)."""
    _, _, y = cells
    first, P, E = embedding  # trained by run_cache for the `cnn` block
    trainings, reuses = run_cache.trainings, run_cache.reuses
    clf = run_cache.fit(CNNClassifier(**FAST), P, y, owner="pipelines.deep.classifier")
    assert clf.history_.get("reused") is True and "reused" not in first.history_
    assert (run_cache.trainings, run_cache.reuses) == (trainings, reuses + 1)
    assert run_cache.owners[first.training_key(P, y)] == "blocks.cnn"
    assert list(clf.classes_) == list(first.classes_)
    probs = clf.model_.predict(P, verbose=0)
    assert np.allclose(probs, first.model_.predict(P, verbose=0), atol=1e-6)
    # another seed is another training (a cache miss trains: test_trained.py); tta acts at inference only
    assert CNNClassifier(**{**FAST, "random_state": 1}).training_key(P, y) != first.training_key(P, y)
    tta = run_cache.fit(CNNClassifier(**{**FAST, "tta": True}), P, y)  # inference-only parameter: shared
    assert tta.history_.get("reused") is True and run_cache.trainings == trainings


def test_fit_restores_the_determinism_setting(monkeypatch):
    """TensorFlow op determinism is on during a fit only; the process's setting is restored."""
    import medfuse_plugins._keras_train as kt
    from tensorflow.python.framework import config

    images, masks, y = sample_cells(6, size=32)
    est = CNNEmbedding(**{**FAST, "epochs": 1})
    P = prepared(est, images, masks)
    config.disable_op_determinism()
    during = []

    def spy(*args, **kwargs):  # the setting is what is checked, not the training
        during.append(config.is_op_determinism_enabled())
        return {"loss": [1.0], "epochs_run": 1, "seconds_per_epoch": [0.0]}

    monkeypatch.setattr(kt, "train_classifier", spy)
    est.fit(P, y)
    assert during == [True] and not config.is_op_determinism_enabled()


def test_dihedral_views_are_the_eight_symmetries():
    P = np.arange(2 * 3 * 3 * 1, dtype=np.uint8).reshape(2, 3, 3, 1)
    views = dihedral_views(P)
    assert len(views) == 8 and all(v.shape == P.shape for v in views)
    assert len({v.tobytes() for v in (np.ascontiguousarray(v) for v in views)}) == 8
    np.testing.assert_array_equal(views[0], P)
    np.testing.assert_array_equal(views[4], P.transpose(0, 2, 1, 3))


def test_tta_averages_the_eight_views_and_reuses_the_training(cells, embedding, run_cache):
    _, _, y = cells
    ex, P, E = embedding
    run = run_cache
    clf = run.fit(CNNClassifier(**FAST), P, y)
    tta = run.fit(CNNClassifier(**{**FAST, "tta": True}), P, y)
    assert tta.history_.get("reused") is True  # tta acts at inference only: same network
    views = [clf.predict_proba(np.ascontiguousarray(v)) for v in dihedral_views(P)]
    proba = tta.predict_proba(P)
    assert np.allclose(proba.sum(axis=1), 1)
    np.testing.assert_allclose(proba, np.mean(views, axis=0), atol=1e-6)
    emb = run.fit(CNNEmbedding(**{**FAST, "tta": True}), P, y).transform(P)
    assert emb.shape == E.shape and emb.dtype == np.float32
    np.testing.assert_allclose(emb, np.mean([ex.transform(np.ascontiguousarray(v)) for v in dihedral_views(P)],
                                            axis=0), rtol=1e-5, atol=1e-6)
