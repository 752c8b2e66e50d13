"""Keras infrastructure shared by the deep plugins (``cnn``, ``unet``, the branch MLP of ``classifiers``):
lazy import, seeding scoped to one fit, ``.keras`` bytes, ONNX export, batching, and
:class:`KerasStateMixin` (pickling, bundle artifacts, sharing one training through
:class:`medfuse.trained.TrainedCache`). The training recipe of the compact CNN and the backbones is
in :mod:`medfuse_plugins._keras_train`.

Nothing here imports TensorFlow at module import time: a classical-only run never loads it.
Call :func:`keras` to get the ``keras`` module (TensorFlow backend, quiet logs).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from medfuse.errors import InvalidInputError, MedfuseError

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


@contextlib.contextmanager
def seeded(seed: int | None, deterministic: bool = True) -> Iterator[None]:
    """Seed Python, NumPy, TensorFlow and Keras from ``seed`` and, with ``deterministic``, switch
    TensorFlow op determinism on for the block only: the previous setting is restored on exit, so a
    fit does not change how the rest of the process runs (the global seeds stay set, as
    ``keras.utils.set_random_seed`` leaves them)."""
    k = keras()
    k.utils.set_random_seed(0 if seed is None else int(seed))
    # TensorFlow has no public getter or off switch (tf.config.experimental only enables)
    from tensorflow.python.framework import config

    switch = deterministic and not config.is_op_determinism_enabled()
    if switch:
        config.enable_op_determinism()
    try:
        yield
    finally:
        if switch:
            config.disable_op_determinism()


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


def build_before_fit(model: Any, x: Any, y: Any) -> None:
    """Create the variables of compiled ``model``'s optimizer, loss and metrics from one batch
    ``(x, y)`` (NumPy arrays, or lists of them for several inputs) before ``model.fit``. Keras otherwise
    creates them inside the first training step, which makes TensorFlow trace that step twice: a third
    or more of a small network's fit. Keras' own symbolic build (what ``fit`` runs under a
    distribution strategy); skipped where the installed Keras lacks it, with the same result."""
    build = getattr(model, "_symbolic_build", None)
    if build is not None:
        build(data_batch=(x, y))


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
    from medfuse.onnxrt import OnnxModel

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



def digest(arrays: Any, params: dict[str, Any]) -> str:
    """sha1 over the arrays' shapes, dtypes and bytes and the sorted parameters."""
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(a.view(np.uint8).data if a.size else b"")
    h.update(repr(sorted(params.items())).encode())
    return h.hexdigest()


# ---- shared persistence and training ----------------------------------------------------------


