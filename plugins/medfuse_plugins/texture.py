"""Texture of the cell: grey-level statistics, uniform LBP histograms and GLCM (Haralick) features.

Computed on the grey (luminance) image cut to the cell's bounding box, over the pixels inside
the mask (``region``). Without a mask the ``otsu_cell`` mask (default parameters) is computed.

* first order: mean, std, skewness, kurtosis, entropy and uniformity of the grey levels;
* LBP: for each ``(P, R)``, the normalised histogram of uniform rotation-invariant codes
  (``P + 2`` bins) of the pixels inside the mask (neighbours may lie outside it);
* GLCM: grey levels quantised to ``levels`` bins; pixel pairs at each distance and angle
  (0, 45, 90, 135 degrees) with both ends inside the mask, symmetric and normalised; for each
  property and distance the mean and the range over the four angles (rotation-invariant).

With ``normalize`` (and ``smooth``) the grey levels are first normalised per image over the
described pixels (:func:`medfuse_plugins.transforms.normalize_gray`), so that the features hold
under a change of exposure or contrast (X-rays from another scanner).

An empty mask (or one with no pixel pair at a distance) gives NaN for the affected features. A
constant region gives the textbook values: contrast 0, homogeneity 1, ASM 1, entropy 0,
correlation 1 (scikit-image's convention).
"""

from __future__ import annotations

import functools
from typing import ClassVar

import numpy as np
from medfuse import hookimpl
from medfuse.contracts import Extractor
from medfuse.errors import InvalidInputError

from .segmentation import bbox, resolve_mask
from .transforms import NORMALIZE, normalize_gray, to_gray

GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "asm", "energy", "correlation", "entropy",
              "variance", "cluster_shade", "cluster_prominence", "max_probability", "sum_average")
FIRST_ORDER = ("mean", "std", "skewness", "kurtosis", "entropy", "uniformity")
ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
REGIONS = ("cell", "nucleus", "cytoplasm")


def region_pixels(mask: np.ndarray, region: str) -> np.ndarray:
    """Boolean selection of a canonical mask: 'cell' (>0), 'nucleus' (==2), 'cytoplasm' (==1)."""
    if region == "cell":
        return mask > 0
    if region == "nucleus":
        return mask == 2
    if region == "cytoplasm":
        return mask == 1
    raise InvalidInputError(f"region {region!r} is not one of {', '.join(REGIONS)}")


