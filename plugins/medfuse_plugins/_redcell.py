"""Red cells one at a time: haemoglobin density, central pallor, target cells, outline harmonics.

Registered by :mod:`medfuse_plugins.morphology` (the cell-morphology family). The feature list
and what each measures are in :class:`RedCell` and ``docs/cell-features.md``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from medfuse.contracts import Extractor
from medfuse.errors import InvalidInputError

from ._cellparts import background_level, main_component, optical_density, ratio
from .segmentation import bbox, binary_erosion, components, fill_holes, smear_foreground

OUTLINE_SAMPLES = 64  # angular bins of the outline r(theta)
HIGH_FROM = 6  # harmonics from this order on are "spiky" (burr cells, acanthocytes)
CENTRE_DEPTH = 2 / 3  # depth (0 edge, 1 deepest) above which a pixel is "centre"
RIM_DEPTH = 1 / 3  # depth below which a pixel is "rim"
MIN_NEIGHBOUR_SHARE = 0.25  # reference cells for relative size: at least this share of the cell's area


def depth_map(cell: np.ndarray) -> np.ndarray:
    """Normalised depth of every cell pixel: distance to the outline over the largest such
    distance (0 at the edge, 1 at the deepest point), float64; 0 outside the cell. Follows the
    outline's shape, so "centre" and "rim" stay meaningful for elongated cells."""
    from scipy import ndimage as ndi

    d = ndi.distance_transform_edt(cell)
    top = d.max()
    return d / top if top > 0 else d


def outline_radii(cell: np.ndarray, samples: int = OUTLINE_SAMPLES) -> np.ndarray:
    """Radius of the outline from the centroid in ``samples`` equal angular bins, float64: the
    farthest outline pixel per bin (empty bins interpolated, circularly). ``(0,)`` when the cell
    has under 3 outline pixels."""
    edge = cell & ~binary_erosion(cell, 1)
    yy, xx = np.nonzero(edge)
    if yy.size < 3:
        return np.zeros(0)
    cy, cx = np.nonzero(cell)
    dy, dx = yy - cy.mean(), xx - cx.mean()
    theta = np.arctan2(dy, dx)
    k = ((theta + np.pi) / (2 * np.pi) * samples).astype(int) % samples
    r = np.full(samples, -1.0)
    np.maximum.at(r, k, np.hypot(dy, dx) + 0.5)
    ok = r >= 0
    if not ok.all():
        idx = np.arange(samples)
        r = np.interp(idx, idx[ok], r[ok], period=samples)
    return r


