"""Selectors: imputation, indicators, and which columns each criterion keeps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from medfuse.errors import InvalidInputError
from medfuse_plugins.tabular import SelectAll, SelectChi2, SelectRfe, SelectTree


def _table(n: int = 200, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"HGB": rng.normal(12, 2, n), "noise1": rng.normal(0, 1, n),
                       "MCV": rng.normal(85, 8, n), "noise2": rng.uniform(0, 1, n)})
    y = np.where(df["HGB"] < 12, "anemic", "healthy").astype(object)
    df.loc[::5, "MCV"] = np.nan
    return df, y


@pytest.mark.parametrize("cls", [SelectTree, SelectChi2, SelectRfe])
def test_informative_column_ranks_first(cls):
    X, y = _table()
    sel = cls(k=1).fit(X, y)
    assert sel.selected_ == ["HGB"]
    assert sel.scores_.idxmax() == "HGB"
    assert list(sel.get_feature_names_out()) == ["table.HGB"]


def test_select_all_imputes_median_and_adds_indicators():
    X, y = _table()
    sel = SelectAll().fit(X, y)
    out = sel.transform(X)
    assert "MCV_missing" in sel.selected_ and out.dtype == np.float32 and not np.isnan(out).any()
    j = sel.selected_.index("MCV")
    assert out[0, j] == pytest.approx(np.nanmedian(X["MCV"]), rel=1e-5)
    assert sel.transform(X)[:, sel.selected_.index("MCV_missing")].sum() == X["MCV"].isna().sum()


def test_knn_imputation_uses_similar_rows():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 100)
    X = pd.DataFrame({"a": a, "b": 10 * a})
    X.loc[0, "b"] = np.nan
    out = SelectAll(impute="knn", indicators=False).fit(X).transform(X)
    assert out[0, 1] == pytest.approx(10 * a[0], abs=3.0)


def test_threshold_keeps_columns_scoring_at_least_it():
    X, y = _table()
    sel = SelectTree(threshold=0.2).fit(X, y)
    assert "HGB" in sel.selected_
    assert all(sel.scores_[c] >= 0.2 for c in sel.selected_)
    rep = sel.report()
    assert list(rep.columns) == ["score", "selected"] and rep["selected"].sum() == len(sel.selected_)


def test_chi2_scores_are_non_negative_on_negative_data():
    X, y = _table()
    X["neg"] = -np.abs(X["noise1"]) - 5
    sel = SelectChi2(k=2).fit(X, y)
    assert (sel.scores_ >= 0).all()


def test_errors_are_clear():
    X, y = _table()
    sel = SelectTree(k=2).fit(X, y)
    with pytest.raises(InvalidInputError, match="lacks column"):
        sel.transform(X.drop(columns=["HGB"]))
    with pytest.raises(InvalidInputError, match="not in the table"):
        SelectTree(columns=["WBC"]).fit(X, y)
    with pytest.raises(InvalidInputError, match="impute"):
        SelectTree(impute="mean").fit(X, y)
    with pytest.raises(InvalidInputError, match="labels"):
        SelectTree().fit(X)
