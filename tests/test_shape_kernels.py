"""Compiled shape and component kernels against the NumPy / SciPy paths they replace: the same
labels as ``scipy.ndimage.label``, the same filled holes, the same shape features as the
previous projections + Qhull implementation (to float64 round-off), on drawn shapes, random
masks and real PBC cells."""

from __future__ import annotations

import numpy as np
import pytest
from medfuse_plugins._kernels import fill_holes4, label_components
from medfuse_plugins.morphology import SHAPE_NAMES, _shape
from reference_impl import shape_reference
from scipy import ndimage as ndi

NONE = np.zeros((0, 0), bool)
YY, XX = np.mgrid[:90, :90]


def _random_masks(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for k in range(n):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        if k % 3 == 0:  # salt and pepper: many small components, diagonal contacts
            yield rng.random((h, w)) > rng.uniform(0.2, 0.8)
        else:
            yield ndi.gaussian_filter(rng.random((h, w)), rng.uniform(0.3, 3)) > rng.uniform(0.2, 0.8)


def _drawn_shapes():
    r = np.hypot(YY - 45, XX - 45)
    yield r <= 30  # disc
    yield ((YY - 45) / 35.0) ** 2 + ((XX - 45) / 12.0) ** 2 <= 1  # ellipse
    yield (r <= 30) & (r > 15)  # ring
    yield np.abs((YY - 45) * 0.6 + (XX - 45) * 0.8) + 3 * np.abs((YY - 45) * 0.8 - (XX - 45) * 0.6) <= 40
    lshape = np.zeros((40, 30), bool)
    lshape[5:35, 5:12] = True
    lshape[28:35, 5:25] = True
    yield lshape
    yield (np.hypot(YY - 20, XX - 20) <= 9) | (np.hypot(YY - 70, XX - 60) <= 12)  # two lobes
    one = np.zeros((5, 5), bool)
    one[2, 2] = True
    yield one
    two = one.copy()
    two[3, 3] = True  # two pixels touching at a corner
    yield two
    yield np.ones((1, 1), bool)
    yield np.ones((3, 7), bool)
    yield np.zeros((6, 4), bool)


def _shape_mismatches(binary: np.ndarray) -> list[str]:
    """Names of the shape features (and ``centroid``) where the kernel differs from the reference."""
    got, gy, gx = _shape(binary)
    ref, ry, rx = shape_reference(binary)
    bad = [] if np.array_equal([gy, gx], [ry, rx], equal_nan=True) else ["centroid"]
    return bad + [k for k in SHAPE_NAMES if got[k] != pytest.approx(ref[k], rel=1e-9, abs=1e-12, nan_ok=True)]


@pytest.mark.parametrize("eight", [True, False])
def test_label_components_numbers_like_scipy(eight):
    structure = np.ones((3, 3), bool) if eight else None
    rng = np.random.default_rng(7)
    masks = [*_random_masks(300, 1), np.zeros((4, 5), bool), np.ones((4, 5), bool), np.ones((1, 1), bool)]
    for b in masks:
        weights = rng.random(b.shape) > 0.5
        ref, n = ndi.label(b, structure=structure)
        labels, area, weighted = label_components(b, weights, eight)
        assert np.array_equal(labels, ref)
        assert area.size == n + 1 and area[0] == 0 and weighted[0] == 0
        assert np.array_equal(area[1:], np.bincount(ref.ravel(), minlength=n + 1)[1:])
        assert np.array_equal(weighted[1:], np.bincount(ref[weights], minlength=n + 1)[1:])
        assert not label_components(b, NONE, eight)[2].any()


def test_fill_holes_equals_the_border_label_definition():
    for b in _random_masks(200, 2):
        bg, n = ndi.label(~b)
        keep = np.zeros(n + 1, bool)
        keep[np.unique(np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]]))] = True
        keep[0] = True
        assert np.array_equal(fill_holes4(b), ~keep[bg] | b)


def test_shape_kernel_equals_reference_on_drawn_and_random_shapes():
    for b in [*_drawn_shapes(), *_random_masks(300, 3)]:
        assert not _shape_mismatches(b), (b.shape, _shape_mismatches(b))


def test_shape_kernel_equals_reference_on_real_cells(data_root):
    from medfuse.imageio import read_image
    from medfuse_plugins.segmentation import bbox, cell_mask

    paths = sorted((data_root / "pbc").glob("*/*.jpg"))[::300][:12]
    if not paths:
        pytest.skip("no PBC images")
    for path in paths:
        mask = cell_mask(read_image(str(path)))
        box = bbox(mask > 0, 1)
        if box is None:
            continue
        assert not _shape_mismatches(mask[box] > 0), path
        assert not _shape_mismatches(mask[box] == 2), path