def harmonics(r: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    """Amplitudes of orders 1..``n`` of the outline radius ``r(theta)`` over its mean (Fourier
    descriptors: 2 = ellipse, 1 and 3 = egg/teardrop asymmetry), and the energy (root of summed
    squared relative amplitudes) of orders ``HIGH_FROM`` and up (spicules, crenation)."""
    if r.size == 0 or r.mean() <= 0:
        return np.full(n, np.nan), float("nan")
    c = np.abs(np.fft.rfft(r)) / r.size
    rel = c / c[0]
    amp = 2 * rel[1:n + 1]
    amp = np.pad(amp, (0, n - amp.size), constant_values=np.nan)
    return amp, float(2 * np.sqrt((rel[HIGH_FROM:] ** 2).sum()))


class RedCell(Extractor):
    """One red cell per image or object crop: haemoglobin, central pallor, target index, outline.

    The cell is the component of ``mask > 0`` nearest the image centre (holes filled, so the
    pallor belongs to it); without a mask, a smear foreground (Otsu on 255 - G) is used. Optical
    density (OD = -log10(I / I0), green channel: haemoglobin absorbs near 540 nm; ``I0`` the bright
    background outside the mask). Depth: distance to the outline over its maximum (0 edge, 1 centre).

    * ``area``, ``diameter`` (equivalent), ``elongation`` (major / minor axis of the moments);
    * ``od_mean`` (haemoglobin concentration, ~MCHC), ``od_total`` (sum over the cell: haemoglobin
      content, ~MCH), ``od_std``;
    * ``od_rim``, ``od_centre`` (depth < 1/3, > 2/3), ``centre_rim_ratio`` (< 1 for a pale centre,
      ~1 for a flat disc or spherocyte);
    * ``pallor_area_ratio``, ``pallor_diameter_ratio``, ``pallor_offset``: the pale centre (pixels
      of depth > 0.2 whose OD is below ``pallor_fraction`` times the rim's, largest connected part):
      its share of the cell area, its equivalent diameter over the cell's, and the distance of its
      centroid from the cell's over the cell radius (0 when centred; NaN without pallor).
      Hypochromic cells: large ratios; spherocytes: ~0; stomatocytes: elongated, offset pallor;
    * ``target_index``: how much darker the very centre (depth > 0.85) is than the palest ring
      around it, over the rim OD (target cells / codocytes > 0; normal or flat cells ~0);
    * ``profile_<k>``: mean OD in ``profile_bins`` equal depth bins from the edge (0) to the centre,
      over ``od_mean`` (the radial intensity profile);
    * ``harmonic_<k>``: Fourier amplitudes of the outline radius r(theta) over its mean, orders
      1..``harmonics`` (2: elliptocytes; 1, 3: teardrops, irregular shapes), ``harmonic_high``:
      energy of orders 6 and up (burr cells, acanthocytes), ``radius_cv``: r(theta) std over mean;
    * ``relative_area``, ``relative_diameter``: over the median of the complete cells of the image
      (not touching the border, at least ``min_area`` px and a quarter of this cell's area, so
      debris is no reference) when there are at least ``min_cells`` (a smear or a wide crop), else
      NaN; ``cells`` is that count (this cell included when it is complete).

    An empty mask gives NaN everywhere and ``valid = 0``.

    Parameters
    ----------
    harmonics
        Outline Fourier orders reported (1..n).
    profile_bins
        Depth bins of the radial OD profile (edge to centre).
    pallor_fraction
        A centre pixel is pale when its OD is below this fraction of the rim's mean OD.
    min_area
        Objects smaller than this (px) are not cells (relative size, main-cell choice).
    min_cells
        Complete cells needed in the image for relative_area / relative_diameter.
    """

    name: ClassVar[str] = "red_cell"
    block: ClassVar[str] = "rbc"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {"min_area": 4}

    def __init__(self, harmonics: int = 8, profile_bins: int = 8, pallor_fraction: float = 0.75,
                 min_area: int = 30, min_cells: int = 3):
        self._store_params(locals())

    def validate_params(self) -> None:
        """Positive counts, a pallor fraction in (0, 1]."""
        if int(self.harmonics) < 1 or int(self.profile_bins) < 1 or int(self.min_cells) < 1:
            raise InvalidInputError("red_cell: harmonics, profile_bins and min_cells must be >= 1")
        if not 0 < float(self.pallor_fraction) <= 1:
            raise InvalidInputError(f"red_cell: pallor_fraction must be in (0, 1], got {self.pallor_fraction}")

    def feature_names(self) -> list[str]:
        names = ["area", "diameter", "elongation", "od_mean", "od_total", "od_std", "od_rim", "od_centre",
                 "centre_rim_ratio", "pallor_area_ratio", "pallor_diameter_ratio", "pallor_offset", "target_index"]
        names += [f"profile_{k}" for k in range(int(self.profile_bins))]
        names += [f"harmonic_{k}" for k in range(1, int(self.harmonics) + 1)]
        names += ["harmonic_high", "radius_cv", "relative_area", "relative_diameter", "cells", "valid"]
        return names

    def _cells(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        fg = smear_foreground(image) if mask is None else mask > 0
        return fill_holes(fg)

    def _prepare(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        self.validate_params()
        names = self.feature_names()
        out = dict.fromkeys(names, float("nan"))
        fg = self._cells(image, mask)
        labels, area = components(fg)
        keep = area >= int(self.min_area)
        keep[0] = False
        if not keep.any():
            keep = area > 0
            keep[0] = False
        cell_full = main_component(keep[labels], "centre")
        box = bbox(cell_full, 2)
        if box is None:
            out.update(valid=0.0, cells=0.0)
            return np.asarray([out[n] for n in names], np.float32)
        out.update(self._context(labels, keep, float(np.count_nonzero(cell_full))))
        level = background_level(image, ~fg)
        od = optical_density(image[box], level)[..., 1].astype(np.float64)
        cell = cell_full[box]
        out.update(self._density(od, cell))
        out.update(self._outline(cell))
        out["valid"] = 1.0
        return np.asarray([out[n] for n in names], np.float32)

    def _context(self, labels: np.ndarray, keep: np.ndarray, cell_area: float) -> dict[str, float]:
        """Relative size against the image's complete cells (border-touching ones left out)."""
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        complete = keep.copy()
        complete[border] = False
        areas = np.bincount(labels.ravel(), minlength=keep.size)[complete]
        areas = areas[areas >= MIN_NEIGHBOUR_SHARE * cell_area]  # debris and fragments are no reference
        feats = {"cells": float(areas.size), "area": cell_area, "diameter": float(np.sqrt(4 * cell_area / np.pi))}
        if areas.size >= int(self.min_cells):
            med = float(np.median(areas))
            feats.update(relative_area=cell_area / med, relative_diameter=float(np.sqrt(cell_area / med)))
        return feats

    def _density(self, od: np.ndarray, cell: np.ndarray) -> dict[str, float]:
        """OD statistics, rim/centre, pallor, target index and the depth profile of one cell."""
        depth = depth_map(cell)
        v = od[cell]
        mean = float(v.mean())
        rim, centre = od[cell & (depth < RIM_DEPTH)], od[cell & (depth > CENTRE_DEPTH)]
        od_rim = float(rim.mean()) if rim.size else float("nan")
        od_centre = float(centre.mean()) if centre.size else float("nan")
        feats = {"od_mean": mean, "od_total": float(v.sum()), "od_std": float(v.std()), "od_rim": od_rim,
                 "od_centre": od_centre, "centre_rim_ratio": ratio(od_centre, od_rim)}
        bins = int(self.profile_bins)
        k = np.minimum((depth[cell] * bins).astype(int), bins - 1)
        sums, counts = np.bincount(k, v, bins), np.bincount(k, minlength=bins)
        prof = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        feats.update({f"profile_{i}": ratio(p, mean) for i, p in enumerate(prof)})
        # target: the innermost core against the palest ring between rim and core
        core = od[cell & (depth > 0.85)]
        ring_bins = prof[int(RIM_DEPTH * bins):max(int(0.85 * bins), int(RIM_DEPTH * bins) + 1)]
        ring_bins = ring_bins[np.isfinite(ring_bins)]
        if core.size and ring_bins.size:
            feats["target_index"] = max(ratio(float(core.mean()) - float(ring_bins.min()), od_rim), 0.0)
        feats.update(self._pallor(od, cell, depth, od_rim))
        return feats

    def _pallor(self, od: np.ndarray, cell: np.ndarray, depth: np.ndarray, od_rim: float) -> dict[str, float]:
        n = float(np.count_nonzero(cell))
        pale = cell & (depth > 0.2) & (od < float(self.pallor_fraction) * od_rim)
        labels, area = components(pale)
        if area.size <= 1 or not np.isfinite(od_rim):
            return {"pallor_area_ratio": 0.0, "pallor_diameter_ratio": 0.0, "pallor_offset": float("nan")}
        region = labels == int(np.argmax(area))
        a = float(area.max())
        py, px = np.nonzero(region)
        cy, cx = np.nonzero(cell)
        offset = np.hypot(py.mean() - cy.mean(), px.mean() - cx.mean()) / np.sqrt(n / np.pi)
        return {"pallor_area_ratio": a / n, "pallor_diameter_ratio": float(np.sqrt(a / n)),
                "pallor_offset": float(offset)}

    def _outline(self, cell: np.ndarray) -> dict[str, float]:
        yy, xx = np.nonzero(cell)
        feats: dict[str, float] = {}
        if yy.size >= 3:
            ev = np.linalg.eigvalsh(np.cov(np.stack([yy, xx]).astype(np.float64)))
            feats["elongation"] = ratio(np.sqrt(max(ev[1], 0.0)), np.sqrt(max(ev[0], 0.0)))
        r = outline_radii(cell)
        amp, high = harmonics(r, int(self.harmonics))
        feats.update({f"harmonic_{k}": float(a) for k, a in enumerate(amp, 1)})
        feats["harmonic_high"] = high
        feats["radius_cv"] = ratio(r.std(), r.mean()) if r.size else float("nan")
        return feats


__all__ = ["RedCell", "depth_map", "harmonics", "outline_radii"]
