"""Known answers for the segmentation metrics (Dice, HD95, Hausdorff max)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from medfuse.errors import InvalidInputError
from medfuse.segmetrics import boundary, dice, hausdorffs, score_table, scores


def hausdorff(pred, truth, percentile=100.0):
    """One Hausdorff distance (the tests' shorthand for ``hausdorffs``)."""
    return hausdorffs(pred, truth, (percentile,))[0]


def disc(shape=(64, 64), center=(32, 32), r=12):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(yy - center[0], xx - center[1]) <= r


def test_identical_masks_dice_one_hausdorff_zero():
    m = disc()
    assert dice(m, m) == 1.0
    assert hausdorff(m, m) == 0.0
    assert hausdorff(m, m, 95) == 0.0


@pytest.mark.parametrize("shift", [1, 3, 7])
def test_shifted_disc_hausdorff_equals_shift(shift):
    a, b = disc(), disc(center=(32, 32 + shift))
    assert hausdorff(a, b) == pytest.approx(shift)
    assert 0 < hausdorff(a, b, 95) <= shift
    assert dice(a, b) < 1.0


def test_dice_of_half_overlap():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:, :4] = True  # 40 px
    b[:, 2:6] = True  # 40 px, 20 shared
    assert dice(a, b) == pytest.approx(0.5)


def test_empty_conventions():
    empty = np.zeros((8, 8), bool)
    assert dice(empty, empty) == 1.0 and hausdorff(empty, empty) == 0.0
    assert dice(empty, disc((8, 8), (4, 4), 2)) == 0.0
    assert math.isnan(hausdorff(empty, disc((8, 8), (4, 4), 2)))


def test_boundary_of_square_is_its_ring():
    m = np.zeros((7, 7), bool)
    m[1:6, 1:6] = True
    assert boundary(m).sum() == 16


def test_regions_and_table():
    truth = np.zeros((40, 40), np.uint8)
    truth[disc((40, 40), (20, 20), 12)] = 1
    truth[disc((40, 40), (20, 20), 5)] = 2
    pred = truth.copy()
    pred[disc((40, 40), (20, 20), 5)] = 1  # nucleus missed
    s = scores(pred, truth, ("cell", "nucleus"))
    assert s["cell_dice"] == 1.0 and s["cell_hd_max"] == 0.0
    assert s["nucleus_dice"] == 0.0 and math.isnan(s["nucleus_hd95"])
    table = score_table([truth, pred], [truth, truth], ids=["a", "b"], regions=("cell", "nucleus"))
    assert list(table.index) == ["a", "b", "mean"]
    assert table.loc["mean", "nucleus_dice"] == pytest.approx(0.5)
    assert table.loc["mean", "nucleus_hd95"] == 0.0  # undefined value left out of the mean
    assert table.loc["mean", "n_undefined"] == 1


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="shape"):
        dice(np.zeros((4, 4)), np.zeros((5, 5)))
