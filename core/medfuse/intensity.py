"""Intensity normalisation to 8 bits and what a decoder learnt about a file.

The rule (also in :mod:`medfuse.imageio`'s docstring):

* ``uint8`` data is returned unchanged (no option changes it except ``percentiles``);
* unsigned integers (and signed ones without negative values) are divided by their bit depth's
  full scale: ``v * 255 // (2**bits - 1)``, where ``bits`` is the stored bit depth when the file
  says it (DICOM ``BitsStored``), else an explicit ``bits`` option, else the smallest of
  8/10/12/14/16 (then 32) bits that holds the image's maximum (a 12-bit image 0-4095 keeps its
  range; a 16-bit image using the full range gives ``v // 257`` as before);
* a known value range (DICOM after its VOI LUT / window) maps linearly ``[lo, hi] -> [0, 255]``;
* floats within ``[0, 1]`` are scaled by 255; other floats and signed integers with negative
  values map their own ``[min, max]`` to ``[0, 255]``;
* ``percentiles=(p_lo, p_hi)`` replaces all of the above by a window from the image's own
  percentiles (``[P_lo, P_hi] -> [0, 255]``, clipped), over all channels together.

Ranges and percentiles round to the nearest integer; bit-depth scaling floors (as ``// 257`` did).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["ImageInfo", "ReadOptions", "SourceImage", "ViewRule", "apply_rule", "as_uint8", "channels_to_rgb",
           "choose_rule", "current_read_options", "infer_bits", "keep_rule", "reading", "select_channels", "to_uint8"]

BIT_STEPS = (8, 10, 12, 14, 16, 32)


@dataclass(frozen=True)
class ReadOptions:
    """How a reader maps a file's intensities to 8 bits (see the module docstring).

    ``bits``: the bit depth of integer images whose file does not state it (PNG, TIFF);
    ``None`` infers it from the image's maximum. ``percentiles``: ``(low, high)`` in 0-100 to
    window each image on its own percentiles instead (also overrides a DICOM window).
    ``pixel_size_um``: micrometres per pixel for files that do not state a spacing (the decoded
    :class:`ImageInfo` then reports ``(pixel_size_um, pixel_size_um)``); a file's own spacing wins.

    A study's ``reader`` table (:mod:`medfuse.study`) is one of these; :meth:`to_dict` is what
    cache keys and bundle manifests record, :meth:`from_dict` reads it back.
    """

    bits: int | None = None
    percentiles: tuple[float, float] | None = None
    pixel_size_um: float | None = None

    def __post_init__(self) -> None:
        if self.bits is not None and not 1 <= int(self.bits) <= 32:
            raise ValueError(f"ReadOptions.bits={self.bits!r}: expected a bit depth between 1 and 32")
        if self.percentiles is not None:
            lo, hi = (float(v) for v in self.percentiles)
            if not 0 <= lo < hi <= 100:
                raise ValueError(f"ReadOptions.percentiles={self.percentiles!r}: expected (low, high) "
                                 "with 0 <= low < high <= 100")
            object.__setattr__(self, "percentiles", (lo, hi))
        if self.pixel_size_um is not None and not float(self.pixel_size_um) > 0:
            raise ValueError(f"ReadOptions.pixel_size_um={self.pixel_size_um!r}: expected micrometres "
                             "per pixel > 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"bits": ..., "percentiles": [lo, hi] | None, "pixel_size_um": ...}``."""
        return {"bits": None if self.bits is None else int(self.bits),
                "percentiles": None if self.percentiles is None else list(self.percentiles),
                "pixel_size_um": None if self.pixel_size_um is None else float(self.pixel_size_um)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ReadOptions:
        """Inverse of :meth:`to_dict`; ``None`` or ``{}`` gives the defaults."""
        data = dict(data or {})
        pct = data.get("percentiles")
        return cls(bits=data.get("bits"), percentiles=None if pct is None else tuple(pct),
                   pixel_size_um=data.get("pixel_size_um"))

    @classmethod
    def coerce(cls, value: ReadOptions | dict[str, Any] | None) -> ReadOptions:
        """``value`` as options: itself, :meth:`from_dict` of a dict, the defaults for ``None``
        (the Python API's ``reader=`` arguments); a bad value raises ``InvalidInputError`` naming it."""
        if isinstance(value, cls):
            return value
        try:
            return cls.from_dict(value)
        except (TypeError, ValueError) as exc:
            from .errors import InvalidInputError

            raise InvalidInputError(f"reader={value!r}: {exc} (keys: bits, percentiles, pixel_size_um)") from None


_READING: contextvars.ContextVar[ReadOptions | None] = contextvars.ContextVar("medfuse_read_options", default=None)


@contextlib.contextmanager
def reading(options: ReadOptions | None) -> Iterator[None]:
    """Inside this block, loaders' scans (:func:`medfuse.scan.scan_files`) decode with ``options``
    (a study's ``reader``), so the data report's bit depths and spacings are the study's."""
    token = _READING.set(options)
    try:
        yield
    finally:
        _READING.reset(token)


def current_read_options() -> ReadOptions:
    """The options of the enclosing :func:`reading` block, else the defaults."""
    return _READING.get() or ReadOptions()


@dataclass
class ImageInfo:
    """What decoding one file learnt: ``format`` (png, jpeg, tiff, dicom, bmp, ...), ``bit_depth``
    (stored bits: DICOM ``BitsStored``, else the depth the normalisation used; 32 for float),
    ``dtype`` of the decoded samples, ``channels`` in the file, ``spacing_um`` as ``(row, column)``
    micrometres per pixel when the file states a physical unit (else ``None``), ``frames`` (pages or
    frames in the file; only the first is used), ``height``/``width``."""

    format: str = ""
    bit_depth: int = 8
    dtype: str = "uint8"
    channels: int = 3
    spacing_um: tuple[float, float] | None = None
    frames: int = 1
    height: int = 0
    width: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["spacing_um"] = list(self.spacing_um) if self.spacing_um else None
        return out


def infer_bits(max_value: float) -> int:
    """The smallest of 8/10/12/14/16/32 bits whose full scale holds ``max_value``."""
    for bits in BIT_STEPS:
        if max_value <= 2**bits - 1:
            return bits
    return 64


def _linear(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    scaled = (arr.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ViewRule:
    """How one decoded image's samples map to its 8-bit view, fixed when it was decoded (the
    module's rule, so every channel or channel subset scales as the whole image did).

    ``kind``: ``"identity"`` (uint8), ``"bits"`` (``v * 255 // (2**bits - 1)``), ``"linear"``
    (``[lo, hi] -> [0, 255]``, rounded, clipped) or ``"unit"`` (floats in [0, 1] times 255);
    ``bits``: the depth reported; ``invert``: ``255 - v`` afterwards (DICOM ``MONOCHROME1``);
    ``alpha``: a 4th channel is alpha, composited over white in the RGB view.
    """

    kind: str = "identity"
    bits: int = 8
    lo: float = 0.0
    hi: float = 0.0
    invert: bool = False
    alpha: bool = False


def choose_rule(arr: np.ndarray, options: ReadOptions | None = None, bits: int | None = None,
                value_range: tuple[float, float] | None = None) -> ViewRule:
    """The :class:`ViewRule` the module's rule gives ``arr`` (see :func:`to_uint8`)."""
    options = options or ReadOptions()
    depth = bits or (8 if arr.dtype == np.uint8 else options.bits)
    if arr.dtype.kind == "f":
        depth = 32
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    if options.percentiles is not None:
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        lo, hi = np.percentile(finite, options.percentiles) if finite.size else (0.0, 0.0)
        return ViewRule("linear", int(depth or infer_bits(float(arr.max(initial=0)))), float(lo), float(hi))
    if arr.dtype == np.uint8 and value_range is None:
        return ViewRule("identity", 8)
    if value_range is not None:
        return ViewRule("linear", int(depth or infer_bits(float(arr.max(initial=0)))), *map(float, value_range))
    lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
    if arr.dtype.kind == "f":
        return ViewRule("unit", 32) if lo >= 0 and hi <= 1 else ViewRule("linear", 32, lo, hi)
    if lo < 0:
        return ViewRule("linear", int(depth or infer_bits(hi - lo)), lo, hi)
    return ViewRule("bits", int(depth or infer_bits(hi)))


def apply_rule(arr: np.ndarray, rule: ViewRule) -> np.ndarray:
    """``arr`` (any shape) to ``uint8`` by ``rule``'s scaling (``invert`` included, ``alpha`` not)."""
    if arr.dtype.kind == "f":
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    if rule.kind == "identity":
        out = arr if arr.dtype == np.uint8 else np.clip(arr, 0, 255).astype(np.uint8)
    elif rule.kind == "linear":
        out = _linear(arr, rule.lo, rule.hi)
    elif rule.kind == "unit":
        out = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    else:
        top = 2**rule.bits - 1
        wide = np.uint32 if rule.bits <= 24 else np.uint64  # v * 255 fits; uint32 is ~2x faster
        out = (np.clip(arr, 0, top).astype(wide) * 255 // top).astype(np.uint8)
    return 255 - out if rule.invert else out


def to_uint8(arr: np.ndarray, options: ReadOptions | None = None, bits: int | None = None,
             value_range: tuple[float, float] | None = None) -> tuple[np.ndarray, int]:
    """Map ``arr`` to ``uint8`` by the module's rule; returns ``(array, bit depth used)``.

    ``bits``: the file's stored bit depth (wins over the option and the inference);
    ``value_range``: a known ``(lo, hi)`` (e.g. a DICOM window's output range).
    """
    rule = choose_rule(arr, options, bits, value_range)
    return apply_rule(arr, rule), rule.bits


class SourceImage(np.ndarray):
    """A decoded image at its stored depth: ``(H, W, C)`` samples (``C`` = the file's channels,
    1 for grey; uint16, int32, float32, ...) and the :class:`ViewRule` of its 8-bit view.

    What the engine hands to plugins whose ``input_dtype`` is ``"native"``; every other plugin
    gets :func:`as_uint8` of it. Files that decode to 8 bits are plain ``uint8 (H, W, 3)`` arrays,
    never a ``SourceImage``. ``np.asarray`` gives the plain samples; slicing keeps the rule.
    """

    view_rule: ViewRule | None

    def __new__(cls, samples: np.ndarray, rule: ViewRule) -> SourceImage:
        arr = np.asarray(samples)
        if arr.ndim == 2:
            arr = arr[..., None]
        obj = np.ascontiguousarray(arr).view(cls)
        obj.view_rule = rule
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        self.view_rule = getattr(obj, "view_rule", None)

    def __reduce__(self):  # pickling (worker processes) keeps the rule
        fn, args, state = super().__reduce__()
        return fn, args, (state, self.view_rule)

    def __setstate__(self, state):
        base, self.view_rule = state
        super().__setstate__(base)


def keep_rule(source: np.ndarray, arr: np.ndarray) -> np.ndarray:
    """``arr`` (cut or transformed from ``source``) with ``source``'s 8-bit view rule, when
    ``source`` is a :class:`SourceImage` and ``arr`` lost it (``np.pad``, a plugin's plain array)."""
    rule = getattr(source, "view_rule", None)
    if rule is None or getattr(arr, "view_rule", None) is not None:
        return arr
    return SourceImage(arr, rule)


def select_channels(image: np.ndarray, channels: tuple[int, ...] | list[int],
                    where: str = "channels") -> np.ndarray:
    """``image[..., channels]`` (``(H, W, len(channels))``), keeping a :class:`SourceImage`'s rule;
    an index the image does not have is a ``ValueError`` naming ``where``."""
    n = 1 if image.ndim == 2 else image.shape[2]
    bad = [c for c in channels if not 0 <= int(c) < n]
    if bad:
        raise ValueError(f"{where} = {list(channels)}: channel {bad[0]} does not exist; this image has "
                         f"{n} channel{'s' if n != 1 else ''} (0 to {n - 1})")
    arr = image[..., None] if image.ndim == 2 else image
    return arr[..., [int(c) for c in channels]]


def as_uint8(image: np.ndarray, channels: tuple[int, ...] | list[int] | None = None,
             where: str = "channels") -> np.ndarray:
    """The 8-bit RGB view ``uint8 (H, W, 3)`` of an image, the one helper every conversion uses.

    A :class:`SourceImage` is scaled by its :class:`ViewRule` (the reader's rule, fixed at
    decoding, so the view equals what :func:`medfuse.imageio.read_image` returns); ``channels``
    first keeps those channels (1 is replicated to grey, 2 become ``(c0, c1, 0)``, 3 are RGB).
    A plain ``uint8 (H, W, 3)`` array without ``channels`` is returned as it is (no copy); other
    plain arrays follow :func:`to_uint8` and :func:`channels_to_rgb`.
    """
    rule = getattr(image, "view_rule", None)
    if rule is not None:  # every uint8 plugin of one image shares its view (made once per channel set)
        views = image.__dict__.setdefault("_views", {})
        key = None if channels is None else tuple(int(c) for c in channels)
        if key not in views:
            views[key] = _view(image, rule, channels, where)
        return views[key]
    if channels is not None:
        image = select_channels(image, channels, where)
    arr = np.asarray(image)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:
        return arr
    arr = arr.astype(np.uint8) if arr.dtype.kind == "b" else arr
    return channels_to_rgb(to_uint8(arr)[0])


def _view(image: np.ndarray, rule: ViewRule, channels: Sequence[int] | None, where: str) -> np.ndarray:
    """The 8-bit RGB view of a :class:`SourceImage` (``channels`` first), by its fixed ``rule``."""
    if channels is not None:
        image = select_channels(image, channels, where)
    arr = np.asarray(image)
    alpha = rule.alpha and channels is None
    if not alpha and arr.ndim == 3 and arr.shape[2] > 3:
        arr = arr[..., :3]
    return channels_to_rgb(apply_rule(arr, rule), alpha=alpha)


def channels_to_rgb(arr: np.ndarray, alpha: bool = False) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` uint8 to ``(H, W, 3)``: grey is replicated; 2 channels become
    ``(c0, c1, 0)``; 3 are RGB; 4+ keep the first 3, or (``alpha``) composite RGB over white with
    the 4th as alpha, as for RGBA PNGs."""
    if arr.ndim == 2:
        arr = arr[..., None]
    c = arr.shape[2]
    if c == 1:
        out = np.repeat(arr, 3, axis=2)
    elif c == 2:
        out = np.concatenate([arr, np.zeros(arr.shape[:2] + (1,), np.uint8)], axis=2)
    elif c >= 4 and alpha:
        a = arr[..., 3:4].astype(np.float32) / 255.0
        rgb = arr[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
        out = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    else:
        out = arr[..., :3]
    return np.ascontiguousarray(out)
