"""Loaders (folder, manifest, pairs, table), the file scan, decoding to canonical form, `medfuse data`."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from medfuse.cli.data_cmd import data as data_cmd
from medfuse.errors import DataError
from medfuse.imageio import read_image
from medfuse.scan import scan_files
from medfuse.synthetic import write_dataset
from medfuse_plugins.loaders import FolderLoader, ManifestLoader, PairsLoader, TableLoader
from PIL import Image


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def _rgb(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


@pytest.fixture()
def broken_folder(tmp_path: Path) -> Path:
    """Two classes of good PNGs plus a truncated JPEG, an empty file, a text file named .png."""
    root = tmp_path / "ds"
    for i in range(3):
        _png(root / "a" / f"a{i}.png", _rgb(i))
        _png(root / "b" / f"b{i}.png", _rgb(10 + i))
    buf = io.BytesIO()
    Image.fromarray(_rgb(20, 64)).save(buf, format="JPEG", quality=90)
    (root / "a" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "a" / "trailer.jpg").write_bytes(buf.getvalue() + b"\x00" * 16 + b"vendor trailer")
    (root / "b" / "empty.png").write_bytes(b"")
    (root / "b" / "notes.png").write_text("this is not an image\n")
    (root / "b" / "readme.txt").write_text("ignored: not an image suffix\n")
    return root


def test_folder_reports_bad_files_and_keeps_the_rest(broken_folder: Path):
    st = FolderLoader(path=".").load(broken_folder)
    rep = st.report
    bad = {Path(b["path"]).name: b["reason"] for b in rep.bad_files}
    assert set(bad) == {"cut.jpg", "empty.png", "notes.png"}
    assert "truncated" in bad["cut.jpg"]
    assert "empty" in bad["empty.png"]
    assert "not an image" in bad["notes.png"]
    assert len(st) == 7 and rep.n_found == 10 and rep.n_loaded == 7
    assert "trailer" in st.samples["id"].tolist(), "bytes after the end-of-image marker are allowed"
    assert rep.class_counts == {"a": 4, "b": 3}
    assert [Path(p).name for p in rep.ignored_files] == ["readme.txt"]
    assert list(st.samples.columns) == ["id", "path", "mask_path", "label", "group", "sha1"]
    assert (st.samples["group"] == st.samples["id"]).all(), "no group column: group is the id"
    lines = "\n".join(rep.summary_lines())
    for name in ("cut.jpg", "empty.png", "notes.png"):
        assert name in lines


def test_truncated_png_is_reported(tmp_path: Path):
    good = _png(tmp_path / "x" / "ok.png", _rgb(1, 64))
    data = good.read_bytes()
    (tmp_path / "x" / "half.png").write_bytes(data[: len(data) // 2])
    st = FolderLoader().load(tmp_path)
    assert [Path(b["path"]).name for b in st.report.bad_files] == ["half.png"]
    assert st.samples["id"].tolist() == ["ok"]


def test_parallel_scan_matches_serial(broken_folder: Path):
    paths = sorted(p for p in broken_folder.rglob("*.*g"))
    serial = scan_files(paths, jobs=1)
    parallel = scan_files(paths, jobs=2, chunk_size=2)
    assert serial == parallel
    assert [bool(s.error) for s in serial] == [p.name in ("cut.jpg", "empty.png", "notes.png") for p in paths]
    assert all(s.height in (16, 64) and s.width == s.height for s in serial if s.ok)


def test_formats_decode_to_canonical(tmp_path: Path):
    folder = tmp_path / "fmt" / "c"
    folder.mkdir(parents=True)
    grey16 = np.full((8, 10), 65535, np.uint16)
    grey16[0, 0] = 0
    Image.fromarray(grey16).save(folder / "sixteen.png")
    rgba = np.zeros((8, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top half opaque red-ish, bottom half fully transparent
    Image.fromarray(rgba, mode="RGBA").save(folder / "alpha.png")
    grey = np.tile(np.arange(10, dtype=np.uint8) * 20, (8, 1))
    Image.fromarray(grey, mode="L").save(folder / "grey.png")
    Image.fromarray(_rgb(3, 10)[:8]).save(folder / "bitmap.bmp")
    Image.fromarray(_rgb(4, 10)[:8]).save(folder / "scan.tiff")
    Image.fromarray(_rgb(5, 10)[:8]).save(folder / "scan2.tif")
    for f in sorted(folder.iterdir()):
        img = read_image(f)
        assert img.dtype == np.uint8 and img.shape == (8, 10, 3), f.name
    s16 = read_image(folder / "sixteen.png")
    assert s16[0, 0].tolist() == [0, 0, 0] and s16[1, 1].tolist() == [255, 255, 255]
    a = read_image(folder / "alpha.png")
    assert a[0, 0].tolist() == [200, 0, 0] and a[7, 0].tolist() == [255, 255, 255], "transparent -> white"
    g = read_image(folder / "grey.png")
    assert (g[..., 0] == grey).all() and (g[..., 1] == grey).all() and (g[..., 2] == grey).all()
    assert (read_image(folder / "bitmap.bmp") == _rgb(3, 10)[:8]).all(), "BMP is lossless"
    st = FolderLoader(path="fmt").load(tmp_path)
    assert len(st) == 6 and not st.report.bad_files


def test_duplicates_and_leakage(tmp_path: Path):
    root = tmp_path / "dup"
    _png(root / "a" / "one.png", _rgb(1))
    _png(root / "a" / "two.png", _rgb(2))
    (root / "b").mkdir()
    shutil.copy(root / "a" / "one.png", root / "b" / "copy_of_one.png")
    _png(root / "b" / "three.png", _rgb(3))
    st = FolderLoader().load(root)
    rep = st.report
    assert rep.duplicate_images == [["one", "copy_of_one"]]
    ids = st.samples["id"].tolist()
    i_one, i_copy = ids.index("one"), ids.index("copy_of_one")
    others = [i for i in range(len(ids)) if i not in (i_one, i_copy)]
    assert rep.leakage([i_one, *others], [i_copy]) == [("one", "copy_of_one")]
    assert rep.leakage([i_one, i_copy], others) == []


def test_folder_with_masks_table_and_groups(tmp_path: Path):
    root = write_dataset(tmp_path / "syn", n_per_class=4, size=24, seed=0)
    # problems: one mask missing, one mask of the wrong shape, one table row without image,
    # one image without a table row, an empty class folder
    (root / "masks" / "round" / "round_0001.png").unlink()
    _png(root / "masks" / "round" / "round_0002.png", np.zeros((5, 5), np.uint8))
    table = pd.read_csv(root / "table.csv", dtype={"id": str})
    table = pd.concat([table[table["id"] != "lobed_0003"],
                       pd.DataFrame([{"id": "ghost_0001", "label": "round", "patient": "x"}])])
    table.to_csv(root / "table.csv", index=False)
    (root / "images" / "empty_class").mkdir()
    (root / "images" / "lobed" / "broken.png").write_bytes(b"\x89PNG\r\n")  # bad image, no mask
    st = FolderLoader(path="images", masks="masks", table="table.csv", group_column="patient").load(root)
    rep = st.report
    assert len(st) == 12
    problems = {m["id"]: m["reason"] for m in rep.mask_problems}
    assert set(problems) == {"round_0001", "round_0002"}, "a dropped image has no mask problem"
    assert [Path(b["path"]).name for b in rep.bad_files] == ["broken.png"]
    assert "no mask" in problems["round_0001"] and "does not match" in problems["round_0002"]
    s = st.samples.set_index("id")
    assert s.loc["round_0001", "mask_path"] is None and s.loc["round_0000", "mask_path"].endswith(".png")
    assert rep.table_without_image == ["ghost_0001"]
    assert rep.images_without_table == ["lobed_0003"]
    assert rep.empty_labels == ["empty_class"]
    assert s.loc["round_0000", "group"] == "round_p000"
    assert s.loc["lobed_0003", "group"] == "lobed_0003", "no table row: group falls back to the id"
    # table: aligned on samples, label column of the table is a restatement -> left out
    assert st.table is not None and len(st.table) == 12
    assert "label" in rep.label_proxies and "label" not in st.table.columns
    assert {"WBC", "CRP", "MCV", "HGB", "PLT", "age"} <= set(st.table.columns)
    assert st.table.loc[s.index.get_loc("lobed_0003")].isna().all()
    assert rep.nan_per_column["WBC"] >= 1
    # without group_column, the patient column (ids nested in classes) must not become a feature
    plain = FolderLoader(path="images", masks="masks", table="table.csv").load(root)
    assert set(plain.report.label_proxies) == {"label", "patient"}
    assert "patient" not in plain.table.columns
    assert any("group_column='patient'" in n for n in plain.report.notes)


def test_folder_group_block_groups_consecutive_file_numbers(tmp_path: Path):
    """Sets without patient ids: runs of N file numbers per class folder form one group (one fold)."""
    root = tmp_path / "ds"
    for i in range(1, 6):
        _png(root / "a" / f"cell-{i:03d}.png", _rgb(i))
        _png(root / "b" / f"cell-{i:03d}b.png", _rgb(10 + i))  # no trailing number: own group
    _png(root / "b" / "cell-007.png", _rgb(30))
    st = FolderLoader(path=".", group_block=2).load(root)
    groups = st.samples.set_index("id")["group"]
    assert [groups[f"cell-{i:03d}"] for i in range(1, 6)] == ["a#0", "a#1", "a#1", "a#2", "a#2"]
    assert groups["cell-001b"] == "cell-001b" and groups["cell-007"] == "b#3"
    with pytest.raises(DataError, match="group_block"):
        FolderLoader(path=".", group_block=0).load(root)


def test_folder_label_from_table_column(tmp_path: Path):
    root = write_dataset(tmp_path / "syn", n_per_class=2, size=16, seed=1)
    table = pd.read_csv(root / "table.csv")
    table["diagnosis"] = np.where(table["label"] == "round", "normal", "abnormal")
    table.loc[0, "diagnosis"] = None
    table.to_csv(root / "table.csv", index=False)
    st = FolderLoader(path="images", table="table.csv", label_from="diagnosis",
                      table_columns=["WBC", "CRP"]).load(root)
    assert len(st) == 5 and set(st.labels) == {"normal", "abnormal"}
    assert [d["id"] for d in st.report.dropped] == ["round_0000"]
    assert list(st.table.columns) == ["WBC", "CRP"]


def test_folder_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        FolderLoader().load(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        FolderLoader(path="flat").load(tmp_path)
    with pytest.raises(DataError, match="masks.*not found"):
        FolderLoader(path=".", masks="missing").load(tmp_path)
    root = write_dataset(tmp_path / "syn", n_per_class=1, size=16)
    with pytest.raises(DataError, match="'patient_id'.*has: id, label, patient"):
        FolderLoader(path="images", table="table.csv", group_column="patient_id").load(root)


def _manifest_set(tmp_path: Path) -> Path:
    root = tmp_path / "m"
    for i in range(4):
        _png(root / "img" / f"s{i}.png", _rgb(i))
    _png(root / "msk" / "s0.png", (np.arange(256).reshape(16, 16) % 3 * 100).astype(np.uint8))
    rows = [
        {"path": "img/s0.png", "label": "x", "group": "p1", "mask": "msk/s0.png", "age": 30, "sex": "f"},
        {"path": "img/s1.png", "label": "x", "group": "p1", "mask": "", "age": 40, "sex": "m"},
        {"path": "img/s2.png", "label": "y", "group": "p2", "mask": "msk/gone.png", "age": None, "sex": "f"},
        {"path": "img/s3.png", "label": None, "group": "p3", "mask": "", "age": 50, "sex": "m"},
        {"path": "img/missing.png", "label": "y", "group": "p3", "mask": "", "age": 60, "sex": "f"},
        {"path": str((root / "img" / "s3.png").resolve()), "label": "y", "group": "p4", "mask": "",
         "age": 70, "sex": "m"},
    ]
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


def test_manifest_loads_relative_and_absolute_paths(tmp_path: Path):
    root = _manifest_set(tmp_path)
    st = ManifestLoader(path="manifest.csv").load(root)
    rep = st.report
    assert rep.n_found == 6 and len(st) == 4
    assert st.samples["label"].tolist() == ["x", "x", "y", "y"]
    assert st.samples["group"].tolist() == ["p1", "p1", "p2", "p4"]
    assert st.samples["mask_path"].notna().tolist() == [True, False, False, False]
    assert [Path(b["path"]).name for b in rep.bad_files] == ["missing.png"]
    assert [m["reason"] for m in rep.mask_problems] == ["mask file not found"]
    assert [d["id"] for d in rep.dropped] == ["s3"]
    assert list(st.table.columns) == ["age", "sex"] and st.meta["categories"]["sex"] == {"f": 0, "m": 1}
    assert st.table["sex"].tolist() == [0.0, 1.0, 0.0, 1.0]


def test_manifest_missing_columns_are_named(tmp_path: Path):
    (tmp_path / "bad.csv").write_text("file,class\na.png,x\n")
    with pytest.raises(DataError) as err:
        ManifestLoader(path="bad.csv").load(tmp_path)
    msg = str(err.value)
    assert "'path'" in msg and "'label'" in msg and "file, class" in msg
    with pytest.raises(DataError, match="not found"):
        ManifestLoader(path="nothere.csv").load(tmp_path)


def test_pairs_loader(tmp_path: Path):
    root = tmp_path / "pairs"
    for i in range(3):
        _png(root / "images" / f"c{i}.png", _rgb(i))
        if i < 2:
            _png(root / "masks" / f"c{i}.png", np.where(np.arange(256).reshape(16, 16) > 100, 255, 0)
                 .astype(np.uint8))
    (root / "labels.csv").write_text("id,label\nc0,neutrophil\nc1,lymphocyte\nc9,monocyte\n")
    unlabelled = PairsLoader().load(root)
    assert len(unlabelled) == 3 and unlabelled.samples["label"].isna().all()
    st = PairsLoader(labels="labels.csv").load(root)
    assert st.samples["id"].tolist() == ["c0", "c1"]
    assert st.samples["mask_path"].notna().all()
    assert st.report.table_without_image == ["c9"]
    assert st.report.images_without_table == ["c2"]
    assert [m["id"] for m in unlabelled.report.mask_problems] == ["c2"]


def test_table_xlsx(tmp_path: Path):
    df = pd.DataFrame({"Gender": ["f", "m", "f", "f", "m"], "Age": [3, 5, 7, 3, 9],
                       "Hb": [10.1, 12.5, None, 10.1, 13.0], "Decision_Class": [1, 0, 1, 1, None]})
    df.to_excel(tmp_path / "kids.xlsx", index=False)
    st = TableLoader(path="kids.xlsx", label_column="Decision_Class").load(tmp_path)
    assert len(st) == 4 and st.samples["path"].isna().all()
    assert st.labels.tolist() == ["1", "0", "1", "1"], "labels are strings"
    assert list(st.table.columns) == ["Gender", "Age", "Hb"]
    assert st.table["Gender"].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert st.meta["categories"] == {"Gender": {"f": 0, "m": 1}}
    assert st.report.nan_per_column == {"Hb": 1}
    assert st.report.duplicate_table_rows == [["row0", "row3"]]
    assert [d["id"] for d in st.report.dropped] == ["row4"]
    assert st.report.leakage([0], [3]) == [("row0", "row3")]
    with pytest.raises(DataError, match="'Result'"):
        TableLoader(path="kids.xlsx", label_column="Result").load(tmp_path)


def test_table_rows_with_identical_values_share_a_fold(tmp_path: Path):
    """Twins with conflicting labels stay in one fold: no model is scored on a training row's twin."""
    from medfuse.splits import make_splits

    rng = np.random.default_rng(0)
    values = rng.normal(size=(40, 2)).round(3)
    df = pd.DataFrame({"a": values[:, 0], "b": values[:, 1], "y": ["p", "q"] * 20})
    twins = df.iloc[:10].assign(y=lambda d: d["y"].map({"p": "q", "q": "p"}))  # same values, other label
    pd.concat([df, twins]).to_csv(tmp_path / "t.csv", index=False)
    st = TableLoader(path="t.csv", label_column="y").load(tmp_path)
    assert len(st) == 50 and st.samples["group"].nunique() == 40
    splits = make_splits(st.samples, folds=5, seed=0)
    assert splits.grouped and splits.method == "StratifiedGroupKFold"
    for i in range(10):
        assert splits.fold_of[i] == splits.fold_of[40 + i]
    with_groups = TableLoader(path="t.csv", label_column="y", group_column="a").load(tmp_path)
    assert with_groups.samples["group"].astype(float).tolist() == pd.concat([df, twins])["a"].tolist()


