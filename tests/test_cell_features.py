"""Cell-biology blocks on tiny synthetic cells: each feature responds as documented.

``red_cell`` (pallor, target index, outline harmonics, relative size), ``compartments``
(granular vs smooth cytoplasm, eosinophilic vs basophilic granules) and the centred-cell choice
of ``otsu_cell`` (``keep = "centre"``).
"""

from __future__ import annotations

import numpy as np
import pytest
from medfuse.errors import InvalidInputError
from medfuse.host import get_host
from medfuse_plugins._compartments import Compartments
from medfuse_plugins._redcell import RedCell
from medfuse_plugins.segmentation import cell_mask, centred_component

BG = 235


def _grid(n: int = 64):
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    c = (n - 1) / 2
    return yy - c, xx - c


def _red_image(radius_fn, centre_value=None, n: int = 64, base: int = 120, extra_cells=()):
    """A grey red cell (value ``base``) whose outline radius is ``radius_fn(theta)``, on a bright
    background; ``centre_value(r)`` overrides the value by distance from the centre; ``extra_cells``
    are ``(cy, cx, radius)`` flat discs. Returns (image, mask)."""
    dy, dx = _grid(n)
    r, theta = np.hypot(dy, dx), np.arctan2(dy, dx)
    cell = r <= radius_fn(theta)
    img = np.full((n, n), BG, np.float64)
    img[cell] = base
    if centre_value is not None:
        img[cell] = centre_value(r[cell])
    for cy, cx, rad in extra_cells:
        disc = np.hypot(dy - cy, dx - cx) <= rad
        img[disc] = base
        cell = cell | disc
    image = np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return image, cell.astype(np.uint8)


def _rbc(image, mask, **params) -> dict[str, float]:
    ex = RedCell(**params)
    return dict(zip(ex.feature_names(), ex.prepare(image, mask).tolist()))


def test_pale_centre_has_larger_pallor_than_flat_disc():
    flat = _rbc(*_red_image(lambda t: 14.0))
    pale = _rbc(*_red_image(lambda t: 14.0, lambda r: np.where(r < 7, 200, 120)))
    assert flat["pallor_area_ratio"] == 0.0 and np.isnan(flat["pallor_offset"])
    assert pale["pallor_area_ratio"] > 0.15 and pale["pallor_diameter_ratio"] > 0.4
    assert pale["pallor_offset"] < 0.1  # the pale centre is centred
    assert pale["centre_rim_ratio"] < 0.7 < flat["centre_rim_ratio"]
    # the radial profile falls towards the centre for the pale cell only
    assert pale["profile_7"] < pale["profile_0"] and abs(flat["profile_7"] - flat["profile_0"]) < 0.05
    # haemoglobin: same rim, less total OD with the pale centre
    assert pale["od_total"] < flat["od_total"] and pale["od_rim"] == pytest.approx(flat["od_rim"], rel=0.05)


def test_offset_pallor_is_measured():
    dy, dx = 0, 5  # pale spot moved off the centre (a stomatocyte-like slit would be too)
    image, mask = _red_image(lambda t: 14.0)
    yy, xx = _grid(64)
    spot = (np.hypot(yy - dy, xx - dx) < 4) & (mask > 0)
    image[spot] = 200
    f = _rbc(image, mask)
    assert f["pallor_offset"] > 0.25


def test_target_cell_has_a_higher_target_index_than_a_pale_centre():
    pale = _rbc(*_red_image(lambda t: 14.0, lambda r: np.where(r < 7, 200, 120)))
    target = _rbc(*_red_image(lambda t: 14.0, lambda r: np.where(r < 3, 110, np.where(r < 8, 200, 120))))
    assert target["target_index"] > 0.3 > pale["target_index"]


