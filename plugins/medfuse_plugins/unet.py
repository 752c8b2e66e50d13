"""U-Net mask maker (Keras 3, TensorFlow backend), trained on image/mask pairs of the training fold.

Large images (e.g. 1224x960 smears) are trained on random patches and predicted with
overlapping tiles whose softmax outputs are blended with a ramp window, so the mask comes back
at the input's full resolution. ``n_classes=2`` learns background/cell, ``n_classes=3``
background/cell/nucleus; the output is always the canonical ``uint8`` {0, 1, 2} mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
from medfuse import hookimpl
from medfuse.contracts import InstanceMaker, MaskMaker, check_mask
from medfuse.errors import InvalidInputError
from PIL import Image

from medfuse_plugins._keras import KerasStateMixin, seeded
from medfuse_plugins.instances import RedCellSplit


def build_unet(n_classes: int, width: int = 16, depth: int = 3) -> Any:
    """Fully convolutional U-Net: input float (n, H, W, 3) in 0..255, H and W multiples of
    ``2**depth``; output softmax ``(n, H, W, n_classes)``. Encoder filters ``width * 2**i``."""
    from medfuse_plugins._keras import keras

    k = keras()
    L = k.layers

    def block(x, f, name):
        for j in range(2):
            x = L.Conv2D(f, 3, padding="same", use_bias=False, name=f"{name}_conv{j}")(x)
            x = L.BatchNormalization(momentum=0.9, name=f"{name}_bn{j}")(x)
            x = L.ReLU(name=f"{name}_relu{j}")(x)
        return x

    inputs = k.Input((None, None, 3), name="image")
    x = L.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    skips = []
    for i in range(depth):
        x = block(x, width * 2 ** i, f"enc{i}")
        skips.append(x)
        x = L.MaxPooling2D(2, name=f"pool{i}")(x)
    x = block(x, width * 2 ** depth, "bottleneck")
    for i in reversed(range(depth)):
        x = L.Conv2DTranspose(width * 2 ** i, 2, strides=2, padding="same", name=f"up{i}")(x)
        x = L.Concatenate(name=f"skip{i}")([x, skips[i]])
        x = block(x, width * 2 ** i, f"dec{i}")
    outputs = L.Conv2D(n_classes, 1, activation="softmax", name="probs")(x)
    return k.Model(inputs, outputs, name="unet")


def _dice_ce_loss(n_classes: int, dice_weight: float) -> Any:
    """Sparse cross-entropy plus ``dice_weight`` x (1 - mean soft Dice of the foreground classes)."""
    from medfuse_plugins._keras import keras

    ops = keras().ops

    def loss(y_true, y_pred):
        y_true = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]), "int32")
        ce = ops.mean(keras().losses.sparse_categorical_crossentropy(y_true, y_pred))
        if dice_weight <= 0:
            return ce
        onehot = ops.one_hot(y_true, n_classes)[..., 1:]
        p = y_pred[..., 1:]
        inter = ops.sum(onehot * p, axis=(0, 1, 2))
        denom = ops.sum(onehot, axis=(0, 1, 2)) + ops.sum(p, axis=(0, 1, 2))
        soft_dice = (2.0 * inter + 1.0) / (denom + 1.0)
        return ce + dice_weight * (1.0 - ops.mean(soft_dice))

    return loss


def _pad_to(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Reflect-pad (symmetric where the array is too small to reflect) to at least ``h x w``."""
    ph, pw = max(0, h - a.shape[0]), max(0, w - a.shape[1])
    if not ph and not pw:
        return a
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (a.ndim - 2)
    mode = "reflect" if ph < a.shape[0] and pw < a.shape[1] else "symmetric"
    return np.pad(a, pad, mode=mode)


def dihedral(a: np.ndarray, k: int, inverse: bool = False) -> np.ndarray:
    """View ``k`` (0-7) of the 8 flips/transposes of an ``(H, W, ...)`` array (bit 4: transpose,
    1: flip rows, 2: flip columns, applied in that order); ``inverse`` undoes view ``k``."""
    if not inverse and k & 4:
        a = a.swapaxes(0, 1)
    if k & 1:
        a = a[::-1]
    if k & 2:
        a = a[:, ::-1]
    if inverse and k & 4:
        a = a.swapaxes(0, 1)
    return a


