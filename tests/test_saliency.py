"""Grad-CAM saliency (plugin side) highlights the region a network uses to decide."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")


def _red_square_model(size: int):
    """A fixed (untrained) network: a conv that responds to red, pooled, then 'red => class 1'."""
    from medfuse_plugins._keras import keras

    k = keras()
    inputs = k.Input((size, size, 3))
    x = k.layers.Rescaling(1 / 255.0)(inputs)
    conv = k.layers.Conv2D(2, 3, padding="same", name="conv", use_bias=False)
    x = k.layers.ReLU()(conv(x))
    x = k.layers.GlobalAveragePooling2D()(x)
    head = k.layers.Dense(2, activation="softmax", name="probs")
    model = k.Model(inputs, head(x))
    w = np.zeros((3, 3, 3, 2), np.float32)
    w[1, 1, 0, 0] = 1.0  # channel 0: red
    w[1, 1, 1, 1] = 1.0  # channel 1: green (uniform background)
    conv.set_weights([w])
    head.set_weights([np.array([[-20.0, 20.0], [0.0, 0.0]], np.float32), np.zeros(2, np.float32)])
    return model


def test_grad_cam_highlights_the_discriminative_square():
    from medfuse_plugins._saliency import grad_cam

    size = 24
    P = np.zeros((2, size, size, 3), np.uint8)
    P[..., 1] = 60  # green everywhere: not discriminative
    P[0, 3:9, 14:20, 0] = 255  # the red square (class 1 evidence), a different place in each image
    P[1, 15:21, 2:8, 0] = 255
    model = _red_square_model(size)
    maps = grad_cam(model, P, np.array([1, 1]))
    assert maps.shape == (2, size, size) and maps.min() >= 0 and maps.max() <= 1
    for m, (r, c) in zip(maps, [(slice(3, 9), slice(14, 20)), (slice(15, 21), slice(2, 8))]):
        inside = m[r, c].mean()
        outside = (m.sum() - m[r, c].sum()) / (m.size - m[r, c].size)
        assert inside > 5 * outside and np.unravel_index(m.argmax(), m.shape)[0] in range(r.start - 1, r.stop + 1)
    # towards the other class, red is evidence against: nothing to highlight
    assert grad_cam(model, P, np.array([0, 0])).max() == 0.0


def test_cnn_plugins_offer_saliency_of_their_network():
    from medfuse_plugins.cnn import CNNClassifier

    rng = np.random.default_rng(0)
    P = rng.integers(0, 40, (24, 16, 16, 3)).astype(np.uint8)
    y = np.array(["a", "b"] * 12)
    P[y == "b", 2:8, 2:8, 0] = 250
    clf = CNNClassifier(size=16, width=4, depth=2, embedding_dim=8, epochs=2, batch_size=8, augment=False,
                        validation_fraction=0).fit(P, y)
    maps = clf.saliency(P[:4], np.array([1, 1, 1, 1]))
    assert maps.shape == (4, 16, 16) and np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
