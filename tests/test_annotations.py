"""The `annotations` loader: objects inside images from VOC boxes, point lists and instance masks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from medfuse.cli import main
from medfuse.imageio import file_sha1, read_image, read_mask
from medfuse.objects import ObjectRef, object_sha1
from medfuse.studydocs import OBJECT_STUDY
from medfuse_plugins.annotations import AnnotationLoader
from PIL import Image

RNG = np.random.default_rng(0)


def _image(path: Path, h: int = 40, w: int = 60) -> np.ndarray:
    arr = RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def _voc(path: Path, filename: str, objects: list[tuple[str, tuple]]) -> None:
    body = "".join(f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>{filename}</filename>{body}</annotation>")


def _reasons(st) -> dict[str, str]:
    return {b["where"]: b["reason"] for b in st.report.bad_annotations}


def test_voc_boxes_with_bad_files_and_lines_reported_and_the_rest_kept(tmp_path):
    a = _image(tmp_path / "img" / "a.png")
    _image(tmp_path / "img" / "b.png")
    _voc(tmp_path / "ann" / "a.xml", "a.png", [("WBC", (11, 6, 30, 20)), ("RBC", (41, 21, 60, 40)),
                                               ("RBC", (50, 30, 70, 45)),        # past the 60x40 image
                                               ("RBC", ("x", 1, 5, 5)),          # not a number
                                               ("Platelet", (1, 1, 8, 8))])      # not in the class map
    _voc(tmp_path / "ann" / "b.xml", "b.png", [("RBC", (1, 1, 10, 10)), ("RBC", (1, 1, 10, 10))])
    (tmp_path / "ann" / "broken.xml").write_text("<annotation><object>")      # malformed XML
    _voc(tmp_path / "ann" / "c.xml", "c.png", [("RBC", (1, 1, 10, 10))])      # no such image
    st = AnnotationLoader(images="img", annotations="ann", class_map={"WBC": "WBC", "RBC": "RBC"}).load(tmp_path)
    s = st.samples
    assert s["id"].tolist() == ["a#1", "a#2", "b#1", "b#2"]
    assert s["group"].tolist() == ["a", "a", "b", "b"]
    assert s["label"].tolist() == ["WBC", "RBC", "RBC", "RBC"]
    # VOC is 1-based inclusive: (11, 6, 30, 20) is the 0-based, end-exclusive box (10, 5, 30, 20)
    ref = ObjectRef.parse(s["path"][0])
    assert ref == ObjectRef(str(tmp_path / "img" / "a.png"), (10, 5, 30, 20))
    assert np.array_equal(read_image(s["path"][0]), a[5:20, 10:30])
    assert s["sha1"][0] == object_sha1(file_sha1(tmp_path / "img" / "a.png"), ref) == file_sha1(s["path"][0])
    reasons = _reasons(st)
    assert "not inside the 60x40 image" in reasons[f"{tmp_path / 'ann' / 'a.xml'}:object 3"]
    assert "not all numbers" in reasons[f"{tmp_path / 'ann' / 'a.xml'}:object 4"]
    assert "unknown class 'Platelet'" in reasons[f"{tmp_path / 'ann' / 'a.xml'}:object 5"]
    assert "unparseable VOC XML" in reasons[str(tmp_path / "ann" / "broken.xml")]
    assert "'c.png' not found" in reasons[f"{tmp_path / 'ann' / 'c.xml'}:object 1"]
    assert len(reasons) == 5 and st.report.n_problems == 5
    # identical boxes on one image are duplicate samples, and their overlap is noted
    assert st.report.duplicate_images == [["b#1", "b#2"]]
    assert any("1 pair(s) of objects on one image overlap" in n for n in st.report.notes)
    assert any("bad annotations (no object): 5" in line for line in st.report.summary_lines())


def test_class_filter_and_min_size(tmp_path):
    _image(tmp_path / "img" / "a.png")
    _voc(tmp_path / "ann" / "a.xml", "a.png", [("WBC", (11, 6, 30, 20)), ("RBC", (41, 21, 60, 40)),
                                               ("RBC", (5, 5, 6, 6))])
    st = AnnotationLoader(images="img", annotations="ann", classes=["RBC"], min_size=3, margin=2).load(tmp_path)
    assert st.samples["id"].tolist() == ["a#2"]
    assert ObjectRef.parse(st.samples["path"][0]).box == (38, 18, 62, 42)   # margin 2, padded past the edge
    assert read_image(st.samples["path"][0]).shape == (24, 24, 3)
    assert "smaller than min_size=3" in _reasons(st)[f"{tmp_path / 'ann' / 'a.xml'}:object 3"]
    assert any("class filter: WBC x1" in n for n in st.report.notes)
    st = AnnotationLoader(images="img", annotations="ann", centre_boxes=True, size=10).load(tmp_path)
    assert [ObjectRef.parse(p).box for p in st.samples["path"]] == [(15, 8, 25, 18), (45, 25, 55, 35),
                                                                    (0, 0, 10, 10)]


def test_points_from_a_csv_with_named_columns_and_from_whitespace_text(tmp_path):
    arr = _image(tmp_path / "smears" / "s1.png")
    _image(tmp_path / "smears" / "s2.png")
    (tmp_path / "points.csv").write_text("slide,cx,cy,shape\ns1.png,20,10,round\ns2,59,39,small\n"
                                         "s1.png,oops,3,round\ns1.png,70,10,round\n")
    st = AnnotationLoader(images="smears", annotations="points.csv", format="points", image_column="slide",
                          x_column="cx", y_column="cy", class_column="shape", size=8).load(tmp_path)
    s = st.samples
    assert s["id"].tolist() == ["s1#1", "s2#2"] and s["label"].tolist() == ["round", "small"]
    assert s["group"].tolist() == ["s1", "s2"]
    assert np.array_equal(read_image(s["path"][0]), arr[6:14, 16:24])
    assert read_image(s["path"][1]).shape == (8, 8, 3)               # near the corner: padded
    reasons = _reasons(st)
    assert "not numbers" in reasons[f"{tmp_path / 'points.csv'}:line 4"]
    assert "outside the 60x40 image" in reasons[f"{tmp_path / 'points.csv'}:line 5"]

    (tmp_path / "pts").mkdir()
    (tmp_path / "pts" / "s1.txt").write_text("# x y class\n20 10 round\n\n30.5 20 small cell\nbad line\n")
    st = AnnotationLoader(images="smears", annotations="pts", format="points", size=8).load(tmp_path)
    assert st.samples["label"].tolist() == ["round", "small cell"]
    assert ObjectRef.parse(st.samples["path"][1]).box == (26, 16, 34, 24)
    assert "expected 'x y class'" in _reasons(st)[f"{tmp_path / 'pts' / 's1.txt'}:line 5"]


def test_instance_masks_give_one_object_each_with_its_own_mask(tmp_path):
    _image(tmp_path / "img" / "s1.png")
    labels = np.zeros((40, 60), np.uint16)
    labels[5:15, 5:20] = 3
    labels[10:25, 20:30] = 7          # touches instance 3 inside its box
    (tmp_path / "labels").mkdir()
    Image.fromarray(labels).save(tmp_path / "labels" / "s1.png")
    (tmp_path / "classes.csv").write_text("image,id,class\ns1.png,3,RBC\ns1.png,7,WBC\n")
    st = AnnotationLoader(images="img", annotations="labels", format="instances", table="classes.csv",
                          margin=1).load(tmp_path)
    s = st.samples
    assert s["label"].tolist() == ["RBC", "WBC"] and s["group"].tolist() == ["s1", "s1"]
    assert ObjectRef.parse(s["path"][1]).box == (19, 9, 31, 26)
    mask = read_mask(s["mask_path"][1])
    assert mask.shape == (17, 12) and mask.sum() == 15 * 10       # instance 7 only, not its neighbour 3
    assert mask[1:16, 1:11].all() and not mask[0].any()
    assert s["sha1"][0] != s["sha1"][1]
    # a class table without the instance: a bad annotation, the other kept
    (tmp_path / "classes.csv").write_text("image,id,class\ns1.png,7,WBC\n")
    st = AnnotationLoader(images="img", annotations="labels", format="instances", table="classes.csv").load(tmp_path)
    assert st.samples["label"].tolist() == ["WBC"]
    assert "instance 3 has no row" in _reasons(st)[f"{tmp_path / 'labels' / 's1.png'}:id 3"]


def test_object_features_are_cached_and_instance_masks_key_the_cache(tmp_path):
    from medfuse.pipeline import PipelineRunner
    from medfuse.study import parse_study

    _image(tmp_path / "img" / "s1.png")
    labels = np.zeros((40, 60), np.uint8)
    labels[5:15, 5:20], labels[20:35, 30:50] = 1, 2
    (tmp_path / "labels").mkdir()
    Image.fromarray(labels).save(tmp_path / "labels" / "s1.png")
    st = AnnotationLoader(images="img", annotations="labels", format="instances").load(tmp_path)
    study = parse_study("t", {"dataset": {"loader": "annotations"}, "blocks": {"m": {"plugin": "morphology"}},
                              "pipelines": {"p": {"mask": "dataset", "blocks": ["m"],
                                                  "classifier": {"plugin": "logreg"}}}}, "<test>")
    st.samples["sha1"] = None           # keys then come from file_sha1 of the object paths
    runner = PipelineRunner(study, "p", cache_dir=tmp_path / "cache", progress=False)
    first = runner.materialize(st)
    assert first.failed.empty and first.cache_stats["writes"] == 2
    again = PipelineRunner(study, "p", cache_dir=tmp_path / "cache", progress=False).materialize(st)
    assert again.cache_stats["hits"] == 2 and np.array_equal(first.blocks["m"], again.blocks["m"], equal_nan=True)
    names = list(runner.blocks[0].plugin.get_feature_names_out())
    areas = first.blocks["m"][:, names.index("morphology.area")]
    assert sorted(areas.tolist()) == [150.0, 300.0]   # each object's own instance


def _toml_blocks(text: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", text, re.DOTALL)


def test_point_study_from_the_docs_runs_through_compare_grouped_by_smear(tmp_path):
    """The docs' point example, as written, on generated smears: loaded, split by smear, scored."""
    rows = ["slide,cx,cy,shape"]
    for k in range(6):
        arr = RNG.integers(215, 245, (64, 96, 3), dtype=np.uint8)   # no two smears alike (dedupe)
        for j, (x, y) in enumerate([(16, 16), (48, 16), (80, 16), (16, 48), (48, 48), (80, 48)]):
            shape = "round" if (j + k) % 2 == 0 else "small"
            yy, xx = np.ogrid[:64, :96]
            disc = (xx - x) ** 2 + (yy - y) ** 2 <= (11 if shape == "round" else 5) ** 2
            arr[disc] = (200, 40, 60) if shape == "round" else (60, 40, 160)
            rows.append(f"smear_{k:02d}.png,{x},{y},{shape}")
        (tmp_path / "smears").mkdir(exist_ok=True)
        Image.fromarray(arr).save(tmp_path / "smears" / f"smear_{k:02d}.png")
    (tmp_path / "points.csv").write_text("\n".join(rows) + "\n")
    study = tmp_path / "study.toml"
    study.write_text(_toml_blocks(OBJECT_STUDY)[0])
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["compare", f"{study}:rbc-points", "--data", str(tmp_path), "--out", str(out),
                                  "--cache", str(tmp_path / "cache"), "-q"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["data"]["n_selected"] == 36 and res["splits"]["grouped"] and res["splits"]["leakage"]["ok"]
    assert res["pipelines"]["classical"]["status"] == "ok"
    assert res["pipelines"]["classical"]["metrics"]["accuracy"] >= 0.9
    # every smear's objects sit in one fold
    import pandas as pd

    p = pd.read_csv(next((out / "predictions").glob("*.csv")))
    smear = p["id"].str.split("#").str[0]
    assert (p.groupby(smear)["fold"].nunique() == 1).all()
    # shortcut baselines describe each object by its source smear (the acquisition), which here
    # says nothing of the class: no warning (the crop's own colour would have "separated" them)
    sc = res["shortcuts"]
    assert sc["status"] == "ok" and sc["n_unreadable"] == 0
    assert sc["baselines"]["intensity"]["metrics"]["accuracy"] < 0.8 and not sc["warnings"]


def test_medfuse_data_finds_a_voc_layout(tmp_path):
    _image(tmp_path / "JPEGImages" / "a.jpg".replace(".jpg", ".png"))
    _voc(tmp_path / "Annotations" / "a.xml", "a.png", [("WBC", (11, 6, 30, 20)), ("RBC", (50, 30, 70, 45))])
    r = CliRunner().invoke(main, ["data", str(tmp_path), "--json", str(tmp_path / "r.json")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["loader"] == "annotations" and payload["params"]["format"] == "voc"
    assert payload["report"]["class_counts"] == {"WBC": 1}
    assert len(payload["report"]["bad_annotations"]) == 1
    assert "bad annotations (no object): 1" in r.output


def test_validate_params_names_the_parameter():
    with pytest.raises(ValueError, match="format='coco'"):
        AnnotationLoader(format="coco").validate_params()
    with pytest.raises(ValueError, match="size=0"):
        AnnotationLoader(size=0).validate_params()


def test_every_object_study_in_the_docs_validates(tmp_path):
    blocks = _toml_blocks(OBJECT_STUDY)
    assert len(blocks) == 2
    for i, text in enumerate(blocks):
        (tmp_path / f"s{i}.toml").write_text(text)
        r = CliRunner().invoke(main, ["validate", str(tmp_path / f"s{i}.toml")], catch_exceptions=False)
        assert r.exit_code == 0 and "ok" in r.output, r.output
