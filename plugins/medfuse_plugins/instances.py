"""Finding cells in smears: instance segmenters (``image -> int32 label image``, 0 background).

Plugins (contract :class:`medfuse.contracts.InstanceMaker`)
----------------------------------------------------------
``rbc_instances``
    Red cells: Otsu on ``255 - G`` (cells are darker than the background), holes (central
    pallor) filled, touching cells split by a distance-transform watershed
    (:func:`.segmentation.split_cells`). The cell size is estimated per image unless given, so
    the same defaults serve 640x480 BCCD fields (cell radius ~45 px) and 1224x960 AneRBC fields
    (~10 px). Objects mostly made of stained (purple) pixels are left to ``wbc_instances``.
``wbc_instances``
    White cells: nuclei are the dark purple pixels of the stain channel ``B - G`` (above
    ``nucleus_threshold``); fragments of one lobed nucleus closer than ``merge_radius`` are one
    cell; groups smaller than ``min_nucleus_area`` (platelets, debris) are dropped; each cell is
    its nucleus plus the surrounding cytoplasm: foreground pixels within ``cytoplasm_radius``.
``platelet_instances``
    Platelets: small purple blobs (``B - G`` above ``threshold``) with an area between
    ``min_area`` and ``max_area``, away from white-cell nuclei.
``smear_cells``
    All three on one label image: white cells first, then platelets, then red cells on the pixels
    left (a red-cell instance that mostly overlaps a white cell is dropped).

Sizes are in pixels of the decoded image. Stain thresholds suit Romanowsky/May-Grünwald/Wright
stains (purple nuclei, pink red cells); measured precision/recall on BCCD and AneRBC are in
RESULTS.md (``bench/eval_cell_finding.py``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from medfuse import hookimpl
from medfuse.contracts import InstanceMaker
from medfuse.errors import InvalidInputError

from .segmentation import bbox, binary_opening, fill_holes, otsu_levels, split_cells, stain_channel


def relabel(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered ``1..n`` in increasing order of their values, 0 kept."""
    labels = np.asarray(labels)
    if labels.size == 0 or labels.max() <= 0:
        return np.zeros(labels.shape, np.int32)
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    table = np.zeros(present.size, np.int32)
    table[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    return table[labels]


def estimate_radius(fg: np.ndarray) -> float:
    """Typical cell radius (px) of a foreground of round cells: the area-weighted median, over
    connected components, of the component's largest distance to the background (a cluster of
    touching cells still has about one cell radius there; debris weighs little)."""
    from scipy import ndimage as ndi

    comp, n = ndi.label(fg)
    if n == 0:
        return 0.0
    dist = ndi.distance_transform_edt(fg)
    peak = np.asarray(ndi.maximum(dist, comp, np.arange(1, n + 1)), float)
    area = np.bincount(comp.ravel(), minlength=n + 1)[1:].astype(float)
    order = np.argsort(peak)
    cum = np.cumsum(area[order])
    return float(peak[order][np.searchsorted(cum, cum[-1] / 2)])


def _downscale_factor(radius: float, target: float = 12.0) -> int:
    """Integer factor that brings a cell radius near ``target`` px (1 for small cells)."""
    return max(1, int(radius // target))


def _upscale(labels: np.ndarray, factor: int, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour upscaling of a label image subsampled by ``factor``, cut to ``shape``."""
    if factor == 1:
        return labels
    up = np.repeat(np.repeat(labels, factor, axis=0), factor, axis=1)
    out = np.zeros(shape[:2], labels.dtype)
    h, w = min(shape[0], up.shape[0]), min(shape[1], up.shape[1])
    out[:h, :w] = up[:h, :w]
    return out


def _within(binary: np.ndarray, radius: float) -> np.ndarray:
    """Pixels within ``radius`` (Euclidean) of ``binary``: a disk dilation by distance transform."""
    from scipy import ndimage as ndi

    return ndi.distance_transform_edt(~binary) <= radius


def stain(image: np.ndarray) -> np.ndarray:
    """``B - G`` as int16, 3x3 mean (purple nuclei and platelets high, red cells and background low)."""
    from scipy import ndimage as ndi

    s = image[..., 2].astype(np.int16) - image[..., 1].astype(np.int16)
    return ndi.uniform_filter(s, 3)


def foreground(image: np.ndarray, open_radius: int = 1) -> np.ndarray:
    """Cells of a smear, holes filled: Otsu on ``255 - G`` (cells darker than the background),
    opened by a disk of ``open_radius``; empty for a flat image."""
    s = stain_channel(image, "darkness")
    levels = otsu_levels(s, 2)
    if levels is None:
        return np.zeros(s.shape, bool)
    fg = binary_opening(s > levels[0], open_radius) if open_radius > 0 else s > levels[0]
    return fill_holes(fg)


def rbc_labels(image: np.ndarray, min_distance: int = 0, min_area: int = 0, open_radius: int = 1,
               stained_threshold: int = 60, max_stained: float = 0.2, fg: np.ndarray | None = None,
               s: np.ndarray | None = None) -> np.ndarray:
    """Red-cell instance labels (see ``rbc_instances``); ``fg``/``s``: precomputed
    :func:`foreground` and :func:`stain`."""
    filled = foreground(image, open_radius) if fg is None else fg
    if not filled.any():
        return np.zeros(filled.shape, np.int32)
    r = estimate_radius(filled[::2, ::2]) * 2 if (min_distance <= 0 or min_area <= 0) else 0.0
    md = float(min_distance) if min_distance > 0 else max(2.0, 0.35 * r)
    ma = float(min_area) if min_area > 0 else max(8.0, 0.2 * np.pi * r * r)
    f = _downscale_factor(md / 0.35)  # split at a scale where cells are ~12 px in radius
    small, n = split_cells(filled[::f, ::f], max(1, int(round(md / f))), max(1, int(ma / (f * f))), fill=False)
    labels = _upscale(small, f, image.shape)
    if n and max_stained < 1.0:
        purple = (stain(image) if s is None else s) > stained_threshold
        total = np.bincount(labels.ravel(), minlength=n + 1)
        hit = np.bincount(labels.ravel(), weights=purple.ravel(), minlength=n + 1)
        drop = hit > max_stained * np.maximum(total, 1)
        drop[0] = False
        if drop.any():
            labels[drop[labels]] = 0
            labels = relabel(labels)
    return labels


def wbc_labels(image: np.ndarray, nucleus_threshold: int = 60, merge_radius: int = 8,
               min_nucleus_area: int = 600, cytoplasm_radius: int = 20, fg: np.ndarray | None = None,
               s: np.ndarray | None = None) -> np.ndarray:
    """White-cell instance labels (see ``wbc_instances``); ``fg``/``s`` as in :func:`rbc_labels`."""
    from scipy import ndimage as ndi

    s = stain(image) if s is None else s
    out = np.zeros(s.shape, np.int32)
    dark = s > nucleus_threshold
    if int(dark.sum()) < min_nucleus_area:
        return out
    nucleus = binary_opening(dark, 1)
    reach_px = merge_radius + cytoplasm_radius + 2
    box = bbox(nucleus, reach_px)  # the work happens around the nuclei only
    if box is None:
        return out
    nuc = nucleus[box]
    groups, n = ndi.label(_within(nuc, merge_radius) if merge_radius > 0 else nuc)
    area = np.bincount(groups.ravel(), weights=nuc.ravel(), minlength=n + 1)
    keep = area >= min_nucleus_area
    keep[0] = False
    if not keep[1:].any():
        return out
    markers = np.where(nuc & keep[groups], groups, 0).astype(np.int32)
    if cytoplasm_radius > 0:
        from skimage.segmentation import watershed

        dist = ndi.distance_transform_edt(markers == 0)
        cells = (fg[box] if fg is not None else foreground(image)[box]) | (markers > 0)
        markers = watershed(dist, markers, mask=cells & (dist <= cytoplasm_radius)).astype(np.int32)
    out[box] = markers
    return relabel(out)


def platelet_labels(image: np.ndarray, threshold: int = 45, min_area: int = 100, max_area: int = 1200,
                    nucleus_threshold: int = 60, nucleus_area: int = 600, grow: int = 4,
                    s: np.ndarray | None = None) -> np.ndarray:
    """Platelet instance labels (see ``platelet_instances``); ``s`` as in :func:`rbc_labels`."""
    from scipy import ndimage as ndi

    s = stain(image) if s is None else s
    blobs, n = ndi.label(binary_opening(s > threshold, 1))
    if n == 0:
        return np.zeros(s.shape, np.int32)
    area = np.bincount(blobs.ravel(), minlength=n + 1)
    nuc = np.bincount(blobs.ravel(), weights=(s > nucleus_threshold).ravel(), minlength=n + 1)
    keep = (area >= min_area) & (area <= max_area) & (nuc < nucleus_area)
    keep[0] = False
    labels = np.where(keep[blobs], blobs, 0).astype(np.int32)
    if grow > 0 and keep.any():
        box = bbox(labels > 0, grow + 1)
        dist, (iy, ix) = ndi.distance_transform_edt(labels[box] == 0, return_indices=True)
        labels[box] = np.where(dist <= grow, labels[box][iy, ix], 0)
    return relabel(labels)


class _Finder(InstanceMaker):
    """Shared parameter check: sizes and radii are non-negative integers."""

    def validate_params(self) -> None:
        for name, value in self.get_params(deep=False).items():
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise InvalidInputError(f"{self.name}: {name}={value}; expected a value >= 0")


class RedCellSplit:
    """Touching red cells split by the distance-transform watershed of :func:`rbc_labels`: the
    parameters and the call shared by ``rbc_instances`` and ``unet_instances`` (a mixin, listed
    before the plugin base so that its parameter docs are inherited).

    Parameters
    ----------
    min_distance
        Minimal distance (px) between cell centres; 0 = 0.35 x the estimated cell radius.
    min_area
        Objects smaller than this (px) are dropped; 0 = 0.2 x the estimated cell area.
    stained_threshold
        B - G above this is stained (nucleus, platelet) matter.
    max_stained
        Drop instances with more than this fraction of stained pixels (1 = keep all).
    """

    SPLIT_PARAMS: ClassVar[tuple[str, ...]] = ("min_distance", "min_area", "stained_threshold", "max_stained")

    def _split(self, image: np.ndarray, open_radius: int = 1, fg: np.ndarray | None = None) -> np.ndarray:
        """Instance labels of ``image`` (foreground ``fg``, else :func:`foreground` with ``open_radius``)."""
        return rbc_labels(image, self.min_distance, self.min_area, open_radius, self.stained_threshold,
                          self.max_stained, fg=fg)


class RbcInstances(RedCellSplit, _Finder):
    """Red cells of a smear as instances: Otsu foreground, distance-transform watershed split.

    ``min_distance``/``min_area`` 0 (default): estimated per image from the cell radius r (median
    largest distance to the background per connected component, area-weighted): ``0.35 r``
    and ``0.2 pi r^2``. Large cells (r > 24 px) are split on a subsampled foreground (cells ~12 px in
    radius there) and the labels upscaled, so a 640x480 BCCD field costs about what a small one does. Instances with more
    than ``max_stained`` of their pixels purple (``B - G > stained_threshold``) are dropped (white
    cells, platelets: see ``smear_cells``).

    Parameters
    ----------
    open_radius
        Radius (px) of the opening applied to the foreground (0 = none).
    """

    name: ClassVar[str] = "rbc_instances"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {"min_distance": 3, "min_area": 4}

    def __init__(self, min_distance: int = 0, min_area: int = 0, open_radius: int = 1,
                 stained_threshold: int = 60, max_stained: float = 0.2):
        self._store_params(locals())

    def _predict_instances(self, image: np.ndarray) -> np.ndarray:
        return self._split(image, self.open_radius)


class WbcInstances(_Finder):
    """White cells of a smear as instances: purple nuclei (``B - G``), lobes merged, plus cytoplasm.

    A white cell is a group of nucleus pixels (``B - G > nucleus_threshold`` after a 3x3 mean)
    whose fragments lie within ``merge_radius`` of each other and that holds at least
    ``min_nucleus_area`` nucleus pixels, plus the smear foreground within ``cytoplasm_radius`` of
    it (split between neighbouring white cells by distance).

    Parameters
    ----------
    nucleus_threshold
        B - G above this (after a 3x3 mean) is nucleus.
    merge_radius
        Nucleus fragments closer than this (px) are one cell (lobed nuclei).
    min_nucleus_area
        Nucleus groups with fewer pixels are not white cells (platelets, debris).
    cytoplasm_radius
        Foreground within this distance (px) of the nucleus is the cell's cytoplasm.
    """

    name: ClassVar[str] = "wbc_instances"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {"min_nucleus_area": 10}

    def __init__(self, nucleus_threshold: int = 60, merge_radius: int = 8, min_nucleus_area: int = 600,
                 cytoplasm_radius: int = 20):
        self._store_params(locals())

    def _predict_instances(self, image: np.ndarray) -> np.ndarray:
        return wbc_labels(image, self.nucleus_threshold, self.merge_radius, self.min_nucleus_area,
                          self.cytoplasm_radius)


class PlateletInstances(_Finder):
    """Platelets of a smear as instances: small purple blobs away from white-cell nuclei.

    Blobs of ``B - G > threshold`` (3x3 mean, opened) with ``min_area``-``max_area`` pixels and
    fewer than ``nucleus_area`` nucleus-dark pixels, grown by ``grow`` px.

    Parameters
    ----------
    threshold
        B - G above this (after a 3x3 mean) is platelet stain.
    min_area
        Smallest platelet (px).
    max_area
        Largest platelet (px); bigger purple blobs are white cells.
    nucleus_threshold
        B - G above this is nucleus-dark.
    nucleus_area
        Blobs with this many nucleus-dark pixels are white cells, not platelets.
    grow
        Each blob is grown by this many px (its pale rim).
    """

    name: ClassVar[str] = "platelet_instances"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {"min_area": 2}

    def __init__(self, threshold: int = 45, min_area: int = 100, max_area: int = 1200, nucleus_threshold: int = 60,
                 nucleus_area: int = 600, grow: int = 4):
        self._store_params(locals())

    def _predict_instances(self, image: np.ndarray) -> np.ndarray:
        return platelet_labels(image, self.threshold, self.min_area, self.max_area, self.nucleus_threshold,
                               self.nucleus_area, self.grow)


class SmearCells(_Finder):
    """Every cell of a smear as instances: white cells, then platelets, then red cells.

    ``wbc_instances`` and ``platelet_instances`` with their defaults and the given thresholds,
    then ``rbc_instances`` on the rest: a red-cell instance with more than half of its pixels
    already taken is dropped, the others keep their free pixels.

    Parameters
    ----------
    nucleus_threshold
        B - G above this is nucleus (white cells).
    platelet_threshold
        B - G above this is platelet stain.
    min_nucleus_area
        Nucleus groups with fewer pixels are not white cells.
    platelets
        Also find platelets.
    """

    name: ClassVar[str] = "smear_cells"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {"min_nucleus_area": 10}

    def __init__(self, nucleus_threshold: int = 60, platelet_threshold: int = 45, min_nucleus_area: int = 600,
                 platelets: bool = True):
        self._store_params(locals())

    def _predict_instances(self, image: np.ndarray) -> np.ndarray:
        fg, s = foreground(image), stain(image)
        out = wbc_labels(image, self.nucleus_threshold, min_nucleus_area=self.min_nucleus_area, fg=fg, s=s)
        n = int(out.max())
        if self.platelets:
            plt = platelet_labels(image, self.platelet_threshold, nucleus_threshold=self.nucleus_threshold,
                                  nucleus_area=self.min_nucleus_area, s=s)
            free = (plt > 0) & (out == 0)
            out[free] = plt[free] + n
            n = int(out.max())
        rbc = rbc_labels(image, stained_threshold=self.nucleus_threshold, max_stained=1.0, fg=fg, s=s)
        if rbc.max():
            total = np.bincount(rbc.ravel())
            taken = np.bincount(rbc.ravel(), weights=(out > 0).ravel(), minlength=total.size)
            ok = taken <= 0.5 * total
            ok[0] = False
            put = ok[rbc] & (out == 0)
            out[put] = rbc[put] + n
        return relabel(out)


INSTANCE_PLUGINS = (RbcInstances, WbcInstances, PlateletInstances, SmearCells)


@hookimpl
def medfuse_plugins():
    return list(INSTANCE_PLUGINS)
