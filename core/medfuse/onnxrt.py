"""Networks as data: ONNX files run with onnxruntime (CPU), never TensorFlow or Keras.

A bundle's Keras networks are exported to ONNX when the bundle is written
(`medfuse_plugins._keras.export_onnx`); scoring runs them through :class:`OnnxModel`, so a
scoring process imports neither TensorFlow nor Keras. Thread counts are fixed per session
(:func:`onnx_threads`): every scoring process runs the same counts, which keeps ``--jobs 1``,
``--jobs N`` and Dask bit-identical.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MedfuseError

_THREADS: int | None = None  # onnxruntime intra-/inter-op threads of new sessions (None: its default)


@contextlib.contextmanager
def onnx_threads(threads: int | None) -> Iterator[None]:
    """Sessions created inside this block run ``threads`` intra- and inter-op threads."""
    global _THREADS
    old, _THREADS = _THREADS, (int(threads) if threads else None)
    try:
        yield
    finally:
        _THREADS = old


class OnnxModel:
    """One ONNX network (bytes) and its onnxruntime session on the CPU provider.

    Call it like a Keras model at inference: ``model(x)`` with a float32 array, or a list of
    arrays for a network with several inputs; returns the first output as float32 numpy.
    """

    def __init__(self, data: bytes, source: str = "<bytes>", threads: int | None = None):
        self.data = bytes(data)
        self.source = source
        self.threads = _THREADS if threads is None else int(threads)
        self._session: Any = None
        self.session  # noqa: B018 - build now: a broken file fails at load time, naming itself

    @classmethod
    def load(cls, path: str | Path) -> OnnxModel:
        """Read an ``.onnx`` file (a clear error when it is missing)."""
        path = Path(path)
        if not path.is_file():
            raise MedfuseError(f"{path}: ONNX model file not found")
        return cls(path.read_bytes(), str(path))

    @property
    def session(self) -> Any:
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if self.threads:
                opts.intra_op_num_threads = self.threads
                opts.inter_op_num_threads = self.threads
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            try:
                self._session = ort.InferenceSession(self.data, sess_options=opts,
                                                     providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
                raise MedfuseError(f"{self.source}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from None
        return self._session

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_shape(self) -> tuple[int | None, ...]:
        """Shape of the first output, ``None`` for dynamic dimensions (like Keras' ``output_shape``)."""
        shape = self.session.get_outputs()[0].shape
        return tuple(d if isinstance(d, int) else None for d in shape)

    def __call__(self, x: np.ndarray | Sequence[np.ndarray], training: bool = False) -> np.ndarray:
        arrays = list(x) if isinstance(x, list | tuple) else [x]
        names = self.input_names
        if len(arrays) != len(names):
            raise MedfuseError(f"{self.source}: the network takes {len(names)} input(s), got {len(arrays)}")
        feed = {n: np.ascontiguousarray(a, dtype=np.float32) for n, a in zip(names, arrays)}
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:
        return {"data": self.data, "source": self.source, "threads": self.threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._session = None

    def __repr__(self) -> str:
        return f"OnnxModel({self.source!r}, {len(self.data)} bytes, threads={self.threads})"
