"""HOG extractor and whole-image mask."""

from __future__ import annotations

import numpy as np
import pytest
from medfuse.errors import InvalidInputError
from medfuse_plugins.gradients import Hog
from medfuse_plugins.segmentation import WholeImage


def stripes(vertical: bool, size: int = 28) -> np.ndarray:
    img = np.zeros((size, size, 3), np.uint8)
    if vertical:
        img[:, ::4] = 255
    else:
        img[::4, :] = 255
    return img


def test_hog_length_names_and_orientation_sensitivity():
    h = Hog(size=28, pixels_per_cell=7, cells_per_block=2, orientations=9)
    a, b = h.prepare(stripes(True)), h.prepare(stripes(False))
    assert a.shape == (324,) and a.dtype == np.float32  # 3*3 blocks * 2*2 cells * 9 bins
    assert len(h.get_feature_names_out()) == 324 and h.get_feature_names_out()[0] == "hog.0"
    # vertical stripes (horizontal gradients) and horizontal stripes fill different bins
    assert np.argmax(a[:9]) != np.argmax(b[:9])
    # any input size gives the same length (resized first)
    assert h.prepare(np.zeros((50, 40, 3), np.uint8)).shape == (324,)


def test_hog_refuses_a_grid_smaller_than_a_block():
    with pytest.raises(InvalidInputError, match="cells per side"):
        Hog(size=8, pixels_per_cell=8, cells_per_block=2).prepare(stripes(True))


def test_whole_image_mask_is_all_cell():
    m = WholeImage().predict_mask(np.zeros((5, 7, 3), np.uint8))
    assert m.shape == (5, 7) and m.dtype == np.uint8 and (m == 1).all()


def test_hog_normalize_is_the_hog_of_the_normalised_grey_image():
    from medfuse_plugins.transforms import normalize_gray

    rng = np.random.default_rng(0)
    image = np.repeat(rng.integers(40, 120, (32, 32)).astype(np.uint8)[..., None], 3, axis=2)
    norm = normalize_gray(image[..., 0], "equalize", 0.5)
    expected = Hog(size=32, pixels_per_cell=8).prepare(np.repeat(norm[..., None], 3, axis=2), None)
    got = Hog(size=32, pixels_per_cell=8, normalize="equalize", smooth=0.5).prepare(image, None)
    assert np.allclose(got, expected) and not np.allclose(got, Hog(size=32, pixels_per_cell=8).prepare(image, None))
    with pytest.raises(InvalidInputError, match="normalize"):
        Hog(normalize="bogus").prepare(image, None)
