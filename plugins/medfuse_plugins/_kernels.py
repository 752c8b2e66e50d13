"""Compiled (numba) kernels for the texture hot spots: uniform LBP and GLCM accumulation.

Each kernel reproduces the vectorised NumPy reference in :mod:`medfuse_plugins.texture`
exactly (same float32 arithmetic, same order of operations, no fused multiply-add), so the
features do not change; ``tests/test_kernels.py`` checks the equality. Compiled on first use and
cached on disk (``cache=True``): the one-off compile is paid once per environment, not per
process. ``nogil=True`` lets threads run them in parallel.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def lbp_uniform(gray, inside, r0, r1, c0, c1, pad, y0, x0, fy, fx, wx, n_points, start,
                hist_start, eps, hist, codes):
    """Uniform rotation-invariant LBP of the ``inside`` pixels in the box ``[r0:r1, c0:c1]``,
    for every scale in one pass over the box's rows.

    ``gray``: uint8 ``(H, W)``, pixels outside it read as 0. Per neighbour (all scales
    concatenated, scale ``s`` owning ``start[s]:start[s] + n_points[s]``): floor offsets
    ``y0, x0`` (int64), fractions ``fy, fx`` and ``wx = 1 - fx`` (float32). Bit = interpolated
    neighbour >= centre - ``eps`` (float32). Adds each pixel's code to ``hist`` (int64, scale
    ``s``'s ``P + 2`` bins from ``hist_start[s]``); if ``codes`` has columns, also writes the
    codes there, ``(n_scales, n_inside)``, in row-major pixel order.
    """
    h, w = r1 - r0, c1 - c0
    Wg = w + 2 * pad
    g = np.zeros((h + 2 * pad + 1, Wg), np.float32)
    H, W = gray.shape
    for yy in range(max(r0 - pad, 0), min(r1 + pad, H)):
        for xx in range(max(c0 - pad, 0), min(c1 + pad, W)):
            g[yy - r0 + pad, xx - c0 + pad] = np.float32(gray[yy, xx])
    centre = np.empty(w, np.float32)
    v = np.empty(w, np.float32)
    ones = np.empty(w, np.uint8)
    changes = np.empty(w, np.uint8)
    first = np.empty(w, np.uint8)
    prev = np.empty(w, np.uint8)
    want_codes = codes.shape[1] > 0
    uw = np.uint64(w)
    n_scales = n_points.shape[0]
    k0 = 0  # index of the row's first inside pixel in row-major order
    for y in range(h):
        gy = y + pad
        n_in = 0
        for x in range(w):
            centre[x] = g[gy, x + pad] - eps
            if inside[r0 + y, c0 + x]:
                n_in += 1
        if n_in == 0:
            continue
        for s in range(n_scales):
            P = n_points[s]
            for p in range(P):
                k = start[s] + p
                # unsigned indices: no negative-index wraparound, so the x loops vectorise
                ta = g[np.uint64(gy + y0[k])]
                tb = g[np.uint64(gy + y0[k] + 1)]
                xa = np.uint64(pad + x0[k])
                xb = xa + np.uint64(1)
                a, b, f = wx[k], fx[k], fy[k]
                if b != 0 and f != 0:
                    for x in range(uw):
                        top = ta[xa + x] * a + ta[xb + x] * b
                        bot = tb[xa + x] * a + tb[xb + x] * b
                        v[x] = (bot - top) * f + top
                elif b != 0:
                    for x in range(uw):
                        v[x] = ta[xa + x] * a + ta[xb + x] * b
                elif f != 0:
                    for x in range(uw):
                        top = ta[xa + x]
                        v[x] = (tb[xa + x] - top) * f + top
                else:
                    for x in range(uw):
                        v[x] = ta[xa + x]
                if p == 0:
                    for x in range(uw):
                        bit = np.uint8(v[x] >= centre[x])
                        ones[x] = bit
                        first[x] = bit
                        prev[x] = bit
                        changes[x] = 0
                else:
                    for x in range(uw):
                        bit = np.uint8(v[x] >= centre[x])
                        ones[x] = ones[x] + bit
                        changes[x] = changes[x] + (bit ^ prev[x])
                        prev[x] = bit
            hb = hist_start[s]
            k = k0
            for x in range(w):
                if inside[r0 + y, c0 + x]:
                    c = changes[x] + (prev[x] ^ first[x])
                    code = ones[x] if c <= 2 else P + 1
                    hist[hb + code] += 1
                    if want_codes:
                        codes[s, k] = code
                    k += 1
        k0 += n_in


@numba.njit(cache=True, nogil=True)
def glcm_counts(q, inside, levels, d_row, d_col):
    """Symmetric co-occurrence counts of quantised image ``q`` (values < ``levels``) over pixel
    pairs ``(r, c)``, ``(r + d_row[k], c + d_col[k])`` with both ends ``inside``: int64
    ``(n_offsets, levels, levels)``, ``C + C.T`` as ``skimage.feature.graycomatrix(symmetric=True)``.
    One pass over the pixels, every offset per pixel."""
    rows, cols = q.shape
    n = d_row.shape[0]
    acc = np.zeros((n, levels, levels), np.int32)
    for r in range(rows):
        for c in range(cols):
            if not inside[r, c]:
                continue
            i = q[r, c]
            for k in range(n):
                rr = r + d_row[k]
                cc = c + d_col[k]
                if 0 <= rr < rows and 0 <= cc < cols and inside[rr, cc]:
                    acc[k, i, q[rr, cc]] += 1
    out = np.empty((n, levels, levels), np.int64)
    for k in range(n):
        for i in range(levels):
            for j in range(levels):
                out[k, i, j] = acc[k, i, j] + acc[k, j, i]
    return out
