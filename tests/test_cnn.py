"""Deep plugins on tiny synthetic cells: shapes, determinism, .keras and pickle round trips."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from medfuse.errors import InvalidInputError, MedfuseError
from medfuse.testing import sample_cells

pytest.importorskip("keras")

from medfuse_plugins.cnn import (  # noqa: E402
    Backbone,
    CNNClassifier,
    CNNEmbedding,
    dihedral_views,
    resize_square,
)

FAST = dict(CNNEmbedding.conformance_params)


@pytest.fixture(scope="module")
def cells():
    images, masks, y = sample_cells(16, size=40)
    return images, masks, y


def prepared(est, images, masks):
    return np.stack([est.prepare(im, m) for im, m in zip(images, masks)])


@pytest.fixture(scope="module")
def embedding(cells):
    """A fitted cnn_embedding, its prepared inputs and their embedding."""
    images, masks, y = cells
    ex = CNNEmbedding(**FAST)
    P = prepared(ex, images, masks)
    return ex, P, ex.fit(P, y).transform(P)


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
    assert a.history_["epochs_run"] >= 1 and a.n_params_ > 0
    b = CNNEmbedding(**FAST).fit(P, y)  # a plain fit always trains
    assert "reused" not in b.history_
    np.testing.assert_array_equal(Ea, b.transform(P))  # same seed, same embedding, bit for bit


def test_keras_and_pickle_round_trips_give_identical_predictions(cells, tmp_path):
    images, masks, y = cells
    clf = CNNClassifier(**FAST)
    P = prepared(clf, images, masks)
    proba = clf.fit(P, y).predict_proba(P)
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


def test_backbone_frozen(cells):
    images, masks, _ = cells
    bb = Backbone(architecture="MobileNetV3Small", weights=None, size=32)
    P = prepared(bb, images, masks)
    F = bb.fit(P).transform(P)
    assert F.shape == (16, bb.n_features_) and F.dtype == np.float32
    assert len(bb.get_feature_names_out()) == bb.n_features_
    np.testing.assert_allclose(pickle.loads(pickle.dumps(bb)).transform(P), F, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_backbone_fine_tuned(cells, tmp_path):
    images, masks, y = cells
    ft = Backbone(architecture="MobileNetV3Small", weights=None, size=32, fine_tune=True, epochs=1,
                  batch_size=8)
    P = prepared(ft, images, masks)
    G = ft.fit(P, y).transform(P)
    assert G.shape == (16, ft.n_features_) and list(ft.classes_) == ["large", "small"]
    ft.save_artifacts(tmp_path)
    assert (tmp_path / "backbone.keras").is_file() and (tmp_path / "backbone.features.onnx").is_file()
    ft.load_artifacts(tmp_path)
    np.testing.assert_allclose(ft.transform(P), G, atol=1e-4)


def test_backbone_weights_errors(tmp_path):
    with pytest.raises(MedfuseError, match="not found"):
        Backbone(weights=str(tmp_path / "missing.h5"), size=32).fit(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(InvalidInputError, match="unknown architecture"):
        Backbone(architecture="NoSuchNet", weights=None, size=32).fit(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(InvalidInputError, match="needs size"):
        Backbone(architecture="InceptionV3", weights=None, size=32).fit(np.zeros((2, 32, 32, 3), np.uint8))


def test_backbone_imagenet_offline_says_how_to_supply_weights(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(MedfuseError, match="weights='/path/to/that_file.h5'"):
        Backbone(weights="imagenet", size=32).fit(np.zeros((2, 32, 32, 3), np.uint8))


@pytest.mark.slow
def test_backbone_loads_a_local_weights_file(tmp_path):
    from medfuse_plugins._keras import keras

    base = keras().applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3),
                                                 pooling="avg", include_preprocessing=True)
    path = tmp_path / "mobilenet_v3_small_no_top.weights.h5"
    base.save_weights(path)
    x = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3)).astype(np.uint8)
    F = Backbone(weights=str(path), size=32).fit(x).transform(x)
    np.testing.assert_allclose(F, np.asarray(base(x.astype(np.float32), training=False)), rtol=1e-4, atol=1e-5)


def test_classifier_reuses_the_embeddings_training_only_through_a_run_cache(cells, embedding):
    """Same prepared images, labels, parameters and seed: one training per run's TrainedCache;
    outside a cache (or with another seed) a fit trains afresh."""
    from medfuse.trained import TrainedCache
    from sklearn.base import clone

    images, masks, y = cells
    ex, P, E = embedding
    again = clone(ex).fit(P, y)
    assert "reused" not in again.history_ and again.model_ is not ex.model_  # no process-wide memo
    cache = TrainedCache()
    first = cache.fit(CNNEmbedding(**FAST), P, y, owner="blocks.cnn")
    clf = cache.fit(CNNClassifier(**FAST), P, y, owner="pipelines.deep.classifier")
    assert clf.history_.get("reused") is True and "reused" not in first.history_
    assert (cache.trainings, cache.reuses) == (1, 1) and list(cache.owners.values()) == ["blocks.cnn"]
    assert list(clf.classes_) == list(first.classes_)
    probs = clf.model_.predict(P, verbose=0)
    assert np.allclose(probs, first.model_.predict(P, verbose=0), atol=1e-6)
    other = cache.fit(CNNClassifier(**{**FAST, "random_state": 1}), P, y)  # another seed trains anew
    assert "reused" not in other.history_ and cache.trainings == 2
    tta = cache.fit(CNNClassifier(**{**FAST, "tta": True}), P, y)  # inference-only parameter: shared
    assert tta.history_.get("reused") is True and cache.trainings == 2


def test_fit_restores_the_determinism_setting(monkeypatch):
    """TensorFlow op determinism is on during a fit only; the process's setting is restored."""
    import medfuse_plugins._keras_train as kt
    from tensorflow.python.framework import config

    images, masks, y = sample_cells(6, size=32)
    est = CNNEmbedding(**{**FAST, "epochs": 1})
    P = prepared(est, images, masks)
    config.disable_op_determinism()
    during = []
    real = kt.train_classifier

    def spy(*args, **kwargs):
        during.append(config.is_op_determinism_enabled())
        return real(*args, **kwargs)

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


def test_tta_averages_the_eight_views_and_reuses_the_training(cells, embedding):
    _, _, y = cells
    from medfuse.trained import TrainedCache

    ex, P, E = embedding
    run = TrainedCache()
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
