"""medfuse.loading: the loader author's SampleTable/DataReport builder."""

from __future__ import annotations

import numpy as np
import pytest
from medfuse.errors import DataError
from medfuse.loading import SampleTableBuilder, derived_dir, loader_root
from medfuse.testing import BROKEN_IMAGE, SAMPLE_COLUMNS, sample_dataset


def test_builder_makes_a_conforming_table_and_reports_bad_rows(tmp_path):
    root = sample_dataset(tmp_path)
    build = SampleTableBuilder(source=str(root), loader="mine")
    for i, label in enumerate(["small", "large", "small", "large"]):
        build.add(id=f"cell-{i}", label=label, path=root / "classes" / label / f"cell-{i}.png",
                  mask_path=root / "masks" / label / f"cell-{i}.png" if i else root / "nowhere.png",
                  group=f"p{i // 2}" if i < 3 else None, values={"HGB": 10 + i, "MCV": None})
    build.add(id="cell-9", label="small", path=root / "images" / BROKEN_IMAGE)
    build.add(id="cell-8", label=float("nan"), path=root / "images" / "cell-0.png")
    build.add(id="cell-0", label="large", path=root / "images" / "cell-1.png")  # a repeated id
    build.bad_file(root / "elsewhere.png", "listed but not found")
    data = build.build()
    s, r = data.samples, data.report
    assert tuple(s.columns) == SAMPLE_COLUMNS and len(s) == 5
    assert s["id"].is_unique and "large/cell-0" in set(s["id"]) and r.duplicate_ids == ["cell-0"]
    assert list(s["group"][:4]) == ["p0", "p0", "p1", "cell-3"]
    assert all(isinstance(v, str) and len(v) == 40 for v in s["sha1"])
    assert s.at[0, "mask_path"] is None and [m["id"] for m in r.mask_problems] == ["cell-0"]
    assert s.at[1, "mask_path"].endswith("cell-1.png")
    assert sorted(b["path"].rsplit("/", 1)[1] for b in r.bad_files) == [BROKEN_IMAGE, "elsewhere.png"]
    assert r.dropped == [{"id": "cell-8", "reason": "no label"}]
    assert r.n_found == 8 and r.n_loaded == 5 and r.class_counts == {"large": 3, "small": 2}
    assert r.duplicate_images == [["cell-1", "large/cell-0"]]
    assert data.table is not None and list(data.table.columns) == ["HGB", "MCV"]
    assert data.table.dtypes.tolist() == [np.float64, np.float64] and data.table["HGB"].isna().sum() == 1


def test_builder_table_only_rows_hash_their_values(tmp_path):
    build = SampleTableBuilder(source="t.csv", loader="mine")
    build.add(id="a", label="x", values={"v": 1.0})
    build.add(id="b", label="x", values={"v": 1.0})
    build.add(id="c", label="y", values={"v": 1.0})
    data = build.build()
    sha = data.samples["sha1"].tolist()
    assert sha[0] == sha[1] != sha[2] and data.samples["path"].tolist() == [None] * 3
    with pytest.raises(DataError, match="table value 'v' is not numeric"):
        bad = SampleTableBuilder(source="t.csv", loader="mine")
        bad.add(id="a", label="x", values={"v": "f"})
        bad.build()


def test_loader_root_and_derived_dir(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="data root not found"):
        loader_root(tmp_path / "missing")
    monkeypatch.setenv("MEDFUSE_DERIVED", str(tmp_path / "derived"))
    folder = derived_dir("mine", tmp_path / "data")
    assert folder.is_dir() and folder.parent == tmp_path / "derived" / "mine"
    assert folder == derived_dir("mine", tmp_path / "data") != derived_dir("mine", tmp_path)
