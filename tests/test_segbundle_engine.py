"""`train-seg` and `segment` decode every image through the engine's one decode (medfuse.engine),
as compare, train and score do; a 16-bit image is segmented as its 8-bit view."""

from __future__ import annotations

import numpy as np
import pandas as pd
from click.testing import CliRunner
from medfuse import engine
from medfuse.cli import main
from PIL import Image

STUDY = """
[studies.disks]
dataset = { loader = "folder", params = { path = "images", masks = "masks" } }
blocks.morphology = { plugin = "morphology" }
pipelines.seg = { mask = { plugin = "otsu_cell" }, blocks = ["morphology"], classifier = { plugin = "logreg" } }
"""


def disks(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three dark disks (mask 1) on a bright, noisy 48 x 48 background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    mask = np.zeros((48, 48), np.uint8)
    for cy, cx in ((12, 12), (12, 34), (34, 22)):
        mask[np.hypot(yy - cy - rng.integers(-2, 3), xx - cx - rng.integers(-2, 3)) < 6] = 1
    img = np.where(mask[..., None] == 1, np.array([170.0, 90.0, 110.0]), np.array([225.0, 220.0, 215.0]))
    return np.clip(img + rng.normal(0, 6, (48, 48, 3)), 0, 255).astype(np.uint8), mask


def test_train_seg_and_segment_decode_through_the_engine(tmp_path, monkeypatch):
    for k in range(4):
        im, m = disks(k)
        for sub, arr in (("images", im), ("masks", m * 255)):
            (tmp_path / "data" / sub / "c").mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(tmp_path / "data" / sub / "c" / f"{k}.png")
    grey = disks(9)[0][..., 0]
    (tmp_path / "new").mkdir()
    Image.fromarray(grey).save(tmp_path / "new" / "8bit.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "new" / "16bit.png")
    (tmp_path / "study.toml").write_text(STUDY)
    seen: list[str] = []
    real = engine.load_source

    def spy(source, *args, **kwargs):
        seen.append(str(source))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(engine, "load_source", spy)
    run = CliRunner().invoke
    r = run(main, ["train-seg", str(tmp_path / "study.toml"), "--mask", "otsu_cell:channel=darkness,classes=2", "--data",
                   str(tmp_path / "data"), "--out", str(tmp_path / "b"), "-q"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert sorted(s.rsplit("/", 1)[-1] for s in seen) == ["0.png", "1.png", "2.png", "3.png"]
    r = run(main, ["segment", str(tmp_path / "b"), str(tmp_path / "new"), "-o", str(tmp_path / "out"), "-q"],
            catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert sorted(s.rsplit("/", 1)[-1] for s in seen[4:]) == ["16bit.png", "8bit.png"]
    table = pd.read_csv(tmp_path / "out" / "segment.csv", keep_default_na=False).set_index("mask")
    masks = [np.asarray(Image.open(tmp_path / "out" / rel)) for rel in sorted(table.index)]
    assert (table["error"] == "").all() and masks[0].any() and np.array_equal(masks[0], masks[1])
