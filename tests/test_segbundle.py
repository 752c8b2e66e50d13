"""Segmentation bundles: `medfuse train-seg` -> `medfuse segment` on generated disks (masks,
instance labels, Dice/Hausdorff against truth), error rows, truth mismatches, tampering refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from medfuse.cli import main
from PIL import Image

UNET = ("{ plugin = \"unet\", params = { patch_size = 32, tile_size = 32, overlap = 8, width = 4, depth = 2, "
        "epochs = 4, steps_per_epoch = 8, batch_size = 8, learning_rate = 0.01, validation_fraction = 0.0 } }")
STUDY = f"""
[studies.disks]
description = "generated disks with masks"
dataset = {{ loader = "folder", params = {{ path = "images", masks = "masks" }} }}
[studies.disks.blocks]
morphology = {{ plugin = "morphology" }}
[studies.disks.pipelines]
seg = {{ mask = {UNET}, blocks = ["morphology"], classifier = {{ plugin = "logreg" }} }}
"""


def disks(seed: int, shape=(64, 64), n=5) -> tuple[np.ndarray, np.ndarray]:
    """Dark red disks (mask 1) on a bright background, apart from each other."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, np.uint8)
    centres: list[tuple[float, float]] = []
    while len(centres) < n:
        cy, cx = rng.uniform(9, shape[0] - 9), rng.uniform(9, shape[1] - 9)
        if all(np.hypot(cy - a, cx - b) > 16 for a, b in centres):
            centres.append((cy, cx))
            mask[np.hypot(yy - cy, xx - cx) < 6] = 1
    img = np.where(mask[..., None] == 1, np.array([170.0, 90.0, 110.0]), np.array([225.0, 220.0, 215.0]))
    img = img + rng.normal(0, 6, (*shape, 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """data/ (study images + masks, 2 classes), new/ (images to segment), truth/ (their masks), study.toml."""
    root = tmp_path_factory.mktemp("seg")
    for k in range(6):
        im, m = disks(k)
        cls = "a" if k % 2 else "b"
        _save(root / "data" / "images" / cls / f"{k:02d}.png", im)
        _save(root / "data" / "masks" / cls / f"{k:02d}.png", m * 255)
    for k in (20, 21):
        im, m = disks(k)
        _save(root / "new" / "x" / f"{k}.jpg", im)
        _save(root / "truth" / "x" / f"{k}.png", m * 255)
    (root / "study.toml").write_text(STUDY)
    return root


@pytest.fixture(scope="module")
def unet_bundle(world) -> Path:
    pytest.importorskip("keras")
    out = world / "unet.bundle"
    r = _run("train-seg", world / "study.toml", "--pipeline", "seg", "--data", world / "data", "--out", out, "-q")
    assert r.exit_code == 0, r.output
    assert "segmentation bundle written" in r.output
    return out


@pytest.fixture(scope="module")
def rbc_bundle(world) -> Path:
    out = world / "rbc.bundle"
    r = _run("train-seg", world / "study.toml", "--mask", "rbc_instances:min_distance=3,min_area=20",
             "--data", world / "data", "--out", out, "--folds", "2", "-q")
    assert r.exit_code == 0, r.output
    return out


def test_unet_train_segment_round_trip_with_dice_and_hausdorff(world, unet_bundle, tmp_path):
    manifest = json.loads((unet_bundle / "manifest.json").read_text())
    assert manifest["kind"] == "segmentation" and manifest["pipeline_class"] == "medfuse.segbundle:FittedSegmenter"
    assert any(a.endswith("unet.probs.onnx") for a in manifest["artifacts"])
    assert not [p for p in unet_bundle.rglob("*") if p.suffix in (".pkl", ".pickle", ".joblib")]
    out = tmp_path / "out"
    r = _run("segment", unet_bundle, world / "new", "--out", out, "--truth", world / "truth")
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out / "segment.csv", keep_default_na=False)
    assert list(table["mask"]) == ["masks/x/20.png", "masks/x/21.png"]
    for rel in table["mask"]:
        mask = np.asarray(Image.open(out / rel))
        assert mask.shape == (64, 64) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert (table["error"] == "").all() and (table["truth_error"] == "").all()
    assert (pd.to_numeric(table["cell_dice"]) > 0.6).all(), table.to_dict("records")  # an untrained net: ~0.2
    assert (pd.to_numeric(table["cell_hd95"]) < 10).all(), table.to_dict("records")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_truth"] == 2 and summary["mean"]["cell_dice"] > 0.6
    assert summary["median"]["cell_hd_max"] == pytest.approx(float(pd.to_numeric(table["cell_hd_max"]).median()))
    assert "cell_dice" in r.output and "median" in r.output


def test_instance_bundle_writes_16bit_labels_and_heldout_metrics(world, rbc_bundle, tmp_path):
    manifest = json.loads((rbc_bundle / "manifest.json").read_text())
    assert manifest["cv_metrics"]["folds"] == 2 and manifest["cv_metrics"]["mean"]["cell_dice"] > 0.8
    card = (rbc_bundle / "MODEL_CARD.md").read_text()
    assert "medfuse segment" in card and "| cell_dice |" in card and "Classifies" not in card
    out = tmp_path / "out"
    r = _run("segment", rbc_bundle, world / "new", "--out", out, "--truth", world / "truth", "-q")
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out / "segment.csv", keep_default_na=False)
    labels = Image.open(out / table["mask"][0])
    assert labels.mode.startswith("I;16") or labels.mode == "I"
    arr = np.asarray(labels)
    assert len(np.unique(arr[arr > 0])) == 5 == int(table["n_objects"][0])
    assert (pd.to_numeric(table["cell_dice"]) > 0.8).all(), table


