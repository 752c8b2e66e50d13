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


@functools.lru_cache(maxsize=32)
def _glcm_offsets(distances: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets of every (distance, angle), distance-major, as scikit-image
    rounds them (``round(sin(angle) * d)``, ``round(cos(angle) * d)``)."""
    d_row = [int(round(np.sin(a) * d)) for d in distances for a in ANGLES]
    d_col = [int(round(np.cos(a) * d)) for d in distances for a in ANGLES]
    return np.asarray(d_row, np.int64), np.asarray(d_col, np.int64)


def glcm(q: np.ndarray, inside: np.ndarray, levels: int, distances) -> np.ndarray:
    """Symmetric normalised co-occurrence matrices of quantised image ``q`` (values < levels)
    over pixel pairs both inside ``inside``; float64 ``(levels, levels, n_dist, 4)``, NaN where
    no pair exists. Callers pass the bounding box of ``inside`` (pairs need both ends inside).
    Counts by the compiled :func:`._kernels.glcm_counts`; the same matrices as
    :func:`glcm_reference` (scikit-image)."""
    from ._kernels import glcm_counts

    dists = tuple(int(d) for d in distances)
    d_row, d_col = _glcm_offsets(dists)
    counts = glcm_counts(np.ascontiguousarray(q), np.ascontiguousarray(inside, np.bool_), int(levels),
                         d_row, d_col)
    P = np.ascontiguousarray(
        counts.reshape(len(dists), 4, levels, levels).transpose(2, 3, 0, 1), np.float64)
    total = P.sum(axis=(0, 1), keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return P / total


def glcm_reference(q: np.ndarray, inside: np.ndarray, levels: int, distances) -> np.ndarray:
    """:func:`glcm` by ``skimage.feature.graycomatrix`` (Cython); the reference for tests."""
    from skimage.feature import graycomatrix

    coded = np.where(inside, q.astype(np.uint16) + 1, 0).astype(np.uint16)
    P = graycomatrix(coded, distances=list(distances), angles=list(ANGLES), levels=levels + 1,
                     symmetric=True, normed=False)[1:, 1:].astype(np.float64)
    total = P.sum(axis=(0, 1), keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return P / total


def _glcm_weights(L: int) -> np.ndarray:
    """Rows: i, i^2, i*j, |i-j|, (i-j)^2, 1/(1+(i-j)^2), i+j, (i+j)^2, (i+j)^3, (i+j)^4."""
    i, j = np.meshgrid(np.arange(L, dtype=np.float64), np.arange(L, dtype=np.float64), indexing="ij")
    i, j = i.ravel(), j.ravel()
    d = np.abs(i - j)
    s = i + j
    return np.stack([i, i * i, i * j, d, d * d, 1.0 / (1.0 + d * d), s, s ** 2, s ** 3, s ** 4])


_WEIGHTS: dict[int, np.ndarray] = {}


def glcm_props(P: np.ndarray) -> dict[str, np.ndarray]:
    """Haralick-style properties of symmetric normalised GLCMs ``(L, L, ...)``; each ``(...)``.

    Every linear property is a weighted sum over the matrix (all in one matrix product); cluster
    shade and prominence come from the raw moments of ``i + j``.
    """
    L = P.shape[0]
    shape = P.shape[2:]
    M = P.reshape(L * L, -1)
    W = _WEIGHTS.get(L)
    if W is None:
        W = _WEIGHTS[L] = _glcm_weights(L)
    mu, i2, ij, dis, con, hom, m1, m2, m3, m4 = W @ M  # every linear property in one product
    var = i2 - mu ** 2
    asm = np.einsum("ij,ij->j", M, M)
    logp = np.zeros_like(M)
    np.log2(M, out=logp, where=M > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (ij - mu ** 2) / var
    corr = np.where(var > 1e-12, corr, np.where(np.isnan(asm), np.nan, 1.0))
    c = 2 * mu
    out = {
        "contrast": con,
        "dissimilarity": dis,
        "homogeneity": hom,
        "asm": asm,
        "energy": np.sqrt(asm),
        "correlation": corr,
        "entropy": -np.einsum("ij,ij->j", M, logp),
        "variance": var,
        "cluster_shade": m3 - 3 * c * m2 + 3 * c ** 2 * m1 - c ** 3,
        "cluster_prominence": m4 - 4 * c * m3 + 6 * c ** 2 * m2 - 4 * c ** 3 * m1 + c ** 4,
        "max_probability": M.max(axis=0),
        "sum_average": m1,
    }
    return {k: v.reshape(shape) for k, v in out.items()}


def glcm_angle_stats(q: np.ndarray, inside: np.ndarray, levels: int, distances) -> np.ndarray:
    """Mean and range over the 4 angles of every :data:`GLCM_PROPS` property at each distance,
    float64 ``(n_props * n_dist * 2,)`` (property-major, then distance, then mean/range); NaN
    where no angle has a pixel pair. Compiled counts and properties
    (:func:`._kernels.glcm_counts`, :func:`._kernels.glcm_features`); equal to
    :func:`glcm_angle_stats_reference` to float64 round-off."""
    from ._kernels import glcm_counts, glcm_features

    dists = tuple(int(d) for d in distances)
    d_row, d_col = _glcm_offsets(dists)
    counts = glcm_counts(np.ascontiguousarray(q), np.ascontiguousarray(inside, np.bool_), int(levels),
                         d_row, d_col)
    return glcm_features(counts, len(dists)).ravel()


def glcm_angle_stats_reference(q: np.ndarray, inside: np.ndarray, levels: int, distances) -> np.ndarray:
    """:func:`glcm_angle_stats` by :func:`glcm` and :func:`glcm_props` (NumPy); for tests."""
    props = glcm_props(glcm(q, inside, levels, distances))
    V = np.stack([props[prop] for prop in GLCM_PROPS])  # (n_props, n_dist, 4 angles)
    valid = ~np.isnan(V)
    n = valid.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, V, 0).sum(axis=2) / n
    rng = np.where(valid, V, -np.inf).max(axis=2) - np.where(valid, V, np.inf).min(axis=2)
    rng = np.where(n > 0, rng, np.nan)
    return np.stack([mean, rng], axis=2).ravel()


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


def _lbp_run(gray: np.ndarray, pairs, inside: np.ndarray, with_codes: bool):
    from ._kernels import lbp_uniform

    pairs = tuple((int(p), float(r)) for p, r in pairs)
    y0, x0, fy, fx, wx, n_points, start, hist_start, pad = _lbp_tables(pairs)
    hist = np.zeros(int((n_points + 2).sum()), np.int64)
    rows = np.flatnonzero(inside.any(axis=1))
    n_in = int(np.count_nonzero(inside)) if with_codes else 0
    codes = np.zeros((len(pairs), n_in), np.int64)
    if rows.size:
        cols = np.flatnonzero(inside.any(axis=0))
        lbp_uniform(np.ascontiguousarray(gray, np.uint8), np.ascontiguousarray(inside, np.bool_),
                    int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1, pad,
                    y0, x0, fy, fx, wx, n_points, start, hist_start, np.float32(1e-4), hist, codes)
    return hist, codes


def lbp_histograms(gray: np.ndarray, pairs, inside: np.ndarray) -> list[np.ndarray]:
    """Counts of the uniform LBP codes (``P + 2`` bins, int64) of the ``inside`` pixels of a
    uint8 image for every ``(P, R)`` in ``pairs``, in one compiled pass over the bounding box of
    ``inside``; the codes are those of :func:`uniform_lbp_reference`."""
    hist, _ = _lbp_run(gray, pairs, inside, False)
    return np.split(hist, np.cumsum([int(p) + 2 for p, _ in pairs])[:-1])


def uniform_lbp(gray: np.ndarray, P: int, R: float, inside: np.ndarray) -> np.ndarray:
    """Uniform rotation-invariant LBP codes (0..P+1) of the ``inside`` pixels of a uint8 image,
    int64 ``(n_inside,)`` in row-major order; compiled, the codes of
    :func:`uniform_lbp_reference`."""
    return _lbp_run(gray, [(P, R)], inside, True)[1][0]


def uniform_lbp_reference(gray: np.ndarray, P: int, R: float, inside: np.ndarray) -> np.ndarray:
    """Uniform rotation-invariant LBP codes (0..P+1) of the ``inside`` pixels of a uint8 image.

    Same definition as ``skimage.feature.local_binary_pattern(method="uniform")``: neighbours on
    a circle of radius ``R`` (bilinear interpolation), bit = neighbour >= centre; codes with at
    most two 0/1 transitions count their ones, all others get ``P + 1``. Pixels outside the
    image read as 0. int64 ``(n_inside,)``, in row-major order of the ``inside`` pixels.

    Vectorised, no per-pixel loop: codes are computed only on the bounding box of ``inside``,
    on a zero-padded float32 copy flattened to 1-D, so every neighbour is one contiguous shifted
    view (a flat offset). Bilinear interpolation is separable: one horizontally interpolated
    image per distinct horizontal fraction is shared by the neighbours that need it, and each
    neighbour then costs one multiply-add and one comparison.
    """
    rows = np.flatnonzero(inside.any(axis=1))
    if rows.size == 0:
        return np.zeros(0, np.int64)
    cols = np.flatnonzero(inside.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    h, w = r1 - r0, c1 - c0
    r = int(np.ceil(R)) + 1
    Wg = w + 2 * r
    g = np.zeros((h + 2 * r + 1, Wg), np.float32)  # one spare row keeps every view in range
    H, W = gray.shape
    ya, yb, xa, xb = max(r0 - r, 0), min(r1 + r, H), max(c0 - r, 0), min(c1 + r, W)
    g[ya - r0 + r:yb - r0 + r, xa - c0 + r:xb - c0 + r] = gray[ya:yb, xa:xb]
    gf = g.ravel()
    n = h * Wg  # outputs: rows r..r+h of the padded window, all its columns (flat, contiguous)
    base = r * Wg
    centre = gf[base:base + n] - np.float32(1e-4)
    ones = np.zeros(n, np.uint8)
    changes = np.zeros(n, np.uint8)
    bit, prev, first = np.empty(n, bool), np.empty(n, bool), np.empty(n, bool)
    v = np.empty(n, np.float32)
    horiz: dict[float, np.ndarray] = {}
    vert: dict[float, np.ndarray] = {}
    for p, (y0, x0, fy, fx) in enumerate(_lbp_plan(int(P), float(R))):
        hf = gf
        if fx:
            hf = horiz.get(fx)
            if hf is None:  # (1 - fx) * g[x] + fx * g[x + 1], along the flat rows
                hf = horiz[fx] = np.empty_like(gf)
                np.multiply(gf[:-1], np.float32(1 - fx), out=hf[:-1])
                hf[:-1] += gf[1:] * np.float32(fx)
                hf[-1] = 0
        off = base + y0 * Wg + x0
        if fy:
            d = vert.get(fx)
            if d is None:  # next row minus this row
                d = vert[fx] = hf[Wg:] - hf[:-Wg]
            np.multiply(d[off:off + n], np.float32(fy), out=v)
            v += hf[off:off + n]
            np.greater_equal(v, centre, out=bit)
        else:
            np.greater_equal(hf[off:off + n], centre, out=bit)
        ones += bit.view(np.uint8)
        if p == 0:
            first[:] = bit
        else:
            np.not_equal(bit, prev, out=prev)
            changes += prev.view(np.uint8)
        bit, prev = prev, bit
    np.not_equal(prev, first, out=bit)
    changes += bit.view(np.uint8)
    sel = np.zeros((h, Wg), bool)
    sel[:, r:r + w] = inside[r0:r1, c0:c1]
    sel = sel.ravel()
    return np.where(changes[sel] <= 2, ones[sel], P + 1).astype(np.int64)


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
        return list(_names_for(tuple(self._lbp()), tuple(self._distances())))  # built once per parameter set

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
