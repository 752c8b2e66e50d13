"""Deep image plugins on Keras 3 (TensorFlow backend, CPU-first).

* ``cnn_embedding`` (extractor, block ``cnn``): a compact CNN trained on the training fold; its
  penultimate layer is the feature block ``cnn.0 ... cnn.{d-1}``.
* ``backbone`` (extractor, block ``backbone``): a ``keras.applications`` network, frozen (pooled
  features) or fine-tuned, with weights ``None``, ``"imagenet"`` or a local weights file.
* ``cnn_classifier`` (classifier, ``input = "images"``): the same compact CNN, softmax head.

``cnn_embedding`` and ``cnn_classifier`` train the very same network for the same prepared images,
labels, parameters and seed (``training_key``), so a run's :class:`medfuse.trained.TrainedCache`
trains it once per fold for the fused pipeline's ``cnn`` block, the deep pipeline whose classifier
names that block's network (``network = "cnn"``) and ensembles holding either. A plain ``fit``
always trains.

All three take prepared inputs: ``prepare(image, mask)`` resizes to ``size x size`` with
anti-aliasing (optionally zeroing the background) and returns ``uint8 (size, size, 3)``;
``fit``/``transform``/``predict_proba`` take the stacked array ``P`` of shape ``(n, size, size, 3)``.
TensorFlow is imported only when a model is built or loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from medfuse import hookimpl
from medfuse.contracts import Classifier, Extractor
from medfuse.errors import InvalidInputError, MedfuseError
from PIL import Image

from medfuse_plugins._keras import KerasStateMixin, encode_labels

# ---- preparation ------------------------------------------------------------------------------


def resize_square(image: np.ndarray, mask: np.ndarray | None, size: int, masked: bool = False) -> np.ndarray:
    """Resize ``image`` (H, W, 3) uint8 to ``(size, size, 3)`` uint8 with anti-aliasing.

    With ``masked=True`` and a mask, background pixels (``mask == 0``) are set to 0 first.
    Pillow's bilinear filter widens its support when downscaling, so it anti-aliases.
    """
    if masked and mask is not None:
        image = image * (mask > 0)[..., None].astype(np.uint8)
    if image.shape[:2] == (size, size):
        return np.ascontiguousarray(image, dtype=np.uint8)
    out = Image.fromarray(np.ascontiguousarray(image)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


def dihedral_views(P: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/transposes (the square's symmetries) of images ``P`` (n, s, s, c), as views."""
    out = []
    for Q in (P, P.transpose(0, 2, 1, 3)):
        out += [Q, Q[:, ::-1], Q[:, :, ::-1], Q[:, ::-1, ::-1]]
    return out


def _check_prepared(P: Any, size: int, who: str) -> np.ndarray:
    P = np.asarray(P)
    if P.ndim != 4 or P.shape[1:] != (size, size, 3):
        raise InvalidInputError(f"{who}: expected prepared images of shape (n, {size}, {size}, 3) "
                                f"(from prepare()), got {P.shape}")
    if len(P) == 0:
        raise InvalidInputError(f"{who}: no images given")
    return P


# ---- the compact CNN -------------------------------------------------------------------------


def build_compact_cnn(size: int, n_classes: int, width: int = 16, depth: int = 4, embedding_dim: int = 128,
                      dropout: float = 0.3, arch: str = "plain", name: str = "compact_cnn") -> Any:
    """Compact CNN, input float (n, size, size, 3) in 0..255 (rescaled inside); global average pooling,
    ``Dense(embedding_dim)`` named ``embedding``, softmax head ``probs``.

    ``arch="plain"``: ``depth`` blocks of 2x (conv3x3-BN-ReLU) + max-pool, filters ``width * 2**i``
    (about 300k parameters with the defaults). ``arch="resnet"``: a conv3x3-BN-ReLU stem, then
    ``depth`` residual stages of one basic block each (conv3x3-BN-ReLU-conv3x3-BN plus the shortcut,
    a strided 1x1 conv-BN where the shape changes), stride 2 from the second stage on.
    """
    from medfuse_plugins._keras import keras

    if arch not in ARCHS:
        raise InvalidInputError(f"cnn: arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    k = keras()
    L = k.layers
    inputs = k.Input((size, size, 3), name="image")
    x = L.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    if arch == "resnet":
        x = _resnet_body(L, x, width, depth)
    else:
        for i in range(depth):
            f = width * 2 ** i
            for j in range(2):
                x = L.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i}_{j}")(x)
                x = L.BatchNormalization(momentum=0.9, name=f"bn{i}_{j}")(x)
                x = L.ReLU(name=f"relu{i}_{j}")(x)
            if i < depth - 1 or size // 2 ** depth >= 2:
                x = L.MaxPooling2D(2, name=f"pool{i}")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(embedding_dim, activation="relu", name="embedding")(x)
    x = L.Dropout(dropout, name="dropout")(x)
    outputs = L.Dense(n_classes, activation="softmax", name="probs")(x)
    return k.Model(inputs, outputs, name=name)


