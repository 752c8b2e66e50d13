"""keras.applications backbones on tiny synthetic cells: frozen features, fine-tuning with its
.keras/ONNX round trip, local weights files and clear weight errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import prepared
from medfuse.errors import InvalidInputError, MedfuseError

pytest.importorskip("keras")

from medfuse_plugins.cnn import Backbone  # noqa: E402


@pytest.fixture(scope="module")
def cells(cnn_cells):
    return cnn_cells


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
    # the smallest input MobileNetV3 takes, its minimalistic variant (tracing the training step of
    # every squeeze-excite block was most of this test's time), one epoch, no inner validation split or
    # augmentation (their graphs would be traced too): the fit is the fine-tuning path, the rest is the
    # ONNX round trip
    ft = Backbone(architecture="MobileNetV3Small", weights=None, size=32, fine_tune=True, epochs=1,
                  batch_size=16, validation_fraction=0.0, augment=False, minimalistic=True)
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
    with pytest.raises(InvalidInputError, match="minimalistic=True exists for MobileNetV3"):
        Backbone(architecture="MobileNetV2", weights=None, size=32, minimalistic=True).fit(
            np.zeros((2, 32, 32, 3), np.uint8))
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


@pytest.mark.parametrize("params, message", [
    ({"architecture": "MobileNetV2", "minimalistic": True}, "minimalistic=True exists for MobileNetV3"),
    ({"architecture": "NoSuchNet"}, "unknown architecture"),
    ({"architecture": "InceptionV3", "size": 32}, "needs size"),
])
def test_backbone_parameters_are_refused_before_any_data(params, message):
    with pytest.raises(InvalidInputError, match=message):
        Backbone(**{"weights": None, "size": 32, **params}).validate_params()
    Backbone(weights=None, size=32, minimalistic=True).validate_params()  # MobileNetV3Small has the variant
