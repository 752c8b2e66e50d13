"""NumPy twins of the compiled kernels (:mod:`._kernels`) for short runs: same arguments, same
results bit for bit, no numba. Their pieces that need no vectorising (the Haralick formulas, the
convex hull, the union-find over runs, the Lab codes, ...) are the kernels' own helpers of
:mod:`._kernel_source`, called as Python.

Importing numba and loading the cached kernels costs about 0.8 s of CPU per process, two orders
of magnitude more than one image's features (a few ms compiled, some tens of ms here), so a run of
a few images (``medfuse extract ONE_IMAGE``: start-up, issue 15) uses these and a long run the
compiled kernels: :func:`kernel` picks. Each twin does the compiled kernel's float operations in
its order (sequential sums as ``np.cumsum`` or Python loops, ``x ** 2`` as ``x * x``, ``x ** 3``
as ``x * (x * x)`` and ``x ** 4`` as ``(x * x) * (x * x)``, as numba unrolls a constant power;
``log2`` from the C library, as numba calls it), integer work by ``np.bincount``;
``tests/test_kernels_np.py`` checks the equality on synthetic and real images.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from . import _kernel_source as src

SHORT_RUN_IMAGES = 8
"""Runs of at most this many images (:data:`medfuse.engine.RUN_IMAGES`) use the NumPy twins."""


TWINS = ("lbp_uniform", "glcm_counts", "glcm_features", "colour_histograms", "hist_stats", "blue_minus_green",
         "class_variance_table", "multiotsu4", "label_components", "fill_holes4", "shape_stats")
"""The compiled kernels that have a twin here (``tests/test_kernels_np.py`` checks each)."""
_compiled: list[Any] = []  # the compiled kernels' module once a run used it: later calls go straight there


def kernel(name: str) -> Any:
    """The kernel ``name`` for the run being processed: the NumPy twin in a short run (at most
    :data:`SHORT_RUN_IMAGES` images, as :func:`medfuse.engine.iter_images` announces it) while numba
    is not imported yet, else the compiled one (also outside a run: tests, direct calls)."""
    if not _compiled:
        from medfuse.engine import RUN_IMAGES

        n = RUN_IMAGES.get()
        twin = globals().get(name) if name in TWINS else None  # a kernel without a twin: compiled
        if twin is not None and n is not None and n <= SHORT_RUN_IMAGES and "medfuse_plugins._kernels" not in sys.modules:
            return twin
        from . import _kernels

        _compiled.append(_kernels)
    return getattr(_compiled[0], name)


# ---- texture ------------------------------------------------------------------------------------
def lbp_uniform(gray, inside, r0, r1, c0, c1, pad, y0, x0, fy, fx, wx, n_points, start,
                hist_start, eps, hist):
    """:func:`._kernels.lbp_uniform`: codes of the whole box at once (each pixel's float32
    interpolation as the kernel does it), counted where ``inside``."""
    h, w = r1 - r0, c1 - c0
    g = np.zeros((h + 2 * pad + 1, w + 2 * pad), np.float32)
    H, W = gray.shape
    ya, yb = max(r0 - pad, 0), min(r1 + pad, H)
    xa_, xb_ = max(c0 - pad, 0), min(c1 + pad, W)
    if ya < yb and xa_ < xb_:
        g[ya - r0 + pad:yb - r0 + pad, xa_ - c0 + pad:xb_ - c0 + pad] = gray[ya:yb, xa_:xb_]
    box = inside[r0:r1, c0:c1]
    centre = g[pad:pad + h, pad:pad + w] - eps
    for s in range(n_points.shape[0]):
        P = int(n_points[s])
        ones = np.zeros((h, w), np.uint8)
        changes = np.zeros((h, w), np.uint8)
        first = prev = None
        for p in range(P):
            k = int(start[s]) + p
            ty, tx = pad + int(y0[k]), pad + int(x0[k])
            ta = g[ty:ty + h]
            tb = g[ty + 1:ty + 1 + h]
            a, b, f = wx[k], fx[k], fy[k]
            if b != 0 and f != 0:
                top = ta[:, tx:tx + w] * a + ta[:, tx + 1:tx + 1 + w] * b
                bot = tb[:, tx:tx + w] * a + tb[:, tx + 1:tx + 1 + w] * b
                v = (bot - top) * f + top
            elif b != 0:
                v = ta[:, tx:tx + w] * a + ta[:, tx + 1:tx + 1 + w] * b
            elif f != 0:
                top = ta[:, tx:tx + w]
                v = (tb[:, tx:tx + w] - top) * f + top
            else:
                v = ta[:, tx:tx + w]
            bit = (v >= centre).astype(np.uint8)
            if p == 0:
                first = bit
            else:
                changes += bit ^ prev
            ones += bit
            prev = bit
        c = changes + (prev ^ first)
        code = np.where(c <= 2, ones, P + 1)
        hist[int(hist_start[s]):int(hist_start[s]) + P + 2] += np.bincount(code[box], minlength=P + 2)


def glcm_counts(q, inside, levels, d_row, d_col):
    """:func:`._kernels.glcm_counts` by ``np.bincount`` over the shifted pixel pairs."""
    rows, cols = q.shape
    n = d_row.shape[0]
    out = np.empty((n, levels, levels), np.int64)
    qq = q.astype(np.int64)
    for k in range(n):
        dr, dc = int(d_row[k]), int(d_col[k])
        ra, rb = max(0, -dr), min(rows, rows - dr)
        ca, cb = max(0, -dc), min(cols, cols - dc)
        if ra >= rb or ca >= cb:
            out[k] = 0
            continue
        both = inside[ra:rb, ca:cb] & inside[ra + dr:rb + dr, ca + dc:cb + dc]
        pair = qq[ra:rb, ca:cb][both] * levels + qq[ra + dr:rb + dr, ca + dc:cb + dc][both]
        C = np.bincount(pair, minlength=levels * levels).reshape(levels, levels)
        out[k] = C + C.T
    return out


def glcm_features(counts, n_dist):
    """:func:`._kernels.glcm_features`: the same per-term products, summed in the kernel's
    (row-major) order by ``np.cumsum``; ``log2`` of the C library."""
    n_off = counts.shape[0]
    props = np.full((12, n_off), np.nan)
    for k in range(n_off):
        ck = counts[k]
        total = float(ck.sum())
        if total == 0:
            continue
        ii, jj = np.nonzero(ck)
        p = ck[ii, jj] / total
        fi, fj = ii.astype(np.float64), jj.astype(np.float64)
        d = np.abs(fi - fj)
        s = fi + fj
        s2 = s * s

        def seq(terms: np.ndarray) -> float:
            return float(np.cumsum(terms)[-1])

        mu = seq(fi * p)
        i2 = seq(fi * fi * p)
        ij = seq(fi * fj * p)
        dis = seq(d * p)
        con = seq(d * d * p)
        hom = seq(1.0 / (1.0 + d * d) * p)
        m1 = seq(s * p)
        m2 = seq(s2 * p)
        m3 = seq((s * s2) * p)
        m4 = seq((s2 * s2) * p)
        asm = seq(p * p)
        ent = seq(p * np.array([math.log2(v) for v in p.tolist()]))
        mx = float(p.max())
        src.haralick(props, k, mu, i2, ij, dis, con, hom, m1, m2, m3, m4, asm, ent, mx)
    return src.reduce_angles(props, n_dist)


# ---- colour -------------------------------------------------------------------------------------
def colour_histograms(px, region, hue_lut, sat_lut, xyz, cube, want_rgb, want_hsv):
    """:func:`._kernels.colour_histograms` by ``np.bincount`` (Lab codes by the same float32 operations)."""
    out = np.zeros((9, 3, 256), np.int64)
    n = px.shape[0]
    if n == 0:
        return out
    c = np.minimum(region, 2).astype(np.int64) * 256

    def count(ch: int, values: np.ndarray) -> None:
        out[ch] = np.bincount(c + values.astype(np.int64), minlength=768).reshape(3, 256)

    ri, gi, bi = (px[:, j].astype(np.int64) for j in range(3))
    if want_rgb:
        for j, v in enumerate((ri, gi, bi)):
            count(j, v)
    if want_hsv:
        v = np.maximum(np.maximum(ri, gi), bi)
        mn = np.minimum(np.minimum(ri, gi), bi)
        count(3, hue_lut[(ri - bi + 255) * 511 + (gi - bi + 255)])
        count(4, sat_lut[v * 256 + mn])
        count(5, v)
    if xyz.shape[0] == n:
        f = [np.where(src.lab_is_linear(xyz[:, j]), src.lab_linear(xyz[:, j]), cube[:, j]) for j in range(3)]
        L, a, bb = src.lab_values(*f)
        count(6, src.code8_array(L))
        count(7, src.code8_array(a))
        count(8, src.code8_array(bb))
    return out


def hist_stats(H, percentiles):
    """:func:`._kernels.hist_stats`: the sums in the kernel's bin order (``np.cumsum``)."""
    k = H.shape[0]
    n_q = percentiles.shape[0]
    out = np.full((k, 2 + n_q), np.nan)
    v = np.arange(256, dtype=np.float64)
    for r in range(k):
        h = H[r].astype(np.float64)
        n = float(h.sum())
        if n == 0:
            continue
        s = float(np.cumsum(h * v)[-1])
        mean = s / n
        d = v - mean
        ss = float(np.cumsum(h * (d * d))[-1])
        out[r, 0] = mean
        out[r, 1] = math.sqrt(max(ss / n, 0.0))
        share = np.cumsum(h) / n
        for q in range(n_q):
            out[r, 2 + q] = int(np.count_nonzero(share < percentiles[q]))
    return out


