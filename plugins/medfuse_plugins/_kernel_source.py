"""The classical features' hot spots as plain Python that numba compiles: uniform LBP and GLCM
accumulation (texture), per-region channel histograms (colour), the ``blue_minus_green`` stain
channel with its histogram (``otsu_cell`` mask), connected components and hole filling
(``otsu_cell``, morphology), one-pass shape quantities with the convex hull (morphology).

This module imports no numba. Its functions are plain Python that numba's nopython mode also
compiles: :mod:`._kernels` compiles the kernels and lets them call the :data:`HELPERS`; the NumPy
twins (:mod:`._kernels_np`: short runs, no numba) call the helpers as Python (and
:func:`code8_array`, the array form of :func:`code8`), so each piece of kernel logic has one source.
Keep every function that a kernel calls in this file: numba's on-disk cache of a kernel is checked
against the kernel's own source file only, so a helper edited in another file would leave the
cached kernel stale.

Each kernel reproduces its NumPy (or scikit-image) reference exactly (same float32 arithmetic,
same order of operations, no fused multiply-add; the shared helpers write powers as the products
numba unrolls them into, ``x ** 3`` as ``x * (x * x)``), so features and masks do not change;
``tests/test_kernels.py``, ``test_shape_kernels.py``, ``test_colour.py`` and
``test_segmentation.py`` check the equality (shape quantities: to float64 round-off, as their sums
run in another order).
"""

from __future__ import annotations

import math

import numpy as np


