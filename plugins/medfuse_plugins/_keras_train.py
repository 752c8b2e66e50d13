"""How medfuse trains its Keras classifiers (``cnn_embedding``, ``cnn_classifier``, ``backbone``):
class weights, the inner validation split, augmentation, the learning-rate schedule, the loss,
mixup/cutmix and weight averaging. TensorFlow is imported only when a function runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from medfuse.errors import InvalidInputError

from medfuse_plugins._keras import build_before_fit, iter_batches, keras


def balanced_class_weights(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """``n / (k * count_c)`` per class (scikit-learn's "balanced"); 0 for absent classes."""
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    weights = np.zeros(n_classes)
    present = counts > 0
    weights[present] = len(codes) / (present.sum() * counts[present])
    return weights


def inner_split(codes: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(train_idx, val_idx)`` with about ``fraction`` of each class in validation.

    Classes with fewer than 2 samples stay entirely in training; ``fraction <= 0`` or too
    little data gives an empty validation set.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(codes):
        idx = rng.permutation(np.flatnonzero(codes == c))
        k = int(round(len(idx) * fraction)) if fraction > 0 and len(idx) >= 2 else 0
        k = min(k, len(idx) - 1)
        val.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))



def augmenter(zoom: float, brightness: float, seed: int, contrast: float = 0.0, gamma: float = 0.0,
              colour: float = 0.0) -> Any:
    """In-graph training augmentation on 0..255 images: flips + 90-degree rotations, then optional
    zoom, brightness, contrast/gamma (:func:`random_intensity`, scanner shift) and per-channel
    colour gains (:func:`random_colour`, stain and white-balance shift)."""
    k = keras()
    L = k.layers
    layers: list[Any] = [L.RandomFlip("horizontal_and_vertical", seed=seed), _random_transpose(seed + 1)]
    if zoom > 0:
        layers.append(L.RandomZoom((-zoom, zoom), fill_mode="reflect", seed=seed + 2))
    if brightness > 0:
        layers.append(L.RandomBrightness(brightness, value_range=(0.0, 255.0), seed=seed + 3))
    if contrast > 0 or gamma > 0:
        layers.append(random_intensity(contrast, gamma, seed + 4))
    if colour > 0:
        layers.append(random_colour(colour, seed + 5))
    return k.Sequential(layers, name="augment")


def _random_transpose(seed: int) -> Any:
    """Layer that transposes each square image with probability 1/2 (with flips: all 8 symmetries)."""
    k = keras()

    class RandomTranspose(k.layers.Layer):
        def __init__(self, seed: int = 0, **kwargs):
            super().__init__(**kwargs)
            self.seed = seed
            self.generator = k.random.SeedGenerator(seed)

        def call(self, x, training=None):
            if not training:
                return x
            n = k.ops.shape(x)[0]
            flip = k.random.uniform((n, 1, 1, 1), seed=self.generator) < 0.5
            return k.ops.where(flip, k.ops.transpose(x, (0, 2, 1, 3)), x)

    return RandomTranspose(seed, name="random_transpose")


def random_intensity(contrast: float, gamma: float, seed: int) -> Any:
    """Layer (training only) that changes each image's contrast and gamma, as another scanner would:
    ``x -> mean + c (x - mean)`` with ``c ~ U(1 - contrast, 1 + contrast)`` (mean over the whole image,
    so grey stays grey), then ``x -> 255 (x / 255) ** g`` with ``log g ~ U(-gamma, gamma)``; 0..255."""
    k = keras()

    class RandomIntensity(k.layers.Layer):
        def __init__(self, contrast: float, gamma: float, seed: int = 0, **kwargs):
            super().__init__(**kwargs)
            self.contrast, self.gamma = float(contrast), float(gamma)
            self.generator = k.random.SeedGenerator(seed)

        def call(self, x, training=None):
            if not training:
                return x
            ops = k.ops
            n = ops.shape(x)[0]
            x = ops.cast(x, "float32")
            if self.contrast > 0:
                c = k.random.uniform((n, 1, 1, 1), 1 - self.contrast, 1 + self.contrast, seed=self.generator)
                mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
                x = ops.clip(mean + c * (x - mean), 0.0, 255.0)
            if self.gamma > 0:
                g = ops.exp(k.random.uniform((n, 1, 1, 1), -self.gamma, self.gamma, seed=self.generator))
                x = 255.0 * ops.power(ops.clip(x / 255.0, 0.0, 1.0), g)
            return x

    return RandomIntensity(contrast, gamma, seed, name="random_intensity")