ARCHS = ("plain", "resnet")


def _resnet_body(L: Any, x: Any, width: int, depth: int) -> Any:
    """Stem + ``depth`` residual stages (basic blocks with batch normalisation) of :func:`build_compact_cnn`."""
    x = L.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(x)
    x = L.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    for i in range(depth):
        f, stride = width * 2 ** i, 1 if i == 0 else 2
        shortcut = x
        if stride != 1 or x.shape[-1] != f:
            shortcut = L.Conv2D(f, 1, strides=stride, use_bias=False, name=f"res{i}_proj")(x)
            shortcut = L.BatchNormalization(momentum=0.9, name=f"res{i}_proj_bn")(shortcut)
        y = L.Conv2D(f, 3, strides=stride, padding="same", use_bias=False, name=f"res{i}_conv0")(x)
        y = L.BatchNormalization(momentum=0.9, name=f"res{i}_bn0")(y)
        y = L.ReLU(name=f"res{i}_relu0")(y)
        y = L.Conv2D(f, 3, padding="same", use_bias=False, name=f"res{i}_conv1")(y)
        y = L.BatchNormalization(momentum=0.9, name=f"res{i}_bn1")(y)
        x = L.ReLU(name=f"res{i}_out")(L.Add(name=f"res{i}_add")([shortcut, y]))
    return x


def seed_ensemble(members: list[Any], size: int) -> Any:
    """One inference network for ``members`` (same architecture, trained with different seeds):
    layer ``embedding`` concatenates their embeddings, output ``probs`` averages their softmax.

    The heads become one block-diagonal dense layer on the concatenated embedding (dropout is
    the identity at inference), so the embedding lies on the path to the output: the network
    exports to ONNX and serves both roles like a single compact CNN.
    """
    from medfuse_plugins._keras import keras

    k = keras()
    L = k.layers
    inputs = k.Input((size, size, 3), name="image")
    embs = [k.Model(m.input, m.get_layer("embedding").output, name=f"member{i}")(inputs)
            for i, m in enumerate(members)]
    emb = L.Concatenate(name="embedding")(embs)
    heads = [m.get_layer("probs").get_weights() for m in members]
    d, n_classes = heads[0][0].shape
    heads_layer = L.Dense(len(members) * n_classes, name="heads")
    logits = heads_layer(emb)
    kernel = np.zeros((d * len(members), n_classes * len(members)), np.float32)
    for i, (w, _) in enumerate(heads):
        kernel[i * d:(i + 1) * d, i * n_classes:(i + 1) * n_classes] = w
    heads_layer.set_weights([kernel, np.concatenate([b for _, b in heads]).astype(np.float32)])
    x = L.Reshape((len(members), n_classes), name="member_logits")(logits)
    x = L.Softmax(axis=-1, name="member_probs")(x)
    out = L.GlobalAveragePooling1D(name="probs")(x)
    return k.Model(inputs, out, name="seed_ensemble")


_CNN_FAST = {"size": 32, "width": 8, "depth": 2, "embedding_dim": 16, "epochs": 2, "batch_size": 8,
             "validation_fraction": 0.25, "random_state": 0}


