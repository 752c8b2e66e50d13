"""colour_normalize: per-image grey-world / white-patch balance (issue #18, all-subtypes-blocked)."""

from __future__ import annotations

import numpy as np
import pytest
from medfuse.errors import InvalidInputError
from medfuse.host import get_host
from medfuse_plugins.transforms import ColourNormalize

RNG = np.random.default_rng(0)


def _smear(h: int = 40, w: int = 48) -> np.ndarray:
    """A bright bluish background with a darker purple blob, as a stained smear looks."""
    img = np.empty((h, w, 3), np.float32)
    img[:] = (225, 228, 245)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < 100] = (120, 70, 160)
    img += RNG.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _cast(image: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    return np.clip(image * np.asarray(gains, np.float32) + 0.5, 0, 255).astype(np.uint8)


def test_white_patch_maps_a_colour_shifted_copy_onto_the_original():
    img = _smear()
    shifted = _cast(img, (0.85, 0.9, 0.8))  # darker and yellower: stays below 255, no clipping
    t = ColourNormalize(method="white_patch")
    a, b = t.apply(img)[0].astype(int), t.apply(shifted)[0].astype(int)
    assert np.abs(a - b).mean() < 1.5 and np.abs(a - b).max() <= 6
    assert np.abs(img.astype(int) - shifted.astype(int)).mean() > 20  # the shift itself was large


def test_greyworld_removes_a_cast_up_to_one_brightness_factor():
    img = _smear()
    shifted = _cast(img, (1.0, 0.9, 0.75))
    t = ColourNormalize(method="greyworld")
    a, b = t.apply(img)[0].astype(np.float32), t.apply(shifted)[0].astype(np.float32)
    for out in (a, b):
        means = out.reshape(-1, 3).mean(axis=0)
        assert means.max() - means.min() < 1.0  # equal channel means
    ratio = a.reshape(-1, 3).mean() / b.reshape(-1, 3).mean()
    assert np.abs(a - b * ratio).mean() < 1.5


def test_identity_where_nothing_is_to_correct():
    grey = RNG.integers(0, 256, (20, 30, 1)).astype(np.uint8).repeat(3, axis=2)
    assert np.array_equal(ColourNormalize(method="greyworld").apply(grey)[0], grey)
    full = grey.copy()
    full[0, :] = 255  # 30 of 600 pixels at 255 in every channel: the 99th percentile is 255
    assert np.array_equal(ColourNormalize(method="white_patch").apply(full)[0], full)
    black = np.zeros((8, 8, 3), np.uint8)
    for method in ColourNormalize.METHODS:
        assert np.array_equal(ColourNormalize(method=method).apply(black)[0], black)


def test_output_form_and_mask_untouched():
    img, mask = _smear(), (RNG.random((40, 48)) > 0.5).astype(np.uint8)
    for method in ColourNormalize.METHODS:
        out, m = ColourNormalize(method=method).apply(img, mask)
        assert out.dtype == np.uint8 and out.shape == img.shape
        assert np.array_equal(m, mask)
        assert not np.array_equal(out, img)


def test_cache_key_follows_the_parameters():
    keys = {ColourNormalize().cache_key(), ColourNormalize(method="white_patch").cache_key(),
            ColourNormalize(method="white_patch", percentile=95).cache_key()}
    assert len(keys) == 3
    assert ColourNormalize().cache_key() == ColourNormalize(method="greyworld").cache_key()


def test_registered_and_bad_parameters_named():
    t = get_host().create("colour_normalize", {"method": "white_patch"})
    assert isinstance(t, ColourNormalize) and t.kind == "transform"
    with pytest.raises(InvalidInputError, match="colour_normalize: method 'gray'"):
        ColourNormalize(method="gray").apply(_smear())
    with pytest.raises(InvalidInputError, match="percentile must be in"):
        ColourNormalize(method="white_patch", percentile=20).apply(_smear())


def test_choice_script_candidates_are_real_transforms_put_before_classical_only():
    import importlib.util
    import sys
    from pathlib import Path

    from medfuse.study import resolve_study

    path = Path(__file__).resolve().parents[1] / "bench" / "choose_colour_norm.py"
    spec = importlib.util.spec_from_file_location("choose_colour_norm", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    assert next(iter(bench.CANDIDATES)) == "none" and "inner" in bench.__doc__
    for name, transforms in bench.CANDIDATES.items():
        for t in transforms:
            assert get_host().create(t["plugin"], t["params"]).kind == "transform", name
    study = resolve_study(bench.STUDY)
    variant = bench._variant(study, bench.CANDIDATES["white_patch"])
    assert [t.plugin for t in variant.pipelines["classical"].transforms] == ["colour_normalize"]
    assert variant.pipelines["classical"].transforms[0].params == {"method": "white_patch"}
    assert all(not p.transforms for n, p in variant.pipelines.items() if n != "classical")
    assert study.pipelines["classical"].transforms == []  # the registry's study is left as it was
