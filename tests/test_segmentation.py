"""Classical masks: otsu_cell on drawn cells, rbc_watershed on a synthetic smear with a known count."""

from __future__ import annotations

import numpy as np
import pytest
from medfuse.errors import InvalidInputError
from medfuse.synthetic import make_smear
from medfuse.testing import sample_cells
from medfuse_plugins.segmentation import OtsuCell, RbcWatershed, fill_holes, otsu_levels, split_cells
from scipy import ndimage as ndi


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _smear_cell(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stained white cell (cytoplasm + nucleus) among pink red cells on a pale background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    img = np.zeros((96, 96, 3), np.float32)
    img[:] = (240, 225, 205)
    for cy, cx in rng.uniform(0, 96, (8, 2)):
        if np.hypot(cy - 48, cx - 48) > 36:
            img[np.hypot(yy - cy, xx - cx) < 11] = (205, 160, 170)
    d = np.hypot(yy - 48, (xx - 48) * rng.uniform(0.85, 1.15))
    truth = np.zeros((96, 96), np.uint8)
    truth[d < 24] = 1
    truth[d < 13] = 2
    img[truth == 1] = (200, 170, 215)
    img[truth == 2] = (90, 50, 140)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), truth


def test_otsu_cell_recovers_cell_and_nucleus_among_red_cells():
    for seed in range(4):
        image, truth = _smear_cell(seed)
        pred = OtsuCell().predict_mask(image)
        assert pred.dtype == np.uint8 and set(np.unique(pred)) <= {0, 1, 2}
        assert _iou(pred > 0, truth > 0) > 0.8
        assert _iou(pred == 2, truth == 2) > 0.6


def test_otsu_cell_three_classes_without_red_cells():
    """Without red cells in the frame, classes=3 (background / cytoplasm / nucleus) fits."""
    images, masks, _ = sample_cells(6, size=64)
    for image, truth in zip(images, masks):
        pred = OtsuCell(classes=3).predict_mask(image)
        assert _iou(pred > 0, truth > 0) > 0.8
        assert _iou(pred == 2, truth == 2) > 0.3  # nuclei of 50-200 px: the boundary weighs a lot


def test_otsu_cell_flat_image_gives_empty_mask():
    flat = np.full((32, 32, 3), 200, np.uint8)
    assert OtsuCell().predict_mask(flat).max() == 0