def test_burr_outline_has_more_high_harmonic_energy_than_a_circle():
    circle = _rbc(*_red_image(lambda t: 14.0))
    burr = _rbc(*_red_image(lambda t: 14.0 * (1 + 0.15 * np.cos(10 * t))))
    ellipse = _rbc(*_red_image(lambda t: 14.0 / np.sqrt((np.cos(t) / 1.0) ** 2 + (np.sin(t) / 0.6) ** 2)))
    assert burr["harmonic_high"] > 3 * circle["harmonic_high"]
    assert burr["radius_cv"] > circle["radius_cv"]
    # an elliptocyte: the second harmonic and the elongation, not the spiky part
    assert ellipse["harmonic_2"] > 5 * circle["harmonic_2"] and ellipse["elongation"] > 1.4
    assert ellipse["harmonic_high"] < burr["harmonic_high"]


def test_relative_size_against_the_images_complete_cells():
    neighbours = [(-20, -20, 8), (-20, 20, 8), (20, -20, 8), (20, 20, 8)]
    big = _rbc(*_red_image(lambda t: 12.0, extra_cells=neighbours))
    assert big["cells"] == 5
    assert big["relative_area"] == pytest.approx(12.0 ** 2 / 8.0 ** 2, rel=0.2)  # over the median (small) cell
    alone = _rbc(*_red_image(lambda t: 12.0))
    assert np.isnan(alone["relative_area"]) and alone["cells"] == 1


def test_red_cell_empty_mask_and_bad_params():
    image, mask = _red_image(lambda t: 10.0)
    f = _rbc(image, np.zeros_like(mask))
    assert f["valid"] == 0.0 and np.isnan(f["od_mean"])
    with pytest.raises(InvalidInputError, match="pallor_fraction"):
        RedCell(pallor_fraction=0).prepare(image, mask)


# ---- white cells: compartments -------------------------------------------------------------

def _white_cell(granules=None, n: int = 96, seed: int = 0):
    """A pinkish cytoplasm disc with a purple nucleus; ``granules`` = RGB colour of 25 small dense
    dots scattered in the cytoplasm (None: smooth). Returns (image, mask)."""
    rng = np.random.default_rng(seed)
    dy, dx = _grid(n)
    r = np.hypot(dy, dx)
    img = np.zeros((n, n, 3), np.uint8)
    img[:] = (240, 225, 215)
    cyto, nuc = r <= 34, r <= 14
    img[cyto] = (205, 180, 200)
    img[nuc] = (110, 60, 150)
    if granules is not None:
        placed = 0
        while placed < 25:
            gy, gx = rng.uniform(-30, 30, 2)
            if not 18 <= np.hypot(gy, gx) <= 30:
                continue
            img[np.hypot(dy - gy, dx - gx) <= 1.6] = granules
            placed += 1
    mask = np.zeros((n, n), np.uint8)
    mask[cyto] = 1
    mask[nuc] = 2
    return img, mask


def _comp(image, mask) -> dict[str, float]:
    ex = Compartments()
    return dict(zip(ex.feature_names(), ex.prepare(image, mask).tolist()))


def test_compartments_separate_granular_from_smooth_cytoplasm():
    smooth = _comp(*_white_cell())
    granular = _comp(*_white_cell(granules=(90, 40, 110)))
    assert smooth["cytoplasm_granules"] == 0 and granular["cytoplasm_granules"] >= 15
    assert granular["cytoplasm_granule_density"] > 1.0
    assert granular["cytoplasm_granularity_r2"] > 10 * max(smooth["cytoplasm_granularity_r2"], 1e-4)
    assert granular["cytoplasm_od_std"] > 2 * smooth["cytoplasm_od_std"]
    # the nucleus is the same in both cells
    assert granular["nucleus_od_mean"] == pytest.approx(smooth["nucleus_od_mean"], rel=0.02)
    assert granular["nc_od_ratio"] < smooth["nc_od_ratio"]


def test_eosinophilic_granules_have_a_lower_red_share_than_basophilic():
    eos = _comp(*_white_cell(granules=(235, 110, 60)))
    baso = _comp(*_white_cell(granules=(60, 40, 120)))
    assert eos["cytoplasm_granules"] >= 15 and baso["cytoplasm_granules"] >= 15
    assert eos["cytoplasm_granule_red_share"] < 0.15 < baso["cytoplasm_granule_red_share"]
    assert eos["cytoplasm_od_red_share"] < baso["cytoplasm_od_red_share"]


