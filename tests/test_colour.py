"""Colour statistics: known values on uniform regions, regions, histograms, empty regions."""

from __future__ import annotations

import numpy as np
import pytest
from medfuse.errors import InvalidInputError
from medfuse_plugins.colour import Colour


def _features(ex, image, mask) -> dict[str, float]:
    return dict(zip(ex.feature_names(), ex.prepare(image, mask).tolist()))


def _two_tone() -> tuple[np.ndarray, np.ndarray]:
    img = np.full((40, 40, 3), (240, 230, 220), np.uint8)
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 10:30] = 1
    mask[15:25, 15:25] = 2
    img[mask == 1] = (200, 150, 180)
    img[mask == 2] = (80, 40, 120)
    return img, mask


def test_uniform_regions_have_exact_stats():
    img, mask = _two_tone()
    f = _features(Colour(), img, mask)
    assert f["rgb_r_nucleus_mean"] == 80 and f["rgb_r_nucleus_std"] == 0
    assert f["rgb_b_cytoplasm_p50"] == 180
    assert f["rgb_g_outside_mean"] == 230
    n_nuc, n_cyto = 100, 300
    assert f["rgb_r_cell_mean"] == pytest.approx((80 * n_nuc + 200 * n_cyto) / 400)
    assert f["rgb_r_cell_p10"] == 80 and f["rgb_r_cell_p90"] == 200
    assert f["hsv_v_nucleus_mean"] == 120  # V = max(R, G, B)


def test_lab_and_hsv_agree_with_scikit_image():
    from skimage.color import rgb2hsv, rgb2lab

    img, mask = _two_tone()
    f = _features(Colour(), img, mask)
    lab = rgb2lab(np.array([[[80, 40, 120]]], np.uint8))[0, 0]
    assert f["lab_l_nucleus_mean"] == pytest.approx(round(lab[0] * 2.55), abs=1)
    assert f["lab_a_nucleus_mean"] == pytest.approx(round(lab[1] + 128), abs=1)
    hsv = rgb2hsv(np.array([[[80, 40, 120]]], np.uint8))[0, 0]
    assert f["hsv_h_nucleus_mean"] == pytest.approx(round(hsv[0] * 255), abs=1)


def test_histograms_are_normalised():
    img, mask = _two_tone()
    f = _features(Colour(bins=8), img, mask)
    for sp, ch in (("rgb", "r"), ("hsv", "s"), ("lab", "b")):
        assert sum(f[f"{sp}_{ch}_cell_hist{k}"] for k in range(8)) == pytest.approx(1.0)
    assert f["rgb_r_cell_hist2"] == pytest.approx(0.25)  # 80 // 32 = bin 2 holds the nucleus


def test_empty_region_gives_nan_and_empty_mask_all_nan():
    img, mask = _two_tone()
    no_nucleus = np.minimum(mask, 1)
    f = _features(Colour(), img, no_nucleus)
    assert np.isnan(f["rgb_r_nucleus_mean"]) and not np.isnan(f["rgb_r_cell_mean"])
    assert np.isnan(Colour().prepare(img, np.zeros_like(mask))).all()


def test_feature_count_and_options():
    ex = Colour()
    assert len(ex.feature_names()) == 3 * 3 * 4 * 5 + 3 * 3 * 8
    small = Colour(spaces=("lab",), regions=("cell",), stats=("mean",), bins=0)
    img, mask = _two_tone()
    assert small.prepare(img, mask).shape == (3,)
    with pytest.raises(InvalidInputError, match="spaces"):
        Colour(spaces=("cmyk",)).prepare(img, mask)
    with pytest.raises(InvalidInputError, match="bins"):
        Colour(bins=7).prepare(img, mask)


