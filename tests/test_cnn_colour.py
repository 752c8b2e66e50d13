"""CNN colour augmentation (issue #18, ``colour``): per-channel gains in training only; off changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from medfuse.errors import InvalidInputError

pytest.importorskip("keras")

import test_cnn_recipe as recipe  # noqa: E402
from medfuse_plugins._keras_train import augmenter, random_colour  # noqa: E402
from medfuse_plugins.cnn import CNNClassifier  # noqa: E402

data = recipe.data  # the fixture of 24 tiny 16x16 images, 3 classes


def train(P, codes, **options):
    """The tiny CNN of test_cnn_recipe trained for 1 epoch, augmentation on; (model, history)."""
    return recipe.train(P, codes, augment=True, batch_size=24, **options)


def test_colour_gains_are_per_image_and_channel_and_in_training_only():
    x = np.full((4, 6, 6, 3), 100.0, np.float32)
    layer = random_colour(0.2, seed=0)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    out = np.asarray(layer(x, training=True))
    gains = out[:, 0, 0, :] / 100.0  # (image, channel)
    np.testing.assert_allclose(out, np.broadcast_to(gains[:, None, None, :] * 100.0, x.shape), rtol=1e-6)
    assert gains.min() >= 0.8 - 1e-6 and gains.max() <= 1.2 + 1e-6
    assert len(np.unique(gains.round(6))) == gains.size  # independent draws
    bright = np.asarray(random_colour(0.5, seed=1)(np.full((8, 2, 2, 3), 250.0, np.float32), training=True))
    assert bright.max() <= 255.0 and bright.min() < 250.0  # clipped to 0..255


def test_colour_off_adds_no_layer_and_no_random_draws():
    """colour = 0 builds the augmentation of before: same layers, same draws, same images."""
    x = np.random.default_rng(2).uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
    recipe = dict(zoom=0.1, brightness=0.1, seed=3, contrast=0.2, gamma=0.1)
    before, off = augmenter(**recipe), augmenter(**recipe, colour=0.0)
    assert [type(lay).__name__ for lay in off.layers] == [type(lay).__name__ for lay in before.layers]
    assert "random_colour" not in [lay.name for lay in off.layers]
    np.testing.assert_array_equal(np.asarray(off(x, training=True)), np.asarray(before(x, training=True)))
    assert "random_colour" in [lay.name for lay in augmenter(**recipe, colour=0.1).layers]


def test_colour_option_changes_training(data):
    _, plain = train(*data, colour=0.0)
    _, coloured = train(*data, colour=0.3)
    assert coloured["loss"][0] != pytest.approx(plain["loss"][0], rel=1e-5)


def test_cnn_classifier_passes_colour_to_training(data, monkeypatch):
    import medfuse_plugins._keras_train as ku

    calls = []
    monkeypatch.setattr(ku, "train_classifier", lambda *a, **kw: calls.append(kw) or {"loss": [1.0]})
    P, codes = data
    CNNClassifier(size=16, width=4, depth=2, embedding_dim=8, epochs=1, colour=0.15).fit(
        P, np.array(["a", "b", "c"])[codes])
    assert calls[0]["colour"] == 0.15


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_out_of_range_colour_is_refused_with_its_name(data, value):
    with pytest.raises(InvalidInputError, match="cnn_classifier: colour must be"):
        CNNClassifier(colour=value).validate_params()
    with pytest.raises(InvalidInputError, match="colour must be"):
        train(*data, colour=value)