@functools.lru_cache(maxsize=32)
def _glcm_offsets(distances: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets of every (distance, angle), distance-major, as scikit-image
    rounds them (``round(sin(angle) * d)``, ``round(cos(angle) * d)``)."""
    d_row = [int(round(np.sin(a) * d)) for d in distances for a in ANGLES]
    d_col = [int(round(np.cos(a) * d)) for d in distances for a in ANGLES]
    return np.asarray(d_row, np.int64), np.asarray(d_col, np.int64)


def glcm_angle_stats(q: np.ndarray, inside: np.ndarray, levels: int, distances) -> np.ndarray:
    """Mean and range over the 4 angles of every :data:`GLCM_PROPS` property at each distance,
    float64 ``(n_props * n_dist * 2,)`` (property-major, then distance, then mean/range); NaN
    where no angle has a pixel pair. Compiled counts and properties
    (:func:`._kernels.glcm_counts`, :func:`._kernels.glcm_features`); equal to
    ``tests/reference_impl.glcm_angle_stats_reference`` to float64 round-off."""
    from ._kernels_np import kernel
    glcm_counts = kernel("glcm_counts")
    glcm_features = kernel("glcm_features")

    dists = tuple(int(d) for d in distances)
    d_row, d_col = _glcm_offsets(dists)
    counts = glcm_counts(np.ascontiguousarray(q), np.ascontiguousarray(inside, np.bool_), int(levels),
                         d_row, d_col)
    return glcm_features(counts, len(dists)).ravel()


@functools.lru_cache(maxsize=32)
def _lbp_plan(P: int, R: float) -> tuple[tuple[int, int, float, float], ...]:
    """Per neighbour: integer floor offsets ``(y0, x0)`` and fractional parts ``(fy, fx)`` of its
    position (coordinates rounded to 5 decimals, as scikit-image does)."""
    out = []
    for p in range(P):
        dy = round(-R * np.sin(2 * np.pi * p / P), 5)
        dx = round(R * np.cos(2 * np.pi * p / P), 5)
        y0, x0 = int(np.floor(dy)), int(np.floor(dx))
        out.append((y0, x0, round(dy - y0, 5), round(dx - x0, 5)))
    return tuple(out)


@functools.lru_cache(maxsize=32)
def _lbp_tables(pairs: tuple[tuple[int, float], ...]):
    """Arrays for :func:`._kernels.lbp_uniform`: the :func:`_lbp_plan` of every scale,
    concatenated, with the float32 weights the reference uses, and the box padding."""
    plan = [q for p, r in pairs for q in _lbp_plan(p, r)]
    y0 = np.asarray([q[0] for q in plan], np.int64)
    x0 = np.asarray([q[1] for q in plan], np.int64)
    fy = np.asarray([q[2] for q in plan], np.float32)
    fx = np.asarray([q[3] for q in plan], np.float32)
    wx = np.asarray([1 - q[3] for q in plan], np.float32)  # np.float32(1 - fx), as the reference
    n_points = np.asarray([p for p, _ in pairs], np.int64)
    start = np.concatenate([[0], np.cumsum(n_points)[:-1]]).astype(np.int64)
    hist_start = np.concatenate([[0], np.cumsum(n_points + 2)[:-1]]).astype(np.int64)
    pad = max(int(np.ceil(r)) for _, r in pairs) + 1
    return y0, x0, fy, fx, wx, n_points, start, hist_start, pad


def lbp_histograms(gray: np.ndarray, pairs, inside: np.ndarray) -> list[np.ndarray]:
    """Counts of the uniform LBP codes (``P + 2`` bins, int64) of the ``inside`` pixels of a
    uint8 image for every ``(P, R)`` in ``pairs``, in one compiled pass over the bounding box of
    ``inside``; the codes are those of ``tests/reference_impl.uniform_lbp_reference``."""
    from ._kernels_np import kernel
    lbp_uniform = kernel("lbp_uniform")

    pairs = tuple((int(p), float(r)) for p, r in pairs)
    y0, x0, fy, fx, wx, n_points, start, hist_start, pad = _lbp_tables(pairs)
    hist = np.zeros(int((n_points + 2).sum()), np.int64)
    rows = np.flatnonzero(inside.any(axis=1))
    if rows.size:
        cols = np.flatnonzero(inside.any(axis=0))
        lbp_uniform(np.ascontiguousarray(gray, np.uint8), np.ascontiguousarray(inside, np.bool_),
                    int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1, pad,
                    y0, x0, fy, fx, wx, n_points, start, hist_start, np.float32(1e-4), hist)
    return np.split(hist, np.cumsum([p + 2 for p, _ in pairs])[:-1])


def first_order(values: np.ndarray) -> dict[str, float]:
    """Grey-level statistics of uint8 ``values``: mean, std, skewness, kurtosis (excess),
    entropy (bits, 32 bins) and uniformity (sum of squared 32-bin probabilities)."""
    if values.size == 0:
        return dict.fromkeys(FIRST_ORDER, float("nan"))
    h = np.bincount(values, minlength=256).astype(np.float64)
    v = np.arange(256, dtype=np.float64)
    n = h.sum()
    mean = (h * v).sum() / n
    c = v - mean
    var = (h * c ** 2).sum() / n
    std = np.sqrt(var)
    p = h.reshape(32, 8).sum(axis=1) / n
    nz = p[p > 0]
    return {
        "mean": mean,
        "std": std,
        "skewness": (h * c ** 3).sum() / n / std ** 3 if std > 0 else 0.0,
        "kurtosis": (h * c ** 4).sum() / n / var ** 2 - 3.0 if std > 0 else 0.0,
        "entropy": float(-(nz * np.log2(nz)).sum()),
        "uniformity": float((p ** 2).sum()),
    }


@functools.lru_cache(maxsize=64)
def _names_for(pairs: tuple[tuple[int, float], ...], dists: tuple[int, ...]) -> tuple[str, ...]:
    names = [f"gray_{s}" for s in FIRST_ORDER]
    for p, r in pairs:
        names += [f"lbp_P{p}_R{r:g}_{k}" for k in range(p + 2)]
    for prop in GLCM_PROPS:
        for d in dists:
            names += [f"glcm_{prop}_d{d}_mean", f"glcm_{prop}_d{d}_range"]
    return tuple(names)


class Texture(Extractor):
    """Grey-level texture inside the cell: first-order statistics, uniform LBP and GLCM/Haralick.

    LBP histograms at several ``(P, R)``; GLCM properties (contrast, dissimilarity,
    homogeneity, ASM, energy, correlation, entropy, variance, cluster shade/prominence, max
    probability, sum average) at several distances, as mean and range over 4 angles. Computed
    on the bounding box of the mask, over ``region`` pixels; without a mask the ``otsu_cell``
    mask is computed.

    Parameters
    ----------
    lbp
        List of [P, R] pairs (points, radius in px) for uniform LBP histograms; None = [[8, 1], [16, 2], [24, 3]].
    distances
        GLCM pixel distances; None = [1, 2, 4].
    levels
        Grey levels after quantisation for the GLCM (2-256).
    quantize
        'fixed' (0-255 split into equal bins; comparable across images) or 'minmax' (the region's own range).
    region
        Pixels described: 'cell' (mask > 0), 'nucleus' (2) or 'cytoplasm' (1).
    normalize
        Per-image grey normalisation over the described pixels before every feature: 'none', 'equalize' (histogram
        equalisation: invariant to gamma/contrast/brightness changes) or 'stretch' (1st-99th percentile range to 0-255).
    smooth
        Gaussian sigma (px) applied before the normalisation (0: none); keeps noise from being stretched into texture.
    """

    name: ClassVar[str] = "texture"
    block: ClassVar[str] = "texture"
    input_dtype: ClassVar[str] = "uint8"  # grey levels / histograms of the 8-bit view (reader's rule)
    version: ClassVar[str] = "1.1.0"
    conformance_params: ClassVar[dict] = {"lbp": [[8, 1]], "distances": [1]}

    def __init__(self, lbp: list | None = None, distances: list | None = None, levels: int = 32,
                 quantize: str = "fixed", region: str = "cell", normalize: str = "none", smooth: float = 0.0):
        self._store_params(locals())

    def _lbp(self) -> list[tuple[int, float]]:
        pairs = [[8, 1], [16, 2], [24, 3]] if self.lbp is None else self.lbp
        try:
            return [(int(p), float(r)) for p, r in pairs]
        except (TypeError, ValueError):
            raise InvalidInputError(f"texture: lbp must be a list of [P, R] pairs, got {self.lbp!r}") from None

    def _distances(self) -> list[int]:
        return [1, 2, 4] if self.distances is None else [int(d) for d in self.distances]

    def feature_names(self) -> list[str]:
        return list(_names_for(tuple(self._lbp()), tuple(self._distances())))  # built once per parameter set

    def _prepare(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        levels = int(self.levels)
        if not 2 <= levels <= 256:
            raise InvalidInputError(f"texture: levels must be in 2..256, got {levels}")
        if self.quantize not in ("fixed", "minmax"):
            raise InvalidInputError(f"texture: quantize {self.quantize!r} is not 'fixed' or 'minmax'")
        if self.normalize not in NORMALIZE:
            raise InvalidInputError(f"texture: normalize {self.normalize!r} is not one of {', '.join(NORMALIZE)}")
        pairs, dists = self._lbp(), self._distances()
        mask = resolve_mask(image, mask)
        inside_full = region_pixels(mask, self.region)
        pad = int(max([r for _, r in pairs] + dists)) + 1
        box = bbox(inside_full, pad)
        n = len(self.feature_names())
        if box is None:
            return np.full(n, np.nan, np.float32)
        inside = inside_full[box]
        gray = normalize_gray(to_gray(image[box]), self.normalize, self.smooth, inside)
        values = gray[inside]
        feats: list[float] = list(first_order(values).values())
        for h in lbp_histograms(gray, pairs, inside):
            h = h.astype(np.float64)
            feats += list(h / h.sum())
        if self.quantize == "fixed":
            q = (gray.astype(np.uint16) * levels) >> 8
        else:
            lo, hi = int(values.min()), int(values.max())
            q = ((gray.astype(np.float32) - lo) / max(hi - lo, 1) * (levels - 1) + 0.5)
            q = np.clip(q, 0, levels - 1).astype(np.uint16)
        # pairs need both ends inside: the bounding box of ``inside`` (no pad) holds them all
        ib = bbox(inside)
        glcm_feats = glcm_angle_stats(q[ib], inside[ib], levels, dists)
        return np.concatenate([np.asarray(feats, np.float64), glcm_feats]).astype(np.float32)


@hookimpl
def medfuse_plugins():
    return [Texture]