def test_corrupt_image_is_an_error_row_and_the_batch_goes_on(world, rbc_bundle, tmp_path):
    inputs = tmp_path / "in"
    _save(inputs / "good.png", disks(30)[0])
    (inputs / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = tmp_path / "out"
    r = _run("segment", rbc_bundle, inputs, "--out", out, "-q")
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out / "segment.csv", keep_default_na=False).set_index("path")
    bad, good = table.loc[str(inputs / "bad.png")], table.loc[str(inputs / "good.png")]
    assert "bad.png" in bad["error"] and bad["mask"] == ""
    assert good["error"] == "" and (out / good["mask"]).is_file()
    assert not (out / "masks" / "bad.png").exists()
    only_bad = tmp_path / "only_bad"
    (only_bad).mkdir()
    (only_bad / "bad.png").write_bytes(b"junk")
    r = _run("segment", rbc_bundle, only_bad, "--out", tmp_path / "out2", "-q")
    assert r.exit_code == 1 and "no image could be segmented" in r.output


def test_truth_of_another_size_or_missing_is_a_truth_error(world, rbc_bundle, tmp_path):
    inputs, truth = tmp_path / "in", tmp_path / "truth"
    for name in ("a", "b", "c"):
        _save(inputs / f"{name}.png", disks(40)[0])
    _save(truth / "a.png", disks(40)[1] * 255)
    _save(truth / "b.png", np.zeros((50, 64), np.uint8))  # wrong size
    out = tmp_path / "out"
    r = _run("segment", rbc_bundle, inputs, "--out", out, "--truth", truth, "-q")
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out / "segment.csv", keep_default_na=False).set_index("path")
    a, b, c = (table.loc[str(inputs / f"{n}.png")] for n in "abc")
    assert a["truth_error"] == "" and float(a["cell_dice"]) > 0.8
    assert "(50, 64)" in b["truth_error"] and "(64, 64)" in b["truth_error"] and b["cell_dice"] == ""
    assert "no truth mask" in c["truth_error"]
    assert (out / b["mask"]).is_file() and (out / c["mask"]).is_file()  # the masks are still written
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_truth"] == 1 and summary["n_truth_failed"] == 2


