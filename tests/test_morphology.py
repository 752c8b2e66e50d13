"""Known answers for shape features on drawn shapes, a synthetic smear, and degenerate masks."""

from __future__ import annotations

import numpy as np
import pytest
from medfuse.synthetic import make_smear
from medfuse_plugins.morphology import Morphology, SmearMorphology, shape_features

YY, XX = np.mgrid[:121, :121]


def _features(ex, image, mask) -> dict[str, float]:
    return dict(zip(ex.feature_names(), ex.prepare(image, mask).tolist()))


def _blank(mask: np.ndarray) -> np.ndarray:
    return np.full((*mask.shape, 3), 220, np.uint8)


def test_disc_is_round():
    disc = np.hypot(YY - 60, XX - 60) <= 40
    f = shape_features(disc)
    assert f["circularity"] == pytest.approx(1.0, abs=0.03)
    assert f["eccentricity"] < 0.05
    assert f["solidity"] > 0.97
    assert f["equivalent_diameter"] == pytest.approx(80.0, rel=0.01)
    assert f["feret_max"] == pytest.approx(81.0, abs=1.5)
    assert f["feret_min"] == pytest.approx(81.0, abs=1.5)


def test_ellipse_eccentricity_and_axes():
    ell = ((YY - 60) / 40.0) ** 2 + ((XX - 60) / 20.0) ** 2 <= 1
    f = shape_features(ell)
    assert f["eccentricity"] == pytest.approx(np.sqrt(1 - 0.25), abs=0.01)
    assert f["major_axis"] == pytest.approx(80, rel=0.02)
    assert f["minor_axis"] == pytest.approx(40, rel=0.03)
    assert f["aspect_ratio"] == pytest.approx(2.0, rel=0.03)


def test_ring_solidity():
    r = np.hypot(YY - 60, XX - 60)
    ring = (r <= 40) & (r > 20)
    assert shape_features(ring)["solidity"] == pytest.approx(0.75, abs=0.03)


def test_nucleus_ratio_and_lobes():
    cell = np.hypot(YY - 60, XX - 60) <= 40
    mask = cell.astype(np.uint8)
    for cy, cx in ((45, 45), (45, 75), (78, 60)):  # three separate lobes
        mask[np.hypot(YY - cy, XX - cx) <= 9] = 2
    f = _features(Morphology(), _blank(mask), mask)
    n_area = (mask == 2).sum()
    assert f["nucleus_area"] == n_area
    assert f["nc_ratio"] == pytest.approx(n_area / (cell.sum() - n_area), rel=1e-5)
    assert f["lobe_count"] == 3
    assert f["has_nucleus"] == 1 and f["valid"] == 1


def test_pixel_size_scales_lengths_and_areas():
    mask = (np.hypot(YY - 60, XX - 60) <= 30).astype(np.uint8)
    a = _features(Morphology(), _blank(mask), mask)
    b = _features(Morphology(pixel_size=0.5), _blank(mask), mask)
    assert b["area"] == pytest.approx(a["area"] * 0.25)
    assert b["perimeter"] == pytest.approx(a["perimeter"] * 0.5)
    assert b["circularity"] == pytest.approx(a["circularity"])


def test_empty_mask_gives_nan_and_indicators():
    mask = np.zeros((32, 32), np.uint8)
    f = _features(Morphology(), _blank(mask), mask)
    assert f["valid"] == 0 and f["has_nucleus"] == 0 and f["objects"] == 0
    assert np.isnan(f["area"]) and np.isnan(f["nc_ratio"])


def test_one_pixel_cell_gives_nan_ratios_not_a_crash():
    mask = np.zeros((32, 32), np.uint8)
    mask[10, 10] = 1
    f = _features(Morphology(), _blank(mask), mask)
    assert f["area"] == 1 and f["valid"] == 1
    assert np.isnan(f["circularity"]) and np.isnan(f["eccentricity"])


def test_all_nucleus_cell_has_nan_nc_ratio():
    mask = (np.hypot(YY - 60, XX - 60) <= 20).astype(np.uint8) * 2
    f = _features(Morphology(), _blank(mask), mask)
    assert np.isnan(f["nc_ratio"]) and f["nucleus_fraction"] == 1.0


def test_largest_component_is_the_cell_and_objects_counted():
    mask = np.zeros((121, 121), np.uint8)
    mask[np.hypot(YY - 40, XX - 40) <= 25] = 1
    mask[np.hypot(YY - 95, XX - 95) <= 12] = 1
    f = _features(Morphology(), _blank(mask), mask)
    assert f["objects"] == 2
    assert f["area"] == (np.hypot(YY - 40, XX - 40) <= 25).sum()