def lbp_uniform(gray, inside, r0, r1, c0, c1, pad, y0, x0, fy, fx, wx, n_points, start,
                hist_start, eps, hist):
    """Uniform rotation-invariant LBP of the ``inside`` pixels in the box ``[r0:r1, c0:c1]``,
    for every scale in one pass over the box's rows.

    ``gray``: uint8 ``(H, W)``, pixels outside it read as 0. Per neighbour (all scales
    concatenated, scale ``s`` owning ``start[s]:start[s] + n_points[s]``): floor offsets
    ``y0, x0`` (int64), fractions ``fy, fx`` and ``wx = 1 - fx`` (float32). Bit = interpolated
    neighbour >= centre - ``eps`` (float32). Adds each pixel's code to ``hist`` (int64, scale
    ``s``'s ``P + 2`` bins from ``hist_start[s]``). Per row, only the span between its first and
    last inside pixel is computed.
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
    n_scales = n_points.shape[0]
    for y in range(h):
        gy = y + pad
        lo, hi = w, 0  # the row's inside span: only its pixels get codes
        for x in range(w):
            if inside[r0 + y, c0 + x]:
                lo = min(lo, x)
                hi = x + 1
        if hi == 0:
            continue
        for x in range(lo, hi):
            centre[x] = g[gy, x + pad] - eps
        ulo, uhi = np.uint64(lo), np.uint64(hi)
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
                    for x in range(ulo, uhi):
                        top = ta[xa + x] * a + ta[xb + x] * b
                        bot = tb[xa + x] * a + tb[xb + x] * b
                        v[x] = (bot - top) * f + top
                elif b != 0:
                    for x in range(ulo, uhi):
                        v[x] = ta[xa + x] * a + ta[xb + x] * b
                elif f != 0:
                    for x in range(ulo, uhi):
                        top = ta[xa + x]
                        v[x] = (tb[xa + x] - top) * f + top
                else:
                    for x in range(ulo, uhi):
                        v[x] = ta[xa + x]
                if p == 0:
                    for x in range(ulo, uhi):
                        bit = np.uint8(v[x] >= centre[x])
                        ones[x] = bit
                        first[x] = bit
                        prev[x] = bit
                        changes[x] = 0
                else:
                    for x in range(ulo, uhi):
                        bit = np.uint8(v[x] >= centre[x])
                        ones[x] = ones[x] + bit
                        changes[x] = changes[x] + (bit ^ prev[x])
                        prev[x] = bit
            hb = hist_start[s]
            for x in range(lo, hi):
                if inside[r0 + y, c0 + x]:
                    c = changes[x] + (prev[x] ^ first[x])
                    code = ones[x] if c <= 2 else P + 1
                    hist[hb + code] += 1


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
    span_lo = np.full(rows, cols, np.int64)  # each row's inside span: the pairs' first ends
    span_hi = np.zeros(rows, np.int64)
    for r in range(rows):
        for c in range(cols):
            if inside[r, c]:
                code[r, c] = np.int32(q[r, c]) + 1
                span_lo[r] = min(span_lo[r], c)
                span_hi[r] = c + 1
    L1 = levels + 1
    acc = np.zeros((n, 2, L1, L1), np.int32)
    for k in range(n):
        dr, dc = d_row[k], d_col[k]
        c_lo, c_hi = max(0, -dc), min(cols, cols - dc)
        for r in range(max(0, -dr), min(rows, rows - dr)):
            ra = code[r]
            rb = code[r + dr]
            for c in range(max(c_lo, span_lo[r]), min(c_hi, span_hi[r])):
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


def lab_is_linear(xyz):
    """Where ``f`` of the Lab formula takes its linear branch (float32 scalar or array)."""
    return xyz <= np.float32(0.008856)


def lab_linear(xyz):
    """The linear branch of ``f`` of the Lab formula (float32 scalar or array)."""
    return np.float32(7.787) * xyz + np.float32(16.0 / 116.0)


def lab_code(xyz, cube):
    """``f`` of the Lab formula for one float32 value: :func:`lab_linear` where
    :func:`lab_is_linear`, else ``cube`` (its cube root)."""
    return lab_linear(xyz) if lab_is_linear(xyz) else cube


def lab_values(fx, fy, fz):
    """``(L, a, b)`` scaled to 0-255 from ``f`` of X, Y and Z (float32 scalars or arrays)."""
    L = (np.float32(116.0) * fy - np.float32(16.0)) * np.float32(2.55)
    a = np.float32(500.0) * (fx - fy) + np.float32(128.0)
    b = np.float32(200.0) * (fy - fz) + np.float32(128.0)
    return L, a, b


def code8(v):
    """uint8 code of one float32 channel value: rounded half up, clipped to 0-255 (arrays:
    :func:`code8_array`; numba's NaN-aware ``np.minimum``/``np.maximum`` here would cost the colour
    kernel about 10%)."""
    return np.uint8(min(max(v + np.float32(0.5), np.float32(0.0)), np.float32(255.0)))


def code8_array(v):
    """:func:`code8` of every value of a float32 array."""
    return np.uint8(np.minimum(np.maximum(v + np.float32(0.5), np.float32(0.0)), np.float32(255.0)))


def colour_histograms(px, region, hue_lut, sat_lut, xyz, cube, want_rgb, want_hsv):
    """256-bin histograms per channel and region code of an ``(N, 3)`` uint8 RGB pixel list:
    int64 ``(9, 3, 256)``, channels RGB, HSV, Lab, region codes ``min(region, 2)`` (0 outside,
    1 cytoplasm, 2 nucleus). HSV by the lookup tables of ``colour._hsv_luts`` (the transform's
    codes). Lab codes from the pixels' normalised XYZ and its cube root, float32 ``(N, 3)`` each
    (``colour._lab_parts``; no rows: Lab not counted), finished with the float32 operations of
    ``lab8_pixels`` of ``tests/reference_impl.py`` (same codes). Spaces not asked for stay zero."""
    out = np.zeros((9, 3, 256), np.int64)
    n = px.shape[0]
    want_lab = xyz.shape[0] == n and n > 0
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
            L, a, bb = lab_values(lab_code(xyz[k, 0], cube[k, 0]), lab_code(xyz[k, 1], cube[k, 1]),
                                  lab_code(xyz[k, 2], cube[k, 2]))
            out[6, c, code8(L)] += 1
            out[7, c, code8(a)] += 1
            out[8, c, code8(bb)] += 1
    return out


def hist_stats(H, percentiles):
    """Mean, standard deviation and percentiles of 256-bin histograms ``(k, 256)`` (int64):
    float64 ``(k, 2 + len(percentiles))``, NaN rows for empty histograms. A percentile ``q`` is
    the number of bins whose cumulative share is below ``q``; sums of counts are exact, the
    standard deviation is summed bin by bin (float64 round-off of a pairwise sum)."""
    k = H.shape[0]
    n_q = percentiles.shape[0]
    out = np.full((k, 2 + n_q), np.nan)
    for r in range(k):
        n = 0.0
        s = 0.0
        for v in range(256):
            n += H[r, v]
            s += H[r, v] * np.float64(v)
        if n == 0:
            continue
        mean = s / n
        ss = 0.0
        for v in range(256):
            d = np.float64(v) - mean
            ss += H[r, v] * d ** 2
        out[r, 0] = mean
        out[r, 1] = np.sqrt(max(ss / n, 0.0))
        for q in range(n_q):
            cum, below = 0.0, 0
            for v in range(256):
                cum += H[r, v]
                if cum / n < percentiles[q]:
                    below += 1
            out[r, 2 + q] = below
    return out


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


def find_root(parent, i):
    """Root of run ``i``'s class in the union-find ``parent`` (array or list), halving the path."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def union_runs(parent, rs, re, row_start, reach):
    """Union-find over horizontal runs (columns ``rs[i]:re[i]``; row ``y``'s runs are
    ``row_start[y]:row_start[y + 1]``): each run joins the runs of the previous row that it
    touches (``reach`` 1: diagonally too), the smaller root winning."""
    for y in range(1, len(row_start) - 1):
        lo, hi = row_start[y - 1], row_start[y]
        for run in range(row_start[y], row_start[y + 1]):
            x0, x1 = rs[run], re[run]
            while lo < hi and re[lo] + reach <= x0:
                lo += 1  # previous-row runs ending left of this one never touch later ones
            k = lo
            root = run
            while k < hi and rs[k] < x1 + reach:
                a, b = find_root(parent, root), find_root(parent, k)
                if a < b:
                    parent[b] = a
                elif b < a:
                    parent[a] = b
                root = min(a, b)
                k += 1
            if k > lo:
                lo = k - 1  # the last touching run may touch the next run too


