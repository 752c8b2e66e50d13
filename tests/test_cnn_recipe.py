"""The CNN recipe options (issue #18): each one changes what is trained, and the defaults change nothing.

Tiny images and networks, 1-2 epochs: every test checks that the option is not ignored (a loss,
weights, layers or targets that differ from the run without it) and, where it builds a new network,
that the network exports to ONNX with the same outputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from medfuse.testing import sample_cells

pytest.importorskip("keras")

from medfuse.trained import TrainedCache  # noqa: E402
from medfuse_plugins._keras import keras, seeded  # noqa: E402
from medfuse_plugins._keras_train import (  # noqa: E402
    augmenter,
    cosine_schedule,
    mix_batch,
    random_intensity,
    train_classifier,
)
from medfuse_plugins.cnn import CNNClassifier, CNNEmbedding, build_compact_cnn  # noqa: E402

TINY = dict(size=16, width=4, depth=2, embedding_dim=8, epochs=1, batch_size=8, validation_fraction=0.0,
            random_state=0)


@pytest.fixture(scope="module")
def data():
    """24 random 16x16 images, 3 classes."""
    rng = np.random.default_rng(0)
    P = rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    return P, np.repeat(np.arange(3, dtype=np.int32), 8)


def train(P, codes, **options):
    """A fresh tiny plain CNN trained for 1 epoch with ``options``; (model, history)."""
    with seeded(0):
        model = build_compact_cnn(16, 3, width=4, depth=2, embedding_dim=8)
        base = dict(epochs=1, batch_size=8, learning_rate=0.01, patience=1, validation_fraction=0.0, augment=False,
                    zoom=0.0, brightness=0.0, class_weight=None, random_state=0)
        return model, train_classifier(model, P, codes, 3, **{**base, **options})


@pytest.fixture(scope="module")
def plain(data):
    return train(*data)


def test_training_is_reproducible_so_differences_come_from_the_option(data, plain):
    model, hist = plain
    again, hist2 = train(*data)
    assert hist["loss"] == hist2["loss"]
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_label_smoothing_changes_the_loss(data, plain):
    _, hist = plain
    _, smooth = train(*data, label_smoothing=0.3)
    # smoothed targets keep the cross-entropy away from 0: at the start it is higher than the plain loss
    assert smooth["loss"][0] != pytest.approx(hist["loss"][0], rel=1e-3)


def test_warmup_schedule_starts_at_zero_and_peaks_at_the_rate(data, plain):
    s = cosine_schedule(0.01, total_steps=100, warmup_steps=10)
    assert float(s(0)) == pytest.approx(0.0, abs=1e-9)
    assert float(s(10)) == pytest.approx(0.01, rel=1e-5)
    assert float(s(100)) == pytest.approx(0.0005, rel=1e-3)  # decays to alpha = 5% of the rate
    plain_s = cosine_schedule(0.01, total_steps=100)
    assert float(plain_s(0)) == pytest.approx(0.01)
    _, hist = plain
    _, warm = train(*data, warmup_epochs=1.0)  # the whole (single) epoch warms up: a different loss
    assert warm["loss"][0] != pytest.approx(hist["loss"][0], rel=1e-4)


def test_ema_leaves_averaged_weights_that_differ_from_the_raw_ones(data, plain):
    model, _ = plain
    ema_model, _ = train(*data, ema=0.9)
    kernels = [(a, b) for a, b in zip(model.get_weights(), ema_model.get_weights()) if a.ndim == 4]
    assert kernels and any(not np.allclose(a, b) for a, b in kernels)
    with seeded(0):
        init = build_compact_cnn(16, 3, width=4, depth=2, embedding_dim=8).get_weights()
    # the average of the path lies between the start and the raw end point: closer to the start
    moved_raw = sum(float(np.abs(a - i).sum()) for (a, _), i in zip(kernels, [w for w in init if w.ndim == 4]))
    moved_ema = sum(float(np.abs(b - i).sum()) for (_, b), i in zip(kernels, [w for w in init if w.ndim == 4]))
    assert moved_ema < moved_raw
    # batch-norm statistics are recomputed for the averaged weights: the first layer's moving mean is
    # the mean of its inputs' conv responses over the training images (3 equal batches of 8)
    P, _ = data
    conv = keras().Model(ema_model.input, ema_model.get_layer("conv0_0").output)
    expected = np.asarray(conv(P.astype(np.float32), training=False)).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(ema_model.get_layer("bn0_0").moving_mean.numpy(), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="ema"):
        train(*data, ema=1.5)


def test_mixup_blends_images_and_targets():
    import tensorflow as tf

    x = tf.constant(np.stack([np.full((4, 4, 1), v, np.float32) for v in (0.0, 100.0, 200.0, 50.0)]))
    y = tf.constant(np.eye(4, dtype=np.float32))
    w = tf.constant([1.0, 2.0, 3.0, 4.0])
    xm, ym, wm = (t.numpy() for t in mix_batch(x, y, w, tf.constant([3, 7], tf.int64), mixup=1.0, cutmix=0.0))
    assert np.allclose(ym.sum(axis=1), 1.0) and (ym.max(axis=1) < 1.0).any()  # soft targets
    # each mixed image is lam * its own + (1 - lam) * a partner, with the same lam as its target
    assert np.allclose(xm[:, 0, 0, 0], (ym @ np.array([0.0, 100.0, 200.0, 50.0])), atol=1e-3)
    assert np.allclose(wm, ym @ np.array([1.0, 2.0, 3.0, 4.0]), atol=1e-5)


def test_cutmix_pastes_a_box_and_weighs_targets_by_its_area():
    import tensorflow as tf

    x = tf.constant(np.stack([np.full((8, 8, 1), v, np.float32) for v in (0.0, 100.0)]))
    y = tf.constant(np.eye(2, dtype=np.float32))
    w = tf.ones(2)
    for s in range(5):
        xm, ym, _ = (t.numpy() for t in mix_batch(x, y, w, tf.constant([s, 1], tf.int64), mixup=0.0, cutmix=1.0))
        assert set(np.unique(xm)) <= {0.0, 100.0}  # pasted, not blended
        share_100 = (xm[..., 0] == 100.0).mean(axis=(1, 2))  # the targets follow the pasted area
        np.testing.assert_allclose(ym[:, 1], share_100, atol=1e-6)


def test_mixup_is_applied_in_training(data, plain):
    """The training dataset carries mixed (soft) targets, and training with mixup differs from without."""
    from medfuse_plugins._keras_train import _mixed_dataset

    P, codes = data
    onehot = np.eye(3, dtype=np.float32)[codes]
    x, y, w = next(iter(_mixed_dataset(P, onehot, np.ones(len(P)), 8, 0, 0.4, 0.0)))
    assert x.shape == (8, 16, 16, 3) and np.allclose(y.numpy().sum(axis=1), 1)
    assert (y.numpy().max(axis=1) < 0.999).any()  # at least one target is a blend
    _, hist = plain
    _, mixed = train(*data, mixup=0.4)
    assert mixed["loss"][0] != pytest.approx(hist["loss"][0], rel=1e-4)


def test_intensity_augmentation_changes_contrast_and_gamma_in_training_only():
    rng = np.random.default_rng(1)
    x = rng.uniform(20, 230, (6, 8, 8, 3)).astype(np.float32)
    layer = random_intensity(0.5, 0.0, seed=0)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    out = np.asarray(layer(x, training=True))
    assert not np.allclose(out, x)
    # contrast scales deviations about each image's mean: the mean stays (values stay inside 0..255 here)
    inside = np.all((out > 0) & (out < 255), axis=(1, 2, 3))
    np.testing.assert_allclose(out[inside].mean(axis=(1, 2, 3)), x[inside].mean(axis=(1, 2, 3)), rtol=1e-4)
    g = np.asarray(random_intensity(0.0, 0.5, seed=0)(x, training=True))
    assert not np.allclose(g, x)
    # a power law is monotone: the order of the pixels of each image is kept
    for a, b in zip(x, g):
        assert (np.argsort(a.ravel(), kind="stable") == np.argsort(b.ravel(), kind="stable")).all()
    names = [lay.name for lay in augmenter(0.0, 0.0, 0, contrast=0.2).layers]
    assert "random_intensity" in names and "random_intensity" not in [
        lay.name for lay in augmenter(0.0, 0.0, 0).layers]


def test_plugin_passes_the_recipe_to_training(data, monkeypatch):
    """cnn_classifier hands every recipe option to _keras_train.train_classifier (one seed per network)."""
    import medfuse_plugins._keras_train as ku

    calls = []

    def spy(model, P, codes, n_classes, **kwargs):
        calls.append(kwargs)
        return {"loss": [1.0], "epochs_run": 1, "seconds_per_epoch": [0.0]}

    monkeypatch.setattr(ku, "train_classifier", spy)
    P, codes = data
    recipe = dict(contrast=0.4, gamma=0.3, label_smoothing=0.1, warmup_epochs=0.5, mixup=0.2, cutmix=1.0, ema=0.9)
    CNNClassifier(**{**TINY, **recipe, "n_seeds": 2, "random_state": 5}).fit(P, np.array(["a", "b", "c"])[codes])
    assert [c["random_state"] for c in calls] == [5, 6]
    for c in calls:
        assert {k: c[k] for k in recipe} == recipe


def test_resnet_has_batch_norm_and_residual_adds_and_exports_to_onnx(tmp_path):
    images, masks, y = sample_cells(12, size=24)
    clf = CNNClassifier(**{**TINY, "arch": "resnet"})
    P = np.stack([clf.prepare(im, m) for im, m in zip(images, masks)])
    clf.fit(P, y)
    kinds = [type(layer).__name__ for layer in clf.model_.layers]
    assert kinds.count("Add") == 2 and kinds.count("BatchNormalization") >= 5
    plain = build_compact_cnn(16, 2, width=4, depth=2, embedding_dim=8)
    assert "Add" not in [type(layer).__name__ for layer in plain.layers]
    proba = clf.predict_proba(P)
    clf.save_artifacts(tmp_path)
    bare = CNNClassifier(**{**TINY, "arch": "resnet"})
    bare.__dict__.update({k: v for k, v in clf.__dict__.items() if k not in ("model_", "_cache", "onnx_")})
    bare.model_ = None
    bare.load_artifacts(tmp_path)  # run by onnxruntime
    np.testing.assert_allclose(bare.predict_proba(P), proba, atol=1e-5)
    with pytest.raises(Exception, match="arch"):
        build_compact_cnn(16, 2, arch="vgg")


def test_seeds_are_averaged_in_one_exportable_network(tmp_path):
    tiny = {**TINY, "augment": False, "batch_size": 12}  # one step per epoch, no augmentation graph
    images, masks, y = sample_cells(12, size=24)
    members = [CNNClassifier(**{**tiny, "random_state": s}) for s in (0, 1)]
    P = np.stack([members[0].prepare(im, m) for im, m in zip(images, masks)])
    single = [m.fit(P, y).predict_proba(P) for m in members]
    run = TrainedCache()
    both = run.fit(CNNClassifier(**{**tiny, "n_seeds": 2}), P, y)
    np.testing.assert_allclose(both.predict_proba(P), np.mean(single, axis=0), atol=1e-5)
    assert len(both.history_["members"]) == 2
    emb = run.fit(CNNEmbedding(**{**tiny, "n_seeds": 2}), P, y)
    assert emb.history_.get("reused") is True  # the same training as the classifier's
    E = emb.transform(P)
    assert E.shape == (12, 16) and len(emb.feature_names()) == 16
    emb.save_artifacts(tmp_path)
    fresh = CNNEmbedding(**{**tiny, "n_seeds": 2})
    fresh.__dict__.update({k: v for k, v in emb.__dict__.items() if k not in ("model_", "_cache", "onnx_")})
    fresh.model_ = None
    fresh.load_artifacts(tmp_path)
    np.testing.assert_allclose(fresh.transform(P), E, atol=1e-4)
    clf_dir = tmp_path / "clf"
    both.save_artifacts(clf_dir)
    k = keras()
    assert k.saving.load_model(clf_dir / "cnn_classifier.keras", compile=False).name == "seed_ensemble"


def test_training_state_is_built_before_fit_so_the_step_is_traced_once(data):
    """build_before_fit creates the optimizer's, loss's and metrics' variables outside the training
    step (created inside it, they make TensorFlow trace that step twice)."""
    from medfuse_plugins._keras import build_before_fit

    P, codes = data
    with seeded(0):
        model = build_compact_cnn(16, 3, width=4, depth=2, embedding_dim=8)
    model.compile(optimizer=keras().optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    assert not model.optimizer.built
    build_before_fit(model, P[:8], codes[:8])
    assert model.optimizer.built and len(model.optimizer.variables) > 2
