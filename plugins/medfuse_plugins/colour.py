"""Colour of the cell and its surroundings in RGB, HSV and Lab.

For each colour space, channel and region: mean, standard deviation and percentiles; for the
``hist_regions``: a coarse normalised histogram per channel. All statistics come from one
256-bin histogram per channel and region, all counted in one compiled pass over the cell's
bounding box (:func:`._kernels.colour_histograms`) and summarised by a compiled kernel
(:func:`._kernels.hist_stats`).

Regions of the canonical mask: ``cell`` (mask > 0), ``nucleus`` (2), ``cytoplasm`` (1) and
``outside``: background pixels within ``pad`` pixels of the cell's bounding box (the cell's
immediate surroundings, not the whole frame). Without a mask the ``otsu_cell`` mask (default
parameters) is computed. An empty region gives NaN for its features. HSV and Lab use the uint8
encodings of the ``hsv`` and ``lab`` transforms (hue is not treated as circular), computed on the
crop's pixel list: HSV by lookup tables (identical codes; ``hsv8_pixels`` in ``tests/reference_impl.py`` is the NumPy
version), Lab with a vectorised cube root (a code differs from the transform's by 1 for about
0.004% of colours).
"""

from __future__ import annotations

import functools
from typing import ClassVar

import numpy as np
from medfuse import hookimpl
from medfuse.contracts import Extractor
from medfuse.errors import InvalidInputError

from .segmentation import bbox, resolve_mask
from .transforms import rgb_to_xyz


@functools.lru_cache(maxsize=1)
def _hsv_luts() -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables that reproduce :func:`medfuse_plugins.transforms.rgb_to_hsv8` exactly.

    Hue depends only on the differences ``(R - B, G - B)`` (511 x 511 table), saturation on
    ``(V, min)`` (256 x 256 table); both are filled by the same float32 formula as the transform,
    so the uint8 codes are identical (checked over all 2**24 colours when this was written).
    """
    d = np.arange(-255, 256, dtype=np.float32)
    rb, gb = np.meshgrid(d, d, indexing="ij")  # r - b, g - b; hue does not change with b
    b = np.full_like(rb, 255.0) - np.maximum(np.maximum(rb, gb), 0.0)
    r, g = rb + b, gb + b
    v = np.maximum(np.maximum(r, g), b)
    c = v - np.minimum(np.minimum(r, g), b)
    safe = np.maximum(c, 1e-6)
    h = np.where(v == r, (g - b) / safe, np.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = np.where(c > 0, (h / 6.0) % 1.0, 0.0)
    hue = np.clip(h * 255.0 + 0.5, 0, 255).astype(np.uint8).ravel()
    vv, mn = np.meshgrid(np.arange(256, dtype=np.float32), np.arange(256, dtype=np.float32), indexing="ij")
    cc = vv - mn
    sat = np.where(vv > 0, cc / np.maximum(vv, 1e-6), 0.0)
    sat = np.clip(sat * 255.0 + 0.5, 0, 255).astype(np.uint8).ravel()
    return hue, sat


def _lab_parts(px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised XYZ of an ``(N, 3)`` uint8 pixel list and its cube root ``exp(log(t) / 3)``,
    float32 ``(N, 3)`` each: the vectorised part of the Lab conversion (the rest is compiled;
    ``lab8_pixels`` in ``tests/reference_impl.py`` is the NumPy version)."""
    xyz = rgb_to_xyz(px)
    f = np.log(np.maximum(xyz, np.float32(1e-6)))
    f *= np.float32(1.0 / 3.0)
    np.exp(f, out=f)
    return xyz, f


SPACES = {"rgb": ("r", "g", "b"), "hsv": ("h", "s", "v"), "lab": ("l", "a", "b")}
ALL_REGIONS = ("cell", "nucleus", "cytoplasm", "outside")
_PCTS = {"p10": 0.10, "p25": 0.25, "p50": 0.50, "p75": 0.75, "p90": 0.90}
STATS = ("mean", "std", *_PCTS)


def hist_stats(H: np.ndarray, stats: tuple[str, ...]) -> np.ndarray:
    """Statistics of many 256-bin histograms ``(k, 256)`` -> ``(k, len(stats))``; NaN for empty
    rows. Compiled (:func:`._kernels.hist_stats`)."""
    from ._kernels_np import kernel
    stats_kernel = kernel("hist_stats")

    pcts = np.asarray([_PCTS[s] for s in stats if s in _PCTS], np.float64)
    table = stats_kernel(np.ascontiguousarray(H, np.int64), pcts)
    cols, k = [], 2
    for s in stats:
        if s in _PCTS:
            cols.append(k)
            k += 1
        else:
            cols.append(0 if s == "mean" else 1)
    return table[:, cols]