def test_tampered_or_wrong_kind_bundles_are_refused(world, rbc_bundle, tmp_path):
    import shutil

    bad = tmp_path / "bad.bundle"
    shutil.copytree(rbc_bundle, bad)
    graph = bad / "pipeline" / "segmenter.skops"
    graph.write_bytes(graph.read_bytes() + b"\0")
    r = _run("segment", bad, world / "new", "--out", tmp_path / "o1", "-q")
    assert r.exit_code == 1 and "checksum mismatch" in r.output and "segmenter.skops" in r.output
    assert not (tmp_path / "o1" / "segment.csv").exists()

    pickled = tmp_path / "pickled.bundle"
    shutil.copytree(rbc_bundle, pickled)
    (pickled / "evil.pkl").write_bytes(b"cos\nsystem\n")
    r = _run("segment", pickled, world / "new", "--out", tmp_path / "o2", "-q")
    assert r.exit_code == 1 and "pickle" in r.output

    r = _run("score", rbc_bundle, world / "new", "--out", tmp_path / "s.csv", "-q")
    assert r.exit_code == 1 and "medfuse segment" in r.output

    relabelled = tmp_path / "classifier.bundle"
    shutil.copytree(rbc_bundle, relabelled)
    m = json.loads((relabelled / "manifest.json").read_text())
    del m["kind"]
    (relabelled / "manifest.json").write_text(json.dumps(m))
    r = _run("segment", relabelled, world / "new", "--out", tmp_path / "o3", "-q")
    assert r.exit_code == 1 and "not a segmentation bundle" in r.output


