"""Finding cells (instance segmenters), matching them to annotations, and whole-smear scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from medfuse.cellfinding import BOX_COLUMNS, expand_box, match_boxes, measure_instances, precision_recall
from medfuse.objects import crop
from medfuse.synthetic import make_smear
from PIL import Image

CLASSES = ("blue", "pink")
SMEAR = (160, 200)


def two_touching_discs() -> np.ndarray:
    """Two pink discs of radius 14 whose centres are 24 px apart (they overlap), on a pale field."""
    h, w = 60, 90
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w, 3), (228, 218, 222), np.uint8)
    for cx in (30, 54):
        img[np.hypot(yy - 30, xx - cx) < 14] = (210, 130, 135)
    return img


def coloured_smear(seed: int, n_cells: int = 8) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """A synthetic smear whose even-numbered cells are tinted blue: ``(image, labels, class by label)``."""
    img, labels = make_smear(SMEAR, n_cells, seed=seed, radius=11)
    blue = (labels > 0) & (labels % 2 == 0)
    tinted = img.astype(np.int16)
    tinted[blue] += np.array([-60, 0, 30], np.int16)
    classes = {k: ("blue" if k % 2 == 0 else "pink") for k in range(1, n_cells + 1)}
    return np.clip(tinted, 0, 255).astype(np.uint8), labels, classes


def test_touching_discs_are_split_into_two_instances():
    from medfuse.host import get_host

    img = two_touching_discs()
    labels = get_host().create("rbc_instances", kind="mask").predict_instances(img)
    assert labels.dtype == np.int32 and labels.shape == img.shape[:2]
    table = measure_instances(labels)
    assert len(table) == 2
    assert sorted(np.round(table["centroid_x"]).astype(int).tolist()) == pytest.approx([30, 54], abs=3)
    assert (table["area"] > 400).all()


def test_match_boxes_by_iou_and_centre():
    found = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 52, 52]])
    truth = np.array([[1, 1, 11, 11], [40, 40, 60, 60]])
    assert [(f, t) for f, t, _ in match_boxes(found, truth)] == [(0, 0)]
    assert sorted((f, t) for f, t, _ in match_boxes(found, truth, by="centre")) == [(0, 0), (2, 1)]
    counts = precision_recall([found], [truth])
    assert (counts.found, counts.truth, counts.matched) == (3, 2, 1)


def test_precision_and_recall_of_red_cells_on_a_synthetic_smear():
    from medfuse.host import get_host

    finder = get_host().create("rbc_instances", kind="mask")
    found, truth = [], []
    for seed in range(3):
        img, gt = make_smear((256, 256), 30, seed=seed)
        found.append(measure_instances(finder.predict_instances(img))[list(BOX_COLUMNS)].to_numpy())
        truth.append(measure_instances(gt)[list(BOX_COLUMNS)].to_numpy())
    counts = precision_recall(found, truth, min_iou=0.5)
    assert counts.truth == 90
    assert counts.precision >= 0.85 and counts.recall >= 0.85, counts


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, dict[str, dict[str, int]]]:
    """A colour + logreg bundle trained on object crops of two smears, and a folder of three smears
    to score (two with cells, one blank) with their true class counts."""
    from medfuse.study import resolve_study
    from medfuse.training import train_bundle

    root = tmp_path_factory.mktemp("objects")
    for seed in (101, 102, 103):
        img, labels, classes = coloured_smear(seed, n_cells=10)
        for row in measure_instances(labels).itertuples():
            box = expand_box((row.box_x0, row.box_y0, row.box_x1, row.box_y1), 0.2)
            folder = root / "train" / classes[row.object_id]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(crop(img, box)).save(folder / f"s{seed}-{row.object_id}.png")
    (root / "study.toml").write_text(
        '[studies.cells]\ndataset = { loader = "folder", params = { path = "train" } }\n'
        'evaluation = { folds = 2, seed = 0 }\nblocks.colour = { plugin = "colour" }\n'
        'pipelines.plain = { mask = { plugin = "whole_image" }, blocks = ["colour"], classifier = { plugin = "logreg" } }\n')
    bundle = train_bundle(resolve_study(str(root / "study.toml")), "plain", root, root / "bundle", cv=False,
                          progress=False)
    smears = root / "smears"
    smears.mkdir()
    truth = {}
    for seed in (1, 2):
        img, labels, classes = coloured_smear(seed)
        path = smears / f"smear{seed}.png"
        Image.fromarray(img).save(path)
        values = list(classes.values())
        truth[str(path)] = {c: values.count(c) for c in CLASSES}
    Image.fromarray(np.full((*SMEAR, 3), (228, 218, 222), np.uint8)).save(smears / "zblank.png")
    return bundle, smears, truth


def test_object_table_and_summary(trained, tmp_path):
    from medfuse.objectscoring import score_objects

    bundle, smears, truth = trained
    out = tmp_path / "cells.parquet"
    result = score_objects(bundle, smears, out, "rbc_instances", progress=False, chunk_size=2)
    df = pd.read_parquet(out)
    assert list(df.columns) == ["path", "image", "object_id", "centroid_x", "centroid_y", *BOX_COLUMNS, "area",
                                "prediction", "proba.blue", "proba.pink", "warning", "error"]
    summary = pd.read_parquet(tmp_path / "cells.summary.parquet")
    assert list(summary.columns) == ["image", "n_objects", "n_classified", "n_warned", "n_failed", "count.blue",
                                     "count.pink", "proportion.blue", "proportion.pink", "labels_path", "error"]
    assert summary["image"].tolist() == [*truth, str(smears / "zblank.png")]
    for image, want in truth.items():
        got = summary.set_index("image").loc[image]
        assert got["n_objects"] == got["n_classified"] == sum(want.values())
        assert {c: got[f"count.{c}"] for c in CLASSES} == want
        assert got["proportion.blue"] + got["proportion.pink"] == pytest.approx(1.0)
        rows = df[df["image"] == image]
        assert len(rows) == got["n_objects"] and (rows["error"] == "").all()
        # an object's path is its crop as a sample: IMAGE#box= the tight box grown by the margin
        first = rows.iloc[0]
        box = expand_box(tuple(int(first[c]) for c in BOX_COLUMNS), 0.2)
        assert first["path"] == f"{image}#box={','.join(map(str, box))}"
    blank = df[df["image"] == str(smears / "zblank.png")]
    assert len(blank) == 1 and blank["object_id"].isna().all() and "no objects found" in blank["error"].iloc[0]
    assert summary.iloc[-1]["n_objects"] == 0 and "no objects found" in summary.iloc[-1]["error"]
    assert result.n_scored == 16 and result.n_failed == 1


def test_resume_after_interruption_gives_the_same_tables(trained, tmp_path):
    from medfuse.objectscoring import score_objects

    bundle, smears, _ = trained
    whole = tmp_path / "whole.csv"
    score_objects(bundle, smears, whole, "rbc_instances", progress=False, chunk_size=1)

    class Stop(Exception):
        pass

    def stop_after_first(done: int, total: int, what: str) -> None:  # images done, after each chunk
        if done == 1:
            raise Stop

    out = tmp_path / "cells.csv"
    with pytest.raises(Stop):
        score_objects(bundle, smears, out, "rbc_instances", progress=stop_after_first, chunk_size=1)
    assert not out.exists() and (tmp_path / "cells.csv.parts" / "part-000000.parquet").is_file()
    seen: list[int] = []
    result = score_objects(bundle, smears, out, "rbc_instances", progress=lambda d, t, w: seen.append(d),
                           chunk_size=1, resume=True)
    assert seen == [2, 3] and result.chunks_resumed == 1
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(whole))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "cells.summary.csv"),
                                  pd.read_csv(tmp_path / "whole.summary.csv"))
    from medfuse.scoring import ScoringError

    with pytest.raises(ScoringError, match="object finder or crop margin"):  # a changed finder cannot resume
        (tmp_path / "again.csv.parts").mkdir()
        score_objects(bundle, smears, tmp_path / "again.csv", "rbc_instances", progress=False, chunk_size=1,
                      keep_parts=True)
        score_objects(bundle, smears, tmp_path / "again.csv", "rbc_instances", progress=False, chunk_size=1,
                      resume=True, margin=0.5)


def test_cli_objects_writes_masks_and_refuses_mask_only_finders(trained, tmp_path):
    from medfuse.cli import main

    bundle, smears, truth = trained
    out = tmp_path / "cells.csv"
    res = CliRunner().invoke(main, ["score", str(bundle), str(smears), "-o", str(out), "--objects", "rbc_instances",
                                    "--write-masks", str(tmp_path / "masks"), "-q"])
    assert res.exit_code == 0, res.output
    assert "3 image(s)" in res.output and "16 object(s) classified" in res.output
    df = pd.read_csv(out, keep_default_na=False)
    labels = np.asarray(Image.open(tmp_path / "masks" / "smear1.png"))
    ids = sorted(int(v) for v in df.loc[df["image"] == str(smears / "smear1.png"), "object_id"])
    assert ids == sorted(int(v) for v in np.unique(labels) if v) and len(ids) == sum(truth[str(smears / "smear1.png")].values())
    summary = pd.read_csv(tmp_path / "cells.summary.csv", keep_default_na=False)
    assert summary["labels_path"].tolist() == ["smear1.png", "smear2.png", "zblank.png"]
    bad = CliRunner().invoke(main, ["score", str(bundle), str(smears), "-o", str(tmp_path / "x.csv"),
                                    "--objects", "otsu_cell"])
    assert bad.exit_code != 0 and "gives no instances" in bad.output and "smear_cells" in bad.output
    lonely = CliRunner().invoke(main, ["score", str(bundle), str(smears), "-o", str(tmp_path / "y.csv"),
                                       "--write-masks", str(tmp_path / "m")])
    assert lonely.exit_code != 0 and "need --objects" in lonely.output


@pytest.mark.slow
def test_two_jobs_give_the_same_tables_as_one(trained, tmp_path):
    from medfuse.objectscoring import score_objects

    bundle, smears, _ = trained
    score_objects(bundle, smears, tmp_path / "one.parquet", "rbc_instances", progress=False, chunk_size=1)
    score_objects(bundle, smears, tmp_path / "two.parquet", "rbc_instances", progress=False, chunk_size=1, jobs=2)
    for name in ("one", "two"):
        assert (tmp_path / f"{name}.summary.parquet").is_file()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet"))


@pytest.mark.slow
def test_white_cells_of_bccd_are_found(data_root):
    """The first 20 BCCD fields: wbc_instances finds the boxed white cells (IoU >= 0.5)."""
    import sys

    from medfuse.host import get_host
    from medfuse.imageio import read_image

    bccd = data_root / "bccd"
    if not bccd.is_dir():
        pytest.skip("needs the bccd dataset")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from eval_cell_finding import voc_boxes

    finder = get_host().create("wbc_instances", kind="mask")
    found, truth = [], []
    for xml in sorted((bccd / "Annotations").glob("*.xml"))[:20]:
        name, boxes = voc_boxes(xml)
        labels = finder.predict_instances(read_image(bccd / "JPEGImages" / name))
        found.append(measure_instances(labels)[list(BOX_COLUMNS)].to_numpy())
        truth.append(np.asarray(boxes.get("WBC", [])).reshape(-1, 4))
    counts = precision_recall(found, truth)
    assert counts.recall >= 0.9 and counts.precision >= 0.85, counts
