"""A study over a folder of DICOM radiographs, generated here with pydicom (different window
centre/width settings, one MONOCHROME1 file, one with rescale slope/intercept), runs classical, deep
and fused pipelines end to end (#16)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from medfuse.cli import main
from medfuse.imageio import read_image, read_image_with_info
from test_imageio_formats import _radiograph, dicom_bytes

STUDY = """
[studies.xray]
dataset = { loader = "folder", params = { path = "." } }
evaluation = { folds = 2, seed = 0, bootstrap = 20, shortcuts = false }
blocks.colour = { plugin = "colour", params = { bins = 8 } }
blocks.texture = { plugin = "texture" }
blocks.cnn = { plugin = "cnn_embedding", params = { size = 16, epochs = 1, batch_size = 8, embedding_dim = 4, width = 4, depth = 2, validation_fraction = 0.0, augment = false } }
[studies.xray.pipelines]
classical = { mask = { plugin = "whole_image" }, blocks = ["colour", "texture"], classifier = { plugin = "logreg" } }
deep = { blocks = ["cnn"], classifier = { plugin = "logreg" } }
fused = { mask = { plugin = "whole_image" }, blocks = ["colour", "texture", "cnn"], classifier = { plugin = "logreg" } }
"""

SLOPE, INTERCEPT = 2.0, -100.0


def write_dicom_folder(root: Path, n_per_class: int = 8) -> dict[str, np.ndarray]:
    """Radiographs of two classes (12-bit); odd files carry a window centre/width (three different
    ones), ``a0`` is MONOCHROME1 (stored inverted), ``b1`` stores ``(v - intercept) / slope`` with
    RescaleSlope/RescaleIntercept. Returns each file's intended values ``v`` by name."""
    rng = np.random.default_rng(0)
    truth = {}
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(n_per_class):
            arr = _radiograph(label, rng)
            truth[f"{label}{i}"] = arr
            attrs: dict = {"PixelSpacing": [0.1, 0.1]}
            if i % 2:
                attrs.update(WindowCenter=1800 + 300 * (i % 3), WindowWidth=3000 + 500 * (i % 3))
            if label == "a" and i == 0:
                arr, attrs["PhotometricInterpretation"] = 4095 - arr, "MONOCHROME1"
            if label == "b" and i == 1:
                arr = ((arr - INTERCEPT) / SLOPE).astype(np.uint16)
                attrs.update(RescaleSlope=SLOPE, RescaleIntercept=INTERCEPT)
                truth["b1"] = arr.astype(np.float64) * SLOPE + INTERCEPT
            (root / label / f"{label}{i}.dcm").write_bytes(dicom_bytes(arr, **attrs))
    return truth


def test_dicom_files_keep_their_range_until_a_plugin_asks(tmp_path):
    truth = write_dicom_folder(tmp_path, n_per_class=2)
    image, info = read_image_with_info(tmp_path / "b" / "b1.dcm", native=True)  # rescaled, windowed
    assert info.format == "dicom" and info.bit_depth == 12 and image.shape == (32, 32, 1)
    assert image.max() > 255  # values in the window's units, not 8 bits
    mono1, _ = read_image_with_info(tmp_path / "a" / "a0.dcm", native=True)
    assert np.array_equal(np.asarray(mono1)[..., 0], 4095 - truth["a0"])  # stored values; the view inverts
    view = read_image(tmp_path / "a" / "a0.dcm")
    stored = (4095 - truth["a0"]).astype(np.uint32)
    assert np.array_equal(view[..., 0], 255 - (stored * 255 // 4095))  # scaled by BitsStored, then inverted
    plain, _ = read_image_with_info(tmp_path / "a" / "a1.dcm", native=True)
    assert plain.view_rule.kind == "linear" and plain.view_rule.invert is False  # windowed


@pytest.mark.slow
def test_dicom_study_runs_classical_deep_and_fused(tmp_path):
    write_dicom_folder(tmp_path / "data")
    study = tmp_path / "xray.toml"
    study.write_text(STUDY)
    r = CliRunner().invoke(main, ["compare", str(study), "--data", str(tmp_path / "data"), "-q", "--run-folds", "1",
                                  "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["data"]["n_selected"] == 16
    for name in ("classical", "deep", "fused"):
        run = results["pipelines"][name]
        assert run["status"] == "ok", (name, run.get("error"))
        assert 0 <= run["metrics"]["accuracy"] <= 1
    assert results["pipelines"]["classical"]["metrics"]["accuracy"] >= 0.75
