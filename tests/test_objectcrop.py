"""The crop rule travels with the bundle: objects found in smears are cut as the training objects were."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from medfuse.synthetic import make_smear
from PIL import Image

SIZE = 40  # the centred study's crop side; the discs' boxes are about 22 px


def _smear(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic smear of 8 discs (radius 11) whose even-numbered ones are tinted blue."""
    img, labels = make_smear((160, 200), 8, seed=seed, radius=11)
    tinted = img.astype(np.int16)
    tinted[(labels > 0) & (labels % 2 == 0)] += np.array([-60, 0, 30], np.int16)
    return np.clip(tinted, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> tuple[dict[str, Path], Path]:
    """Two bundles trained on the same annotated discs (``instances`` loader), one cut by box + 2 px,
    one as 40-px squares centred on each box; and a folder of two smears to score."""
    from medfuse.study import resolve_study
    from medfuse.training import train_bundle

    root = tmp_path_factory.mktemp("objcrop")
    (root / "img").mkdir()
    (root / "labels").mkdir()
    rows = []
    for seed in (201, 202, 203):
        img, labels = _smear(seed)
        Image.fromarray(img).save(root / "img" / f"s{seed}.png")
        Image.fromarray(labels.astype(np.uint8)).save(root / "labels" / f"s{seed}.png")
        rows += [{"image": f"s{seed}", "id": k, "class": "blue" if k % 2 == 0 else "pink"}
                 for k in np.unique(labels) if k]
    pd.DataFrame(rows).to_csv(root / "classes.csv", index=False)
    common = ('format = "instances", images = "img", annotations = "labels", table = "classes.csv", '
              'glob = "*.png"')
    text = ""
    for name, extra in (("boxes", "margin = 2"), ("centred", f"centre_boxes = true, size = {SIZE}")):
        text += (f'[studies.{name}]\ndataset = {{ loader = "annotations", params = {{ {common}, {extra} }} }}\n'
                 'evaluation = { folds = 2, seed = 0 }\nblocks.colour = { plugin = "colour" }\n'
                 'pipelines.plain = { mask = { plugin = "whole_image" }, blocks = ["colour"], '
                 'classifier = { plugin = "logreg" } }\n')
    (root / "study.toml").write_text(text)
    out = {name: train_bundle(resolve_study(f"{root / 'study.toml'}:{name}"), "plain", root, root / name, cv=False,
                              progress=False) for name in ("boxes", "centred")}
    smears = root / "smears"
    smears.mkdir()
    for seed in (1, 2):
        Image.fromarray(_smear(seed)[0]).save(smears / f"smear{seed}.png")
    return out, smears


def _sides(paths: pd.Series) -> set[tuple[int, int]]:
    """The (width, height) of every object crop named by its sample path ``IMAGE#box=...``."""
    boxes = [tuple(int(v) for v in p.split("#box=")[1].split(",")) for p in paths]
    return {(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes}


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def test_centred_bundle_scores_objects_cut_as_its_training_objects(bundles, tmp_path):
    from medfuse.objectscoring import score_objects

    (boxes, centred), smears = (bundles[0]["boxes"], bundles[0]["centred"]), bundles[1]
    assert _manifest(centred)["inputs"]["objects"] == {"rule": "centred", "size": SIZE}
    assert _manifest(boxes)["inputs"]["objects"] == {"rule": "box", "margin": 0.0, "pad": 2}
    out = tmp_path / "centred.csv"
    score_objects(centred, smears, out, "rbc_instances", progress=False)
    df = pd.read_csv(out, keep_default_na=False)
    assert len(df) == 16 and (df["error"] == "").all()
    assert _sides(df["path"]) == {(SIZE, SIZE)}  # the crop the classifier saw: the training crop's size
    summary = pd.read_csv(tmp_path / "centred.summary.csv")
    assert summary["n_warned"].sum() <= 2, df["warning"].tolist()  # no longer every object
    # the box bundle: each found (tight) box + 2 px, as its training objects (instance extents + margin 2)
    score_objects(boxes, smears, tmp_path / "boxes.csv", "rbc_instances", progress=False)
    rows = pd.read_csv(tmp_path / "boxes.csv", keep_default_na=False)
    for row in rows.itertuples():
        x0, y0, x1, y1 = (int(v) for v in row.path.split("#box=")[1].split(","))
        assert (x0, y0, x1, y1) == (row.box_x0 - 2, row.box_y0 - 2, row.box_x1 + 2, row.box_y1 + 2)


def test_old_bundle_without_a_crop_rule_scores_as_before_and_overrides_are_noted(bundles, tmp_path):
    from medfuse.cellfinding import expand_box
    from medfuse.objectscoring import MARGIN, score_objects

    (centred,), smears = (bundles[0]["centred"],), bundles[1]
    old = tmp_path / "old"
    import shutil

    shutil.copytree(centred, old)
    manifest = _manifest(old)
    del manifest["inputs"]["objects"]  # as written before crop rules were recorded
    (old / "manifest.json").write_text(json.dumps(manifest))
    score_objects(old, smears, tmp_path / "old.csv", "rbc_instances", progress=False)
    df = pd.read_csv(tmp_path / "old.csv", keep_default_na=False)
    assert len(df) == 16 and (df["error"] == "").all()
    for row in df.itertuples():  # today's rule: the tight box grown by MARGIN of its larger side
        box = expand_box((row.box_x0, row.box_y0, row.box_x1, row.box_y1), MARGIN)
        assert row.path == f"{row.image}#box={','.join(map(str, box))}"
    notes: list[str] = []
    score_objects(centred, smears, tmp_path / "margin.csv", "rbc_instances", progress=False, margin=0.2,
                  note=notes.append)
    assert _sides(pd.read_csv(tmp_path / "margin.csv")["path"]) != {(SIZE, SIZE)}
    assert any("--margin overrides the bundle's crop rule" in n and f"{SIZE}-px square" in n for n in notes), notes
    score_objects(old, smears, tmp_path / "sized.csv", "rbc_instances", progress=False, crop_size=32)
    assert _sides(pd.read_csv(tmp_path / "sized.csv")["path"]) == {(32, 32)}


@pytest.mark.parametrize("value, message", [({"rule": "circle"}, "rule='circle'"),
                                            ({"rule": "centred", "size": "128"}, "size='128'"),
                                            ({"rule": "box", "margin": 0.2, "code": "x"}, "unknown key")])
def test_a_malformed_recorded_crop_rule_is_refused_naming_the_key(bundles, tmp_path, value, message):
    import shutil

    from medfuse.errors import MedfuseError
    from medfuse.objectscoring import score_objects

    bad = tmp_path / "bad"
    shutil.copytree(bundles[0]["centred"], bad)
    manifest = _manifest(bad)
    manifest["inputs"]["objects"] = value
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MedfuseError, match="inputs.objects") as info:
        score_objects(bad, bundles[1], tmp_path / "x.csv", "rbc_instances", progress=False)
    assert message in str(info.value)


def test_cli_crop_size_overrides_and_conflicts_with_margin(bundles, tmp_path):
    from click.testing import CliRunner
    from medfuse.cli import main

    bundle, smears = bundles[0]["boxes"], bundles[1]
    out = tmp_path / "cells.csv"
    res = CliRunner().invoke(main, ["score", str(bundle), str(smears), "-o", str(out), "--objects", "rbc_instances",
                                    "--crop-size", "36", "-q"])
    assert res.exit_code == 0, res.output
    assert "--crop-size overrides the bundle's crop rule" in res.output
    assert _sides(pd.read_csv(out)["path"]) == {(36, 36)}
    both = CliRunner().invoke(main, ["score", str(bundle), str(smears), "-o", str(tmp_path / "x.csv"),
                                     "--objects", "rbc_instances", "--crop-size", "36", "--margin", "0.1"])
    assert both.exit_code != 0 and "give one" in both.output
