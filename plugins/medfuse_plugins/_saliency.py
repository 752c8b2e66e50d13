"""Grad-CAM saliency for the Keras networks of the CNN plugins.

Keras and TensorFlow live on the plugin side: core asks a fitted plugin for
``plugin.saliency(P, target_codes)`` (see :meth:`medfuse.pipeline.FittedPipeline.saliency`) and
never imports either. Grad-CAM (Selvaraju et al., 2017): the gradient of the target class's
probability with respect to the last convolutional feature map, averaged over space, weighs that
map's channels; the ReLU of the weighted sum, upsampled to the input size and scaled to [0, 1], is
the saliency map.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image


def last_spatial_layer(model: Any) -> str:
    """Name of the last layer of ``model`` whose output is a 4-D feature map ``(n, h, w, c)``."""
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is not None and len(shape) == 4 and layer.name != model.layers[0].name:
            return layer.name
    raise ValueError(f"network {model.name!r} has no convolutional feature map for Grad-CAM")


def grad_cam(model: Any, P: np.ndarray, targets: np.ndarray, layer: str | None = None,
             batch_size: int = 64) -> np.ndarray:
    """Grad-CAM maps ``float32 (n, s, s)`` in [0, 1] of ``model`` (softmax output) on images ``P``
    ``(n, s, s, c)``, each towards class code ``targets[i]``; ``layer``: the feature map (default: the
    last 4-D one). A map with no positive evidence is all zeros."""
    import tensorflow as tf

    from medfuse_plugins._keras import keras

    k = keras()
    name = layer or last_spatial_layer(model)
    probe = k.Model(model.inputs, [model.get_layer(name).output, model.output])
    P = np.asarray(P)
    targets = np.asarray(targets, dtype=np.int64)
    out = np.zeros(P.shape[:3], np.float32)
    for start in range(0, len(P), batch_size):
        x = tf.convert_to_tensor(P[start:start + batch_size].astype(np.float32))
        t = tf.convert_to_tensor(targets[start:start + batch_size].reshape(-1, 1))
        with tf.GradientTape() as tape:
            fmap, probs = probe(x, training=False)
            score = tf.reduce_sum(tf.gather(probs, t, axis=1, batch_dims=1))
        grads = tape.gradient(score, fmap)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1)).numpy()
        for i, cam in enumerate(cams):
            out[start + i] = _upsample(cam, P.shape[1:3])
    return out


def _upsample(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    top = float(cam.max())
    if not np.isfinite(top) or top <= 0:
        return np.zeros(shape, np.float32)
    img = Image.fromarray((cam / top).astype(np.float32), mode="F").resize((shape[1], shape[0]),
                                                                           Image.Resampling.BILINEAR)
    return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