# ---- mask (otsu_cell) ---------------------------------------------------------------------------
def blue_minus_green(image):
    """:func:`._kernels.blue_minus_green`."""
    s = np.clip(image[..., 2].astype(np.int32) - image[..., 1].astype(np.int32) + 64, 0, 255).astype(np.uint8)
    return s, np.bincount(s.ravel(), minlength=256).astype(np.int64)


def class_variance_table(prob):
    """:func:`._kernels.class_variance_table`: float32 cumulative sums (sequential, as the kernel)."""
    n = prob.shape[0]
    P = np.cumsum(prob, dtype=np.float32)
    terms = np.arange(n, dtype=np.float32) * prob
    terms[0] = prob[0]
    S = np.cumsum(terms, dtype=np.float32)
    p0 = np.concatenate([np.zeros(1, np.float32), P[:-1]])
    s0 = np.concatenate([np.zeros(1, np.float32), S[:-1]])
    pij = P[None, :] - p0[:, None]
    sij = S[None, :] - s0[:, None]
    i, j = np.indices((n, n))
    ok = (j >= np.maximum(i, 1)) & (pij > 0)
    V = np.zeros((n, n), np.float32)
    V[ok] = sij[ok] * sij[ok] / pij[ok]
    return V


def multiotsu4(V):
    """:func:`._kernels.multiotsu4`: the same float32 sums and ties, vectorised per middle threshold."""
    n = V.shape[0]
    if n < 4:  # no t0 < t1 < t2 < n - 1
        return np.array([n, n, n], np.int64)
    ninf = np.float32(-np.inf)
    idx = np.arange(n)
    M = V[0, :n - 1, None] + V[1:, :]  # M[t0, t1] = V[0, t0] + V[t0 + 1, t1]
    A = np.where(idx[:n - 1, None] < idx[None, :], M, ninf).max(axis=0, initial=ninf).astype(np.float32)
    N = V[1:, :n - 1] + V[1:, n - 1][None, :]  # N[t1, t2] = V[t1 + 1, t2] + V[t2 + 1, n - 1]
    B = np.full(n, ninf, np.float32)
    B[:n - 1] = np.where(idx[None, :n - 1] > idx[:n - 1, None], N, ninf).max(axis=1, initial=ninf)
    total = np.full(n, ninf, np.float32)
    total[1:n - 2] = A[1:n - 2] + B[1:n - 2]
    tmax = total[1:n - 2].max()
    best = float(tmax)
    thr = np.float32(best - abs(best) * 1e-5)
    b_e, b0, b1, b2 = ninf, n, n, n
    for t1 in range(1, n - 2):
        if not total[t1] >= thr:
            continue
        left = M[:t1, t1]  # t0 < t1
        right = N[t1, t1 + 1:n - 1]  # t1 < t2 < n - 1
        ok = left[:, None] + right[None, :] >= thr
        if not ok.any():
            continue
        e = ((V[0, :t1][:, None] + V[t1 + 2:n, n - 1][None, :]) + V[1:t1 + 1, t1][:, None]) + V[t1 + 1, t1 + 1:n - 1][None, :]
        e = np.where(ok, e, ninf)
        top = e.max()
        t0s, t2s = np.nonzero(ok & (e == top))
        t0, t2 = int(t0s[0]), int(t2s[0]) + t1 + 1  # row-major: the smallest t0, then t2
        if top > b_e or (top == b_e and (t0, t1, t2) < (b0, b1, b2)):
            b_e, b0, b1, b2 = top, t0, t1, t2
    return np.array([b0, b1, b2], np.int64)