def test_cli_data(broken_folder: Path, tmp_path: Path):
    runner = CliRunner()
    out_json = tmp_path / "rep.json"
    res = runner.invoke(data_cmd, [str(broken_folder), "--json", str(out_json)])
    assert res.exit_code == 0, res.output
    for name in ("cut.jpg", "empty.png", "notes.png", "7 of 10 samples loaded"):
        assert name in res.output
    payload = json.loads(out_json.read_text())
    assert payload["loader"] == "folder" and payload["report"]["n_loaded"] == 7
    (tmp_path / "nothing" / "a").mkdir(parents=True)
    res = runner.invoke(data_cmd, [str(tmp_path / "nothing")])
    assert res.exit_code == 1 and "nothing could be loaded" in res.output


def test_cli_detects_pairs_and_tables(tmp_path: Path):
    root = write_dataset(tmp_path / "syn", n_per_class=2, size=16)
    runner = CliRunner()
    res = runner.invoke(data_cmd, [str(root)])
    assert res.exit_code == 0 and "loader folder" in res.output and "6 of 6" in res.output, res.output
    res = runner.invoke(data_cmd, [str(root / "table.csv"), "--label", "label", "--samples",
                                   str(tmp_path / "s.csv")])
    assert res.exit_code == 0 and "loader table" in res.output, res.output
    assert "table.WBC" in pd.read_csv(tmp_path / "s.csv").columns
    flat = tmp_path / "flat"
    for i in range(2):
        _png(flat / "images" / f"c{i}.png", _rgb(i))
        _png(flat / "masks" / f"c{i}.png", (np.arange(256).reshape(16, 16) > 99).astype(np.uint8) * 255)
    (flat / "labels.csv").write_text("id,label\nc0,x\nc1,y\n")
    res = runner.invoke(data_cmd, [str(flat)])
    assert res.exit_code == 0 and "loader pairs" in res.output and "2 of 2" in res.output, res.output