def random_colour(colour: float, seed: int) -> Any:
    """Layer (training only) that shifts each image's colour, as another stain batch or white balance
    would: each channel multiplied by its own gain ``~ U(1 - colour, 1 + colour)`` (independent per
    image and channel), then clipped to 0..255."""
    k = keras()

    class RandomColour(k.layers.Layer):
        def __init__(self, colour: float, seed: int = 0, **kwargs):
            super().__init__(**kwargs)
            self.colour = float(colour)
            self.generator = k.random.SeedGenerator(seed)

        def call(self, x, training=None):
            if not training:
                return x
            ops = k.ops
            n, c = ops.shape(x)[0], ops.shape(x)[-1]
            gain = k.random.uniform((n, 1, 1, c), 1 - self.colour, 1 + self.colour, seed=self.generator)
            return ops.clip(ops.cast(x, "float32") * gain, 0.0, 255.0)

    return RandomColour(colour, seed, name="random_colour")


def cosine_schedule(learning_rate: float, total_steps: int, warmup_steps: int = 0, alpha: float = 0.05) -> Any:
    """Cosine decay from ``learning_rate`` to ``alpha`` of it over ``total_steps``; with ``warmup_steps``,
    a linear warm-up from 0 over those steps first (the decay then takes the remaining steps)."""
    k = keras()
    sched = k.optimizers.schedules
    if warmup_steps <= 0:
        return sched.CosineDecay(learning_rate, decay_steps=max(1, total_steps), alpha=alpha)
    return sched.CosineDecay(0.0, decay_steps=max(1, total_steps - warmup_steps), alpha=alpha,
                             warmup_target=learning_rate, warmup_steps=warmup_steps)