def test_compartments_empty_mask_gives_nan_and_valid_zero():
    image, mask = _white_cell()
    ex = Compartments()
    f = dict(zip(ex.feature_names(), ex.prepare(image, np.zeros_like(mask)).tolist()))
    assert f["valid"] == 0.0 and np.isnan(f["nucleus_od_mean"])
    with pytest.raises(InvalidInputError, match="keep"):
        Compartments(keep="middle").prepare(image, mask)


# ---- the centred cell ----------------------------------------------------------------------

def _two_blobs(n: int = 120):
    """A small stained blob at the centre and a larger cell (cytoplasm + nucleus) off-centre,
    with a red cell, on a pale background (four levels, as multi-Otsu expects)."""
    dy, dx = _grid(n)
    img = np.zeros((n, n, 3), np.uint8)
    img[:] = (235, 215, 210)
    img[np.hypot(dy - 35, dx + 30) <= 14] = (210, 150, 150)  # a red cell
    small = np.hypot(dy, dx) <= 7
    large = np.hypot(dy + 35, dx + 35) <= 18
    img[small | large] = (190, 160, 215)
    img[(np.hypot(dy, dx) <= 4) | (np.hypot(dy + 35, dx + 35) <= 10)] = (110, 60, 170)
    return img, small, large


def test_centred_cell_mask_picks_the_centred_small_blob():
    img, small, large = _two_blobs()
    centred = cell_mask(img, keep="centre", open_radius=1) > 0
    assert centred[small].mean() > 0.9 and not centred[large].any()
    largest = cell_mask(img, keep="largest", open_radius=1) > 0
    assert largest[large].mean() > 0.9 and not largest[small].any()  # the old default: the big one
    # through the plugin, as a study's mask = { plugin = "otsu_cell", params = { keep = "centre" } }
    plugin = get_host().create("otsu_cell", {"keep": "centre", "open_radius": 1})
    assert (plugin.predict_mask(img) > 0)[small].mean() > 0.9


def test_centred_component_nearest_when_none_holds_the_centre():
    b = np.zeros((41, 41), bool)
    b[5:15, 5:15] = True  # far, large
    b[22:25, 24:27] = True  # near the centre (20, 20), small
    b[20, 20] = False
    got = centred_component(b)
    assert got[23, 25] and not got[10, 10]
    # debris under min_area is not a candidate
    assert centred_component(b, min_area=20)[10, 10]


def test_centred_choice_keeps_a_main_cell_that_reaches_the_centre_over_a_nearer_fragment():
    """A lobe or speck split off the centred cell must not replace it (seen on PBC neutrophils)."""
    b = np.zeros((61, 61), bool)
    b[33:53, 20:40] = True  # the main cell, 3 px below the centre (30, 30)
    b[26:31, 28:33] = True  # a fragment holding the centre
    assert centred_component(b, near=6)[40, 30] and not centred_component(b, near=6)[30, 30]
    assert centred_component(b)[30, 30]  # without `near`: plainly the nearest


@pytest.mark.slow
@pytest.mark.dataset
def test_compartments_on_pbc_eosinophils_vs_basophils(data_root):
    """On real PBC cells: eosinophil cytoplasm is orange (low red-channel OD share), basophils carry
    dense dark granules over the whole cell (more granules per cytoplasm pixel)."""
    from medfuse.imageio import read_image

    mask_maker = get_host().create("otsu_cell")
    ex = Compartments()
    names = ex.feature_names()

    def rows(cls: str) -> np.ndarray:
        paths = sorted((data_root / "pbc" / cls).glob("*.jpg"))[:12]
        if not paths:
            pytest.skip(f"no PBC {cls} images under {data_root / 'pbc'}")
        return np.array([ex.prepare(im, mask_maker.predict_mask(im)) for im in map(read_image, paths)])

    eos, baso = rows("eosinophil"), rows("basophil")
    red, dens = names.index("cytoplasm_od_red_share"), names.index("cytoplasm_granule_density")
    assert np.median(eos[:, red]) < np.median(baso[:, red]) - 0.03
    assert np.median(baso[:, dens]) > 2 * np.median(eos[:, dens])