def test_unet_instances_splits_touching_cells():
    pytest.importorskip("keras")
    from medfuse_plugins.unet import UNetInstances

    def pair(seed: int, touching: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if not touching:
            return disks(seed)
        yy, xx = np.mgrid[:64, :64]
        mask = ((np.hypot(yy - 32, xx - 27) < 8) | (np.hypot(yy - 32, xx - 37) < 8)).astype(np.uint8)
        img = np.where(mask[..., None] == 1, np.array([170.0, 90.0, 110.0]), np.array([225.0, 220.0, 215.0]))
        return img.astype(np.uint8), mask

    train = [pair(s) for s in range(4)]
    model = UNetInstances(patch_size=32, tile_size=32, overlap=8, width=4, depth=2, epochs=4, steps_per_epoch=8,
                          batch_size=8, learning_rate=0.01, validation_fraction=0.0, min_distance=4, min_area=20)
    model.fit([i for i, _ in train], [m for _, m in train])
    image, mask = pair(0, touching=True)
    fg = model.predict_mask(image) > 0
    from scipy import ndimage as ndi

    assert ndi.label(fg)[1] == 1  # the U-Net sees one blob ...
    labels = model.predict_instances(image)
    assert labels.dtype == np.int32 and len(np.unique(labels[labels > 0])) == 2  # ... split into two cells
    assert model.instances and "keep_largest" not in model.get_params()


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> tuple[Path, Path]:
    """in/ (7 disk images, one corrupt) and truth/ (their masks)."""
    root = tmp_path_factory.mktemp("many")
    for k in range(6):
        im, m = disks(50 + k)
        _save(root / "in" / f"{k:02d}.png", im)
        _save(root / "truth" / f"{k:02d}.png", m * 255)
    (root / "in" / "03b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root / "in", root / "truth"


def test_two_jobs_give_the_one_job_table(many, rbc_bundle, tmp_path, monkeypatch):
    import joblib

    used: list[int] = []

    class Spy(joblib.Parallel):
        def __init__(self, *args, **kwargs):
            used.append(kwargs.get("n_jobs"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(joblib, "Parallel", Spy)
    inputs, truth = many
    texts = []
    for jobs in ("1", "2"):
        out = tmp_path / f"out{jobs}"
        r = _run("segment", rbc_bundle, inputs, "--out", out, "--truth", truth, "--jobs", jobs, "-q")
        assert r.exit_code == 0, r.output
        texts.append((out / "segment.csv").read_text())
    assert used == [2]  # the 2-job run went through joblib's workers, the 1-job run did not
    assert texts[0] == texts[1]
    table = pd.read_csv(tmp_path / "out2" / "segment.csv", keep_default_na=False)
    assert [Path(p).name for p in table["path"]] == ["00.png", "01.png", "02.png", "03.png", "03b.png", "04.png",
                                                    "05.png"]
    assert list(table["error"] != "") == [False, False, False, False, True, False, False]  # one bad image, one row
    assert (pd.to_numeric(table["cell_dice"][table["error"] == ""]) > 0.8).all()


def test_interrupted_run_resumes_with_only_the_rest(many, rbc_bundle, tmp_path, monkeypatch):
    from medfuse import segbundle

    inputs, truth = many
    out = tmp_path / "out"
    r = _run("segment", rbc_bundle, inputs, "--out", out, "--truth", truth, "-q")
    assert r.exit_code == 0, r.output
    full = (out / "segment.csv").read_text()

    real = segbundle._segment_one
    seen: list[str] = []

    def crash_at_fifth(job, seg, item):
        if len(seen) == 4:
            raise KeyboardInterrupt("simulated interruption")
        seen.append(Path(item.path).name)
        return real(job, seg, item)

    monkeypatch.setattr(segbundle, "_segment_one", crash_at_fifth)
    with pytest.raises(KeyboardInterrupt):
        segbundle.segment_files(rbc_bundle, inputs, out, truth=truth, chunk_size=2)
    assert len(pd.read_csv(out / "segment.csv")) == 4 and not (out / "summary.json").exists()
    (out / "masks" / "01.png").unlink()  # a row whose mask is gone is done again

    seen.clear()
    monkeypatch.setattr(segbundle, "_segment_one", lambda job, seg, item: seen.append(Path(item.path).name)
                        or real(job, seg, item))
    r = _run("segment", rbc_bundle, inputs, "--out", out, "--truth", truth, "--resume")
    assert r.exit_code == 0, r.output
    assert seen == ["01.png", "03b.png", "04.png", "05.png"]  # 00, 02, 03 kept
    assert "resumed: 3 image(s)" in r.output
    assert (out / "segment.csv").read_text() == full
    assert json.loads((out / "summary.json").read_text())["n_images"] == 7


def test_resume_refuses_another_bundle_or_truth(many, world, rbc_bundle, tmp_path, monkeypatch):
    inputs, truth = many
    out = tmp_path / "out"
    r = _run("segment", rbc_bundle, inputs, "--out", out, "--truth", truth, "-q")
    assert r.exit_code == 0, r.output
    other = tmp_path / "other.bundle"
    r = _run("train-seg", world / "study.toml", "--mask", "rbc_instances:min_distance=3,min_area=25",
             "--data", world / "data", "--out", other, "-q")
    assert r.exit_code == 0, r.output
    before = (out / "segment.csv").read_text()
    r = _run("segment", other, inputs, "--out", out, "--truth", truth, "--resume", "-q")
    assert r.exit_code == 1 and "cannot resume" in r.output and "bundle (manifest sha256)" in r.output
    r = _run("segment", rbc_bundle, inputs, "--out", out, "--resume", "-q")
    assert r.exit_code == 1 and "cannot resume" in r.output and "--truth folder" in r.output
    assert (out / "segment.csv").read_text() == before  # nothing touched
    from medfuse import segbundle

    def crash(job, seg, item):
        raise KeyboardInterrupt("simulated interruption")

    with monkeypatch.context() as m:  # a fresh run with the other bundle, killed before its first row ...
        m.setattr(segbundle, "_segment_one", crash)
        with pytest.raises(KeyboardInterrupt):
            segbundle.segment_files(other, inputs, out, truth=truth)
    r = _run("segment", other, inputs, "--out", out, "--truth", truth, "--resume")
    assert r.exit_code == 0, r.output
    assert "resumed" not in r.output  # ... leaves none of the first bundle's rows to resume from