class KerasStateMixin:
    """Pickle and bundle support for plugins holding Keras models in ``model_``.

    Pickling replaces the model by its native ``.keras`` bytes. In a bundle (format 2) the model
    is left out of the object graph: :meth:`save_artifacts` writes ``<name>.keras`` (kept for
    retraining and inspection, never loaded by scoring) and one ONNX file per network the plugin
    runs at inference (:attr:`_onnx_outputs`); :meth:`load_artifacts` reads only the ONNX files,
    which then run under onnxruntime (no TensorFlow, no Keras).

    The training parameters most Keras plugins share are documented here once (a plugin documents
    its own where they mean something else).

    Parameters
    ----------
    batch_size
        training batch size
    learning_rate
        initial Adam learning rate (cosine decay to 5% of it)
    patience
        epochs without a lower validation loss before early stopping (watched from epochs // 2 on)
    deterministic
        TensorFlow op determinism during the fit (the previous setting is restored after)
    verbose
        Keras training verbosity (0 silent)
    batch_size_predict
        batch size at inference
    """

    _model_attrs: ClassVar[tuple[str, ...]] = ("model_",)
    # The networks run at inference: role -> layer of ``model_`` whose output it is (None: the
    # model's own output); each becomes ``<name>.<role>.onnx`` in a bundle.
    _onnx_outputs: ClassVar[dict[str, str | None]] = {"probs": None}
    # The network a subclass trains ("": none shared) and the parameters that do not change it (left
    # out of the training key). Classes naming the same network (cnn_embedding and cnn_classifier)
    # train interchangeable states, so one training can serve both.
    _network: ClassVar[str] = ""
    _not_training: ClassVar[frozenset[str]] = frozenset({"verbose", "batch_size_predict"})

    def _training_arrays(self, *fit_args: Any) -> list[np.ndarray] | None:
        """The arrays that decide the training from ``fit``'s arguments (None: not shared)."""
        return None

    def training_key(self, *fit_args: Any) -> str | None:
        """Digest of everything that decides the network ``fit(*fit_args)`` would train: the network,
        the training parameters (seed included) and the training arrays; None when this plugin's
        trainings are never shared. Used by :class:`medfuse.trained.TrainedCache`."""
        if not self._network:
            return None
        arrays = self._training_arrays(*fit_args)
        if arrays is None:
            return None
        params = {k: v for k, v in self.get_params().items() if k not in self._not_training}
        return digest(arrays, {"net": self._network, **params})

    def adopt_training(self, other: Any) -> Any:
        """Take the trained state of ``other`` (same :meth:`training_key`) instead of training; the
        history says ``reused``. The Keras model is shared, not copied (inference never changes it)."""
        for attr, value in vars(other).items():
            if attr.endswith("_") and attr != "onnx_":
                setattr(self, attr, value)
        self.history_ = {**getattr(other, "history_", {}), "reused": True}
        self._cache, self.onnx_ = {}, {}
        return self

    def _net(self, role: str) -> Any:
        """The network ``role`` of :attr:`_onnx_outputs`: its ONNX model when loaded from a bundle,
        else the Keras (sub-)model (cached, not pickled)."""
        onnx = getattr(self, "onnx_", None) or {}
        if role in onnx:
            return onnx[role]
        self._check_fitted()
        layer = self._onnx_outputs[role]
        if layer is None:
            return self.model_
        cache = self.__dict__.setdefault("_cache", {})
        if role not in cache:
            out = self.model_.get_layer(layer).output
            cache[role] = self.model_ if out is self.model_.output else keras().Model(self.model_.input, out)
        return cache[role]

    def __getstate__(self) -> dict[str, Any]:
        from medfuse.contracts import state_saved_separately

        state = dict(self.__dict__)
        separately = state_saved_separately()
        for attr in self._model_attrs:
            if state.get(attr) is not None:
                if separately:
                    del state[attr]
                else:
                    state[attr] = model_to_bytes(state[attr])
        if separately:
            state.pop("onnx_", None)
        for key in [k for k in state if k.startswith("_cache")]:
            del state[key]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for attr in self._model_attrs:
            if isinstance(state.get(attr), bytes):
                setattr(self, attr, model_from_bytes(state[attr]))

    def _example_input(self) -> Any:
        """A one-row input the network accepts (Keras builds shapes on a first call before export)."""
        shape = [int(d) if d is not None else 2 ** int(getattr(self, "depth", 0)) * 4
                 for d in self.model_.input_shape[1:]]
        return np.zeros((1, *shape), np.float32)

    def save_artifacts(self, directory: Path) -> list[Path]:
        """Write ``<name>.keras`` (for retraining) and ``<name>.<role>.onnx`` (for scoring) into ``directory``."""
        if getattr(self, "model_", None) is None:
            if getattr(self, "onnx_", None):
                raise MedfuseError(f"{self.name}: loaded from a bundle (ONNX only); it cannot be saved again, "
                                   "retrain it")
            return []
        directory = Path(directory)
        written = [save_model(self.model_, directory / self._artifact_name("model_"))]
        example = self._example_input()
        for role in self._onnx_outputs:
            written.append(export_onnx(self._net(role), directory / self._onnx_name(role), example))
        return written

    def load_artifacts(self, directory: Path) -> None:
        """Load the ONNX networks written by :meth:`save_artifacts` (never the ``.keras`` file)."""
        from medfuse.onnxrt import OnnxModel

        self.onnx_ = {role: OnnxModel.load(Path(directory) / self._onnx_name(role)) for role in self._onnx_outputs}
        self._cache = {}

    def _artifact_name(self, attr: str) -> str:
        suffix = "" if attr == "model_" else "." + attr.rstrip("_")
        return f"{self.name}{suffix}.keras"

    def _onnx_name(self, role: str) -> str:
        return f"{self.name}.{role}.onnx"

    def _check_fitted(self) -> None:
        if getattr(self, "model_", None) is None and not getattr(self, "onnx_", None):
            if any(k in self.__dict__ for k in ("classes_", "history_")):
                raise MedfuseError(f"{self.name}: the network was not restored; a bundle stores it beside the "
                                   f"object graph as '{self._onnx_name(next(iter(self._onnx_outputs)))}' "
                                   f"(call load_artifacts(dir))")
            raise MedfuseError(f"{self.name}: not fitted; call fit() first")

