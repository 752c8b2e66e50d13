"""Keras helpers shared by the deep plugins: lazy import, seeding, ``.keras`` bytes, ONNX export, batching.

Nothing here imports TensorFlow at module import time: a classical-only run never loads it.
Call :func:`keras` to get the ``keras`` module (TensorFlow backend, quiet logs).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidInputError, MedfuseError

_KERAS: Any = None


def keras() -> Any:
    """Import and return ``keras`` on the TensorFlow backend (quiet TF logs), once per process."""
    global _KERAS
    if _KERAS is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import keras as _k

        if os.environ["TF_CPP_MIN_LOG_LEVEL"].strip() in ("2", "3"):
            # also TensorFlow's Python warnings, e.g. "N out of the last N calls ... triggered
            # retracing", which every fold's new model sets off once (one tf.function per model)
            import tensorflow as tf

            tf.get_logger().setLevel("ERROR")
        if _k.backend.backend() != "tensorflow":
            raise MedfuseError(f"medfuse's deep plugins need the TensorFlow Keras backend, "
                               f"got {_k.backend.backend()!r}: set KERAS_BACKEND=tensorflow")
        _KERAS = _k
    return _KERAS


def seed_everything(seed: int | None, deterministic: bool = True) -> None:
    """Seed Python, NumPy, TensorFlow and Keras from ``seed``; optionally make TF ops deterministic.

    ``tf.config.experimental.enable_op_determinism`` is process-wide and cannot be undone; on
    CPU it costs little for the small models used here (see bench/bench_deep.py).
    """
    k = keras()
    k.utils.set_random_seed(0 if seed is None else int(seed))
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def model_to_bytes(model: Any) -> bytes:
    """Serialise a Keras model to native ``.keras`` bytes (zip archive; never HDF5)."""
    with tempfile.TemporaryDirectory(prefix="medfuse-keras-") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        return path.read_bytes()


def model_from_bytes(data: bytes, custom_objects: dict[str, Any] | None = None) -> Any:
    """Rebuild a Keras model from :func:`model_to_bytes` output (compile state is not restored)."""
    k = keras()
    with tempfile.TemporaryDirectory(prefix="medfuse-keras-") as tmp:
        path = Path(tmp) / "model.keras"
        path.write_bytes(data)
        return k.saving.load_model(path, custom_objects=custom_objects, compile=False, safe_mode=True)


class TrainedModels:
    """This process's memo of trained Keras models, keyed by a digest of everything that decides them.

    Training is deterministic for the same inputs, labels, parameters and seed, so a model trained
    once is reused rather than trained again: the fused pipeline's CNN embedding, the end-to-end
    CNN and ensembles holding them share one training per fold, and two pipelines with the same
    trainable mask maker share one U-Net. Models are kept as ``.keras`` bytes (a few MB at most),
    the last ``max_items`` of them.
    """

    def __init__(self, max_items: int = 8):
        self.max_items = max_items
        self._items: OrderedDict[str, tuple[bytes, dict[str, Any]]] = OrderedDict()

    @staticmethod
    def key(arrays: Any, params: dict[str, Any]) -> str:
        """sha1 over the arrays' shapes, dtypes and bytes and the sorted parameters."""
        h = hashlib.sha1()
        for a in arrays:
            a = np.ascontiguousarray(a)
            h.update(f"{a.shape}{a.dtype.str}".encode())
            h.update(a.view(np.uint8).data if a.size else b"")
        h.update(repr(sorted(params.items())).encode())
        return h.hexdigest()

    def get(self, key: str, custom_objects: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]] | None:
        """The model (rebuilt, uncompiled) and its info dict, or ``None``."""
        hit = self._items.get(key)
        if hit is None:
            return None
        self._items.move_to_end(key)
        return model_from_bytes(hit[0], custom_objects), dict(hit[1])

    def put(self, key: str, model: Any, info: dict[str, Any]) -> None:
        self._items[key] = (model_to_bytes(model), dict(info))
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


TRAINED = TrainedModels()


def save_model(model: Any, path: Path) -> Path:
    """Write ``model`` to ``path`` (must end in ``.keras``) and return the path."""
    path = Path(path)
    if path.suffix != ".keras":
        raise InvalidInputError(f"{path}: Keras models are saved in the native '.keras' format only")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def load_model(path: Path, custom_objects: dict[str, Any] | None = None) -> Any:
    """Load a ``.keras`` file written by :func:`save_model`; a clear error when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise MedfuseError(f"{path}: Keras model file not found")
    return keras().saving.load_model(path, custom_objects=custom_objects, compile=False, safe_mode=True)


def iter_batches(n: int, batch_size: int) -> Iterator[slice]:
    """Slices ``[i, i + batch_size)`` covering ``range(n)``."""
    for start in range(0, n, max(1, int(batch_size))):
        yield slice(start, min(n, start + batch_size))


def batched_predict(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``model(x, training=False)`` over batches; returns float32 numpy, shape ``(n, ...)``.

    ``model`` is a Keras model or a :class:`medfuse.onnxrt.OnnxModel` (no TensorFlow then).

    Calling the model directly avoids ``Model.predict``'s per-call set-up, which dominates for
    small inputs; each batch is converted to float32 only when it is used.
    """
    from .onnxrt import OnnxModel

    fn = model if isinstance(model, OnnxModel) else _inference_fn(model)
    if len(x) == 0:
        out_shape = model.output_shape[1:]
        return np.zeros((0, *out_shape), np.float32)
    outs = [np.asarray(fn(np.asarray(x[s], dtype=np.float32)), dtype=np.float32)
            for s in iter_batches(len(x), batch_size)]
    return np.concatenate(outs, axis=0)


def export_onnx(model: Any, path: Path, example: np.ndarray | list[np.ndarray]) -> Path:
    """Export ``model`` (inference graph) to the ONNX file ``path``, calling it once on ``example``
    first (Keras needs built shapes); returns ``path``. Needs ``tf2onnx``."""
    import warnings

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model(example, training=False)
    with warnings.catch_warnings(), open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        model.export(str(path), format="onnx", verbose=False)
    if not path.is_file():
        raise MedfuseError(f"{path}: ONNX export wrote no file")
    return path


def _inference_fn(model: Any) -> Any:
    """A ``tf.function`` wrapping ``model(x, training=False)``, cached on the model object."""
    fn = getattr(model, "_medfuse_infer", None)
    if fn is None:
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def fn(x):
            return model(x, training=False)

        with contextlib.suppress(AttributeError):  # keras objects normally accept attributes
            model._medfuse_infer = fn
    return fn


def encode_labels(y: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, codes)``: sorted unique labels (object array) and int32 codes."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0:
        raise InvalidInputError(f"labels: expected a non-empty 1-D array, got shape {y.shape}")
    classes, codes = np.unique(y.astype(str) if y.dtype.kind in "OUS" else y, return_inverse=True)
    return np.asarray(classes, dtype=object), codes.astype(np.int32)


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


def dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/90-degree rotations of ``x`` (..., H, W, C) with H == W; ``k`` in 0..7."""
    if k & 4:
        x = np.swapaxes(x, -3, -2)
    if k & 1:
        x = x[..., ::-1, :, :]
    if k & 2:
        x = x[..., :, ::-1, :]
    return x
