"""Texture: LBP and GLCM known answers, agreement with scikit-image, masks and degenerate inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from medfuse.errors import InvalidInputError
from medfuse_plugins.texture import Texture
from reference_impl import compiled_lbp_codes, glcm, glcm_props


def _features(ex, image, mask) -> dict[str, float]:
    return dict(zip(ex.feature_names(), ex.prepare(image, mask).tolist()))


def test_lbp_of_constant_image_is_all_in_the_flat_bin():
    """Every neighbour equals the centre: all bits 1, uniform code P."""
    img = np.full((40, 40, 3), 128, np.uint8)
    # border pixels see zero padding outside the frame, so look at an inner mask
    inner = np.zeros((40, 40), np.uint8)
    inner[5:35, 5:35] = 1
    f = _features(Texture(lbp=[[8, 1], [16, 2]], distances=[1]), img, inner)
    assert f["lbp_P8_R1_8"] == pytest.approx(1.0)
    assert f["lbp_P16_R2_16"] == pytest.approx(1.0)
    assert sum(f[f"lbp_P8_R1_{k}"] for k in range(10)) == pytest.approx(1.0)


def test_lbp_matches_scikit_image():
    from skimage.feature import local_binary_pattern

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (50, 60)).astype(np.uint8)
    inside = np.ones_like(gray, bool)
    for p, r in ((8, 1), (16, 2), (24, 3)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = local_binary_pattern(gray, p, r, method="uniform")[inside]
        ours = compiled_lbp_codes(gray, p, r, inside)
        assert (ours == ref).mean() > 0.99


def test_glcm_of_constant_region():
    q = np.full((20, 20), 3, np.uint16)
    props = glcm_props(glcm(q, np.ones_like(q, bool), 8, [1, 2]))
    assert np.allclose(props["contrast"], 0)
    assert np.allclose(props["homogeneity"], 1)
    assert np.allclose(props["asm"], 1)
    assert np.allclose(props["entropy"], 0)
    assert np.allclose(props["correlation"], 1)


def test_glcm_of_stripes_has_known_contrast():
    """Vertical stripes 0/1 of width 1: horizontal neighbours always differ by 1, vertical never."""
    q = np.tile(np.array([0, 1], np.uint16), (16, 8))
    P = glcm(q, np.ones_like(q, bool), 2, [1])
    c = glcm_props(P)["contrast"][0]
    assert c[0] == pytest.approx(1.0)  # 0 degrees (horizontal)
    assert c[2] == pytest.approx(0.0)  # 90 degrees (vertical)


def test_glcm_ignores_pixels_outside_the_mask():
    q = np.zeros((20, 20), np.uint16)
    q[:, 10:] = 7  # a bright half, outside the mask
    inside = np.zeros_like(q, bool)
    inside[:, :8] = True
    props = glcm_props(glcm(q, inside, 8, [1]))
    assert np.allclose(props["contrast"], 0)


def test_names_match_vector_and_are_stable():
    ex = Texture()
    img = np.random.default_rng(1).integers(0, 256, (48, 48, 3)).astype(np.uint8)
    mask = np.zeros((48, 48), np.uint8)
    mask[8:40, 8:40] = 1
    v = ex.prepare(img, mask)
    assert v.dtype == np.float32 and v.shape == (len(ex.feature_names()),)
    assert len(ex.feature_names()) == 6 + (10 + 18 + 26) + 12 * 3 * 2
    assert not np.isnan(v).any()


def test_empty_mask_and_empty_region_give_nan():
    img = np.full((32, 32, 3), 100, np.uint8)
    assert np.isnan(Texture().prepare(img, np.zeros((32, 32), np.uint8))).all()
    cyto_only = np.ones((32, 32), np.uint8)
    assert np.isnan(Texture(region="nucleus").prepare(img, cyto_only)).all()


def test_bad_parameters_raise():
    img = np.full((16, 16, 3), 100, np.uint8)
    with pytest.raises(InvalidInputError, match="levels"):
        Texture(levels=1).prepare(img, np.ones((16, 16), np.uint8))
    with pytest.raises(InvalidInputError, match="lbp"):
        Texture(lbp=[8]).prepare(img, np.ones((16, 16), np.uint8))
    with pytest.raises(InvalidInputError, match="region"):
        Texture(region="membrane").prepare(img, np.ones((16, 16), np.uint8))


def test_lbp_matches_scikit_image_on_a_smooth_masked_image():
    """Smooth images have many near-ties between neighbours and centre; the masked codes still
    agree with scikit-image's on (almost) every pixel, and the order is row-major."""
    from scipy import ndimage as ndi
    from skimage.feature import local_binary_pattern

    rng = np.random.default_rng(2)
    gray = (ndi.gaussian_filter(rng.random((70, 64)), 3) * 2000 % 256).astype(np.uint8)
    inside = ndi.gaussian_filter(rng.random((70, 64)), 6) > 0.5
    for p, r in ((8, 1), (16, 2), (24, 3)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = local_binary_pattern(gray, p, r, method="uniform")[inside]
        ours = compiled_lbp_codes(gray, p, r, inside)
        assert ours.shape == ref.shape
        assert (ours == ref).mean() > 0.995


def test_glcm_props_match_scikit_image_graycoprops():
    from skimage.feature import graycomatrix, graycoprops

    rng = np.random.default_rng(4)
    q = rng.integers(0, 8, (30, 30)).astype(np.uint16)
    P = glcm(q, np.ones_like(q, bool), 8, [1, 2])
    ref = graycomatrix(q, [1, 2], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=8, symmetric=True, normed=True)
    assert np.allclose(P, ref)
    ours = glcm_props(P)
    for name, sk in (("contrast", "contrast"), ("dissimilarity", "dissimilarity"),
                     ("homogeneity", "homogeneity"), ("asm", "ASM"), ("energy", "energy"),
                     ("correlation", "correlation")):
        assert np.allclose(ours[name], graycoprops(ref, sk)), name


def _xray_like(seed: int = 0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    g = gaussian_filter(rng.normal(0, 1, (64, 64)), 2) * 60 + 120 + np.linspace(-30, 30, 64)[None, :]
    return np.repeat(np.clip(g, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _shifted(image: np.ndarray) -> dict[str, np.ndarray]:
    f = image.astype(np.float64)
    out = {"gamma 0.6": 255 * (f / 255) ** 0.6, "gamma 1.6": 255 * (f / 255) ** 1.6,
           "contrast 0.6, brightness +20": (f - f.mean()) * 0.6 + f.mean() + 20}
    return {k: np.clip(v + 0.5, 0, 255).astype(np.uint8) for k, v in out.items()}


def test_normalised_texture_holds_under_exposure_and_contrast_shift():
    """normalize = "equalize": the texture features of an X-ray-like image barely move (< 2%)
    under a gamma or contrast/brightness change of the input; without it they move by 8-87%."""
    image, whole = _xray_like(), np.ones((64, 64), np.uint8)
    kw = {"lbp": [[8, 1], [16, 2]], "distances": [1, 2]}
    for params, bound in (({"normalize": "equalize"}, (0.0, 0.02)), ({"normalize": "equalize", "smooth": 0.5}, (0.0, 0.02)),
                          ({}, (0.05, np.inf))):
        tex = Texture(**kw, **params)
        f0 = tex.prepare(image, whole)
        for name, shifted in _shifted(image).items():
            change = np.linalg.norm(tex.prepare(shifted, whole) - f0) / np.linalg.norm(f0)
            assert bound[0] <= change < bound[1], (params, name, change)
    with pytest.raises(InvalidInputError, match="normalize"):
        Texture(normalize="clahe").prepare(image, whole)