def number_classes(parent, n):
    """Numbers of the classes of the runs ``0..n-1`` (int64 ``(n,)``, ``1..m`` in the order of their
    first run) and their count ``m``."""
    final = np.zeros(n, np.int64)
    m = 0
    for i in range(n):
        r = find_root(parent, i)
        if r == i:
            m += 1
            final[i] = m
        else:
            final[i] = final[r]
    return final, m


def label_components(binary, weights, eight):
    """Connected components of bool ``binary`` (8- or 4-connectivity), numbered ``1..n`` in
    raster order of their first pixel, as ``scipy.ndimage.label`` numbers them: ``(labels int32
    (H, W), area int64 (n + 1,), weighted int64 (n + 1,))``, where ``weighted`` counts the
    component's ``weights`` pixels (bool ``(H, W)``; a ``(0, 0)`` array: all zero) and index 0
    holds zero.

    The horizontal runs of each row, then :func:`union_runs` over them: the smallest run index
    of a class (its first run) is its root."""
    h, w = binary.shape
    cap = h * ((w + 1) // 2)  # at most (w + 1) // 2 runs per row
    rs = np.empty(cap, np.int64)  # run start, end (exclusive), row
    re = np.empty(cap, np.int64)
    ry = np.empty(cap, np.int64)
    parent = np.empty(cap, np.int64)
    row_start = np.empty(h + 1, np.int64)
    n = 0
    for y in range(h):
        row_start[y] = n
        x = 0
        while x < w:
            if not binary[y, x]:
                x += 1
                continue
            x0 = x
            while x < w and binary[y, x]:
                x += 1
            rs[n], re[n], ry[n], parent[n] = x0, x, y, n
            n += 1
    row_start[h] = n
    union_runs(parent, rs, re, row_start, 1 if eight else 0)
    final, m = number_classes(parent, n)
    labels = np.zeros((h, w), np.int32)
    area = np.zeros(m + 1, np.int64)
    weighted = np.zeros(m + 1, np.int64)
    use_w = weights.shape[0] == h and weights.shape[1] == w
    for i in range(n):
        lab = final[i]
        y = ry[i]
        area[lab] += re[i] - rs[i]
        for x in range(rs[i], re[i]):
            labels[y, x] = lab
        if use_w:
            c = 0
            for x in range(rs[i], re[i]):
                c += weights[y, x]
            weighted[lab] += c
    return labels, area, weighted


def fill_holes4(binary):
    """``binary`` with its holes filled: background pixels not 4-connected to the border become
    foreground (a flood fill of the background from the border)."""
    h, w = binary.shape
    out = np.ones((h, w), np.bool_)
    stack = np.empty(h * w, np.int64)
    top = 0
    for y in range(h):
        for x in range(w):
            if (y == 0 or x == 0 or y == h - 1 or x == w - 1) and not binary[y, x] and out[y, x]:
                out[y, x] = False
                stack[top] = y * w + x
                top += 1
    while top:
        top -= 1
        y, x = divmod(stack[top], w)
        for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= yy < h and 0 <= xx < w and out[yy, xx] and not binary[yy, xx]:
                out[yy, xx] = False
                stack[top] = yy * w + xx
                top += 1
    return out


def cross(oy, ox, ay, ax, by, bx):
    """z of the cross product ``(a - o) x (b - o)``: positive for a left turn ``o -> a -> b``."""
    return (ay - oy) * (bx - ox) - (ax - ox) * (by - oy)


def moments(out, area, sy, sx, syy, sxx, sxy):
    """``out[1:6]`` = mean row, mean column, row and column variance, covariance, from the exact
    integer sums of the ``area`` pixels' rows, columns, squares and products."""
    A = np.float64(area)
    out[1], out[2] = sy / A, sx / A
    out[3] = (syy - sy * sy / A) / A
    out[4] = (sxx - sx * sx / A) / A
    out[5] = (sxy - sy * sx / A) / A


def crofton_perimeter(crofton, conf):
    """Crofton perimeter: the 16 weights ``crofton`` times the 2x2 configuration counts ``conf``,
    summed in code order."""
    perim = 0.0
    for k in range(16):
        perim += crofton[k] * conf[k]
    return perim


def convex_hull(left, right, r0, r1, w):
    """Convex hull of the pixel squares of a mask whose rows ``r0..r1`` (width ``w``) have their
    first and last true column in ``left`` and ``right`` (-1: an empty row; array or list):
    ``(hy, hx, k)``, its ``k`` vertices ``hy[:k], hx[:k]`` (float64, counter-clockwise in
    (row, col)).

    A monotone chain over the extreme corners of each horizontal pixel-edge line: on the line
    ``b - 0.5`` (between rows ``b - 1`` and ``b``), the leftmost and rightmost corner of the
    adjacent rows' ends; the points come sorted by (row, col)."""
    py = np.empty(2 * (r1 - r0 + 2), np.float64)
    px = np.empty_like(py)
    n = 0
    for b in range(r0, r1 + 2):
        lo, hi = w + 1, -2
        for yy in (b - 1, b):
            if r0 <= yy <= r1 and left[yy] >= 0:
                lo = min(lo, left[yy])
                hi = max(hi, right[yy])
        if hi < 0:
            continue
        py[n], px[n] = b - 0.5, lo - 0.5
        py[n + 1], px[n + 1] = b - 0.5, hi + 0.5
        n += 2
    hy = np.empty(2 * n + 1, np.float64)
    hx = np.empty_like(hy)
    k = 0
    for i in range(n):  # lower chain
        while k >= 2 and cross(hy[k - 2], hx[k - 2], hy[k - 1], hx[k - 1], py[i], px[i]) <= 0:
            k -= 1
        hy[k], hx[k] = py[i], px[i]
        k += 1
    t = k + 1
    for i in range(n - 2, -1, -1):  # upper chain
        while k >= t and cross(hy[k - 2], hx[k - 2], hy[k - 1], hx[k - 1], py[i], px[i]) <= 0:
            k -= 1
        hy[k], hx[k] = py[i], px[i]
        k += 1
    return hy, hx, k - 1  # the last point is the first


def hull_area_perimeter(hy, hx, k):
    """Area (shoelace) and perimeter of the polygon of the ``k`` vertices ``hy[:k], hx[:k]``."""
    twice, perimeter = 0.0, 0.0
    for i in range(k):
        j = i + 1 if i + 1 < k else 0
        twice += hx[i] * hy[j] - hx[j] * hy[i]
        dy, dx = hy[j] - hy[i], hx[j] - hx[i]
        perimeter += math.sqrt(dy * dy + dx * dx)
    return abs(twice) / 2, perimeter


def shape_stats(binary, crofton, dir_cos, dir_sin):
    """Raw shape quantities of the true pixels of bool ``binary``, in one pass: float64
    ``[area, mean_row, mean_col, var_row, var_col, cov, crofton_perimeter, hull_area,
    hull_perimeter, feret_max, feret_min, box_height, box_width]`` (zeros but area when empty).

    Moments from exact integer sums; the Crofton perimeter weights ``crofton`` the 16 2x2
    configuration counts of the zero-padded mask (code ``bottom-right + 2 top-right
    + 4 bottom-left + 8 top-left``); the convex hull of the pixel squares by a monotone chain
    over the extreme corners of each horizontal pixel-edge line (the corners of the row ends,
    already sorted by row); Feret max = largest vertex distance, Feret min = smallest width
    over the directions ``(dir_cos, dir_sin)`` applied to ``(row, col)``.
    """
    h, w = binary.shape
    out = np.zeros(13, np.float64)
    left = np.full(h, -1, np.int64)
    right = np.full(h, -1, np.int64)
    conf = np.zeros(16, np.int64)
    area = 0
    sy = sx = syy = sxx = sxy = 0
    c_lo, c_hi = w, -1
    rows = np.zeros((2, w + 2), np.uint8)  # this row and the previous one, zero-padded
    for y in range(h + 1):
        cur, prev = rows[y & 1], rows[(y + 1) & 1]
        for x in range(w):
            cur[x + 1] = 1 if y < h and binary[y, x] else 0
        if y < h:
            n_row = 0
            rsx = 0
            for x in range(w):
                if cur[x + 1]:
                    if left[y] < 0:
                        left[y] = x
                    right[y] = x
                    n_row += 1
                    rsx += x
                    sxx += x * x
                    sxy += y * x
            if n_row:
                area += n_row
                sy += y * n_row
                syy += y * y * n_row
                sx += rsx
                c_lo = min(c_lo, left[y])
                c_hi = max(c_hi, right[y])
        for x in range(w + 1):  # 2x2 windows: top row ``prev``, bottom row ``cur``
            conf[cur[x + 1] + 2 * prev[x + 1] + 4 * cur[x] + 8 * prev[x]] += 1
    out[0] = area
    if area == 0:
        return out
    moments(out, area, sy, sx, syy, sxx, sxy)
    out[6] = crofton_perimeter(crofton, conf)
    r0, r1 = 0, h - 1
    while left[r0] < 0:
        r0 += 1
    while left[r1] < 0:
        r1 -= 1
    hy, hx, k = convex_hull(left, right, r0, r1, w)
    out[7], out[8] = hull_area_perimeter(hy, hx, k)
    d2 = 0.0
    for i in range(k):
        for j in range(i + 1, k):
            dy, dx = hy[i] - hy[j], hx[i] - hx[j]
            d2 = max(d2, dy * dy + dx * dx)
    out[9] = np.sqrt(d2)
    fmin = np.inf
    for a in range(dir_cos.shape[0]):
        c, s = np.float64(dir_cos[a]), np.float64(dir_sin[a])
        lo, hi = np.inf, -np.inf
        for i in range(k):
            p = hy[i] * c + hx[i] * s
            lo = min(lo, p)
            hi = max(hi, p)
        fmin = min(fmin, hi - lo)
    out[10] = fmin
    out[11] = r1 - r0 + 1
    out[12] = c_hi - c_lo + 1
    return out


def haralick(props, k, mu, i2, ij, dis, con, hom, m1, m2, m3, m4, asm, ent, mx):
    """``props[:, k]``: the 12 properties (``texture.GLCM_PROPS`` order) of one normalised
    co-occurrence matrix ``p`` from its sums of ``i p``, ``i^2 p``, ``i j p``, ``|i - j| p``,
    ``(i - j)^2 p``, ``p / (1 + (i - j)^2)``, ``s^1..4 p`` (``s = i + j``), ``p^2``, ``p log2 p``
    and its largest entry (the formulas of ``glcm_props`` in ``tests/reference_impl.py``)."""
    mu_2 = mu * mu
    var = i2 - mu_2
    c2 = 2 * mu
    c2_2 = c2 * c2
    c2_3 = c2 * c2_2
    c2_4 = c2_2 * c2_2
    props[0, k] = con
    props[1, k] = dis
    props[2, k] = hom
    props[3, k] = asm
    props[4, k] = math.sqrt(asm)
    props[5, k] = (ij - mu_2) / var if var > 1e-12 else 1.0
    props[6, k] = -ent
    props[7, k] = var
    props[8, k] = m3 - 3 * c2 * m2 + 3 * c2_2 * m1 - c2_3
    props[9, k] = m4 - 4 * c2 * m3 + 6 * c2_2 * m2 - 4 * c2_3 * m1 + c2_4
    props[10, k] = mx
    props[11, k] = m1


def reduce_angles(props, n_dist):
    """Mean and range over the angles of properties ``(n_props, n_dist * n_angles)``
    (distance-major), skipping NaN: float64 ``(n_props, n_dist, 2)``, NaN where no angle has a value."""
    n_props, n_off = props.shape
    out = np.full((n_props, n_dist, 2), np.nan)
    n_ang = n_off // n_dist
    for q in range(n_props):
        for d in range(n_dist):
            n, acc, lo, hi = 0, 0.0, np.inf, -np.inf
            for a in range(n_ang):
                v = props[q, d * n_ang + a]
                if not math.isnan(v):
                    n += 1
                    acc += v
                    lo = min(lo, v)
                    hi = max(hi, v)
            if n:
                out[q, d, 0] = acc / n
                out[q, d, 1] = hi - lo
    return out


def glcm_features(counts, n_dist):
    """Haralick properties of symmetric co-occurrence counts ``(n_dist * 4, L, L)`` (distance-major,
    4 angles each, as :func:`glcm_counts` gives them), reduced over the angles: float64
    ``(12, n_dist, 2)`` = (property in ``texture.GLCM_PROPS`` order, distance, [mean, range]),
    the mean and range over the angles that have pixel pairs (NaN when none).

    The formulas of ``glcm_props`` (``tests/reference_impl.py``) on the normalised matrices,
    summed per matrix in one pass (so equal to it to float64 round-off, not bit for bit)."""
    L = counts.shape[1]
    n_off = counts.shape[0]
    props = np.full((12, n_off), np.nan)
    for k in range(n_off):
        total = 0.0
        for i in range(L):
            for j in range(L):
                total += counts[k, i, j]
        if total == 0:
            continue
        mu = i2 = ij = dis = con = hom = m1 = m2 = m3 = m4 = asm = ent = 0.0
        mx = 0.0
        for i in range(L):
            for j in range(L):
                c = counts[k, i, j]
                if c == 0:
                    continue
                p = c / total
                fi, fj = np.float64(i), np.float64(j)
                d = abs(fi - fj)
                s = fi + fj
                s2 = s * s
                mu += fi * p
                i2 += fi * fi * p
                ij += fi * fj * p
                dis += d * p
                con += d * d * p
                hom += 1.0 / (1.0 + d * d) * p
                m1 += s * p
                m2 += s2 * p
                m3 += s * s2 * p
                m4 += s2 * s2 * p
                asm += p * p
                ent += p * np.log2(p)
                mx = max(mx, p)
        haralick(props, k, mu, i2, ij, dis, con, hom, m1, m2, m3, m4, asm, ent, mx)
    return reduce_angles(props, n_dist)


def class_variance_table(prob):
    """scikit-image's multi-Otsu lookup table (``class_variance_table_reference`` in
    ``tests/reference_impl.py``): float32 ``V[i, j]`` = (first moment of bins i..j)^2 / (their mass),
    upper triangle, same float32 operations (sequential cumulative sums), so the same table."""
    n = prob.shape[0]
    P = np.empty(n, np.float32)
    S = np.empty(n, np.float32)
    acc_p = np.float32(0.0)
    acc_s = np.float32(0.0)
    for i in range(n):
        acc_p += prob[i]
        acc_s += prob[i] if i == 0 else np.float32(i) * prob[i]
        P[i], S[i] = acc_p, acc_s
    V = np.zeros((n, n), np.float32)
    for i in range(n):
        p0 = P[i - 1] if i > 0 else np.float32(0.0)
        s0 = S[i - 1] if i > 0 else np.float32(0.0)
        for j in range(1 if i == 0 else i, n):  # V[0, 0] stays 0, as scikit-image's
            pij = P[j] - p0
            if pij > 0:
                sij = S[j] - s0
                V[i, j] = sij * sij / pij
    return V


def multiotsu4(V):
    """Thresholds ``(t0, t1, t2)`` of 4-class multi-Otsu on the table ``V`` of
    :func:`class_variance_table`: ``segmentation._multiotsu_core(prob, 4)``'s search (best
    ``t0`` and ``t2`` per middle ``t1``, near-best tuples rescored in scikit-image's float32
    summation order, ties to the lexicographically first), same float32 operations."""
    n = V.shape[0]
    ninf = np.float32(-np.inf)
    A = np.full(n, ninf, np.float32)
    for t1 in range(n):
        for t0 in range(min(t1, n - 1)):
            A[t1] = max(A[t1], V[0, t0] + V[t0 + 1, t1])
    B = np.full(n, ninf, np.float32)
    for t1 in range(n - 1):
        for t2 in range(t1 + 1, n - 1):
            B[t1] = max(B[t1], V[t1 + 1, t2] + V[t2 + 1, n - 1])
    total = np.full(n, ninf, np.float32)
    tmax = ninf
    for t1 in range(1, n - 2):
        total[t1] = A[t1] + B[t1]
        tmax = max(tmax, total[t1])
    best = np.float64(tmax)
    thr = np.float32(best - abs(best) * 1e-5)
    b_e, b0, b1, b2 = ninf, n, n, n
    for t1 in range(1, n - 2):
        if not total[t1] >= thr:
            continue
        for t0 in range(t1):
            left = V[0, t0] + V[t0 + 1, t1]
            for t2 in range(t1 + 1, n - 1):
                if left + (V[t1 + 1, t2] + V[t2 + 1, n - 1]) >= thr:
                    e = ((V[0, t0] + V[t2 + 1, n - 1]) + V[t0 + 1, t1]) + V[t1 + 1, t2]
                    if e > b_e or (e == b_e and (t0, t1, t2) < (b0, b1, b2)):
                        b_e, b0, b1, b2 = e, t0, t1, t2
    return np.array([b0, b1, b2], np.int64)


HELPERS = (lab_is_linear, lab_linear, lab_code, lab_values, code8, find_root, union_runs, number_classes,
           cross, moments, crofton_perimeter, convex_hull, hull_area_perimeter, haralick, reduce_angles)
"""The functions the kernels call: :mod:`._kernels` makes them callable from compiled code."""
