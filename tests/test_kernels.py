"""Compiled texture kernels: the same LBP codes and GLCM counts as the NumPy / scikit-image
references (GLCM properties to float64 round-off), on random, near-tie and smooth images with
random masks, and on real PBC cells."""

from __future__ import annotations

import numpy as np
import pytest
from medfuse_plugins.texture import Texture, glcm_angle_stats, lbp_histograms
from reference_impl import (
    compiled_lbp_codes,
    glcm,
    glcm_angle_stats_reference,
    glcm_reference,
    uniform_lbp_reference,
)

SCALES = ((8, 1.0), (16, 2.0), (24, 3.0), (8, 2.5), (12, 1.5))


def _images(seed: int, n: int):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    for k in range(n):
        h, w = (int(v) for v in rng.integers(3, 70, 2))
        kind = k % 4
        if kind == 0:
            g = rng.integers(0, 256, (h, w))
        elif kind == 1:  # a few close grey levels: many exact ties with the centre
            g = rng.integers(100, 104, (h, w))
        elif kind == 2:  # ramps: neighbours interpolate to values near the centre
            g = np.add.outer(np.arange(h), np.arange(w)) * int(rng.integers(1, 7)) % 256
        else:  # smooth, real-like
            g = ndi.gaussian_filter(rng.random((h, w)), 2) * 3000 % 256
        inside = rng.random((h, w)) > rng.random()
        yield g.astype(np.uint8), inside


def _check(gray, inside):
    for p, r in SCALES:
        ref = np.bincount(uniform_lbp_reference(gray, p, r, inside), minlength=p + 2)[:p + 2]
        assert np.array_equal(lbp_histograms(gray, [(p, r)], inside)[0], ref)
    pairs = [(8, 1.0), (16, 2.0), (24, 3.0)]
    for h, (p, r) in zip(lbp_histograms(gray, pairs, inside), pairs):
        ref = np.bincount(uniform_lbp_reference(gray, p, r, inside), minlength=p + 2)[:p + 2]
        assert np.array_equal(h, ref)
    for levels in (2, 8, 32):
        q = (gray.astype(np.uint16) * levels) >> 8
        assert np.array_equal(glcm(q, inside, levels, [1, 2, 4]),
                              glcm_reference(q, inside, levels, [1, 2, 4]), equal_nan=True)
        # compiled properties and angle reduction: float64 round-off (other summation order)
        np.testing.assert_allclose(glcm_angle_stats(q, inside, levels, [1, 2, 4]),
                                   glcm_angle_stats_reference(q, inside, levels, [1, 2, 4]),
                                   rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_kernels_equal_references_on_synthetic_images(seed):
    for gray, inside in _images(seed, 40):
        _check(gray, inside)


def test_compiled_lbp_codes_equal_the_reference_pixel_by_pixel():
    """Not only the counts: each pixel's code (read back from the histogram kernel) is the reference's."""
    for gray, inside in _images(3, 6):
        gray, inside = gray[:24, :24], inside[:24, :24]
        for p, r in SCALES:
            assert np.array_equal(compiled_lbp_codes(gray, p, r, inside), uniform_lbp_reference(gray, p, r, inside))


def test_kernels_on_empty_and_single_pixel_masks():
    gray = np.arange(100, dtype=np.uint8).reshape(10, 10)
    empty = np.zeros((10, 10), bool)
    assert all(h.sum() == 0 for h in lbp_histograms(gray, [(8, 1)], empty))
    one = empty.copy()
    one[0, 0] = True  # a corner: neighbours outside the image read as 0
    _check(gray, one)


def test_kernels_equal_references_on_real_cells(data_root):
    from medfuse.imageio import read_image
    from medfuse_plugins.segmentation import bbox, cell_mask
    from medfuse_plugins.transforms import to_gray

    paths = sorted((data_root / "pbc").glob("*/*.jpg"))[::400][:8]
    if not paths:
        pytest.skip("no PBC images")
    for path in paths:
        image = read_image(str(path))
        inside_full = cell_mask(image) > 0
        box = bbox(inside_full, 5)
        if box is None:
            continue
        _check(to_gray(image[box]), inside_full[box])
        v = Texture().prepare(image, inside_full.astype(np.uint8))
        assert v.shape == (len(Texture().feature_names()),)
