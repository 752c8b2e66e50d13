"""DataReport: finalize, serialisation, summary, leakage, duplicate helpers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from medfuse.datareport import DataReport, duplicate_groups, finalize, row_sha1, table_duplicate_rows


def _samples(sha1: list[str], labels: list[str]) -> pd.DataFrame:
    n = len(sha1)
    return pd.DataFrame({"id": [f"s{i}" for i in range(n)], "path": [f"/x/s{i}.png" for i in range(n)],
                         "mask_path": [None] * n, "label": labels, "group": [f"s{i}" for i in range(n)],
                         "sha1": sha1})


def test_finalize_counts_duplicates_and_nans():
    samples = _samples(["h1", "h2", "h1", "h3", "h2", "h1"], ["b", "a", "a", "b", "a", "b"])
    table = pd.DataFrame({"HGB": [1.0, np.nan, 3.0, 1.0, np.nan, 3.0], "PLT": [5.0, 6.0, 7.0, 5.0, 6.0, 7.0]})
    rep = finalize(DataReport(source="x", loader="folder", n_found=7), samples, table)
    assert rep.n_loaded == 6 and rep.class_counts == {"a": 3, "b": 3}
    assert rep.duplicate_images == [["s0", "s2", "s5"], ["s1", "s4"]]
    assert rep.nan_per_column == {"HGB": 2}
    assert rep.duplicate_table_rows == [["s0", "s3"], ["s1", "s4"], ["s2", "s5"]]


def test_to_dict_is_json_and_hides_per_sample_lists():
    rep = finalize(DataReport(source="x", loader="folder", n_found=2,
                              bad_files=[{"path": "/x/bad.jpg", "reason": "empty file"}]),
                   _samples(["h1", "h2"], ["a", "b"]))
    d = rep.to_dict()
    assert "ids" not in d and "sha1" not in d
    assert d["n_problems"] == 1 and d["bad_files"][0]["path"] == "/x/bad.jpg"
    assert json.loads(json.dumps(d)) == d


def test_summary_lists_every_bad_file_and_caps_the_rest():
    bad = [{"path": f"/x/bad{i}.jpg", "reason": "truncated JPEG"} for i in range(15)]
    rep = DataReport(source="x", loader="folder", n_found=20, n_loaded=5, class_counts={"a": 5},
                     bad_files=bad, table_without_image=[f"t{i}" for i in range(15)])
    text = "\n".join(rep.summary_lines(max_items=3))
    assert all(f"/x/bad{i}.jpg: truncated JPEG" in text for i in range(15))
    assert "t2" in text and "t3" not in text and "... and 12 more" in text
    assert "5 of 20 samples loaded" in text
    clean = DataReport(source="y", loader="table", n_found=1, n_loaded=1)
    assert clean.summary_lines()[-1] == "no problems found"


def test_leakage_pairs_and_errors():
    rep = finalize(DataReport(), _samples(["h1", "h2", "h1", "h3", ""], ["a"] * 5))
    assert rep.leakage([0, 1], [2, 3]) == [("s0", "s2")]
    assert rep.leakage(np.array([0, 2]), np.array([1, 3])) == []
    assert rep.leakage([4], [4]) == [], "an unreadable file (no hash) is never a duplicate"
    subset = _samples(["h1", "h2", "h1", "h3", ""], ["a"] * 5).iloc[[1, 2, 3]].reset_index(drop=True)
    assert rep.leakage([0], [1, 2], samples=subset) == [], "positions into the subset"
    assert DataReport().leakage([1], [0, 2], samples=pd.concat([subset, subset.iloc[[1]]])) == []
    assert DataReport().leakage([1], [3], samples=pd.concat([subset, subset.iloc[[1]]])) == [("s2", "s2")]
    with pytest.raises(ValueError, match="not finalized"):
        DataReport().leakage([0], [1])


def test_row_hash_helpers():
    a = pd.DataFrame({"x": [1.0, 2.0, np.nan], "y": ["f", "m", "f"]})
    b = a[["y", "x"]]
    assert row_sha1(a) == row_sha1(b), "column order does not matter"
    assert row_sha1(pd.DataFrame({"x": [1], "y": ["f"]}))[0] == row_sha1(a)[0], "1 and 1.0 hash alike"
    assert len(set(row_sha1(a))) == 3
    assert table_duplicate_rows(pd.concat([a, a.iloc[[2]]]), ["r0", "r1", "r2", "r3"]) == [["r2", "r3"]]
    assert duplicate_groups(["k", "", "k", ""], ["a", "b", "c", "d"]) == [["a", "c"]]


def test_identical_values_with_different_labels_are_reported():
    import pandas as pd
    from medfuse.datareport import DataReport, finalize

    samples = pd.DataFrame({"id": ["a", "b", "c", "d"], "path": [None] * 4, "label": ["x", "y", "x", "x"],
                            "sha1": ["1", "2", "3", "4"]})
    table = pd.DataFrame({"HGB": [10.0, 10.0, 12.0, 12.0], "MCV": [70.0, 70.0, 80.0, 80.0]})
    report = finalize(DataReport(source="t"), samples, table)
    assert report.conflicting_table_rows == [["x:a", "y:b"]]  # c and d agree on their label
    assert any("different labels" in line for line in report.summary_lines())
    assert report.to_dict()["conflicting_table_rows"] == [["x:a", "y:b"]]