def label_components(binary, weights, eight):
    """:func:`._kernels.label_components`: the kernel's union-find over horizontal runs (a Python
    loop over runs, not pixels), numbered in raster order of each component's first pixel."""
    h, w = binary.shape
    on = binary != 0
    b = np.zeros((h, w + 2), np.int8)
    b[:, 1:-1] = on
    edges = np.diff(b, axis=1)
    sy, sx = np.nonzero(edges == 1)
    ey, ex = np.nonzero(edges == -1)
    n = sy.size
    parent = list(range(n))
    rs, re_ = sx.tolist(), ex.tolist()
    src.union_runs(parent, rs, re_, np.searchsorted(sy, np.arange(h + 1)).tolist(), 1 if eight else 0)
    final, m = src.number_classes(parent, n)
    labels = np.zeros((h, w), np.int32)
    lengths = np.asarray(re_, np.int64) - np.asarray(rs, np.int64)
    labels[on] = np.repeat(final, lengths)
    area = np.zeros(m + 1, np.int64)
    np.add.at(area, final, lengths)
    weighted = np.zeros(m + 1, np.int64)
    if weights.shape[0] == h and weights.shape[1] == w and n:
        wsum = np.bincount(labels[on], weights=weights[on].astype(np.float64), minlength=m + 1)
        weighted[1:] = wsum[1:m + 1].astype(np.int64)
    return labels, area, weighted


