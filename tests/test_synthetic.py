"""Synthetic cells, smears and datasets: shapes, codings, determinism, learnability."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from medfuse.synthetic import TABLE_COLUMNS, make_cells, make_smear, write_dataset


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_cells_canonical_forms():
    cells = make_cells(n_per_class=4, size=32, seed=1)
    assert len(cells) == 12
    assert [c.label for c in cells[:4]] == ["round"] * 4
    assert len({c.id for c in cells}) == 12
    for c in cells:
        assert c.image.shape == (32, 32, 3) and c.image.dtype == np.uint8
        assert c.mask.shape == (32, 32) and c.mask.dtype == np.uint8
        assert set(np.unique(c.mask)) == {0, 1, 2}, "every cell has background, cytoplasm and nucleus"
        assert set(c.table) == set(TABLE_COLUMNS)


def test_cells_deterministic_and_seed_sensitive():
    a = make_cells(n_per_class=3, size=32, seed=5)
    b = make_cells(n_per_class=3, size=32, seed=5)
    c = make_cells(n_per_class=3, size=32, seed=6)
    assert all(np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask) for x, y in zip(a, b))
    assert not np.array_equal(a[0].image, c[0].image)
    # a cell does not depend on how many cells are drawn
    more = make_cells(n_per_class=5, size=32, seed=5)
    assert np.array_equal(a[1].image, more[1].image)


def test_custom_class_names_and_bad_args():
    cells = make_cells(n_per_class=2, classes=("blast", "normal"), size=24)
    assert {c.label for c in cells} == {"blast", "normal"}
    with pytest.raises(ValueError, match="size"):
        make_cells(size=8)
    with pytest.raises(ValueError, match="unique"):
        make_cells(classes=("a", "a"))


def test_classes_learnable_but_not_by_one_property():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import cross_val_score

    cells = make_cells(n_per_class=30, size=48, seed=0)
    y = np.array([c.label for c in cells])
    area = np.array([[(c.mask > 0).sum()] for c in cells], float)
    feats = np.array([[(c.mask > 0).sum(), (c.mask == 2).sum(), *c.image[c.mask == 1].mean(0),
                       c.image[c.mask == 1].std()] for c in cells], float)
    rf = RandomForestClassifier(60, random_state=0)
    acc_all = cross_val_score(rf, feats, y, cv=3).mean()
    acc_area = cross_val_score(rf, area, y, cv=3).mean()
    assert acc_all > 0.8
    assert acc_area < 0.8, "cell size alone should not separate the classes"


def test_table_informative_with_nans():
    cells = make_cells(n_per_class=60, size=16, seed=0)
    df = pd.DataFrame([c.table for c in cells])
    df["label"] = [c.label for c in cells]
    assert df[list(TABLE_COLUMNS)].isna().to_numpy().sum() > 0
    means = df.groupby("label")["CRP"].mean()
    assert means["lobed"] > means["round"] + 5
    noise = df.groupby("label")["age"].mean()
    assert noise.max() - noise.min() < 15


def test_smear_exact_count_and_touching():
    image, labels = make_smear(size=(128, 160), n_cells=12, seed=3)
    assert image.shape == (128, 160, 3) and image.dtype == np.uint8
    assert labels.shape == (128, 160)
    assert sorted(np.unique(labels[labels > 0])) == list(range(1, 13))
    # some cells touch: two different labels on neighbouring pixels
    touching = (labels[:, 1:] != labels[:, :-1]) & (labels[:, 1:] > 0) & (labels[:, :-1] > 0)
    assert touching.any()
    # cells are darker than the background
    assert image[labels > 0].mean() < image[labels == 0].mean()
    with pytest.raises(ValueError, match="cannot place"):
        make_smear(size=(32, 32), n_cells=500)


def test_write_dataset_layout_and_bytes(tmp_path):
    a = write_dataset(tmp_path / "a", n_per_class=3, size=24, seed=2)
    b = write_dataset(tmp_path / "b", n_per_class=3, size=24, seed=2)
    da, db = _tree_digest(a), _tree_digest(b)
    assert da == db, "same seed must give byte-identical files"
    assert "images/round/round_0000.png" in da and "masks/lobed/lobed_0002.png" in da
    table = pd.read_csv(a / "table.csv")
    assert list(table.columns[:3]) == ["id", "label", "patient"] and len(table) == 9
    from PIL import Image

    m = np.asarray(Image.open(a / "masks/round/round_0000.png"))
    assert set(np.unique(m)) == {0, 128, 255}