def _ramp_window(tile: int, overlap: int) -> np.ndarray:
    """(tile, tile) blending weights: 1 inside, ramping linearly to ~0 over ``overlap`` px at edges."""
    ramp = np.ones(tile, np.float32)
    if overlap > 0:
        edge = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        ramp[:overlap] = np.minimum(ramp[:overlap], edge)
        ramp[-overlap:] = np.minimum(ramp[-overlap:], edge[::-1])
    return np.outer(ramp, ramp)


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    out = list(range(0, length - tile, stride))
    out.append(length - tile)
    return out


def keep_largest_cell(mask: np.ndarray) -> np.ndarray:
    """Keep the largest connected cell region of a {0, 1, 2} mask (holes filled as cytoplasm,
    nucleus pixels kept only inside it)."""
    from scipy import ndimage as ndi

    labels, n = ndi.label(mask > 0)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    cell = ndi.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    out = cell.astype(np.uint8)
    out[cell & (mask == 2)] = 2
    return out


class UNetMask(KerasStateMixin, MaskMaker):
    """U-Net segmentation learnt from image/mask pairs; patch training, tiled full-resolution prediction.

    Loss: cross-entropy plus soft Dice; augmentation: flips, 90-degree rotations, brightness and
    contrast jitter; early stopping on patches from held-out training images.

    Parameters
    ----------
    n_classes
        2: background/cell; 3: background/cell/nucleus (masks 0/1/2)
    patch_size
        side of the random training patches (multiple of 2**depth; small images are padded)
    tile_size
        side of the prediction tiles (multiple of 2**depth)
    overlap
        overlap in pixels between prediction tiles, blended with a linear ramp
    width
        filters of the first encoder level; doubled at each level
    depth
        number of down-sampling levels
    scale
        resize factor applied before the network (masks come back at full resolution)
    epochs
        maximum epochs (early stopping may end sooner)
    steps_per_epoch
        batches of random patches per epoch
    batch_size
        patches per batch
    validation_fraction
        share of images held out for early stopping (with >= 4 images)
    dice_weight
        weight of the soft-Dice term added to the cross-entropy
    augment
        flips, 90-degree rotations, brightness and contrast jitter of training patches
    random_state
        seed of weights, patch sampling, augmentation and the validation split
    batch_size_predict
        tiles per inference batch
    keep_largest
        single-cell images: keep only the largest connected cell (holes filled) and its nucleus
    tta
        test-time augmentation: average the probability maps over the 8 flips/transposes (8x inference)
    """

    name: ClassVar[str] = "unet"
    _network: ClassVar[str] = "unet"
    _not_training: ClassVar[frozenset[str]] = frozenset({"verbose", "batch_size_predict", "keep_largest", "tta"})
    trainable: ClassVar[bool] = True
    version: ClassVar[str] = "1.1.0"
    extras: ClassVar[tuple[str, ...]] = ("keras", "tensorflow")
    conformance_params: ClassVar[dict[str, Any]] = {"n_classes": 3, "patch_size": 32, "tile_size": 32,
                                                    "overlap": 8, "width": 4, "depth": 2, "epochs": 2,
                                                    "steps_per_epoch": 4, "batch_size": 4, "random_state": 0}

    def __init__(self, n_classes: int = 2, patch_size: int = 128, tile_size: int = 256, overlap: int = 32,
                 width: int = 16, depth: int = 3, scale: float = 1.0, epochs: int = 30, steps_per_epoch: int = 50,
                 batch_size: int = 8, learning_rate: float = 0.002, patience: int = 6,
                 validation_fraction: float = 0.15, dice_weight: float = 1.0, augment: bool = True,
                 deterministic: bool = True, random_state: int = 0, verbose: int = 0, batch_size_predict: int = 8,
                 keep_largest: bool = False, tta: bool = False):
        self._store_params(locals())

    # ---- data -----------------------------------------------------------------------------
    def validate_params(self) -> None:
        """Patch and tile sizes fit the depth; 2 or 3 classes; overlap smaller than a tile."""
        m = 2 ** int(self.depth)
        for key in ("patch_size", "tile_size"):
            v = int(getattr(self, key))
            if v < m or v % m:
                raise InvalidInputError(f"unet: {key}={v} must be a positive multiple of 2**depth = {m}")
        if int(self.n_classes) not in (2, 3):
            raise InvalidInputError(f"unet: n_classes must be 2 (cell) or 3 (cell + nucleus), got {self.n_classes}")
        if not 0 <= int(self.overlap) < int(self.tile_size):
            raise InvalidInputError(f"unet: overlap={self.overlap} must be in [0, tile_size)")

    def _scaled(self, image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        s = float(self.scale)
        if s == 1.0:
            return image, mask
        h, w = image.shape[:2]
        size = (max(1, round(w * s)), max(1, round(h * s)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        if mask is not None:
            mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
        return image, mask

    def _target(self, mask: np.ndarray) -> np.ndarray:
        return (mask > 0).astype(np.uint8) if int(self.n_classes) == 2 else np.minimum(mask, 2).astype(np.uint8)

    def _sample(self, images: list[np.ndarray], targets: list[np.ndarray], n: int,
                rng: np.random.Generator, augment: bool) -> tuple[np.ndarray, np.ndarray]:
        p = int(self.patch_size)
        areas = np.array([im.shape[0] * im.shape[1] for im in images], np.float64)
        which = rng.choice(len(images), size=n, p=areas / areas.sum())
        X = np.empty((n, p, p, 3), np.float32)
        Y = np.empty((n, p, p), np.uint8)
        for i, j in enumerate(which):
            im, tg = images[j], targets[j]
            y0 = rng.integers(0, im.shape[0] - p + 1)
            x0 = rng.integers(0, im.shape[1] - p + 1)
            a, b = im[y0:y0 + p, x0:x0 + p], tg[y0:y0 + p, x0:x0 + p]
            if augment:
                k = int(rng.integers(0, 8))
                a, b = dihedral(a, k), dihedral(b, k)
                gain, bias = rng.uniform(0.9, 1.1), rng.uniform(-12, 12)
                X[i] = np.clip(a * gain + bias, 0, 255)
            else:
                X[i] = a
            Y[i] = b
        return X, Y

    # ---- fit ------------------------------------------------------------------------------
    def fit(self, images: Sequence[np.ndarray] | None = None, masks: Sequence[np.ndarray] | None = None) -> UNetMask:
        """Train on full-size canonical images ``(H, W, 3)`` uint8 and masks ``(H, W)`` {0, 1, 2}."""
        self._training_arrays(images, masks)  # checks the inputs
        p = int(self.patch_size)
        ims, tgs = [], []
        for i, (im, m) in enumerate(zip(images, masks)):
            im = self.input_image(im, f"unet: image {i}")
            m = check_mask(m, im, f"unet: mask {i}")
            if m is None:
                raise InvalidInputError(f"unet: mask {i} is missing")
            im, m = self._scaled(im, m)
            ims.append(_pad_to(im, p, p))
            tgs.append(_pad_to(self._target(m), p, p))
        rng = np.random.default_rng(int(self.random_state))
        order = rng.permutation(len(ims))
        n_val = int(round(len(ims) * float(self.validation_fraction))) if len(ims) >= 4 else 0
        val_idx, tr_idx = order[:n_val], order[n_val:]
        tr_ims, tr_tgs = [ims[i] for i in tr_idx], [tgs[i] for i in tr_idx]
        va_ims, va_tgs = ([ims[i] for i in val_idx], [tgs[i] for i in val_idx]) if n_val else (tr_ims, tr_tgs)
        n_val_patches = max(int(self.batch_size), 4 * int(self.batch_size))
        Xv, Yv = self._sample(va_ims, va_tgs, n_val_patches, np.random.default_rng([int(self.random_state), 1]),
                              augment=False)

        with seeded(self.random_state, self.deterministic):
            model, history = self._train(tr_ims, tr_tgs, Xv, Yv)
        history["n_train_images"], history["n_val_images"] = len(tr_idx), int(n_val)
        self.history_ = history
        self.n_params_ = int(model.count_params())
        self.model_ = model
        self._cache, self.onnx_ = {}, {}
        return self

    def _train(self, tr_ims: list[np.ndarray], tr_tgs: list[np.ndarray], Xv: np.ndarray,
               Yv: np.ndarray) -> tuple[Any, dict[str, Any]]:
        """Build and train the network on random patches; early stopping on ``Xv``/``Yv``."""
        from medfuse_plugins._keras import build_before_fit, keras

        k = keras()
        model = build_unet(int(self.n_classes), int(self.width), int(self.depth))
        steps, epochs = int(self.steps_per_epoch), int(self.epochs)
        schedule = k.optimizers.schedules.CosineDecay(float(self.learning_rate), decay_steps=max(1, steps * epochs),
                                                      alpha=0.05)
        model.compile(optimizer=k.optimizers.Adam(schedule),
                      loss=_dice_ce_loss(int(self.n_classes), float(self.dice_weight)), jit_compile=False)
        train_rng = np.random.default_rng([int(self.random_state), 2])
        best, best_weights, waited, history = np.inf, None, 0, {"loss": [], "val_loss": []}
        watch_from = epochs // 2  # like the CNN: the cosine schedule makes early validation losses noisy
        for epoch in range(epochs):
            X, Y = self._sample(tr_ims, tr_tgs, steps * int(self.batch_size), train_rng, bool(self.augment))
            if not epoch:
                build_before_fit(model, X[:int(self.batch_size)], Y[:int(self.batch_size)])
            h = model.fit(X, Y, batch_size=int(self.batch_size), epochs=1, shuffle=False, verbose=int(self.verbose))
            val = float(model.evaluate(Xv, Yv, batch_size=int(self.batch_size), verbose=0))
            history["loss"].append(float(h.history["loss"][0]))
            history["val_loss"].append(val)
            if epoch < watch_from:
                continue
            if val < best - 1e-4:
                best, best_weights, waited = val, model.get_weights(), 0
            else:
                waited += 1
                if waited >= int(self.patience):
                    break
        if best_weights is not None:
            model.set_weights(best_weights)
        history["epochs_run"] = len(history["loss"])
        return model, history

    def _training_arrays(self, images: Sequence[np.ndarray] | None = None,
                         masks: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """The images and masks, checked (same images, masks, parameters and seed: the same network)."""
        self.validate_params()
        if images is None or masks is None or len(images) == 0:
            raise InvalidInputError("unet: fit needs a non-empty list of images and their masks")
        if len(images) != len(masks):
            raise InvalidInputError(f"unet: {len(images)} images but {len(masks)} masks")
        return [*images, *(np.zeros(0) if m is None else m for m in masks)]

    # ---- predict --------------------------------------------------------------------------
    def predict_proba_map(self, image: np.ndarray) -> np.ndarray:
        """Blended softmax map ``(H', W', n_classes)`` float32 at the network's scale."""
        from medfuse_plugins._keras import batched_predict

        self._check_fitted()
        t, m = int(self.tile_size), 2 ** int(self.depth)
        h, w = image.shape[:2]
        if h <= t and w <= t:  # one tile: pad to a multiple of 2**depth
            th, tw = -(-h // m) * m, -(-w // m) * m
            x = _pad_to(image, th, tw)[None].astype(np.float32)
            return batched_predict(self._net("probs"), x, 1)[0, :h, :w]
        padded = _pad_to(image, t, t)
        H, W = padded.shape[:2]
        stride = t - int(self.overlap)
        coords = [(y, x) for y in _starts(H, t, stride) for x in _starts(W, t, stride)]
        window = _ramp_window(t, int(self.overlap))[..., None]
        acc = np.zeros((H, W, int(self.n_classes)), np.float32)
        norm = np.zeros((H, W, 1), np.float32)
        bs = max(1, int(self.batch_size_predict))
        for start in range(0, len(coords), bs):
            chunk = coords[start:start + bs]
            tiles = np.stack([padded[y:y + t, x:x + t] for y, x in chunk]).astype(np.float32)
            probs = batched_predict(self._net("probs"), tiles, bs)
            for (y, x), pr in zip(chunk, probs):
                acc[y:y + t, x:x + t] += pr * window
                norm[y:y + t, x:x + t] += window
        return (acc / np.maximum(norm, 1e-6))[:h, :w]

    def _predict_mask(self, image: np.ndarray) -> np.ndarray:
        self._check_fitted()
        h, w = image.shape[:2]
        scaled, _ = self._scaled(image)
        if self.tta:  # mean of the maps of the 8 views, each mapped back to the image's orientation
            probs = sum(dihedral(self.predict_proba_map(np.ascontiguousarray(dihedral(scaled, k))), k, inverse=True)
                        for k in range(8)) / np.float32(8)
        else:
            probs = self.predict_proba_map(scaled)
        if probs.shape[:2] != (h, w):  # back to full resolution: resize the probabilities, then argmax
            probs = np.stack([np.asarray(Image.fromarray(probs[..., c]).resize((w, h), Image.Resampling.BILINEAR))
                              for c in range(probs.shape[-1])], axis=-1)
        mask = np.argmax(probs, axis=-1).astype(np.uint8)
        return keep_largest_cell(mask) if self.keep_largest else mask

    def predict_masks(self, images: Iterable[np.ndarray]) -> list[np.ndarray]:
        return [self.predict_mask(im) for im in images]


class UNetInstances(RedCellSplit, UNetMask, InstanceMaker):
    """Cells as instances: the U-Net's foreground, then touching cells split by the red-cell
    distance-transform watershed of ``rbc_instances`` (:func:`medfuse_plugins.instances.rbc_labels`).

    Trained like ``unet`` (image/mask pairs; the foreground is ``mask > 0``); ``predict_mask`` is
    the U-Net's mask, ``predict_instances`` the split label image. ``min_distance``/``min_area`` 0:
    estimated per image from the cell radius, as ``rbc_instances`` does.
    """

    name: ClassVar[str] = "unet_instances"
    keep_largest: ClassVar[bool] = False  # many cells per image: never keep only the largest
    _not_training: ClassVar[frozenset[str]] = UNetMask._not_training | set(RedCellSplit.SPLIT_PARAMS)
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict[str, Any]] = {**{k: v for k, v in UNetMask.conformance_params.items()
                                                       if k != "n_classes"}, "n_classes": 2, "min_distance": 3,
                                                    "min_area": 4}

    def __init__(self, n_classes: int = 2, patch_size: int = 128, tile_size: int = 256, overlap: int = 32,
                 width: int = 16, depth: int = 3, scale: float = 1.0, epochs: int = 30, steps_per_epoch: int = 50,
                 batch_size: int = 8, learning_rate: float = 0.002, patience: int = 6,
                 validation_fraction: float = 0.15, dice_weight: float = 1.0, augment: bool = True,
                 deterministic: bool = True, random_state: int = 0, verbose: int = 0, batch_size_predict: int = 8,
                 tta: bool = False, min_distance: int = 0, min_area: int = 0, stained_threshold: int = 60,
                 max_stained: float = 1.0):
        self._store_params(locals())  # not keep_largest: the class's False holds

    def validate_params(self) -> None:
        """The U-Net's checks, and non-negative splitting parameters."""
        super().validate_params()
        for key in self.SPLIT_PARAMS:
            if float(getattr(self, key)) < 0:
                raise InvalidInputError(f"unet_instances: {key}={getattr(self, key)}; expected a value >= 0")

    def _predict_instances(self, image: np.ndarray) -> np.ndarray:
        from medfuse_plugins.segmentation import fill_holes

        return self._split(image, fg=fill_holes(UNetMask._predict_mask(self, image) > 0))

    def _predict_mask(self, image: np.ndarray) -> np.ndarray:
        return UNetMask._predict_mask(self, image)


@hookimpl
def medfuse_plugins() -> list[type]:
    return [UNetMask, UNetInstances]
