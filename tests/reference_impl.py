"""Reference implementations of the compiled feature kernels, kept only to test them.

Each function is the earlier NumPy / scikit-image / Qhull code path of a plugin function; the
tests check that the compiled path (``medfuse_plugins._kernels``) gives the same values:

* texture: :func:`glcm` and :func:`glcm_reference` (scikit-image), :func:`glcm_props`,
  :func:`glcm_angle_stats_reference`, :func:`uniform_lbp_reference`; :func:`compiled_lbp_codes`
  reads per-pixel codes back from the compiled histogram kernel;
* colour: :func:`hsv8_pixels`, :func:`lab8_pixels` (pixel lists, NumPy); :func:`compiled_lab_codes`
  runs the compiled histogram kernel's Lab tail per pixel;
* segmentation: :func:`class_variance_table_reference` (scikit-image's multi-Otsu table);
* morphology: :func:`perimeter_crofton4`, :func:`shape_reference` (projections + Qhull).
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from medfuse_plugins._kernels import _code8, _lab_code, glcm_counts
from medfuse_plugins.colour import _hsv_luts, _lab_parts
from medfuse_plugins.morphology import _CROFTON4, _DIRS, SHAPE_NAMES, _shape_dict
from medfuse_plugins.texture import ANGLES, GLCM_PROPS, _glcm_offsets, _lbp_plan, lbp_histograms

# ---- texture ------------------------------------------------------------------------------


def glcm(q: np.ndarray, inside: np.ndarray, levels: int, distances) -> np.ndarray:
    """Symmetric normalised co-occurrence matrices of quantised image ``q`` (values < levels)
    over pixel pairs both inside ``inside``; float64 ``(levels, levels, n_dist, 4)``, NaN where
    no pair exists. Callers pass the bounding box of ``inside`` (pairs need both ends inside).
    Counts by the compiled ``glcm_counts`` (as the plugin counts them); the same matrices as
    :func:`glcm_reference` (scikit-image)."""
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


def glcm_angle_stats_reference(q: np.ndarray, inside: np.ndarray, levels: int, distances) -> np.ndarray:
    """``texture.glcm_angle_stats`` by :func:`glcm` and :func:`glcm_props` (NumPy)."""
    props = glcm_props(glcm(q, inside, levels, distances))
    V = np.stack([props[prop] for prop in GLCM_PROPS])  # (n_props, n_dist, 4 angles)
    valid = ~np.isnan(V)
    n = valid.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, V, 0).sum(axis=2) / n
    rng = np.where(valid, V, -np.inf).max(axis=2) - np.where(valid, V, np.inf).min(axis=2)
    rng = np.where(n > 0, rng, np.nan)
    return np.stack([mean, rng], axis=2).ravel()


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


def compiled_lbp_codes(gray: np.ndarray, P: int, R: float, inside: np.ndarray) -> np.ndarray:
    """The compiled kernel's code of each ``inside`` pixel (row-major, int64), read back from
    :func:`medfuse_plugins.texture.lbp_histograms` with that pixel alone inside (a pixel's code
    depends on the grey image only, not on the mask). One kernel call per pixel: small images."""
    out = np.empty(int(np.count_nonzero(inside)), np.int64)
    one = np.zeros(inside.shape, bool)
    for k, (y, x) in enumerate(zip(*np.nonzero(inside))):
        one[y, x] = True
        out[k] = int(np.argmax(lbp_histograms(gray, [(P, R)], one)[0]))
        one[y, x] = False
    return out


# ---- colour -------------------------------------------------------------------------------


def hsv8_pixels(px: np.ndarray) -> list[np.ndarray]:
    """HSV uint8 codes of an ``(N, 3)`` uint8 pixel list, as three ``(N,)`` arrays; the same
    values as :func:`medfuse_plugins.transforms.rgb_to_hsv8`, by table lookup."""
    hue, sat = _hsv_luts()
    r, g, b = (px[:, k] for k in range(3))
    v = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    bi = b.astype(np.int32)
    h = np.take(hue, (r.astype(np.int32) - bi + 255) * 511 + (g.astype(np.int32) - bi + 255))
    s = np.take(sat, v.astype(np.int32) * 256 + mn)
    return [h, s, v]


def lab8_pixels(px: np.ndarray) -> list[np.ndarray]:
    """Lab uint8 codes (``L * 2.55``, ``a + 128``, ``b + 128``) of an ``(N, 3)`` uint8 pixel list.

    The formula of :func:`medfuse_plugins.transforms.rgb_to_lab8` in float32, with the cube root
    taken as ``exp(log(t) / 3)`` (vectorised; ``np.cbrt`` is ~6x slower): a code can differ from
    the transform's by 1 where the exact value lies within ~1e-4 of a rounding boundary (603 of
    the 2**24 colours when this was written; never by more than 1).
    """
    xyz, f = _lab_parts(px)
    lin = xyz <= np.float32(0.008856)
    if lin.any():
        f[lin] = np.float32(7.787) * xyz[lin] + np.float32(16.0 / 116.0)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    L = (np.float32(116.0) * fy - np.float32(16.0)) * np.float32(2.55)
    a = np.float32(500.0) * (fx - fy) + np.float32(128.0)
    bb = np.float32(200.0) * (fy - fz) + np.float32(128.0)
    return [np.clip(x + np.float32(0.5), 0, 255).astype(np.uint8) for x in (L, a, bb)]


@numba.njit(cache=True)
def compiled_lab_codes(xyz, cube):
    """The uint8 Lab codes ``(3, N)`` that ``_kernels.colour_histograms`` counts, from the same
    float32 ``(N, 3)`` XYZ and cube roots, with the kernel's own ``_lab_code`` and ``_code8``."""
    n = xyz.shape[0]
    out = np.empty((3, n), np.uint8)
    for k in range(n):
        fx = _lab_code(xyz[k, 0], cube[k, 0])
        fy = _lab_code(xyz[k, 1], cube[k, 1])
        fz = _lab_code(xyz[k, 2], cube[k, 2])
        out[0, k] = _code8((np.float32(116.0) * fy - np.float32(16.0)) * np.float32(2.55))
        out[1, k] = _code8(np.float32(500.0) * (fx - fy) + np.float32(128.0))
        out[2, k] = _code8(np.float32(200.0) * (fy - fz) + np.float32(128.0))
    return out