def fill_holes4(binary):
    """:func:`._kernels.fill_holes4`: background components (4-connected) that touch the border stay
    background, every other pixel is foreground."""
    h, w = binary.shape
    background = ~binary.astype(bool)
    labels, _, _ = label_components(background, np.zeros((0, 0), np.bool_), False)
    border = np.zeros(int(labels.max()) + 1, bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        border[edge] = True
    border[0] = False
    return ~border[labels] if h and w else np.ones((h, w), np.bool_)


# ---- morphology ---------------------------------------------------------------------------------
def shape_stats(binary, crofton, dir_cos, dir_sin):
    """:func:`._kernels.shape_stats`: exact integer sums by NumPy, the hull and its area and
    perimeter by the kernel's own helpers (a few hundred points), the Feret diameters vectorised."""
    h, w = binary.shape
    out = np.zeros(13, np.float64)
    b = binary.astype(bool)
    ys, xs = np.nonzero(b)
    area = int(ys.size)
    pad = np.zeros((h + 2, w + 2), np.int64)
    pad[1:h + 1, 1:w + 1] = b
    code = pad[1:, 1:] + 2 * pad[:-1, 1:] + 4 * pad[1:, :-1] + 8 * pad[:-1, :-1]
    conf = np.bincount(code.ravel(), minlength=16).tolist()
    out[0] = area
    if area == 0:
        return out
    y64, x64 = ys.astype(np.int64), xs.astype(np.int64)
    sy, sx = int(y64.sum()), int(x64.sum())
    syy, sxx, sxy = int((y64 * y64).sum()), int((x64 * x64).sum()), int((y64 * x64).sum())
    src.moments(out, area, sy, sx, syy, sxx, sxy)
    out[6] = src.crofton_perimeter(crofton, conf)
    has = b.any(axis=1)
    left = np.where(has, b.argmax(axis=1), -1).tolist()
    right = np.where(has, w - 1 - b[:, ::-1].argmax(axis=1), -1).tolist()
    rows = np.flatnonzero(has)
    r0, r1 = int(rows[0]), int(rows[-1])
    c_lo, c_hi = min(left[r] for r in rows.tolist()), max(right[r] for r in rows.tolist())
    hy, hx, k = src.convex_hull(left, right, r0, r1, w)
    out[7], out[8] = src.hull_area_perimeter(hy, hx, k)
    vy, vx = hy[:k], hx[:k]
    dy, dx = vy[:, None] - vy[None, :], vx[:, None] - vx[None, :]
    out[9] = math.sqrt(max(0.0, float((dy * dy + dx * dx).max()))) if k else 0.0
    c = np.asarray(dir_cos, np.float64)
    s = np.asarray(dir_sin, np.float64)
    if c.size == 0:
        out[10] = math.inf
    elif k == 0:
        out[10] = -math.inf
    else:
        proj = vy[:, None] * c[None, :] + vx[:, None] * s[None, :]
        out[10] = float((proj.max(axis=0) - proj.min(axis=0)).min())
    out[11] = r1 - r0 + 1
    out[12] = c_hi - c_lo + 1
    return out
