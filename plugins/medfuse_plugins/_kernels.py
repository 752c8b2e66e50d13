"""Compiled (numba) kernels for the classical features' hot spots: uniform LBP and GLCM
accumulation (texture), per-region channel histograms (colour), the ``blue_minus_green`` stain
channel with its histogram (``otsu_cell`` mask).

Each kernel reproduces its NumPy (or scikit-image) reference exactly (same float32 arithmetic,
same order of operations, no fused multiply-add), so features and masks do not change;
``tests/test_kernels.py``, ``test_colour.py`` and ``test_segmentation.py`` check the equality. Compiled on first use and
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

    Pixels are coded ``q + 1`` inside and 0 outside, so the partner needs no test (pairs with
    a 0 end land in a discarded column); even and odd columns count into separate
    tables, so runs of equal pairs do not serialise on one counter."""
    rows, cols = q.shape
    n = d_row.shape[0]
    code = np.zeros((rows, cols), np.int32)
    for r in range(rows):
        for c in range(cols):
            if inside[r, c]:
                code[r, c] = np.int32(q[r, c]) + 1
    L1 = levels + 1
    acc = np.zeros((n, 2, L1, L1), np.int32)
    for k in range(n):
        dr, dc = d_row[k], d_col[k]
        c_lo, c_hi = max(0, -dc), min(cols, cols - dc)
        for r in range(max(0, -dr), min(rows, rows - dr)):
            ra = code[r]
            rb = code[r + dr]
            for c in range(c_lo, c_hi):
                a = ra[c]
                if a:
                    acc[k, c & 1, a, rb[c + dc]] += 1
    out = np.empty((n, levels, levels), np.int64)
    for k in range(n):
        for i in range(levels):
            for j in range(levels):
                out[k, i, j] = (acc[k, 0, i + 1, j + 1] + acc[k, 1, i + 1, j + 1]
                                + acc[k, 0, j + 1, i + 1] + acc[k, 1, j + 1, i + 1])
    return out


@numba.njit(cache=True, nogil=True)
def colour_histograms(px, region, hue_lut, sat_lut, lab, want_rgb, want_hsv):
    """256-bin histograms per channel and region code of an ``(N, 3)`` uint8 RGB pixel list:
    int64 ``(9, 3, 256)``, channels RGB, HSV, Lab, region codes ``min(region, 2)`` (0 outside,
    1 cytoplasm, 2 nucleus). HSV by the lookup tables of ``colour._hsv_luts`` (the transform's
    codes); Lab codes are given, ``(3, N)`` uint8 (no columns: not counted). Spaces not asked for
    stay zero."""
    out = np.zeros((9, 3, 256), np.int64)
    n = px.shape[0]
    want_lab = lab.shape[1] == n
    for k in range(n):
        c = min(region[k], 2)
        r, g, b = px[k, 0], px[k, 1], px[k, 2]
        if want_rgb:
            out[0, c, r] += 1
            out[1, c, g] += 1
            out[2, c, b] += 1
        if want_hsv:
            ri, gi, bi = np.int64(r), np.int64(g), np.int64(b)
            v = max(ri, gi, bi)
            mn = min(ri, gi, bi)
            out[3, c, hue_lut[(ri - bi + 255) * 511 + (gi - bi + 255)]] += 1
            out[4, c, sat_lut[v * 256 + mn]] += 1
            out[5, c, v] += 1
        if want_lab:
            out[6, c, lab[0, k]] += 1
            out[7, c, lab[1, k]] += 1
            out[8, c, lab[2, k]] += 1
    return out


@numba.njit(cache=True, nogil=True)
def blue_minus_green(image):
    """The ``blue_minus_green`` stain channel ``clip(B - G + 64, 0, 255)`` of a uint8
    ``(H, W, 3)`` RGB image and its 256-bin histogram, in one pass: ``(uint8 (H, W), int64 (256,))``."""
    H, W = image.shape[0], image.shape[1]
    s = np.empty((H, W), np.uint8)
    hist = np.zeros(256, np.int64)
    for y in range(H):
        for x in range(W):
            v = min(max(np.int32(image[y, x, 2]) - np.int32(image[y, x, 1]) + 64, 0), 255)
            s[y, x] = v
            hist[v] += 1
    return s, hist
