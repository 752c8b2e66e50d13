"""Shortcut baselines: trivial models on size / file / intensity, and the study flag they raise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from medfuse.cli import main
from medfuse.shortcuts import describe_files, feature_groups, flag_shortcuts
from PIL import Image

STUDY = """
[studies.s]
dataset = { loader = "folder", params = { path = "images" } }
evaluation = { folds = 3, seed = 0, bootstrap = 50%(extra)s }
blocks.hog = { plugin = "hog", params = { size = 24, pixels_per_cell = 6 } }
pipelines.hog = { blocks = ["hog"], classifier = { plugin = "logreg" } }
"""


def write_leaky(root: Path, n: int = 15) -> Path:
    """Two classes of pure noise that differ only in image size and brightness."""
    rng = np.random.default_rng(0)
    for label, side, mean in (("small", 24, 90), ("large", 32, 160)):
        (root / "images" / label).mkdir(parents=True)
        for i in range(n):
            img = np.clip(rng.normal(mean, 30, (side, side)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / "images" / label / f"{label}_{i:03d}.png")
    return root


def write_clean(root: Path, n: int = 15) -> Path:
    """Horizontal vs vertical stripes: same size, format and intensity distribution (one is the
    other's transpose), so only the structure tells the classes apart. Stored as BMP: PNG would
    compress horizontal stripes better, and the file-size baseline would (rightly) find that."""
    rng = np.random.default_rng(1)
    yy = np.arange(32)[:, None] * np.ones((1, 32))
    for label in ("horizontal", "vertical"):
        (root / "images" / label).mkdir(parents=True)
    for i in range(n):
        for label in ("horizontal", "vertical"):
            period, phase = rng.uniform(5, 9), rng.uniform(0, 2 * np.pi)
            img = 128 + 70 * np.sin(2 * np.pi * yy / period + phase) + rng.normal(0, 10, (32, 32))
            img = np.clip(img, 0, 255).astype(np.uint8)
            Image.fromarray(img if label == "horizontal" else img.T.copy()).save(
                root / "images" / label / f"{label}_{i:03d}.bmp")
    return root


def _compare(tmp_path: Path, root: Path, extra: str = "", args: tuple[str, ...] = ()) -> tuple[dict, str, Path]:
    study = tmp_path / "s.toml"
    study.write_text(STUDY % {"extra": extra})
    out = tmp_path / "run"
    r = CliRunner(env={"COLUMNS": "200"}).invoke(
        main, ["compare", str(study), "--data", str(root), "--out", str(out), "--no-cache", "-q", *args],
        catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return json.loads((out / "results.json").read_text()), r.output, out


def test_classes_separable_by_size_and_brightness_are_flagged(tmp_path):
    res, output, out = _compare(tmp_path, write_leaky(tmp_path / "data"))
    sc = res["shortcuts"]
    assert sc["status"] == "ok" and sc["flagged"] is True
    assert sc["baselines"]["size"]["metrics"]["accuracy"] == 1.0
    assert sc["baselines"]["intensity"]["metrics"]["accuracy"] >= 0.95
    assert sc["baselines"]["size"]["ci95"]["accuracy"] == [1.0, 1.0]
    assert any("'size' shortcut baseline separates the classes" in w for w in sc["warnings"])
    assert "SHORTCUT WARNING" in output
    for name in ("report.md", "report.html"):
        text = (out / name).read_text()
        assert "SHORTCUT WARNING" in text and "Shortcut baselines" in text and "Leaderboard" in text
        assert "log_height, log_width, aspect" in text


def test_classes_that_differ_in_structure_only_are_not_flagged(tmp_path):
    res, output, out = _compare(tmp_path, write_clean(tmp_path / "data"))
    sc = res["shortcuts"]
    best = res["pipelines"]["hog"]["metrics"]["accuracy"]
    assert best >= 0.9
    assert sc["status"] == "ok" and sc["flagged"] is False and sc["warnings"] == []
    assert max(b["metrics"]["accuracy"] for b in sc["baselines"].values()) < best - sc["margin"]
    assert "SHORTCUT WARNING" not in output and "SHORTCUT WARNING" not in (out / "report.md").read_text()
    assert "Shortcut baselines" in (out / "report.md").read_text()


def test_shortcuts_can_be_turned_off(tmp_path):
    root = write_leaky(tmp_path / "data", n=6)
    res, output, _ = _compare(tmp_path, root, args=("--no-shortcuts",))
    assert res["shortcuts"]["status"] == "off" and "SHORTCUT WARNING" not in output
    res, _, _ = _compare(tmp_path, root, extra=", shortcuts = false")
    assert res["shortcuts"]["status"] == "off" and not res["shortcuts"]["flagged"]


def test_descriptors_from_header_and_pixels(tmp_path):
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(np.full((8, 8), 50, np.uint8)).save(tmp_path / "b.jpg", quality=95)
    (tmp_path / "c.png").write_bytes(b"not an image")
    raw = describe_files([str(tmp_path / "a.png"), str(tmp_path / "b.jpg"), str(tmp_path / "c.png"), None])
    g = feature_groups(raw)
    assert g["size"]["aspect"].iloc[0] == 2.0 and g["size"]["log_height"].iloc[0] == pytest.approx(np.log(10))
    assert g["intensity"]["mean_r"].iloc[0] == 200 and g["intensity"]["mean_g"].iloc[0] == 0
    assert g["intensity"]["mean_g"].iloc[1] == pytest.approx(50, abs=1) and g["file"]["grey"].iloc[1] == 1
    assert list(g["file"].filter(like="suffix_").columns) == ["suffix_(none)", "suffix_.jpg", "suffix_.png"]
    assert g["all"].iloc[2:].isna().sum(axis=1).min() >= 9 and raw["error"].notna().sum() == 2


def test_flag_margin_is_a_parameter():
    def sc(acc: float) -> dict:
        return {"status": "ok", "baselines": {"intensity": {"status": "ok", "metrics": {"accuracy": acc}}}}

    pipes = {"p": {"status": "ok", "metrics": {"accuracy": 0.90}}}
    assert not flag_shortcuts(sc(0.84), pipes)["flagged"]
    assert flag_shortcuts(sc(0.86), pipes)["flagged"]
    assert not flag_shortcuts(sc(0.86), pipes, margin=0.02)["flagged"]
    strong = {"p": {"status": "ok", "metrics": {"accuracy": 0.99}}}
    assert flag_shortcuts(sc(0.96), strong, margin=0.0)["flagged"]  # separable (>= 0.95)
    assert not flag_shortcuts(sc(0.96), strong, margin=0.0, separable=0.97)["flagged"]
    assert flag_shortcuts(sc(0.91), pipes, margin=0.0)["flagged"]  # a baseline beating the best pipeline
    # skewed classes: a baseline no better than the majority share is not a shortcut
    assert not flag_shortcuts(sc(0.90) | {"chance": 0.88}, pipes)["flagged"]
    assert flag_shortcuts(sc(0.90) | {"chance": 0.80}, pipes)["flagged"]


def test_descriptors_see_the_intensities_the_studys_reader_gives(tmp_path):
    from medfuse.intensity import ReadOptions

    ramp = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (16, 1))  # 12-bit data in a 16-bit PNG
    Image.fromarray(ramp).save(tmp_path / "x.png")
    as_12bit = describe_files([str(tmp_path / "x.png")])["mean_r"].iloc[0]
    as_16bit = describe_files([str(tmp_path / "x.png")], options=ReadOptions(bits=16))["mean_r"].iloc[0]
    assert as_12bit == pytest.approx(127.5, abs=2) and as_16bit == pytest.approx(127.5 / 16, abs=1)
