"""Colour of the cell and its surroundings in RGB, HSV and Lab.

For each colour space, channel and region: mean, standard deviation and percentiles; for the
``hist_regions``: a coarse normalised histogram per channel. All statistics come from one
256-bin histogram per channel and region (``np.bincount``), so the cost is a few passes over
the cell's bounding box.

Regions of the canonical mask: ``cell`` (mask > 0), ``nucleus`` (2), ``cytoplasm`` (1) and
``outside``: background pixels within ``pad`` pixels of the cell's bounding box (the cell's
immediate surroundings, not the whole frame). Without a mask the ``otsu_cell`` mask (default
parameters) is computed. An empty region gives NaN for its features. HSV and Lab use the uint8
encodings of the ``hsv`` and ``lab`` transforms (hue is not treated as circular).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from medfuse import hookimpl
from medfuse.contracts import Extractor
from medfuse.errors import InvalidInputError

from .segmentation import bbox, resolve_mask
from .transforms import rgb_to_hsv8, rgb_to_lab8

SPACES = {"rgb": ("r", "g", "b"), "hsv": ("h", "s", "v"), "lab": ("l", "a", "b")}
ALL_REGIONS = ("cell", "nucleus", "cytoplasm", "outside")
_PCTS = {"p10": 0.10, "p25": 0.25, "p50": 0.50, "p75": 0.75, "p90": 0.90}
STATS = ("mean", "std", *_PCTS)


def hist_stats(H: np.ndarray, stats: tuple[str, ...]) -> np.ndarray:
    """Statistics of many 256-bin histograms ``(k, 256)`` -> ``(k, len(stats))``; NaN for empty rows."""
    v = np.arange(256, dtype=np.float64)
    n = H.sum(axis=1)
    out = np.full((H.shape[0], len(stats)), np.nan)
    ok = n > 0
    if not ok.any():
        return out
    Hk, nk = H[ok].astype(np.float64), n[ok][:, None]
    mean = (Hk * v).sum(axis=1) / nk[:, 0]
    cdf = np.cumsum(Hk, axis=1) / nk
    cols = []
    for s in stats:
        if s == "mean":
            cols.append(mean)
        elif s == "std":
            cols.append(np.sqrt(np.maximum((Hk * (v - mean[:, None]) ** 2).sum(axis=1) / nk[:, 0], 0)))
        else:
            cols.append((cdf < _PCTS[s]).sum(axis=1).astype(np.float64))
    out[ok] = np.stack(cols, axis=1)
    return out


class Colour(Extractor):
    """Colour statistics and histograms in RGB, HSV and Lab, inside and around the cell.

    Per space, channel and region: mean, std and percentiles (``stats``); per channel of the
    ``hist_regions``: a ``bins``-bin normalised histogram. Regions: cell, nucleus, cytoplasm
    and outside (background around the cell, within ``pad`` px of its bounding box).
    """

    name: ClassVar[str] = "colour"
    block: ClassVar[str] = "colour"
    version: ClassVar[str] = "1.0.0"
    param_docs: ClassVar[dict[str, str]] = {
        "spaces": "Colour spaces among 'rgb', 'hsv', 'lab'.",
        "regions": "Regions among 'cell', 'nucleus', 'cytoplasm', 'outside'.",
        "stats": "Statistics among 'mean', 'std', 'p10', 'p25', 'p50', 'p75', 'p90'.",
        "bins": "Histogram bins per channel (divides 256: 4, 8, 16, 32...); 0 = no histograms.",
        "hist_regions": "Regions that also get histograms.",
        "pad": "Width (px) of the surroundings kept around the cell's bounding box ('outside').",
    }
    conformance_params: ClassVar[dict] = {"pad": 4}

    def __init__(self, spaces: tuple = ("rgb", "hsv", "lab"),
                 regions: tuple = ("cell", "nucleus", "cytoplasm", "outside"),
                 stats: tuple = ("mean", "std", "p10", "p50", "p90"), bins: int = 8,
                 hist_regions: tuple = ("cell",), pad: int = 8):
        self.spaces = spaces
        self.regions = regions
        self.stats = stats
        self.bins = bins
        self.hist_regions = hist_regions
        self.pad = pad

    def _check(self) -> None:
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
        self._check()
        mask = resolve_mask(image, mask)
        box = bbox(mask > 0, int(self.pad))
        if box is None:
            return np.full(len(self.feature_names()), np.nan, np.float32)
        img, m = image[box], mask[box]
        # region code per pixel: 0 outside, 1 cytoplasm, 2 nucleus -> one bincount per channel
        code = np.minimum(m, 2).astype(np.int32).ravel() * 256
        conv = {"rgb": lambda x: x, "hsv": rgb_to_hsv8, "lab": rgb_to_lab8}
        H = {}
        for sp in self.spaces:
            arr = conv[sp](img).reshape(-1, 3)
            for c, ch in enumerate(SPACES[sp]):
                h3 = np.bincount(code + arr[:, c], minlength=768).reshape(3, 256)
                H[(sp, ch)] = {"outside": h3[0], "cytoplasm": h3[1], "nucleus": h3[2], "cell": h3[1] + h3[2]}
        keys = [(sp, ch, rg) for sp in self.spaces for ch in SPACES[sp] for rg in self.regions]
        stats = hist_stats(np.stack([H[(sp, ch)][rg] for sp, ch, rg in keys]), tuple(self.stats))
        feats = [stats.ravel()]
        b = int(self.bins)
        if b:
            hk = [(sp, ch, rg) for sp in self.spaces for ch in SPACES[sp] for rg in self.hist_regions]
            hh = np.stack([H[(sp, ch)][rg] for sp, ch, rg in hk]).reshape(len(hk), b, 256 // b).sum(axis=2)
            tot = hh.sum(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                feats.append(np.where(tot > 0, hh / np.maximum(tot, 1), np.nan).ravel())
        return np.concatenate(feats).astype(np.float32)


@hookimpl
def medfuse_plugins():
    return [Colour]