# ---- segmentation -------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _triu(rows: int, cols: int, k: int) -> np.ndarray:
    return np.triu(np.ones((rows, cols), bool), k)


def class_variance_table_reference(prob: np.ndarray) -> np.ndarray:
    """``V[i, j]`` = (first moment of bins i..j)^2 / (their mass), float32, as scikit-image's
    multi-Otsu lookup table builds it (including its conventions: the first moment of bin 0
    counts ``prob[0]``, ``V[0, 0] = 0`` and an empty class scores 0). Upper triangle only."""
    n = prob.size
    P = np.cumsum(prob, dtype=np.float32)
    terms = np.arange(n, dtype=np.float32) * prob
    terms[0] = prob[0]
    S = np.cumsum(terms, dtype=np.float32)
    P0 = np.concatenate([np.zeros(1, np.float32), P[:-1]])  # mass before bin i
    S0 = np.concatenate([np.zeros(1, np.float32), S[:-1]])
    Pij = P[None, :] - P0[:, None]
    Sij = S[None, :] - S0[:, None]
    Pij[0] = P
    Sij[0] = S
    ok = (Pij > 0) & _triu(n, n, 0)
    ok[0, 0] = False
    with np.errstate(invalid="ignore", divide="ignore"):  # float32 throughout, as the Cython code
        return np.where(ok, Sij * Sij / Pij, np.float32(0)).astype(np.float32)


# ---- morphology ---------------------------------------------------------------------------


def perimeter_crofton4(binary: np.ndarray) -> float:
    """``skimage.measure.perimeter_crofton(binary, directions=4)`` without the generic
    convolution: the 2x2 configuration codes are summed from four shifted uint8 views."""
    h, w = binary.shape
    q = np.zeros((h + 3, w + 3), np.uint8)
    q[2:h + 2, 2:w + 2] = binary
    code = q[1:, 1:] + (q[1:, :-1] << 2)
    code += q[:-1, 1:] << 1
    code += q[:-1, :-1] << 3
    return float(_CROFTON4 @ np.bincount(code.ravel(), minlength=16))


def _chain(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Corners of one side of the pixel squares (``x`` per row ``y``), keeping only the two ends
    of each vertical run (the corners in between are collinear, never hull vertices)."""
    cy = np.stack([y - 0.5, y + 0.5], 1).ravel()
    cx = np.repeat(x, 2)
    keep = np.ones(cy.size, bool)
    keep[1:-1] = (cx[2:] != cx[1:-1]) | (cx[:-2] != cx[1:-1])
    return cy[keep], cx[keep]



def shape_reference(binary: np.ndarray) -> tuple[dict[str, float], float, float]:
    """``morphology._shape`` by NumPy projections and Qhull (the previous implementation)."""
    from scipy.spatial import ConvexHull

    row_n = np.count_nonzero(binary, axis=1)
    area = float(row_n.sum())
    if area == 0:
        return dict.fromkeys(SHAPE_NAMES, float("nan")), float("nan"), float("nan")
    col_n = np.count_nonzero(binary, axis=0)
    # central moments from the row/column projections and one matrix-vector product
    yv = np.arange(binary.shape[0], dtype=np.float64)
    xv = np.arange(binary.shape[1], dtype=np.float64)
    my, mx = float(row_n @ yv) / area, float(col_n @ xv) / area
    dy, dx = yv - my, xv - mx
    syy, sxx = float(row_n @ (dy * dy)) / area, float(col_n @ (dx * dx)) / area
    sxy = float(dy @ (binary @ dx)) / area
    perim = perimeter_crofton4(binary)
    # the convex hull of the pixel squares only needs each row's leftmost and rightmost pixel
    rows = np.flatnonzero(row_n)
    sub = binary[rows]
    left = sub.argmax(axis=1)
    right = sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
    y = rows.astype(np.float64)
    ly, lx = _chain(y, left - 0.5)
    ry, rx = _chain(y, right + 0.5)
    pts = np.stack([np.concatenate([ly, ry]), np.concatenate([lx, rx])], axis=1)
    hull = ConvexHull(pts)
    hp = pts[hull.vertices]
    proj = hp @ _DIRS.T
    widths = proj.max(axis=0) - proj.min(axis=0)
    diff = hp[:, None, :] - hp[None, :, :]
    feret_max = float(np.sqrt((diff ** 2).sum(-1)).max())
    cols = np.flatnonzero(col_n)
    h = rows[-1] - rows[0] + 1
    w = cols[-1] - cols[0] + 1
    return _shape_dict(area, syy, sxx, sxy, perim, float(hull.volume), float(hull.area), feret_max,
                       float(widths.min()), float(h * w)), my, mx
