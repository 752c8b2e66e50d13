"""U-Net mask maker on synthetic discs: learns, tiles large images, reloads identically."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from medfuse.errors import InvalidInputError
from medfuse.segmetrics import score_table

pytest.importorskip("keras")

from medfuse_plugins.unet import UNetMask, _ramp_window, _starts, dihedral, keep_largest_cell  # noqa: E402


def smear(seed: int, shape=(72, 88), n=6):
    """A field of dark discs (cells, value 1) with darker centres (nucleus, value 2) on a bright background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, np.uint8)
    for _ in range(n):
        cy, cx, r = rng.uniform(8, shape[0] - 8), rng.uniform(8, shape[1] - 8), rng.uniform(5, 9)
        d = np.hypot(yy - cy, xx - cx)
        mask[(d < r) & (mask == 0)] = 1
        mask[d < r * 0.45] = 2
    img = np.where(mask[..., None] == 0, 225.0, np.where(mask[..., None] == 1, 150.0, 60.0))
    img = img * np.array([1.0, 0.85, 1.0]) + rng.normal(0, 8, (*shape, 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask


FAST = dict(n_classes=3, patch_size=32, tile_size=32, overlap=8, width=8, depth=2, epochs=6,
            steps_per_epoch=12, batch_size=8, learning_rate=0.01, random_state=0)


@pytest.fixture(scope="module")
def trained():
    train = [smear(s) for s in range(4)]
    unet = UNetMask(**FAST).fit([i for i, _ in train], [m for _, m in train])
    return unet


def test_unet_learns_discs_and_tiles_large_images(trained):
    tests = [smear(s) for s in (10, 11)]
    preds = [trained.predict_mask(im) for im, _ in tests]
    for (im, _), p in zip(tests, preds):
        assert p.shape == im.shape[:2] and p.dtype == np.uint8 and set(np.unique(p)) <= {0, 1, 2}
    table = score_table(preds, [m for _, m in tests], regions=("cell", "nucleus"))
    assert table.loc["mean", "cell_dice"] > 0.85, table
    assert table.loc["mean", "nucleus_dice"] > 0.5, table
    assert trained.history_["epochs_run"] >= 1


def test_reloaded_unet_gives_identical_masks(trained, tmp_path):
    im, _ = smear(12)
    ref = trained.predict_mask(im)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(trained)).predict_mask(im), ref)
    assert [p.name for p in trained.save_artifacts(tmp_path)] == ["unet.keras", "unet.probs.onnx"]
    fresh = UNetMask(**FAST)
    fresh.__dict__.update({k: v for k, v in trained.__getstate__().items() if k != "model_"})
    fresh.load_artifacts(tmp_path)  # ONNX under onnxruntime; masks are argmaxes, so exact
    assert set(fresh.onnx_) == {"probs"}
    np.testing.assert_array_equal(fresh.predict_mask(im), ref)
    fresh.tta = trained.tta = True
    np.testing.assert_array_equal(fresh.predict_mask(im), trained.predict_mask(im))
    trained.tta = False


# determinism, reuse and scaling need no learning: one short epoch of a narrow network, at half scale
QUICK = {**FAST, "width": 4, "epochs": 1, "steps_per_epoch": 2, "scale": 0.5}


@pytest.fixture(scope="module")
def quick():
    """``(run, first, images, masks)``: a QUICK U-Net trained through a run's TrainedCache."""
    from medfuse.trained import TrainedCache

    train = [smear(s) for s in range(2)]
    images, masks = [i for i, _ in train], [m for _, m in train]
    run = TrainedCache()
    return run, run.fit(UNetMask(**QUICK), images, masks, owner="pipelines.image.mask"), images, masks


def test_unet_same_seed_same_masks(quick):
    """A plain fit trains again (same seed: the same network, bit for bit); a run's TrainedCache shares
    one training."""
    run, first, images, masks = quick
    again = UNetMask(**QUICK).fit(images, masks)
    assert "reused" not in again.history_ and "reused" not in first.history_
    assert again.model_ is not first.model_
    for a, b in zip(again.model_.get_weights(), first.model_.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    reused = run.fit(UNetMask(**{**QUICK, "tta": True, "keep_largest": True}), images, masks)
    assert reused.history_.get("reused") is True and (run.trainings, run.reuses) == (1, 1)
    assert reused.model_ is first.model_ and reused.keep_largest
    im, _ = smear(13)
    ref = first.predict_proba_map(im)
    np.testing.assert_array_equal(again.predict_proba_map(im), ref)
    reused.tta = reused.keep_largest = False
    np.testing.assert_array_equal(reused.predict_mask(im), first.predict_mask(im))


def test_scaled_prediction_returns_full_resolution(quick):
    _, small, _, _ = quick  # trained at scale 0.5
    im, _ = smear(14)
    assert small.predict_mask(im).shape == im.shape[:2]  # the mask comes back at full resolution


def test_dihedral_views_and_their_inverses():
    a = np.arange(2 * 3 * 2).reshape(2, 3, 2)
    views = [dihedral(a, k) for k in range(8)]
    assert len({v.tobytes() + bytes(v.shape) for v in views}) == 8  # 8 distinct views
    for k, v in enumerate(views):
        np.testing.assert_array_equal(dihedral(v, k, inverse=True), a)


def test_tta_mask_is_the_argmax_of_the_mean_map_over_8_views(trained):
    """``tta`` changes inference only: the same network, the mean of the 8 views' maps mapped back."""
    im, _ = smear(15, shape=(40, 56))  # one tile, not square
    tta = pickle.loads(pickle.dumps(trained))
    tta.tta = True
    maps = [dihedral(trained.predict_proba_map(np.ascontiguousarray(dihedral(im, k))), k, inverse=True)
            for k in range(8)]
    expected = np.argmax(sum(maps) / np.float32(8), axis=-1)
    np.testing.assert_array_equal(tta.predict_mask(im), expected)
    assert not np.array_equal(maps[0], maps[5])  # the views do differ, so the test is not vacuous


def test_tiling_helpers():
    assert _starts(100, 32, 24) == [0, 24, 48, 68]
    assert _starts(20, 32, 24) == [0]
    w = _ramp_window(32, 8)
    assert w.shape == (32, 32) and w[16, 16] == 1 and 0 < w[0, 0] < w[0, 16] < 1


def test_bad_parameters_and_inputs():
    im, m = smear(0)
    with pytest.raises(InvalidInputError, match="multiple of 2\\*\\*depth"):
        UNetMask(patch_size=30, depth=2).fit([im], [m])
    with pytest.raises(InvalidInputError, match="n_classes"):
        UNetMask(n_classes=4, patch_size=32, tile_size=32, overlap=8, depth=2).fit([im], [m])
    with pytest.raises(InvalidInputError, match="2 images but 1 masks"):
        UNetMask(patch_size=32, tile_size=32, overlap=8, depth=2).fit([im, im], [m])


def test_keep_largest_cell_drops_debris_and_fills_holes():
    m = np.zeros((20, 20), np.uint8)
    m[2:12, 2:12] = 1
    m[5:8, 5:8] = 2
    m[6, 9] = 0  # a hole
    m[16:18, 16:18] = 2  # debris
    out = keep_largest_cell(m)
    assert out[16:18, 16:18].sum() == 0 and out[6, 9] == 1 and (out == 2).sum() == 9
    assert keep_largest_cell(np.zeros((4, 4), np.uint8)).sum() == 0