def test_smear_count_matches_known_cells():
    image, truth = make_smear(n_cells=30, seed=3)
    ex = SmearMorphology(min_distance=6)
    f = _features(ex, image, None)
    assert abs(f["count"] - 30) <= 3
    assert f["counted"] <= f["count"]
    assert 0 < f["coverage"] < 1
    # given the true instance mask as a binary mask, splitting recovers the count
    f2 = _features(ex, image, (truth > 0).astype(np.uint8))
    assert abs(f2["count"] - 30) <= 3


def test_smear_size_shares_detect_small_and_large_cells():
    img = np.full((200, 300, 3), 230, np.uint8)
    mask = np.zeros((200, 300), np.uint8)
    yy, xx = np.mgrid[:200, :300]
    radii = [12] * 8 + [6, 20]
    centres = [(40 + 60 * (i // 5), 30 + 55 * (i % 5)) for i in range(10)]
    for (cy, cx), r in zip(centres, radii):
        mask[np.hypot(yy - cy, xx - cx) <= r] = 1
    img[mask > 0] = (200, 120, 130)
    f = _features(SmearMorphology(split=False, exclude_border=False), img, mask)
    assert f["count"] == 10
    assert f["micro_share"] == pytest.approx(0.1)
    assert f["macro_share"] == pytest.approx(0.1)
    # discs: per-cell shapes as shape_features gives them (round, convex, not elongated)
    assert f["circularity_p50"] == pytest.approx(shape_features(np.hypot(yy - 40, xx - 30) <= 12)["circularity"])
    assert 0.95 < f["circularity_p10"] <= f["circularity_p90"] < 1.05
    assert f["solidity_p10"] > 0.9 and f["eccentricity_p90"] < 0.3 and f["elongated_share"] == 0


def test_smear_without_cells_counts_zero():
    f = _features(SmearMorphology(), np.full((64, 64, 3), 230, np.uint8), np.zeros((64, 64), np.uint8))
    assert f["count"] == 0 and np.isnan(f["area_mean"])


def test_pixel_size_scales_nucleus_once():
    mask = (np.hypot(YY - 60, XX - 60) <= 30).astype(np.uint8)
    mask[np.hypot(YY - 60, XX - 60) <= 10] = 2
    a = _features(Morphology(), _blank(mask), mask)
    b = _features(Morphology(pixel_size=2.0), _blank(mask), mask)
    assert b["nucleus_area"] == pytest.approx(a["nucleus_area"] * 4)
    assert b["nucleus_feret_max"] == pytest.approx(a["nucleus_feret_max"] * 2)
    assert b["nc_ratio"] == pytest.approx(a["nc_ratio"])


def _blobs(n: int, seed: int = 0):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    for _ in range(n):
        h, w = rng.integers(2, 40, 2)
        b = ndi.gaussian_filter(rng.random((h, w)), rng.uniform(0.5, 3)) > rng.uniform(0.3, 0.7)
        labels, k = ndi.label(b, np.ones((3, 3)))
        if k:
            yield labels == 1


def test_crofton_perimeter_matches_scikit_image():
    from reference_impl import perimeter_crofton4
    from skimage.measure import perimeter_crofton

    for b in _blobs(80):
        assert perimeter_crofton4(b) == pytest.approx(perimeter_crofton(b, directions=4), rel=1e-12)


def test_hull_and_moments_match_the_pixel_corner_definition():
    """Convex area/perimeter equal Qhull on every pixel corner; moments equal the coordinate
    definition (the fast path keeps only row ends and run ends)."""
    from medfuse_plugins.morphology import shape_features
    from scipy.spatial import ConvexHull

    corners = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    for b in _blobs(120, seed=1):
        f = shape_features(b)
        ys, xs = np.nonzero(b)
        hull = ConvexHull((np.stack([ys, xs], 1)[:, None, :] + corners).reshape(-1, 2))
        assert f["convex_area"] == pytest.approx(hull.volume, rel=1e-9)
        assert f["convexity"] * f["perimeter"] == pytest.approx(hull.area, rel=1e-9) or ys.size < 3
        if ys.size >= 3:
            cov = np.cov(np.stack([ys, xs]).astype(float), bias=True)
            l1 = np.linalg.eigvalsh(cov).max()
            assert f["major_axis"] == pytest.approx(4 * np.sqrt(l1), rel=1e-9)