def test_otsu_cell_keep_all_keeps_several_cells():
    img = np.full((64, 128, 3), (230, 210, 215), np.float32)
    yy, xx = np.mgrid[:64, :128]
    for cx in (32, 96):
        d = np.hypot(yy - 32, xx - cx)
        img[d < 20] = (200, 130, 170)
        img[d < 9] = (90, 40, 130)
    img = np.clip(img + np.random.default_rng(0).normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    one = OtsuCell(classes=3, keep="largest").predict_mask(img)
    both = OtsuCell(classes=3, keep="all").predict_mask(img)
    assert ndi.label(one > 0)[1] == 1
    assert ndi.label(both > 0)[1] == 2


def test_bad_parameters_raise_clear_errors():
    img = sample_cells(1)[0][0]
    with pytest.raises(InvalidInputError, match="keep"):
        OtsuCell(keep="biggest").predict_mask(img)
    with pytest.raises(InvalidInputError, match="stain channel"):
        OtsuCell(channel="purple").predict_mask(img)


def test_otsu_levels_on_flat_channel_is_none():
    assert otsu_levels(np.zeros((8, 8), np.uint8), 3) is None
    levels = otsu_levels(np.repeat(np.arange(0, 256, 64, dtype=np.uint8), 16).reshape(8, 8), 2)
    assert levels is not None and len(levels) == 1


def test_fill_holes_fills_only_enclosed_background():
    ring = np.zeros((20, 20), bool)
    ring[4:16, 4:16] = True
    ring[8:12, 8:12] = False
    filled = fill_holes(ring)
    assert filled[8:12, 8:12].all() and not filled[0].any()


def test_split_cells_separates_two_touching_discs():
    yy, xx = np.mgrid[:60, :100]
    fg = (np.hypot(yy - 30, xx - 32) < 18) | (np.hypot(yy - 30, xx - 66) < 18)
    labels, n = split_cells(fg, min_distance=8)
    assert n == 2
    assert ndi.label(labels > 0)[1] == 2


def test_rbc_watershed_counts_a_synthetic_smear():
    """make_smear draws an exact number of touching cells; the count error stays below 10%."""
    errors = []
    for seed in range(4):
        image, truth = make_smear(n_cells=30, seed=seed)
        mask = RbcWatershed(min_distance=6).predict_mask(image)
        assert set(np.unique(mask)) <= {0, 1}
        n = ndi.label(mask > 0)[1]
        errors.append(abs(n - int(truth.max())) / truth.max())
        assert _iou(mask > 0, truth > 0) > 0.85  # foreground minus the watershed lines
    assert np.mean(errors) < 0.1, errors


def test_rbc_watershed_blank_image_is_empty():
    assert RbcWatershed().predict_mask(np.full((40, 40, 3), 220, np.uint8)).max() == 0


def _random_histograms(n: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth multi-modal histograms like a stain channel's, plus sparse ones with empty bins."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        bins = int(rng.integers(6, 65))
        x = np.arange(bins)
        modes = rng.uniform(0, bins, 4)
        h = sum(rng.uniform(100, 20000) * np.exp(-0.5 * ((x - m) / rng.uniform(1, 6)) ** 2) for m in modes)
        h = np.round(h).astype(np.int64)
        if k % 3 == 0:
            h[rng.random(bins) < 0.3] = 0
        out.append(h)
    return out


def test_multiotsu_indices_match_scikit_image():
    """The O(bins^2) search picks the same thresholds as skimage's brute force (same float32
    score, same tie-breaking), ends trimmed like skimage does."""
    from medfuse_plugins.segmentation import multiotsu_indices
    from skimage.filters import threshold_multiotsu

    checked = 0
    for h in _random_histograms(300):
        for classes in (2, 3, 4):
            if np.count_nonzero(h) < classes:
                continue
            ref = np.asarray(threshold_multiotsu(hist=h, classes=classes)).astype(int)
            assert np.array_equal(multiotsu_indices(h, classes), ref), (classes, h.tolist())
            checked += 1
    assert checked > 800


def test_fast_binary_morphology_matches_scipy():
    from medfuse_plugins.segmentation import binary_erosion, binary_opening, disk

    rng = np.random.default_rng(3)
    for k in range(60):
        h, w = rng.integers(1, 40, 2)
        b = ndi.gaussian_filter(rng.random((h, w)), 1.5) > rng.uniform(0.3, 0.7)
        if k == 0:
            b[:] = True  # the border counts as background
        for r in (1, 2, 3):
            assert np.array_equal(binary_erosion(b, r), ndi.binary_erosion(b, structure=disk(r)))
            assert np.array_equal(binary_opening(b, r), ndi.binary_opening(b, structure=disk(r)))


def test_compiled_blue_minus_green_equals_stain_channel_and_bincount():
    from medfuse_plugins._kernels import blue_minus_green
    from medfuse_plugins.segmentation import stain_channel

    rng = np.random.default_rng(3)
    for shape in ((1, 1, 3), (37, 53, 3), (120, 90, 3)):
        image = rng.integers(0, 256, shape).astype(np.uint8)
        s, hist = blue_minus_green(image)
        ref = stain_channel(image, "blue_minus_green")
        assert np.array_equal(s, ref)
        assert np.array_equal(hist, np.bincount(ref.ravel(), minlength=256))


def test_compiled_class_variance_table_equals_numpy():
    from medfuse_plugins._kernels import class_variance_table
    from reference_impl import class_variance_table_reference

    for h in _random_histograms(200, seed=4):
        nz = np.flatnonzero(h)
        prob = np.asarray(h[nz[0]:nz[-1] + 1], np.float32)
        assert np.array_equal(class_variance_table(prob), class_variance_table_reference(prob))
