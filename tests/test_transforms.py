"""Transforms: output form, geometry of masks, colour spaces against scikit-image, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from medfuse.errors import InvalidInputError
from medfuse_plugins.transforms import (
    Clahe,
    Equalize,
    GaussianBlur,
    Grayscale,
    Hsv,
    Lab,
    Resize,
    RoiCrop,
    StainNormalize,
    Unsharp,
    lab_to_rgb,
    rgb_to_lab,
)

RNG = np.random.default_rng(0)
IMG = RNG.integers(0, 256, (30, 50, 3)).astype(np.uint8)


def test_grayscale_replicates_channels():
    out, _ = Grayscale().apply(IMG)
    assert out.shape == IMG.shape and (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    g, _ = Grayscale(method="green").apply(IMG)
    assert (g[..., 0] == IMG[..., 1]).all()


def test_resize_keeps_aspect_and_pads_mask_with_background():
    mask = np.ones((30, 50), np.uint8)
    out, m = Resize(size=20).apply(IMG, mask)
    assert out.shape == (20, 20, 3) and m.shape == (20, 20)
    assert m[0].sum() == 0 and m[10].all()  # 12 rows of image centred in 20 rows
    out2, m2 = Resize(size=20, keep_aspect=False).apply(IMG, mask)
    assert m2.all()


def test_equalize_spreads_a_narrow_range():
    narrow = (RNG.integers(100, 120, (32, 32, 1)) * np.ones((1, 1, 3))).astype(np.uint8)
    out, _ = Equalize().apply(narrow)
    assert out.max() - out.min() > 200
    out_c, _ = Equalize(per_channel=True).apply(narrow)
    assert out_c.max() == 255


def test_clahe_and_blur_keep_shape_and_constant_images():
    const = np.full((32, 32, 3), 90, np.uint8)
    assert (GaussianBlur(sigma=2).apply(const)[0] == 90).all()
    assert (Unsharp().apply(const)[0] == 90).all()
    assert Clahe(kernel_size=8).apply(IMG)[0].shape == IMG.shape
    with pytest.raises(InvalidInputError, match="clip_limit"):
        Clahe(clip_limit=2).apply(IMG)


def test_unsharp_increases_edge_contrast():
    step = np.zeros((20, 20, 3), np.uint8)
    step[:, 10:] = 200
    step[:, :10] = 50
    out, _ = Unsharp(radius=1, amount=1).apply(step)
    assert out[5, 9, 0] < 50 and out[5, 10, 0] > 200


def test_hsv_and_lab_match_scikit_image():
    from skimage.color import rgb2hsv, rgb2lab

    hsv, _ = Hsv().apply(IMG)
    assert np.abs(hsv.astype(int) - np.round(rgb2hsv(IMG) * 255).astype(int)).max() <= 1
    lab, _ = Lab().apply(IMG)
    ref = rgb2lab(IMG)
    assert np.abs(lab[..., 0] / 2.55 - ref[..., 0]).max() < 0.5
    assert np.abs(rgb_to_lab(IMG) - ref).max() < 1e-3
    assert np.abs(lab_to_rgb(rgb_to_lab(IMG)).astype(int) - IMG).max() <= 1


def test_roi_crop_around_the_mask():
    img = np.full((100, 100, 3), 230, np.uint8)
    mask = np.zeros((100, 100), np.uint8)
    mask[40:60, 30:50] = 1
    out, m = RoiCrop(pad=5, square=False).apply(img, mask)
    assert out.shape == (30, 30, 3) and m.sum() == 400
    out, m = RoiCrop(pad=0).apply(img, np.zeros((100, 100), np.uint8))
    assert out.shape == img.shape  # nothing found: unchanged


def test_roi_crop_without_mask_uses_otsu_cell():
    yy, xx = np.mgrid[:120, :120]
    img = np.full((120, 120, 3), (235, 220, 210), np.float32)
    img[np.hypot(yy - 40, xx - 80) < 20] = (190, 150, 200)
    img[np.hypot(yy - 40, xx - 80) < 10] = (90, 50, 140)
    img = np.clip(img + RNG.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    out, m = RoiCrop(pad=4).apply(img)
    assert m is None and out.shape[0] == out.shape[1] and out.shape[0] < 60


def test_reinhard_reaches_target_statistics():
    target_mean, target_std = (60.0, 10.0, -5.0), (8.0, 6.0, 5.0)
    img = RNG.integers(60, 200, (64, 64, 3)).astype(np.uint8)
    out, _ = StainNormalize(target_mean=target_mean, target_std=target_std).apply(img)
    lab = rgb_to_lab(out).reshape(-1, 3)
    assert np.allclose(lab.mean(axis=0), target_mean, atol=1.5)
    assert np.allclose(lab.std(axis=0), target_std, atol=1.5)


def test_macenko_runs_and_flat_image_is_unchanged():
    out, _ = StainNormalize(method="macenko").apply(IMG)
    assert out.shape == IMG.shape
    white = np.full((16, 16, 3), 250, np.uint8)
    assert (StainNormalize(method="macenko").apply(white)[0] == white).all()
    with pytest.raises(InvalidInputError, match="method"):
        StainNormalize(method="vahadane").apply(IMG)


def test_normalize_gray_equalize_and_stretch_undo_a_contrast_change():
    from medfuse_plugins.transforms import normalize_gray

    rng = np.random.default_rng(0)
    gray = rng.integers(60, 180, (32, 32)).astype(np.uint8)
    other = ((gray.astype(int) - 60) * 3 // 2 + 20).astype(np.uint8)  # 1.5x the contrast, darker: increasing
    assert np.array_equal(normalize_gray(gray, "equalize"), normalize_gray(other, "equalize"))
    a, b = normalize_gray(gray, "stretch").astype(int), normalize_gray(other, "stretch").astype(int)
    assert np.abs(a - b).max() <= 3 and a.min() == 0 and a.max() == 255
    assert np.array_equal(normalize_gray(gray, "none"), gray)
    smooth = normalize_gray(gray, "none", smooth=1.0)
    assert smooth.std() < gray.std() / 2
    inside = np.zeros_like(gray, bool)
    inside[:16] = True  # statistics over the described pixels only
    assert normalize_gray(gray, "stretch", inside=inside)[:16].max() == 255
    with pytest.raises(InvalidInputError, match="normalize must be one of"):
        normalize_gray(gray, "clahe")
