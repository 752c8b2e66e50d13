"""The NumPy twins of the compiled kernels (``medfuse_plugins._kernels_np``, used by runs of a few
images so that they start without numba: issue 15) give the compiled kernels' results bit for bit:
every kernel call made while masking and extracting synthetic and real images is replayed on the
twin; edge cases are called directly; a short run's feature table equals a long run's."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from medfuse_plugins import _kernels, _kernels_np

NAMES = _kernels_np.TWINS
REPO = Path(__file__).resolve().parents[1]


def same(a, b) -> bool:
    """Equal dtype, shape and bits (NaN where NaN)."""
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


@pytest.fixture
def recorded(monkeypatch):
    """Every compiled-kernel call (arguments before, result, arguments after) while the test runs."""
    calls: dict[str, list] = {name: [] for name in NAMES}

    def wrap(name: str):
        compiled = getattr(_kernels, name)

        def rec(*args):
            before = copy.deepcopy(args)
            out = compiled(*args)
            calls[name].append((before, out, copy.deepcopy(args)))
            return out
        return rec

    for name in NAMES:
        monkeypatch.setattr(_kernels, name, wrap(name))
    return calls


def replay(calls: dict[str, list]) -> None:
    for name, entries in calls.items():
        twin = getattr(_kernels_np, name)
        for i, (before, out, after) in enumerate(entries):
            args = copy.deepcopy(before)
            got = twin(*args)
            if name == "lbp_uniform":  # adds to its last argument
                assert same(args[-1], after[-1]), f"{name} call {i}: histograms differ"
            else:
                assert same(got, out), f"{name} call {i}: {got!r} != {out!r}"


def _synthetic(seed: int, n: int):
    """RGB images with a dark cell-like blob (or none), sizes 3-70, and masks of every kind."""
    rng = np.random.default_rng(seed)
    for k in range(n):
        h, w = (int(v) for v in rng.integers(3, 70, 2))
        yy, xx = np.mgrid[:h, :w]
        image = rng.integers(150, 256, (h, w, 3)).astype(np.uint8)
        blob = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2
        if k % 5:
            image[blob] = rng.integers(20, 140, (int(blob.sum()), 3))
        kind = k % 4
        if kind == 0:
            mask = blob.astype(np.uint8) + (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (min(h, w) / 8) ** 2)
        elif kind == 1:
            mask = (rng.random((h, w)) > rng.random()).astype(np.uint8)  # speckle: many components
        elif kind == 2:
            mask = np.zeros((h, w), np.uint8)
            mask[int(rng.integers(h)), int(rng.integers(w))] = 1  # one pixel
        else:
            mask = np.ones((h, w), np.uint8)  # touches every border
        yield image, mask


def _prepare(image: np.ndarray, mask: np.ndarray) -> None:
    from medfuse_plugins.colour import Colour
    from medfuse_plugins.morphology import Morphology
    from medfuse_plugins.segmentation import cell_mask
    from medfuse_plugins.texture import Texture

    cell_mask(image)
    for ex in (Morphology(), Texture(), Colour()):
        ex.prepare(image, mask)


@pytest.mark.parametrize("seed", [0, 1])
def test_twins_equal_compiled_kernels_on_synthetic_images(recorded, seed):
    for image, mask in _synthetic(seed, 24):
        _prepare(image, mask)
    assert all(recorded[name] for name in NAMES), {k: len(v) for k, v in recorded.items()}
    replay(recorded)


def test_twins_equal_compiled_kernels_on_edge_cases(recorded):
    rng = np.random.default_rng(7)
    none = np.zeros((0, 0), np.bool_)
    for h, w in ((1, 1), (1, 9), (9, 1), (5, 5), (40, 33)):
        for density in (0.0, 0.3, 0.7, 1.0):
            binary = rng.random((h, w)) < density
            weights = rng.random((h, w)) < 0.5
            for eight in (True, False):
                _kernels.label_components(binary, none, eight)
                _kernels.label_components(binary, weights, eight)
            _kernels.fill_holes4(binary)
    V = _kernels.class_variance_table(rng.random(12).astype(np.float32))
    for n in (1, 3, 4, 5, 12):
        _kernels.multiotsu4(np.ascontiguousarray(V[:n, :n]))
    hists = rng.integers(0, 5, (4, 256)).astype(np.int64)
    hists[1] = 0  # an empty histogram: NaN row
    _kernels.hist_stats(hists, np.array([0.1, 0.5, 0.9]))
    counts = rng.integers(0, 3, (8, 6, 6)).astype(np.int64)
    counts[2] = 0  # an angle without pixel pairs
    counts[4:] = 0  # a distance without any
    _kernels.glcm_features(counts, 2)
    from medfuse_plugins.colour import _NO_LAB, _hsv_luts

    _kernels.colour_histograms(np.zeros((0, 3), np.uint8), np.zeros(0, np.uint8), *_hsv_luts(), _NO_LAB, _NO_LAB,
                               True, True)  # no pixels
    replay(recorded)


def test_twins_equal_compiled_kernels_on_real_cells(recorded, data_root):
    from medfuse.imageio import read_image
    from medfuse_plugins.segmentation import cell_mask

    paths = sorted((data_root / "pbc").glob("*/*.jpg"))[::500][:8]
    if not paths:
        pytest.skip("no PBC images")
    for path in paths:
        image = read_image(str(path))
        _prepare(image, cell_mask(image))
    replay(recorded)


def test_short_run_table_equals_long_run_table(tmp_path):
    """A run of 3 images in a fresh process (NumPy twins, no numba) writes the table the compiled
    kernels give (here numba is imported: the same 3 images use them)."""
    import pandas as pd
    from medfuse.extract import extract_table, make_plugins
    from PIL import Image

    for i, (image, _) in enumerate(_synthetic(3, 3)):
        Image.fromarray(np.pad(image, ((8, 8), (8, 8), (0, 0)), constant_values=230)).save(tmp_path / f"{i}.png")
    out = tmp_path / "short.parquet"
    code = ("import sys\nfrom medfuse.cli import main\n"
            f"main(['extract', {str(tmp_path)!r}, '--out', {str(out)!r}, '--no-progress', '-q'], standalone_mode=False)\n"
            "assert 'numba' not in sys.modules, 'the short run imported numba'")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "core"), str(REPO / "plugins"),
                                                       *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plugins = make_plugins(["morphology", "texture", "colour"], "otsu_cell")
    long_run, _ = extract_table(str(tmp_path), plugins.extractors, plugins.transforms, plugins.mask)
    pd.testing.assert_frame_equal(pd.read_parquet(out), long_run)


def test_kernel_choice_follows_the_run_size():
    from medfuse.engine import RUN_IMAGES

    assert _kernels_np.kernel("shape_stats") is _kernels.shape_stats  # outside a run: compiled
    token = RUN_IMAGES.set(_kernels_np.SHORT_RUN_IMAGES + 1)
    try:
        assert _kernels_np.kernel("shape_stats") is _kernels.shape_stats  # a long run
    finally:
        RUN_IMAGES.reset(token)