def test_fast_colour_codes_match_the_transforms():
    """HSV codes by table lookup equal ``rgb_to_hsv8`` exactly; Lab codes (exp/log cube root)
    equal ``rgb_to_lab8`` but for rare off-by-one roundings."""
    from medfuse_plugins.transforms import rgb_to_hsv8, rgb_to_lab8
    from reference_impl import hsv8_pixels, lab8_pixels

    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (200_000, 3)).astype(np.uint8)
    px[:256] = np.arange(256)[:, None]  # greys
    px[256:512, 0] = 255  # saturated and pure colours
    ref = rgb_to_hsv8(px[None])[0]
    assert np.array_equal(np.stack(hsv8_pixels(px), 1), ref)
    ref = rgb_to_lab8(px[None])[0].astype(int)
    diff = np.abs(np.stack(lab8_pixels(px), 1).astype(int) - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4


def test_compiled_histograms_equal_bincount_reference():
    """The compiled per-region channel histograms equal one ``np.bincount`` per channel of the
    NumPy conversions (RGB, ``hsv8_pixels``, ``lab8_pixels``), on random pixels and masks."""
    from medfuse_plugins._kernels import colour_histograms
    from medfuse_plugins.colour import _hsv_luts, _lab_parts
    from reference_impl import hsv8_pixels, lab8_pixels

    rng = np.random.default_rng(7)
    hue, sat = _hsv_luts()
    for n in (0, 1, 500, 20000):
        px = rng.integers(0, 256, (n, 3)).astype(np.uint8)
        px[:n // 10] = rng.integers(0, 12, (n // 10, 3))  # dark: Lab's linear branch
        region = rng.integers(0, 4, n).astype(np.uint8)  # 3 counts as nucleus, as np.minimum(m, 2)
        lab = lab8_pixels(px) if n else [np.zeros(0, np.uint8)] * 3
        xyz, cube = _lab_parts(px)
        counts = colour_histograms(px, region, hue, sat, xyz, cube, True, True)
        code = np.minimum(region, 2).astype(np.intp) << 8
        channels = [px[:, 0], px[:, 1], px[:, 2], *hsv8_pixels(px), *lab]
        for k, ch in enumerate(channels):
            ref = np.bincount(code + ch, minlength=768).reshape(3, 256)
            assert np.array_equal(counts[k], ref), k


def test_compiled_lab_codes_equal_lab8_pixels():
    """The kernel's float32 Lab tail gives ``lab8_pixels``'s codes (checked on all 2**24 colours
    when written; here on a grid of 2**21 colours that crosses the linear branch)."""
    from medfuse_plugins.colour import _lab_parts
    from reference_impl import compiled_lab_codes, lab8_pixels

    v = np.concatenate([np.arange(0, 16), np.arange(16, 256, 2)]).astype(np.uint8)
    px = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(-1, 3)
    xyz, cube = _lab_parts(px)
    assert np.array_equal(compiled_lab_codes(xyz, cube), np.stack(lab8_pixels(px)))


def test_compiled_hist_stats_equal_numpy():
    from medfuse_plugins.colour import STATS, hist_stats

    rng = np.random.default_rng(5)
    H = rng.integers(0, 50, (40, 256)) * (rng.random((40, 256)) < rng.random((40, 1)))
    H[0] = 0
    H[1, 17] = 5  # one occupied bin
    v = np.arange(256, dtype=np.float64)
    got = hist_stats(H, STATS)
    n = H.sum(axis=1)
    assert np.isnan(got[0]).all()
    ok = n > 0
    mean = (H[ok] * v).sum(axis=1) / n[ok]
    std = np.sqrt((H[ok] * (v - mean[:, None]) ** 2).sum(axis=1) / n[ok])
    cdf = np.cumsum(H[ok], axis=1) / n[ok][:, None]
    pct = [(cdf < q).sum(axis=1) for q in (0.10, 0.25, 0.50, 0.75, 0.90)]
    np.testing.assert_array_equal(got[ok][:, [0, 2, 3, 4, 5, 6]], np.stack([mean, *pct], 1))
    np.testing.assert_allclose(got[ok][:, 1], std, rtol=1e-12)