class _SquareInput:
    """Images prepared as ``size`` x ``size`` squares (background zeroed first when ``masked``).

    Parameters
    ----------
    masked
        zero the background (mask == 0) before resizing, when a mask is given
    """

    def _prepare(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        return resize_square(image, mask, int(self.size), bool(self.masked))


class _CompactCNNBase(_SquareInput, KerasStateMixin):
    """Parameters and training shared by ``cnn_embedding`` and ``cnn_classifier``.

    Parameters
    ----------
    size
        side in pixels of the square network input (images are resized with anti-aliasing)
    width
        filters of the first conv block; doubled in each following block
    depth
        number of conv blocks (2 convs + max-pool each)
    embedding_dim
        size of the penultimate dense layer (the embedding)
    dropout
        dropout rate before the softmax head
    epochs
        maximum training epochs (early stopping may end sooner)
    validation_fraction
        share of each class held out as the inner validation split (0: no early stopping)
    augment
        random flips, 90-degree rotations, zoom and brightness during training
    zoom
        maximum relative zoom in/out of the augmentation
    brightness
        maximum relative brightness change of the augmentation
    class_weight
        'balanced' weights classes by inverse frequency; None: unweighted
    deterministic
        TensorFlow op determinism during the fit (the previous setting is restored after) so that a seed reproduces the
        model
    random_state
        seed of weights, augmentation, shuffling and the inner split
    tta
        test-time augmentation: average the outputs over the 8 flips/90-degree rotations (8x inference cost)
    arch
        'plain' (conv-BN-ReLU blocks + max-pool) or 'resnet' (residual stages with batch normalisation)
    warmup_epochs
        epochs of linear learning-rate warm-up from 0 before the cosine decay (0: none)
    label_smoothing
        label smoothing of the cross-entropy targets (0: none; e.g. 0.1)
    mixup
        Beta(a, a) parameter of mixup, blending pairs of training images and their targets (0: off)
    cutmix
        Beta(a, a) parameter of cutmix, pasting a box of another training image (0: off; with mixup > 0 too, each batch
        gets one of the two)
    ema
        momentum per step of an exponential moving average of the weights, kept as the final weights (0: off; e.g.
        0.99); early stopping then does not restore the best epoch
    contrast
        contrast augmentation: each image's contrast scaled by U(1 - c, 1 + c) about its mean (0: off)
    gamma
        gamma augmentation: intensities raised to exp(U(-g, g)) on the 0..1 scale (0: off); with contrast and brightness
        it covers X-ray scanner shift
    colour
        colour augmentation: each image's red, green and blue multiplied by independent gains U(1 - c, 1 + c), clipped
        to 0..255 (0: off; below 1), as another stain batch or white balance would shift them
    n_seeds
        train this many networks (seeds random_state, random_state + 1, ...) and average their softmax; the embedding
        concatenates theirs (n_seeds x embedding_dim features)
    """

    # cnn_embedding and cnn_classifier train this same network; ``masked`` acts in prepare(), so it
    # is already in the training images
    _network: ClassVar[str] = "compact_cnn"
    _not_training: ClassVar[frozenset[str]] = frozenset({"verbose", "batch_size_predict", "masked", "tta"})
    version: ClassVar[str] = "1.2.0"
    extras: ClassVar[tuple[str, ...]] = ("keras", "tensorflow")
    conformance_params: ClassVar[dict[str, Any]] = _CNN_FAST

    def __init__(self, size: int = 64, width: int = 16, depth: int = 4, embedding_dim: int = 128,
                 dropout: float = 0.3, epochs: int = 20, batch_size: int = 64, learning_rate: float = 0.002,
                 patience: int = 5, validation_fraction: float = 0.15, augment: bool = True, zoom: float = 0.1,
                 brightness: float = 0.1, masked: bool = False, class_weight: str | None = "balanced",
                 deterministic: bool = True, random_state: int = 0, verbose: int = 0,
                 batch_size_predict: int = 256, tta: bool = False, arch: str = "plain",
                 warmup_epochs: float = 0.0, label_smoothing: float = 0.0, mixup: float = 0.0, cutmix: float = 0.0,
                 ema: float = 0.0, contrast: float = 0.0, gamma: float = 0.0, n_seeds: int = 1,
                 colour: float = 0.0):
        self._store_params(locals())

    def validate_params(self) -> None:
        """Refuse out-of-range augmentation and recipe options before any data is read."""
        from medfuse_plugins._keras_train import RECIPE_OPTIONS, check_recipe

        try:
            check_recipe(**{name: float(getattr(self, name)) for name in RECIPE_OPTIONS})
        except InvalidInputError as exc:
            raise InvalidInputError(f"{self.name}: {exc}") from None

    def _predict(self, model: Any, P: np.ndarray) -> np.ndarray:
        """``model`` on ``P`` in batches; with ``tta``, the mean over the 8 flips/transposes."""
        from medfuse_plugins._keras import batched_predict

        batch = int(self.batch_size_predict)
        if not self.tta:
            return batched_predict(model, P, batch)
        out = np.zeros((len(P), *model.output_shape[1:]), np.float64)
        for view in dihedral_views(P):
            out += batched_predict(model, view, batch)
        return (out / 8).astype(np.float32)

    saliency_method: ClassVar[str] = "Grad-CAM"

    def saliency(self, P: Any, target: Any) -> np.ndarray:
        """Grad-CAM maps ``(n, size, size)`` in [0, 1] of the trained network on prepared images ``P``,
        towards class codes ``target`` (positions in ``classes_``); see :mod:`medfuse_plugins._saliency`."""
        from ._saliency import grad_cam

        self._check_fitted()
        if getattr(self, "model_", None) is None:
            raise InvalidInputError(f"{self.name}: saliency needs the Keras network (not loaded from a bundle)")
        return grad_cam(self.model_, _check_prepared(P, int(self.size), self.name), np.asarray(target))

    def _training_arrays(self, P: Any, y: Any = None) -> list[np.ndarray]:
        P, classes, codes = self._checked(P, y)
        return [P, codes, np.asarray([str(c) for c in classes])]

    def _checked(self, P: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prepared images, classes and codes, checked."""
        P = _check_prepared(P, int(self.size), self.name)
        if y is None:
            raise InvalidInputError(f"{self.name}: fit needs labels y (it trains a classifier)")
        classes, codes = encode_labels(y)
        if len(codes) != len(P):
            raise InvalidInputError(f"{self.name}: {len(P)} images but {len(codes)} labels")
        return P, classes, codes

    def fit(self, P: Any, y: Any = None) -> Self:
        """Train on prepared images ``P`` (n, size, size, 3) uint8 and string labels ``y``."""
        from medfuse_plugins import _keras
        from medfuse_plugins._keras_train import train_classifier

        P, classes, codes = self._checked(P, y)
        if int(self.n_seeds) < 1:
            raise InvalidInputError(f"{self.name}: n_seeds must be >= 1, got {self.n_seeds}")
        members, histories = [], []
        for i in range(int(self.n_seeds)):
            seed = int(self.random_state) + i
            with _keras.seeded(seed, self.deterministic):
                model = build_compact_cnn(int(self.size), len(classes), int(self.width), int(self.depth),
                                          int(self.embedding_dim), float(self.dropout), str(self.arch),
                                          name="compact_cnn" if self.n_seeds == 1 else f"compact_cnn_{i}")
                histories.append(train_classifier(
                    model, P, codes, len(classes), epochs=int(self.epochs), batch_size=int(self.batch_size),
                    learning_rate=float(self.learning_rate), patience=int(self.patience),
                    validation_fraction=float(self.validation_fraction), augment=bool(self.augment),
                    zoom=float(self.zoom), brightness=float(self.brightness), class_weight=self.class_weight,
                    random_state=seed, verbose=int(self.verbose), contrast=float(self.contrast),
                    gamma=float(self.gamma), warmup_epochs=float(self.warmup_epochs),
                    label_smoothing=float(self.label_smoothing), mixup=float(self.mixup),
                    cutmix=float(self.cutmix), ema=float(self.ema), colour=float(self.colour)))
            members.append(model)
        self.history_ = histories[0] if len(histories) == 1 else {**histories[0], "members": histories}
        if len(members) > 1:
            model = seed_ensemble(members, int(self.size))
        self.classes_ = classes
        self.n_params_ = int(model.count_params())
        self.model_ = model
        self._cache, self.onnx_ = {}, {}
        return self


class CNNEmbedding(_CompactCNNBase, Extractor):
    """Compact CNN trained on the training fold; its penultimate layer is the ``cnn`` feature block.

    Training uses augmentation (flips, 90-degree rotations, zoom, brightness), balanced class
    weights and early stopping on a stratified inner validation split.
    """

    name: ClassVar[str] = "cnn_embedding"
    block: ClassVar[str] = "cnn"
    _onnx_outputs: ClassVar[dict[str, str | None]] = {"embedding": "embedding"}
    trainable: ClassVar[bool] = True

    def transform(self, P: Any) -> np.ndarray:
        """Penultimate activations, float32 ``(n, embedding_dim)`` (with ``tta``: their mean over the 8 views)."""
        P = _check_prepared(P, int(self.size), self.name)
        return self._predict(self._net("embedding"), P)

    def feature_names(self) -> list[str]:
        return [str(i) for i in range(int(self.embedding_dim) * int(self.n_seeds))]


class CNNClassifier(_CompactCNNBase, Classifier):
    """End-to-end compact CNN on images with a softmax head (the "deep" pipeline).

    Same network and training as ``cnn_embedding``; ``predict_proba`` columns follow ``classes_``.
    """

    name: ClassVar[str] = "cnn_classifier"
    input: ClassVar[str] = "images"

    def predict_proba(self, P: Any) -> np.ndarray:
        """Softmax probabilities ``(n, n_classes)`` in the order of ``classes_`` (with ``tta``: their
        mean over the 8 flips/transposes of each image)."""
        self._check_fitted()
        P = _check_prepared(P, int(self.size), self.name)
        proba = self._predict(self._net("probs"), P).astype(np.float64)
        return proba / proba.sum(axis=1, keepdims=True)


# ---- keras.applications backbones ------------------------------------------------------------

# name -> (keras.applications attribute, input scaling, minimum side)
# scaling: "raw" = the model rescales 0..255 itself; "tf" = to [-1, 1]; "torch" = ImageNet mean/std.
BACKBONES: dict[str, tuple[str, str, int]] = {
    "MobileNetV3Small": ("MobileNetV3Small", "raw", 32),
    "MobileNetV3Large": ("MobileNetV3Large", "raw", 32),
    "MobileNetV2": ("MobileNetV2", "tf", 32),
    "EfficientNetB0": ("EfficientNetB0", "raw", 32),
    "EfficientNetB1": ("EfficientNetB1", "raw", 32),
    "EfficientNetB2": ("EfficientNetB2", "raw", 32),
    "EfficientNetB3": ("EfficientNetB3", "raw", 32),
    "EfficientNetV2B0": ("EfficientNetV2B0", "raw", 32),
    "InceptionV3": ("InceptionV3", "tf", 75),
    "Xception": ("Xception", "tf", 71),
    "DenseNet121": ("DenseNet121", "torch", 32),
}

_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]) * 255.0
_IMAGENET_STD = np.array([0.229, 0.224, 0.225]) * 255.0


def check_backbone(architecture: str, size: int, minimalistic: bool) -> None:
    """Refuse an unknown architecture, an input below its smallest size, or ``minimalistic`` where the
    architecture has no such variant (``validate`` runs this before any data; the build again)."""
    if architecture not in BACKBONES:
        raise InvalidInputError(f"backbone: unknown architecture {architecture!r}; "
                                f"choose one of {', '.join(BACKBONES)}")
    attr, _, min_side = BACKBONES[architecture]
    if size < min_side:
        raise InvalidInputError(f"backbone: {architecture} needs size >= {min_side}, got {size}")
    if minimalistic and not attr.startswith("MobileNetV3"):
        raise InvalidInputError(f"backbone: minimalistic=True exists for MobileNetV3Small/Large only, not "
                                f"{architecture}; set minimalistic=False")


def _build_backbone_base(architecture: str, size: int, weights: str | None, minimalistic: bool = False) -> Any:
    """``keras.applications`` network without its top, with global average pooling (MobileNetV3's
    ``minimalistic`` variant: no squeeze-excite, ReLU, 3x3 kernels)."""
    import socket

    from medfuse_plugins._keras import keras

    check_backbone(architecture, size, minimalistic)
    attr = BACKBONES[architecture][0]
    if weights not in (None, "imagenet"):
        path = Path(str(weights)).expanduser()
        if not path.is_file():
            raise MedfuseError(f"backbone: weights file {str(path)!r} not found; give the path of a "
                               f"{architecture} 'no top' weights file (.h5 or .weights.h5), 'imagenet' or None")
        weights = str(path)
    k = keras()
    ctor = getattr(k.applications, attr)
    kwargs: dict[str, Any] = {"include_top": False, "weights": weights, "input_shape": (size, size, 3),
                              "pooling": "avg"}
    if attr.startswith("MobileNetV3"):
        kwargs["include_preprocessing"] = True
        kwargs["minimalistic"] = bool(minimalistic)
    if weights != "imagenet":
        return ctor(**kwargs)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        return ctor(**kwargs)
    except Exception as exc:  # noqa: BLE001 - any download/cache failure gets one clear message
        raise MedfuseError(
            f"backbone: could not get ImageNet weights for {architecture} ({type(exc).__name__}: {exc}). "
            f"Offline, download the 'no top' weights file for {architecture} on a machine with internet "
            f"(keras.applications.{attr}(include_top=False, weights='imagenet') stores it in "
            f"~/.keras/models/), copy it here and pass weights='/path/to/that_file.h5', or put it in "
            f"~/.keras/models/ on this machine; weights=None gives random initialisation") from None
    finally:
        socket.setdefaulttimeout(old)


def build_backbone(architecture: str, size: int, weights: str | None, n_classes: int | None = None,
                   dropout: float = 0.2, minimalistic: bool = False) -> Any:
    """Input 0..255 -> scaling for ``architecture`` -> pooled features (layer ``features``)
    [-> dropout -> softmax head ``probs`` when ``n_classes`` is given]."""
    from medfuse_plugins._keras import keras

    k = keras()
    L = k.layers
    base = _build_backbone_base(architecture, size, weights, minimalistic)
    scaling = BACKBONES[architecture][1]
    inputs = k.Input((size, size, 3), name="image")
    x = inputs
    if scaling == "tf":
        x = L.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(x)
    elif scaling == "torch":
        x = L.Normalization(mean=_IMAGENET_MEAN.tolist(), variance=(_IMAGENET_STD ** 2).tolist(), name="scale")(x)
    # Pretrained batch-norm statistics stay frozen (inference mode) even when fine-tuning.
    x = base(x, training=False) if weights is not None else base(x)
    x = L.Identity(name="features")(x)
    if n_classes is not None:
        x = L.Dropout(dropout, name="dropout")(x)
        x = L.Dense(n_classes, activation="softmax", name="probs")(x)
    return k.Model(inputs, x, name=f"backbone_{architecture}")


class Backbone(_SquareInput, KerasStateMixin, Extractor):
    """A ``keras.applications`` network (MobileNetV3, EfficientNet, InceptionV3, Xception, ...) as a
    feature extractor: frozen (global-average-pooled features) or fine-tuned on the training fold.

    ``weights``: ``None`` (random init, for tests), ``"imagenet"`` (downloaded or taken from the
    Keras cache; offline this fails with a message saying how to supply a file) or a local path.

    Parameters
    ----------
    architecture
        keras.applications network: MobileNetV3Small, MobileNetV3Large, MobileNetV2, EfficientNetB0, EfficientNetB1,
        EfficientNetB2, EfficientNetB3, EfficientNetV2B0, InceptionV3, Xception, DenseNet121
    weights
        None (random), 'imagenet' (needs the hub or the Keras cache) or a local weights file path
    size
        side in pixels of the square network input
    fine_tune
        False: frozen pooled features; True: train the whole network with a softmax head
    epochs
        fine-tuning epochs (ignored when frozen)
    learning_rate
        Adam learning rate for fine-tuning
    patience
        early-stopping patience (epochs) on the inner validation split
    validation_fraction
        share of each class held out for early stopping
    augment
        flips, 90-degree rotations, zoom and brightness during fine-tuning
    class_weight
        'balanced' or None
    random_state
        seed of initialisation, augmentation and the inner split
    minimalistic
        MobileNetV3 only: the minimalistic variant (no squeeze-excite, ReLU, 3x3 kernels; fewer layers,
        much faster to train)
    """

    name: ClassVar[str] = "backbone"
    block: ClassVar[str] = "backbone"
    _onnx_outputs: ClassVar[dict[str, str | None]] = {"features": "features"}
    trainable: ClassVar[bool] = True
    version: ClassVar[str] = "1.0.0"
    extras: ClassVar[tuple[str, ...]] = ("keras", "tensorflow")
    conformance_params: ClassVar[dict[str, Any]] = {"architecture": "MobileNetV3Small", "weights": None,
                                                    "size": 32, "fine_tune": False, "minimalistic": True}

    def __init__(self, architecture: str = "MobileNetV3Small", weights: str | None = "imagenet", size: int = 128,
                 fine_tune: bool = False, epochs: int = 10, batch_size: int = 32, learning_rate: float = 1e-4,
                 patience: int = 3, validation_fraction: float = 0.15, augment: bool = True,
                 masked: bool = False, class_weight: str | None = "balanced", deterministic: bool = True,
                 random_state: int = 0, verbose: int = 0, batch_size_predict: int = 128,
                 minimalistic: bool = False):
        self._store_params(locals())

    def validate_params(self) -> None:
        """Refuse an unknown architecture, a too-small input or ``minimalistic`` off MobileNetV3, before data."""
        check_backbone(str(self.architecture), int(self.size), bool(self.minimalistic))

    def fit(self, P: Any, y: Any = None) -> Backbone:
        """Build the network (frozen) or fine-tune it on ``P`` (n, size, size, 3) and labels ``y``."""
        from medfuse_plugins._keras import seeded

        P = _check_prepared(P, int(self.size), self.name)
        with seeded(self.random_state, self.deterministic):
            self._fit_backbone(P, y)
        self.n_features_ = int(self.model_.get_layer("features").output.shape[-1])
        self._cache, self.onnx_ = {}, {}
        return self

    def _fit_backbone(self, P: np.ndarray, y: Any) -> None:
        from medfuse_plugins._keras_train import train_classifier

        if not self.fine_tune:
            self.model_ = build_backbone(self.architecture, int(self.size), self.weights,
                                         minimalistic=bool(self.minimalistic))
            self.history_ = {}
        else:
            if y is None:
                raise InvalidInputError("backbone: fine_tune=True needs labels y")
            classes, codes = encode_labels(y)
            model = build_backbone(self.architecture, int(self.size), self.weights, len(classes),
                                   minimalistic=bool(self.minimalistic))
            self.history_ = train_classifier(
                model, P, codes, len(classes), epochs=int(self.epochs), batch_size=int(self.batch_size),
                learning_rate=float(self.learning_rate), patience=int(self.patience),
                validation_fraction=float(self.validation_fraction), augment=bool(self.augment), zoom=0.1,
                brightness=0.1, class_weight=self.class_weight, random_state=int(self.random_state),
                verbose=int(self.verbose))
            self.classes_ = classes
            self.model_ = model

    def transform(self, P: Any) -> np.ndarray:
        """Pooled backbone features, float32 ``(n, n_features_)``."""
        from medfuse_plugins._keras import batched_predict

        P = _check_prepared(P, int(self.size), self.name)
        return batched_predict(self._net("features"), P, int(self.batch_size_predict))

    def feature_names(self) -> list[str]:
        n = getattr(self, "n_features_", None)
        if n is None:
            raise MedfuseError("backbone: the feature count is known after fit()")
        return [str(i) for i in range(n)]


@hookimpl
def medfuse_plugins() -> list[type]:
    return [CNNEmbedding, Backbone, CNNClassifier]
