"""TIFF decoding with tifffile (see :mod:`medfuse.imageio` for the rules).

* first image series, first page: further pages (z, time, a stack) are not read; an ImageJ/OME
  channel axis (``C``) is the exception: its channels (up to 16) are read as channels;
* samples within a page (``S``: RGB, 2-channel, ...) and channels map to RGB by
  :func:`medfuse.intensity.channels_to_rgb` (grey replicated; 2 channels -> ``(c0, c1, 0)``;
  the first 3 of more, or RGBA composited over white when the 4th sample is alpha);
* the decoded image keeps its stored depth and channels (a
  :class:`~medfuse.intensity.SourceImage`); its 8-bit view follows
  :func:`medfuse.intensity.to_uint8` fixed over all samples, or the first 3 channels of a
  channel axis;
* spacing from ``XResolution``/``YResolution`` when ``ResolutionUnit`` is inch or centimetre (or
  millimetre/micrometre), or when it is none and ImageJ metadata names ``um``/``micron``/``mm``/
  ``nm``; otherwise unknown.

8-bit pages with 1, 3 or 4 samples and no channel axis are returned as ``None`` by
:func:`decode_tiff` so that the caller decodes them with PIL exactly as before (palette,
``MINISWHITE``, YCbCr and JPEG-in-TIFF included).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from .intensity import ImageInfo, ReadOptions, SourceImage, choose_rule

__all__ = ["is_tiff", "decode_tiff", "tiff_spacing_um"]

MAX_CHANNELS = 16  # channels of a channel axis read (the 8-bit view shows the first 3)
_UNIT_UM = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}  # RESUNIT inch, cm, mm, um
_IMAGEJ_UNIT_UM = {"um": 1.0, "µm": 1.0, "\\u00B5m": 1.0, "micron": 1.0, "microns": 1.0, "mm": 1000.0,
                   "nm": 0.001, "cm": 10000.0}


def is_tiff(data: bytes) -> bool:
    return data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def tiff_spacing_um(tif, page) -> tuple[float, float] | None:
    """``(row, column)`` micrometres per pixel from the resolution tags, or ``None``."""
    try:
        xres, yres = (float(v) for v in page.resolution)
        unit = int(page.resolutionunit)
    except (AttributeError, TypeError, ValueError):
        return None
    if xres <= 0 or yres <= 0:
        return None
    scale = _UNIT_UM.get(unit)
    if scale is None and unit == 1 and tif.is_imagej:
        scale = _IMAGEJ_UNIT_UM.get(str((tif.imagej_metadata or {}).get("unit", "")).strip().lower())
    return (scale / yres, scale / xres) if scale else None


def decode_tiff(data: bytes, name: str, options: ReadOptions, check: Callable[[int, int], None],
                error: type[Exception]) -> tuple[np.ndarray | None, ImageInfo]:
    """Decode a TIFF to a :class:`~medfuse.intensity.SourceImage` (or plain ``uint8 (H, W, 3)``)
    with its :class:`ImageInfo`; the array is ``None`` for
    a plain 8-bit page, left to PIL (see the module docstring). ``check(height, width)`` runs
    before any pixel is decoded."""
    import tifffile

    try:
        tif = tifffile.TiffFile(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - tifffile raises several types for broken headers
        raise error(f"{name}: corrupt TIFF ({type(exc).__name__}: {exc})") from None
    with tif:
        if not tif.series:
            raise error(f"{name}: TIFF without an image")
        series = tif.series[0]
        page = series.pages[0] if series.pages else tif.pages[0]
        axes, shape = series.axes, series.shape
        if "Y" not in axes or "X" not in axes:
            raise error(f"{name}: TIFF image with axes {axes!r}; expected Y and X")
        height, width = shape[axes.index("Y")], shape[axes.index("X")]
        check(int(height), int(width))
        page_axes = page.axes
        lead_axes, lead_shape = axes[:len(axes) - len(page_axes)], shape[:len(axes) - len(page_axes)]
        samples = int(getattr(page, "samplesperpixel", 1))
        n_channels = lead_shape[lead_axes.index("C")] if "C" in lead_axes else 1
        alpha = samples == 4 and any(int(e) in (1, 2) for e in (getattr(page, "extrasamples", ()) or ()))
        info = ImageInfo(format="tiff", bit_depth=int(page.bitspersample), dtype=str(page.dtype),
                         channels=samples * n_channels, spacing_um=tiff_spacing_um(tif, page),
                         frames=len(tif.pages), height=int(height), width=int(width))
        if page.dtype == np.uint8 and samples in (1, 3, 4) and n_channels == 1:
            return None, info
        try:
            if n_channels > 1:
                index = [0] * len(lead_axes)
                keys = []
                for c in range(min(MAX_CHANNELS, n_channels)):
                    index[lead_axes.index("C")] = c
                    keys.append(int(np.ravel_multi_index(index, lead_shape)))
                planes = tif.asarray(key=keys, series=0)
                arr = np.moveaxis(np.asarray(planes), 0, -1)  # (H, W[, S], C)
                arr = arr.reshape(arr.shape[0], arr.shape[1], -1) if arr.ndim > 3 else arr
            else:
                arr = np.asarray(tif.asarray(key=0, series=0))
                if "S" in page_axes:
                    arr = np.moveaxis(arr, page_axes.index("S"), -1)
        except Exception as exc:  # noqa: BLE001 - e.g. a compression that needs imagecodecs
            raise error(f"{name}: cannot decode TIFF ({type(exc).__name__}: {exc})") from None
    extra = arr.ndim - (3 if arr.ndim >= 3 and ("S" in page_axes or n_channels > 1) else 2)
    for _ in range(max(0, extra)):  # any other page axis (e.g. tiled depth): its first plane
        arr = arr[0]
    # the 8-bit view scales as the first 3 channels of a channel axis (or all samples) decide
    rule = choose_rule(arr[..., :3] if n_channels > 3 and arr.ndim == 3 else arr, options)
    info.bit_depth = rule.bits if arr.dtype.kind in "ui" and arr.dtype.itemsize > 1 else info.bit_depth
    if rule.kind == "identity" and arr.ndim == 3 and arr.shape[2] == 3:
        return np.ascontiguousarray(arr), info
    return SourceImage(arr, replace(rule, alpha=alpha)), info