# ---- real data -----------------------------------------------------------------------------------

PBC_COUNTS = {"basophil": 428, "eosinophil": 1100, "erythroblast": 547, "ig": 1044, "lymphocyte": 432,
              "monocyte": 456, "neutrophil": 1126, "platelet": 825}


@pytest.mark.dataset
def test_real_pbc_folder(data_root: Path):
    st = FolderLoader(path="pbc").load(data_root, jobs=2)
    assert len(st) == 5958 and st.report.class_counts == PBC_COUNTS
    assert not st.report.bad_files
    assert st.samples["sha1"].str.len().eq(40).all()


@pytest.mark.dataset
def test_real_anerbc_with_table(data_root: Path):
    st = FolderLoader(path="anerbc/images", masks="anerbc/masks", table="anerbc/cbc.csv",
                      id_column="id").load(data_root)
    assert st.report.class_counts == {"anemic": 6, "healthy": 7}
    assert st.samples["mask_path"].notna().all() and not st.report.mask_problems
    assert not st.report.images_without_table, "every image has a CBC row (ids like 001_a)"
    assert "Cohort" in st.report.label_proxies and "Cohort" not in st.table.columns
    hgb = st.table["HGB"].groupby(st.samples["label"].values).mean()
    assert hgb["anemic"] < hgb["healthy"]
    assert st.report.duplicate_table_rows, "cbc.csv has identical rows (README)"


@pytest.mark.dataset
def test_real_tables_and_pairs(data_root: Path):
    kaggle = TableLoader(path="anemia_tables/anemia_kaggle.csv", label_column="Result").load(data_root)
    assert len(kaggle) == 1019 and kaggle.report.duplicate_table_rows
    kids = TableLoader(path="anemia_tables/anemia_pediatric.xlsx", label_column="Decision_Class").load(data_root)
    assert len(kids) == 734 and kids.meta["categories"]["Gender"] == {"f": 0, "m": 1}
    wbc = PairsLoader(images="wbc_seg/images", masks="wbc_seg/masks", labels="wbc_seg/labels.csv").load(data_root)
    assert len(wbc) == 300 and wbc.samples["mask_path"].notna().all()
