"""Texture of the cell: grey-level statistics, uniform LBP histograms and GLCM (Haralick) features.

Computed on the grey (luminance) image cut to the cell's bounding box, over the pixels inside
the mask (``region``). Without a mask the ``otsu_cell`` mask (default parameters) is computed.

* first order: mean, std, skewness, kurtosis, entropy and uniformity of the grey levels;
* LBP: for each ``(P, R)``, the normalised histogram of uniform rotation-invariant codes
  (``P + 2`` bins) of the pixels inside the mask (neighbours may lie outside it);
* GLCM: grey levels quantised to ``levels`` bins; pixel pairs at each distance and angle
  (0, 45, 90, 135 degrees) with both ends inside the mask, symmetric and normalised; for each
  property and distance the mean and the range over the four angles (rotation-invariant).

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
from .transforms import to_gray

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


def glcm(q: np.ndarray, inside: np.ndarray, levels: int, distances) -> np.ndarray:
    """Symmetric normalised co-occurrence matrices of quantised image ``q`` (values < levels)
    over pixel pairs both inside ``inside``; float64 ``(levels, levels, n_dist, 4)``, NaN where
    no pair exists."""
    from skimage.feature import graycomatrix

    coded = np.where(inside, q.astype(np.uint16) + 1, 0).astype(np.uint16)
    P = graycomatrix(coded, distances=list(distances), angles=list(ANGLES), levels=levels + 1,
                     symmetric=True, normed=False)[1:, 1:].astype(np.float64)
    total = P.sum(axis=(0, 1), keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return P / total


def _glcm_weights(L: int) -> dict[str, np.ndarray]:
    i, j = np.meshgrid(np.arange(L, dtype=np.float64), np.arange(L, dtype=np.float64), indexing="ij")
    i, j = i.ravel(), j.ravel()
    d = np.abs(i - j)
    s = i + j
    return {"i": i, "i2": i * i, "ij": i * j, "d": d, "d2": d * d, "h": 1.0 / (1.0 + d * d),
            "s": s, "s2": s ** 2, "s3": s ** 3, "s4": s ** 4}


_WEIGHTS: dict[int, dict[str, np.ndarray]] = {}


def glcm_props(P: np.ndarray) -> dict[str, np.ndarray]:
    """Haralick-style properties of symmetric normalised GLCMs ``(L, L, ...)``; each ``(...)``.

    Every property is a weighted sum over the matrix (one matrix-vector product each); cluster
    shade and prominence come from the raw moments of ``i + j``.
    """
    L = P.shape[0]
    shape = P.shape[2:]
    M = P.reshape(L * L, -1)
    w = _WEIGHTS.get(L)
    if w is None:
        w = _WEIGHTS[L] = _glcm_weights(L)
    mu = w["i"] @ M
    var = w["i2"] @ M - mu ** 2
    asm = (M * M).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (w["ij"] @ M - mu ** 2) / var
        logp = np.where(M > 0, np.log2(np.where(M > 0, M, 1.0)), 0.0)
    corr = np.where(var > 1e-12, corr, np.where(np.isnan(asm), np.nan, 1.0))
    m1, m2, m3, m4 = w["s"] @ M, w["s2"] @ M, w["s3"] @ M, w["s4"] @ M
    c = 2 * mu
    out = {
        "contrast": w["d2"] @ M,
        "dissimilarity": w["d"] @ M,
        "homogeneity": w["h"] @ M,
        "asm": asm,
        "energy": np.sqrt(asm),
        "correlation": corr,
        "entropy": -(M * logp).sum(axis=0),
        "variance": var,
        "cluster_shade": m3 - 3 * c * m2 + 3 * c ** 2 * m1 - c ** 3,
        "cluster_prominence": m4 - 4 * c * m3 + 6 * c ** 2 * m2 - 4 * c ** 3 * m1 + c ** 4,
        "max_probability": M.max(axis=0),
        "sum_average": m1,
    }
    return {k: v.reshape(shape) for k, v in out.items()}


@functools.lru_cache(maxsize=32)
def _lbp_taps(P: int, R: float) -> tuple[tuple[tuple[int, int, np.float32], ...], ...]:
    """Per neighbour: the integer offsets and bilinear weights of the pixels it reads."""
    out = []
    for p in range(P):
        dy = round(-R * np.sin(2 * np.pi * p / P), 5)
        dx = round(R * np.cos(2 * np.pi * p / P), 5)
        y0, x0 = int(np.floor(dy)), int(np.floor(dx))
        fy, fx = dy - y0, dx - x0
        taps = [(y0 + oy, x0 + ox, np.float32(wt)) for oy, ox, wt in
                ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx))
                if wt > 1e-9]
        out.append(tuple(taps))
    return tuple(out)


def uniform_lbp(gray: np.ndarray, P: int, R: float, inside: np.ndarray) -> np.ndarray:
    """Uniform rotation-invariant LBP codes (0..P+1) of the ``inside`` pixels of a uint8 image.

    Same definition as ``skimage.feature.local_binary_pattern(method="uniform")``: neighbours on
    a circle of radius ``R`` (bilinear interpolation), bit = neighbour >= centre; codes with at
    most two 0/1 transitions count their ones, all others get ``P + 1``. Pixels outside the
    image read as 0. Vectorised over shifted views (no per-pixel loop). int64 ``(n_inside,)``.
    """
    r = int(np.ceil(R)) + 1
    g = np.pad(gray.astype(np.float32), r)
    h, w = gray.shape
    centre = g[r:r + h, r:r + w] - np.float32(1e-4)
    ones = np.zeros((h, w), np.uint8)
    changes = np.zeros((h, w), np.uint8)
    first = prev = None
    v = np.empty((h, w), np.float32)
    tmp = np.empty((h, w), np.float32)
    for taps in _lbp_taps(int(P), float(R)):
        (oy, ox, wt), rest = taps[0], taps[1:]
        if rest:
            np.multiply(g[r + oy:r + oy + h, r + ox:r + ox + w], wt, out=v)
            for oy, ox, wt in rest:
                np.multiply(g[r + oy:r + oy + h, r + ox:r + ox + w], wt, out=tmp)
                v += tmp
            bit = v >= centre
        else:
            bit = g[r + oy:r + oy + h, r + ox:r + ox + w] >= centre
        ones += bit
        if prev is None:
            first = bit
        else:
            changes += bit != prev
        prev = bit
    changes += prev != first
    codes = np.where(changes <= 2, ones, P + 1)
    return codes[inside].astype(np.int64)


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


class Texture(Extractor):
    """Grey-level texture inside the cell: first-order statistics, uniform LBP and GLCM/Haralick.

    LBP histograms at several ``(P, R)``; GLCM properties (contrast, dissimilarity,
    homogeneity, ASM, energy, correlation, entropy, variance, cluster shade/prominence, max
    probability, sum average) at several distances, as mean and range over 4 angles. Computed
    on the bounding box of the mask, over ``region`` pixels; without a mask the ``otsu_cell``
    mask is computed.
    """

    name: ClassVar[str] = "texture"
    block: ClassVar[str] = "texture"
    version: ClassVar[str] = "1.0.0"
    param_docs: ClassVar[dict[str, str]] = {
        "lbp": "List of [P, R] pairs (points, radius in px) for uniform LBP histograms; "
               "None = [[8, 1], [16, 2], [24, 3]].",
        "distances": "GLCM pixel distances; None = [1, 2, 4].",
        "levels": "Grey levels after quantisation for the GLCM (2-256).",
        "quantize": "'fixed' (0-255 split into equal bins; comparable across images) or 'minmax' "
                    "(the region's own range).",
        "region": "Pixels described: 'cell' (mask > 0), 'nucleus' (2) or 'cytoplasm' (1).",
    }
    conformance_params: ClassVar[dict] = {"lbp": [[8, 1]], "distances": [1]}

    def __init__(self, lbp: list | None = None, distances: list | None = None, levels: int = 32,
                 quantize: str = "fixed", region: str = "cell"):
        self.lbp = lbp
        self.distances = distances
        self.levels = levels
        self.quantize = quantize
        self.region = region

    def _lbp(self) -> list[tuple[int, float]]:
        pairs = [[8, 1], [16, 2], [24, 3]] if self.lbp is None else self.lbp
        try:
            return [(int(p), float(r)) for p, r in pairs]
        except (TypeError, ValueError):
            raise InvalidInputError(f"texture: lbp must be a list of [P, R] pairs, got {self.lbp!r}") from None

    def _distances(self) -> list[int]:
        return [1, 2, 4] if self.distances is None else [int(d) for d in self.distances]

    def feature_names(self) -> list[str]:
        names = [f"gray_{s}" for s in FIRST_ORDER]
        for p, r in self._lbp():
            names += [f"lbp_P{p}_R{r:g}_{k}" for k in range(p + 2)]
        for prop in GLCM_PROPS:
            for d in self._distances():
                names += [f"glcm_{prop}_d{d}_mean", f"glcm_{prop}_d{d}_range"]
        return names

    def _prepare(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        levels = int(self.levels)
        if not 2 <= levels <= 256:
            raise InvalidInputError(f"texture: levels must be in 2..256, got {levels}")
        if self.quantize not in ("fixed", "minmax"):
            raise InvalidInputError(f"texture: quantize {self.quantize!r} is not 'fixed' or 'minmax'")
        pairs, dists = self._lbp(), self._distances()
        mask = resolve_mask(image, mask)
        inside_full = region_pixels(mask, self.region)
        pad = int(max([r for _, r in pairs] + dists)) + 1
        box = bbox(inside_full, pad)
        n = len(self.feature_names())
        if box is None:
            return np.full(n, np.nan, np.float32)
        gray = to_gray(image[box])
        inside = inside_full[box]
        values = gray[inside]
        feats: list[float] = list(first_order(values).values())
        for p, r in pairs:
            h = np.bincount(uniform_lbp(gray, p, r, inside), minlength=p + 2)[:p + 2].astype(np.float64)
            feats += list(h / h.sum())
        if self.quantize == "fixed":
            q = (gray.astype(np.uint16) * levels) >> 8
        else:
            lo, hi = int(values.min()), int(values.max())
            q = ((gray.astype(np.float32) - lo) / max(hi - lo, 1) * (levels - 1) + 0.5)
            q = np.clip(q, 0, levels - 1).astype(np.uint16)
        props = glcm_props(glcm(q, inside, levels, dists))
        V = np.stack([props[prop] for prop in GLCM_PROPS])  # (n_props, n_dist, 4 angles)
        valid = ~np.isnan(V)
        n = valid.sum(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(valid, V, 0).sum(axis=2) / n
        rng = np.where(valid, V, -np.inf).max(axis=2) - np.where(valid, V, np.inf).min(axis=2)
        rng = np.where(n > 0, rng, np.nan)
        glcm_feats = np.stack([mean, rng], axis=2).ravel()  # prop-major, then distance, mean/range
        return np.concatenate([np.asarray(feats, np.float64), glcm_feats]).astype(np.float32)


@hookimpl
def medfuse_plugins():
    return [Texture]
