"""Tabular selectors (block ``table``): impute a lab table, then keep the informative columns.

Every selector imputes missing values (median or KNN, fitted on the training fold), can add
``<column>_missing`` indicator columns, and then keeps columns:

* ``select_all``: every candidate column (imputation only);
* ``select_tree``: by ``DecisionTreeClassifier`` impurity importance;
* ``select_chi2``: by the chi-squared statistic on MinMax-scaled (non-negative) columns;
* ``select_rfe``: by recursive feature elimination with a logistic regression (scaled columns);
  the score is ``1 / rank`` (1 for every kept column).

``k`` keeps the ``k`` best columns; otherwise ``threshold`` keeps the columns scoring at least
it; with neither, all columns are kept ranked. ``selected_`` lists the kept columns (best first)
and ``scores_`` (a Series) the scores of every candidate column.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from medfuse import hookimpl
from medfuse.contracts import Selector
from medfuse.errors import InvalidInputError
from medfuse.util.lazy import lazy_module

pd = lazy_module("pandas")  # imported on first use: registering the plugin needs no pandas


class _BaseSelector(Selector):
    """Shared imputation and bookkeeping; subclasses implement :meth:`_score`.

    Parameters
    ----------
    columns
        Candidate columns (None = every numeric column of the table).
    impute
        Missing values: 'median' or 'knn' (5 nearest rows on the scaled columns).
    indicators
        Add a <column>_missing 0/1 column for every column with missing values in training.
    k
        Keep the k best columns (None: use threshold, or keep all).
    threshold
        Keep the columns whose score is at least this (used when k is None).
    """

    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict] = {"k": 2}

    def __init__(self, columns: list | None = None, impute: str = "median", indicators: bool = True,
                 k: int | None = None, threshold: float | None = None):
        self._store_params(locals())

    # ---- imputation ----------------------------------------------------------------------
    def _frame(self, X, fitting: bool) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            X = pd.DataFrame(np.asarray(X))
            X.columns = [str(c) for c in X.columns]
        if fitting:
            if self.columns is None:
                cols = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c])
                        and not pd.api.types.is_bool_dtype(X[c])]
            else:
                cols = list(self.columns)
            missing = [c for c in cols if c not in X.columns]
            if missing:
                raise InvalidInputError(f"{self.name}: columns {missing} are not in the table "
                                        f"(has {list(X.columns)})")
            if not cols:
                raise InvalidInputError(f"{self.name}: the table has no numeric column to select from")
            self.columns_in_ = cols
        else:
            missing = [c for c in self.columns_in_ if c not in X.columns]
            if missing:
                raise InvalidInputError(f"{self.name}: the table lacks column(s) {missing} seen in fit")
        try:
            return X[self.columns_in_].apply(pd.to_numeric, errors="raise").astype(np.float64)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"{self.name}: non-numeric values in the table ({exc})") from None

    def _impute_fit(self, F: pd.DataFrame) -> pd.DataFrame:
        if self.impute not in ("median", "knn"):
            raise InvalidInputError(f"{self.name}: impute {self.impute!r} is not 'median' or 'knn'")
        med = F.median()
        self.medians_ = med.fillna(0.0)
        self.indicator_columns_ = [c for c in F.columns if F[c].isna().any()] if self.indicators else []
        if self.impute == "knn":
            from sklearn.impute import KNNImputer

            self.center_ = self.medians_
            self.spread_ = (F.std().fillna(1.0).replace(0, 1.0))
            self.knn_ = KNNImputer(n_neighbors=5).fit(((F - self.center_) / self.spread_).to_numpy())
        return self._impute(F)

    def _impute(self, F: pd.DataFrame) -> pd.DataFrame:
        flags = {f"{c}_missing": F[c].isna().astype(np.float64) for c in self.indicator_columns_}
        if self.impute == "knn" and F.isna().to_numpy().any():
            Z = self.knn_.transform(((F - self.center_) / self.spread_).to_numpy())
            filled = pd.DataFrame(Z, columns=F.columns, index=F.index) * self.spread_ + self.center_
            filled = filled.fillna(self.medians_)
        else:
            filled = F.fillna(self.medians_)
        return pd.concat([filled, pd.DataFrame(flags, index=F.index)], axis=1) if flags else filled

    # ---- selection -----------------------------------------------------------------------
    def _score(self, Z: pd.DataFrame, y: np.ndarray) -> pd.Series:
        raise NotImplementedError

    def fit(self, X, y=None):
        F = self._frame(X, fitting=True)
        Z = self._impute_fit(F)
        if y is None and type(self)._score is not SelectAll._score:
            raise InvalidInputError(f"{self.name}: fit needs labels y")
        y = None if y is None else np.asarray(y)
        if y is not None and len(y) != len(Z):
            raise InvalidInputError(f"{self.name}: {len(Z)} rows but {len(y)} labels")
        scores = self._score(Z, y).astype(np.float64).fillna(0.0)
        order = scores.sort_values(ascending=False, kind="stable").index.tolist()
        if self.k is not None:
            if int(self.k) < 1:
                raise InvalidInputError(f"{self.name}: k must be >= 1, got {self.k}")
            chosen = order[:int(self.k)]
        elif self.threshold is not None:
            chosen = [c for c in order if scores[c] >= float(self.threshold)] or order[:1]
        else:
            chosen = order
        self.scores_ = scores
        self.selected_ = chosen
        self.n_features_in_ = len(self.columns_in_)
        return self

    def transform(self, X) -> np.ndarray:
        if not hasattr(self, "selected_"):
            raise InvalidInputError(f"{self.name}: call fit before transform")
        Z = self._impute(self._frame(X, fitting=False))
        return Z[self.selected_].to_numpy(dtype=np.float32)

    def fit_transform(self, X, y=None, **fit_params):
        return self.fit(X, y).transform(X)

    def report(self) -> pd.DataFrame:
        """Every candidate column with its score and whether it was kept, best first."""
        df = pd.DataFrame({"score": self.scores_, "selected": self.scores_.index.isin(self.selected_)})
        return df.sort_values("score", ascending=False, kind="stable")


class SelectAll(_BaseSelector):
    """Impute (median or KNN, with missing-value indicators) and keep every column."""

    name: ClassVar[str] = "select_all"
    conformance_params: ClassVar[dict] = {}

    def _score(self, Z, y):
        return pd.Series(1.0, index=Z.columns)


class SelectTree(_BaseSelector):
    """Impute, then keep the columns with the highest decision-tree (Gini) importance.

    Parameters
    ----------
    max_depth
        Depth limit of the tree (None = grow fully).
    random_state
        Seed of the tree (ties between equally good splits).
    """

    name: ClassVar[str] = "select_tree"

    def __init__(self, columns: list | None = None, impute: str = "median", indicators: bool = True,
                 k: int | None = None, threshold: float | None = None, max_depth: int | None = None,
                 random_state: int = 0):
        self._store_params(locals())

    def _score(self, Z, y):
        from sklearn.tree import DecisionTreeClassifier

        tree = DecisionTreeClassifier(max_depth=self.max_depth, random_state=self.random_state)
        tree.fit(Z.to_numpy(), y)
        return pd.Series(tree.feature_importances_, index=Z.columns)


class SelectChi2(_BaseSelector):
    """Impute, scale every column to [0, 1] (MinMax), keep the columns with the largest chi2."""

    name: ClassVar[str] = "select_chi2"

    def _score(self, Z, y):
        from sklearn.feature_selection import chi2
        from sklearn.preprocessing import MinMaxScaler

        stat, _ = chi2(MinMaxScaler().fit_transform(Z.to_numpy()), y)
        return pd.Series(np.nan_to_num(stat), index=Z.columns)


class SelectRfe(_BaseSelector):
    """Impute, standardise, then recursive feature elimination with a logistic regression.

    The score of a column is ``1 / RFE rank`` (1 for the kept ones); with ``k`` the elimination
    stops at ``k`` columns, otherwise at half of them.

    Parameters
    ----------
    C
        Inverse regularisation strength of the logistic regression.
    random_state
        Seed of the logistic regression solver.
    """

    name: ClassVar[str] = "select_rfe"

    def __init__(self, columns: list | None = None, impute: str = "median", indicators: bool = True,
                 k: int | None = None, threshold: float | None = None, C: float = 1.0,
                 random_state: int = 0):
        self._store_params(locals())

    def _score(self, Z, y):
        from sklearn.feature_selection import RFE
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        n = int(self.k) if self.k is not None else max(1, Z.shape[1] // 2)
        rfe = RFE(LogisticRegression(C=self.C, max_iter=2000, random_state=self.random_state),
                  n_features_to_select=min(n, Z.shape[1]))
        rfe.fit(StandardScaler().fit_transform(Z.to_numpy()), y)
        return pd.Series(1.0 / rfe.ranking_, index=Z.columns)


@hookimpl
def medfuse_plugins():
    return [SelectAll, SelectTree, SelectChi2, SelectRfe]