_REGION_ROW = {"outside": 0, "cytoplasm": 1, "nucleus": 2, "cell": 3}
_NO_LAB = np.zeros((0, 3), np.float32)


class Colour(Extractor):
    """Colour statistics and histograms in RGB, HSV and Lab, inside and around the cell.

    Per space, channel and region: mean, std and percentiles (``stats``); per channel of the
    ``hist_regions``: a ``bins``-bin normalised histogram. Regions: cell, nucleus, cytoplasm
    and outside (background around the cell, within ``pad`` px of its bounding box).

    Parameters
    ----------
    spaces
        Colour spaces among 'rgb', 'hsv', 'lab'.
    regions
        Regions among 'cell', 'nucleus', 'cytoplasm', 'outside'.
    stats
        Statistics among 'mean', 'std', 'p10', 'p25', 'p50', 'p75', 'p90'.
    bins
        Histogram bins per channel (divides 256: 4, 8, 16, 32...); 0 = no histograms.
    hist_regions
        Regions that also get histograms.
    pad
        Width (px) of the surroundings kept around the cell's bounding box ('outside').
    """

    name: ClassVar[str] = "colour"
    block: ClassVar[str] = "colour"
    input_dtype: ClassVar[str] = "uint8"  # grey levels / histograms of the 8-bit view (reader's rule)
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {"pad": 4}

    def __init__(self, spaces: tuple = ("rgb", "hsv", "lab"),
                 regions: tuple = ("cell", "nucleus", "cytoplasm", "outside"),
                 stats: tuple = ("mean", "std", "p10", "p50", "p90"), bins: int = 8,
                 hist_regions: tuple = ("cell",), pad: int = 8):
        self._store_params(locals())

    def validate_params(self) -> None:
        """Known spaces, regions and statistics; ``bins`` divides 256."""
        for what, given, allowed in (("spaces", self.spaces, SPACES), ("regions", self.regions, ALL_REGIONS),
                                     ("stats", self.stats, STATS), ("hist_regions", self.hist_regions,
                                                                    ALL_REGIONS)):
            bad = [g for g in given if g not in allowed]
            if bad:
                raise InvalidInputError(f"colour: unknown {what} {bad}; choose from {', '.join(allowed)}")
        if int(self.bins) and 256 % int(self.bins):
            raise InvalidInputError(f"colour: bins must divide 256, got {self.bins}")

    def feature_names(self) -> list[str]:
        names = []
        for sp in self.spaces:
            for ch in SPACES[sp]:
                names += [f"{sp}_{ch}_{rg}_{st}" for rg in self.regions for st in self.stats]
        if int(self.bins):
            for sp in self.spaces:
                for ch in SPACES[sp]:
                    names += [f"{sp}_{ch}_{rg}_hist{k}" for rg in self.hist_regions for k in range(int(self.bins))]
        return names

    def _prepare(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        self.validate_params()
        mask = resolve_mask(image, mask)
        box = bbox(mask > 0, int(self.pad))
        if box is None:
            return np.full(len(self.feature_names()), np.nan, np.float32)
        img, m = image[box], mask[box]
        # all channel histograms per region code (0 outside, 1 cytoplasm, 2 nucleus) in one
        # compiled pass over the crop's pixels; Lab: XYZ and cube roots vectorised (NumPy), the
        # codes finished in the kernel
        from ._kernels_np import kernel
        colour_histograms = kernel("colour_histograms")

        px = np.ascontiguousarray(img).reshape(-1, 3)
        xyz, cube = _lab_parts(px) if "lab" in self.spaces else (_NO_LAB, _NO_LAB)
        hue, sat = _hsv_luts()
        counts = colour_histograms(px, np.ascontiguousarray(m).reshape(-1), hue, sat, xyz, cube,
                                   "rgb" in self.spaces, "hsv" in self.spaces)
        # rows per channel: outside, cytoplasm, nucleus, cell (= cytoplasm + nucleus)
        R = np.concatenate([counts, counts[:, 1:2] + counts[:, 2:3]], axis=1)
        chans = [3 * list(SPACES).index(sp) + c for sp in self.spaces for c in range(3)]
        sel = R[np.ix_(chans, [_REGION_ROW[rg] for rg in self.regions])].reshape(-1, 256)
        stats = hist_stats(sel, tuple(self.stats))
        feats = [stats.ravel()]
        b = int(self.bins)
        if b:
            hh = R[np.ix_(chans, [_REGION_ROW[rg] for rg in self.hist_regions])].reshape(-1, b, 256 // b)
            hh = hh.sum(axis=2)
            tot = hh.sum(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                feats.append(np.where(tot > 0, hh / np.maximum(tot, 1), np.nan).ravel())
        return np.concatenate(feats).astype(np.float32)


@hookimpl
def medfuse_plugins():
    return [Colour]
