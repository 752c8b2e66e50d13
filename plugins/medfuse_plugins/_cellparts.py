"""Shared numpy helpers of the cell-biology blocks (``compartments``, ``red_cell``).

Optical density (OD) is ``-log10(I / I0)`` per channel, with ``I0`` the image's bright
background level (Beer-Lambert: OD is proportional to the amount of stain or haemoglobin a
pixel's light went through, and does not depend on the lamp's brightness). ``I0`` is a high
percentile of the pixels outside the mask, so neighbouring red cells in the crop do not lower it.
"""

from __future__ import annotations

import numpy as np

from .segmentation import centred_component, components, disk, largest_component

BACKGROUND_PERCENTILE = 90.0


def background_level(image: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """Per-channel bright level ``I0`` (float64 ``(3,)``): the 90th percentile (lower value of
    uint8 histogram bins) of the ``outside`` pixels on every second row and column, or of the
    whole image when fewer than 16 of them are outside; at least 1."""
    sub, out = image[::2, ::2], outside[::2, ::2]
    px = sub[out] if np.count_nonzero(out) >= 16 else sub.reshape(-1, sub.shape[-1])
    level = np.empty(px.shape[1])
    for c in range(px.shape[1]):
        cum = np.cumsum(np.bincount(px[:, c], minlength=256))
        level[c] = np.searchsorted(cum, BACKGROUND_PERCENTILE / 100.0 * cum[-1])
    return np.maximum(level, 1.0)


def optical_density(image: np.ndarray, level: np.ndarray) -> np.ndarray:
    """OD ``-log10(I / I0)`` per channel, float32 ``(H, W, 3)``, clipped at 0 (brighter than the
    background is no absorption)."""
    od = -np.log10(np.maximum(image.astype(np.float32), 1.0) / level.astype(np.float32))
    return np.maximum(od, 0.0)


def main_component(binary: np.ndarray, how: str = "largest") -> np.ndarray:
    """The main object of a mask: the largest 8-connected component (``"largest"``,
    :func:`.segmentation.largest_component`) or the one nearest the image centre (``"centre"``,
    :func:`.segmentation.centred_component`)."""
    return centred_component(binary) if how == "centre" else largest_component(binary)


def opening_series(values: np.ndarray, region: np.ndarray, radii: tuple[int, ...]) -> np.ndarray:
    """Per radius, what each pixel loses to that step of successive grey openings with disks of
    ``radii[k]`` px (values outside ``region`` are 0), float32 ``(len(radii), H, W)``."""
    from scipy import ndimage as ndi

    prev = np.where(region, values, 0.0).astype(np.float32)
    out = np.zeros((len(radii), *values.shape), np.float32)
    for k, r in enumerate(radii):
        opened = np.minimum(ndi.grey_opening(prev, footprint=disk(int(r))), prev)
        out[k] = prev - opened
        prev = opened
    return out


def granularity(removed: np.ndarray, values: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Granularity spectrum (CellProfiler's *MeasureGranularity*) of ``region``: the share of its
    total signal that each opening step of :func:`opening_series` (``removed``) takes away (dense
    spots smaller than the disk go first). float64 ``(k,)``; NaN for an empty region or zero
    signal. A smooth region gives ~0 at small radii, a granular one clear values at the
    granules' radius."""
    total = float(values[region].sum()) if region.any() else 0.0
    if total <= 0:
        return np.full(removed.shape[0], np.nan)
    return removed[:, region].sum(axis=1).astype(np.float64) / total


def spots(values: np.ndarray, region: np.ndarray, radius: int, threshold: float) -> tuple[np.ndarray, int]:
    """Small dense spots (granules): pixels whose white top-hat (value minus its grey opening
    with a disk of ``radius`` px) exceeds ``threshold``, inside ``region``. Returns the spot
    pixels (bool) and the number of spots (8-connected components)."""
    from scipy import ndimage as ndi

    v = np.where(region, values, 0.0).astype(np.float32)
    top = v - ndi.grey_opening(v, footprint=disk(int(radius)))
    hit = (top > threshold) & region
    n = components(hit)[1].size - 1
    return hit, int(n)


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is zero or not finite."""
    return float(a) / float(b) if b and np.isfinite(b) else float("nan")