def mix_batch(x: Any, y: Any, w: Any, seed: Any, mixup: float, cutmix: float) -> tuple[Any, Any, Any]:
    """Mixup or cutmix of one batch (TensorFlow ops, stateless: ``seed`` is a shape-(2,) int tensor).

    ``x`` float images (b, s, s, c), ``y`` one-hot or soft targets (b, k), ``w`` sample weights (b,).
    A batch is mixed with a random permutation of itself by ``lam ~ Beta(a, a)``: mixup blends the
    images; cutmix pastes a box of area ``1 - lam`` (targets and weights mixed by the pasted area).
    With both ``mixup`` and ``cutmix`` > 0, each batch gets one of the two at random.
    """
    import tensorflow as tf

    def beta(a: float, s: Any) -> Any:
        g1 = tf.random.stateless_gamma([], seed=s, alpha=a)
        g2 = tf.random.stateless_gamma([], seed=s + 1, alpha=a)
        return g1 / (g1 + g2 + 1e-12)

    b = tf.shape(x)[0]
    perm = tf.argsort(tf.random.stateless_uniform([b], seed=seed + 2))
    xp, yp, wp = tf.gather(x, perm), tf.gather(y, perm), tf.gather(w, perm)

    def do_mixup():
        lam = beta(mixup, seed + 3)
        return lam * x + (1 - lam) * xp, lam

    def do_cutmix():
        lam = beta(cutmix, seed + 5)
        h, wd = tf.shape(x)[1], tf.shape(x)[2]
        r = tf.sqrt(1.0 - lam)
        ch, cw = tf.cast(r * tf.cast(h, tf.float32), tf.int32), tf.cast(r * tf.cast(wd, tf.float32), tf.int32)
        centre = tf.random.stateless_uniform([2], seed=seed + 7)
        cy = tf.cast(centre[0] * tf.cast(h, tf.float32), tf.int32)
        cx = tf.cast(centre[1] * tf.cast(wd, tf.float32), tf.int32)
        y0, y1 = tf.maximum(cy - ch // 2, 0), tf.minimum(cy + ch // 2, h)
        x0, x1 = tf.maximum(cx - cw // 2, 0), tf.minimum(cx + cw // 2, wd)
        rows, cols = tf.range(h)[:, None], tf.range(wd)[None, :]
        box = tf.cast((rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1), x.dtype)[None, :, :, None]
        area = tf.cast((y1 - y0) * (x1 - x0), tf.float32) / tf.cast(h * wd, tf.float32)
        return x * (1 - box) + xp * box, 1.0 - area

    if mixup > 0 and cutmix > 0:
        pick = tf.random.stateless_uniform([], seed=seed + 9) < 0.5
        xm, lam = tf.cond(pick, do_mixup, do_cutmix)
    elif mixup > 0:
        xm, lam = do_mixup()
    else:
        xm, lam = do_cutmix()
    return xm, lam * y + (1 - lam) * yp, lam * w + (1 - lam) * wp


def _mixed_dataset(P: np.ndarray, onehot: np.ndarray, weights: np.ndarray, batch_size: int, seed: int,
                   mixup: float, cutmix: float) -> Any:
    """Endless shuffled batches ``(images, soft targets, sample weights)`` with mixup/cutmix applied."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((P, onehot.astype(np.float32), weights.astype(np.float32)))
    ds = ds.shuffle(len(P), seed=seed, reshuffle_each_iteration=True).repeat().batch(batch_size, drop_remainder=False)

    def mix(step, batch):
        x, y, w = batch
        s = tf.stack([tf.constant(seed, tf.int64), step * 16])
        return mix_batch(tf.cast(x, tf.float32), y, w, s, mixup, cutmix)

    return ds.enumerate().map(mix).prefetch(2)


RECIPE_OPTIONS = ("label_smoothing", "mixup", "cutmix", "contrast", "gamma", "warmup_epochs", "ema", "colour")
"""The float options of :func:`train_classifier` that :func:`check_recipe` range-checks."""


def check_recipe(**options: float) -> None:
    """Refuse out-of-range recipe options of :func:`train_classifier` (those given; no data needed):
    each >= 0, ``ema`` below 1 (a momentum), ``colour`` below 1 (its gains stay positive)."""
    for name, value in options.items():
        if value < 0:
            raise InvalidInputError(f"{name} must be >= 0 (0: off), got {value}")
    if not options.get("ema", 0) < 1:
        raise InvalidInputError(f"ema must be a momentum in [0, 1) (0: off), got {options['ema']}")
    if not options.get("colour", 0) < 1:
        raise InvalidInputError(f"colour must be in [0, 1) (the half-width of the per-channel gains "
                                f"U(1 - colour, 1 + colour); 0: off), got {options['colour']}")


def train_classifier(model: Any, P: np.ndarray, codes: np.ndarray, n_classes: int, *, epochs: int,
                     batch_size: int, learning_rate: float, patience: int, validation_fraction: float,
                     augment: bool, zoom: float, brightness: float, class_weight: str | None,
                     random_state: int, verbose: int = 0, contrast: float = 0.0, gamma: float = 0.0,
                     warmup_epochs: float = 0.0, label_smoothing: float = 0.0, mixup: float = 0.0,
                     cutmix: float = 0.0, ema: float = 0.0, colour: float = 0.0) -> dict[str, Any]:
    """Train ``model`` (softmax output) on uint8 images ``P`` (n, s, s, 3) with integer ``codes``.

    Augmentation runs in the graph of a training wrapper that is not part of ``model``; the
    learning rate follows :func:`cosine_schedule` (with ``warmup_epochs`` of linear warm-up);
    ``label_smoothing`` > 0 and ``mixup``/``cutmix`` > 0 (Beta parameters, :func:`mix_batch`) train
    on soft targets; ``ema`` > 0 keeps an exponential moving average of the weights (that
    momentum per step) and leaves the model with it at the end, with batch-norm statistics recomputed
    for it (:func:`recompute_batch_norm`). Early stopping watches the loss
    on a stratified inner validation split and, without ``ema``, restores the best weights.
    Returns a history dict (losses, epochs run, seconds per epoch, sizes).
    """
    k = keras()
    check_recipe(label_smoothing=label_smoothing, mixup=mixup, cutmix=cutmix, contrast=contrast, gamma=gamma,
                 warmup_epochs=warmup_epochs, ema=ema, colour=colour)
    tr, va = inner_split(codes, validation_fraction, random_state)
    if augment:
        inputs = k.Input(P.shape[1:], name="image")
        aug = augmenter(zoom, brightness, random_state, contrast, gamma, colour)
        wrapper = k.Model(inputs, model(aug(inputs)))
    else:
        wrapper = model
    steps = max(1, -(-len(tr) // batch_size))
    schedule = cosine_schedule(learning_rate, epochs * steps, int(round(warmup_epochs * steps)))
    optimizer = (k.optimizers.Adam(schedule, use_ema=True, ema_momentum=float(ema)) if ema > 0
                 else k.optimizers.Adam(schedule))
    mixing = mixup > 0 or cutmix > 0
    soft = mixing or label_smoothing > 0
    loss = (k.losses.CategoricalCrossentropy(label_smoothing=float(label_smoothing)) if soft
            else "sparse_categorical_crossentropy")
    wrapper.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    weights = None
    if class_weight == "balanced":
        w = balanced_class_weights(codes[tr], n_classes)
        weights = {i: float(w[i]) for i in range(n_classes)}
    elif class_weight is not None:
        raise InvalidInputError(f"class_weight must be 'balanced' or None, got {class_weight!r}")

    def targets(idx: np.ndarray) -> np.ndarray:
        return np.eye(n_classes, dtype=np.float32)[codes[idx]] if soft else codes[idx]

    callbacks: list[Any] = []
    validation = None
    if len(va):
        validation = (P[va], targets(va))  # uint8: cast to float32 per batch inside the model
        # The cosine schedule keeps the rate high early on, where the validation loss is noisy:
        # early stopping (and the best-weights bookkeeping) starts at half the epoch budget.
        callbacks.append(k.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                                   restore_best_weights=not ema > 0, start_from_epoch=epochs // 2))
    timer = EpochTimer(k)
    callbacks.append(timer)
    build_before_fit(wrapper, P[tr[:batch_size]], targets(tr[:batch_size]))
    if mixing:
        sw = np.ones(len(tr)) if weights is None else np.asarray([weights[c] for c in codes[tr]])
        data = _mixed_dataset(P[tr], targets(tr), sw, batch_size, random_state, mixup, cutmix)
        hist = wrapper.fit(data, epochs=epochs, steps_per_epoch=steps, validation_data=validation,
                           callbacks=callbacks, shuffle=False, verbose=verbose)  # the dataset shuffles
    else:
        hist = wrapper.fit(P[tr], targets(tr), batch_size=batch_size, epochs=epochs,
                           validation_data=validation, class_weight=weights, callbacks=callbacks,
                           shuffle=True, verbose=verbose)
    if ema > 0:
        # the averaged weights need batch-norm statistics of their own (those kept during training
        # belong to the raw weights; with them an averaged network can fall to chance)
        recompute_batch_norm(model, P[tr], batch_size)
    out = {key: [float(v) for v in vals] for key, vals in hist.history.items()}
    out["epochs_run"] = len(hist.history.get("loss", []))
    out["seconds_per_epoch"] = timer.seconds
    out["n_train"], out["n_val"] = int(len(tr)), int(len(va))
    return out


def recompute_batch_norm(model: Any, P: np.ndarray, batch_size: int) -> None:
    """Set the moving mean and variance of every BatchNormalization layer of ``model`` to the average
    of its batch statistics over ``P`` (uint8 images, no augmentation), in batches of ``batch_size``;
    the weights are not changed (SWA's batch-norm update, here for weights averaged by EMA)."""
    k = keras()

    def walk(layer: Any) -> Iterator[Any]:
        yield layer
        for sub in getattr(layer, "layers", []):
            yield from walk(sub)

    bns = [layer for layer in walk(model) if isinstance(layer, k.layers.BatchNormalization)]
    saved = [layer.momentum for layer in bns]
    try:
        for t, s in enumerate(iter_batches(len(P), batch_size), start=1):
            for layer in bns:
                layer.momentum = 1.0 - 1.0 / t  # running mean of the batch statistics
            model(np.asarray(P[s], dtype=np.float32), training=True)
    finally:
        for layer, m in zip(bns, saved):
            layer.momentum = m


class EpochTimer:
    """Keras callback recording wall seconds per epoch (created lazily to keep import cheap)."""

    def __new__(cls, k: Any):
        import time

        class _EpochTimer(k.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds: list[float] = []
                self._t0 = 0.0

            def on_epoch_begin(self, epoch, logs=None):
                self._t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self._t0)

        return _EpochTimer()
