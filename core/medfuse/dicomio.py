"""DICOM decoding with pydicom (see :mod:`medfuse.imageio` for the rules).

Order of operations: decode the first frame (multi-frame files: frame 0 only) -> modality LUT
(rescale slope/intercept or Modality LUT Sequence) -> VOI LUT Sequence or the first window
centre/width -> 8 bits (the window's output range; without a window, unsigned values with no
rescale by ``BitsStored``, others by the stored range through the modality LUT, see
:func:`output_range`) -> ``MONOCHROME1`` inverted (``255 - v``) -> RGB. ``PALETTE COLOR``
goes through its colour LUT. ``ReadOptions.percentiles`` replaces the VOI step by the image's own
percentiles. A transfer syntax that no installed decoder can handle is an ``ImageReadError``
naming the syntax and the packages pydicom would need.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from .intensity import ImageInfo, ReadOptions, SourceImage, channels_to_rgb, choose_rule

__all__ = ["is_dicom", "decode_dicom"]

DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom(data: bytes, name: str) -> bool:
    """A Part-10 file (``DICM`` after the 128-byte preamble) or a ``.dcm``/``.dicom`` file name."""
    return data[128:132] == b"DICM" or name.lower().endswith(DICOM_SUFFIXES)


def output_range(ds) -> tuple[float, float]:
    """The value range after the modality LUT, as pydicom's ``apply_windowing`` computes it:
    the stored range (``BitsStored``, signed or not) through rescale slope/intercept, or
    ``[0, 2**bits - 1]`` of a Modality LUT Sequence."""
    bits = int(ds.BitsStored)
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    if int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = sorted((lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)))
    return lo, hi


def _spacing_um(ds) -> tuple[float, float] | None:
    """``PixelSpacing`` (else ``ImagerPixelSpacing``), mm -> micrometres, as ``(row, column)``."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        if value is not None and len(value) == 2:
            try:
                row, col = float(value[0]) * 1000.0, float(value[1]) * 1000.0
            except (TypeError, ValueError):
                continue
            if row > 0 and col > 0:
                return row, col
    return None


def decode_dicom(data: bytes, name: str, options: ReadOptions, check: Callable[[int, int], None],
                 error: type[Exception]) -> tuple[np.ndarray, ImageInfo]:
    """Decode a DICOM file's first frame with its :class:`ImageInfo`: a
    :class:`~medfuse.intensity.SourceImage` (the values after the modality and VOI LUTs, as
    stored for ``MONOCHROME1``; its rule windows, scales and inverts), or ``uint8 (H, W, 3)`` for
    plain 8-bit data.

    ``check(height, width)`` is called before any pixel is decoded (the pixel limit);
    ``error`` is the exception type raised for an unusable file.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder, pixel_array

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except InvalidDicomError as exc:
        raise error(f"{name}: not a readable DICOM file ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - force=True parses anything; garbage fails in many ways
        raise error(f"{name}: not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if data[128:132] != b"DICM":
            raise error(f"{name}: not a DICOM image (no DICM preamble and no pixel data)")
        raise error(f"{name}: DICOM file without pixel data (not an image, e.g. a report or structure set)")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsStored)
    except (AttributeError, TypeError, ValueError):
        raise error(f"{name}: DICOM image without Rows/Columns/BitsStored in its header") from None
    check(rows, cols)
    meta = getattr(ds, "file_meta", None)
    tsyntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if tsyntax is not None and tsyntax.is_compressed:
        try:
            decoder = get_decoder(tsyntax)
        except NotImplementedError:
            raise error(f"{name}: DICOM transfer syntax {tsyntax.name} ({tsyntax}) is not supported by "
                        "pydicom") from None
        if not decoder.is_available:
            needs = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
            raise error(f"{name}: DICOM transfer syntax {tsyntax.name} ({tsyntax}) needs a decoder that is "
                        f"not installed; install one of: {needs}")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        arr = pixel_array(ds, index=0 if frames > 1 else None)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for broken pixel data
        raise error(f"{name}: cannot decode DICOM pixel data ({type(exc).__name__}: {exc})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1))
    if photometric == "PALETTE COLOR":
        values = np.asarray(apply_color_lut(arr, ds))
        rule = choose_rule(values, options)
        samples = 3
    elif samples == 1:
        values = apply_modality_lut(arr, ds)
        # unsigned stored values with no modality LUT: the bit-depth rule; else the LUT's range
        plain = values is arr and int(ds.get("PixelRepresentation", 0)) == 0
        value_range: tuple[float, float] | None = None if plain else output_range(ds)
        if options.percentiles is None:
            voi = ds.get("VOILUTSequence")
            windowed = apply_voi_lut(values, ds)
            if windowed is not values:
                if voi and voi[0].get("LUTDescriptor") is not None and voi[0].get("LUTData") is not None:
                    value_range = (0.0, float(2 ** int(voi[0].LUTDescriptor[2]) - 1))
                values = windowed
        values = np.asarray(values)
        rule = replace(choose_rule(values, options, bits=bits, value_range=value_range),
                       invert=photometric == "MONOCHROME1")
    else:
        values = np.asarray(arr)
        rule = choose_rule(values, options, bits=bits)
    info = ImageInfo(format="dicom", bit_depth=bits, dtype=str(arr.dtype), channels=samples,
                     spacing_um=_spacing_um(ds), frames=frames, height=rows, width=cols)
    if values.dtype == np.uint8 and rule.kind == "identity" and not rule.invert:
        return channels_to_rgb(values), info
    return SourceImage(values, rule), info
