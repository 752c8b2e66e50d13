"""Per-block preparation and fusion of feature blocks.

* :class:`BlockPreparer`: impute -> scale -> PCA (by explained variance or component count) for
  one block, fitted on the training fold only, with a report of what it kept.
* :func:`early_concat`: early fusion, the prepared blocks side by side.
* :class:`LateFusion`: one classifier per block, combined by soft voting or stacking.
* :func:`soft_vote` / :func:`fit_stacked`: the combiners, shared with the ``soft_vote`` and
  ``stacking`` classifier plugins and with pipeline ensembles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

from .errors import InvalidInputError

_SCALERS = {"standard": StandardScaler, "robust": RobustScaler, "minmax": MinMaxScaler}


class BlockPreparer(BaseEstimator):
    """Impute, scale and reduce one feature block; fitted on training rows only.

    Parameters
    ----------
    impute : {"median", "mean", "none"}
        Replacement of missing values (columns missing everywhere become 0).
    scale : {"standard", "robust", "minmax", "none"}
        Column scaling.
    pca : float or int or None
        ``0 < pca < 1``: keep the components explaining that fraction of variance;
        int: keep that many components (at most ``min(n_rows, n_features)``); None: no PCA.
    block : str
        Block name, used for output column names.
    random_state : int
        Seed of the PCA solver.
    """

    def __init__(self, impute: str = "median", scale: str = "standard", pca: float | int | None = None,
                 block: str = "block", random_state: int = 0):
        self.impute = impute
        self.scale = scale
        self.pca = pca
        self.block = block
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: Any = None, feature_names: Sequence[str] | None = None) -> BlockPreparer:
        """Learn imputation values, scaling and PCA from ``X (n_rows, n_features)``."""
        X = self._check(X, fitting=True)
        if X.shape[1] == 0:
            raise InvalidInputError(f"block {self.block!r}: no features to prepare (0 columns)")
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = (list(feature_names) if feature_names is not None
                                  else [f"{self.block}.f{i}" for i in range(X.shape[1])])
        if len(self.feature_names_in_) != X.shape[1]:
            raise InvalidInputError(f"block {self.block!r}: {len(self.feature_names_in_)} names for "
                                    f"{X.shape[1]} columns")
        Z = X
        self.imputer_ = None
        if self.impute != "none":
            self.imputer_ = SimpleImputer(strategy=self.impute, keep_empty_features=True).fit(Z)
            Z = self.imputer_.transform(Z)
        elif np.isnan(Z).any():
            raise InvalidInputError(f"block {self.block!r}: missing values with impute = \"none\"")
        self.scaler_ = None
        if self.scale != "none":
            if self.scale not in _SCALERS:
                raise InvalidInputError(f"block {self.block!r}: unknown scale {self.scale!r}; "
                                        f"expected one of {', '.join(_SCALERS)} or none")
            self.scaler_ = _SCALERS[self.scale]().fit(Z)
            Z = self.scaler_.transform(Z)
        self.pca_ = None
        self.note_ = ""
        if self.pca is not None and not np.any(np.var(Z, axis=0) > 1e-12):
            self.note_ = "constant block: PCA skipped"
        elif self.pca is not None:
            limit = min(Z.shape)
            if isinstance(self.pca, float) and 0 < self.pca < 1:
                n: float | int = self.pca
            elif isinstance(self.pca, int) and self.pca > 0:
                n = min(self.pca, limit)
            else:
                raise InvalidInputError(f"block {self.block!r}: pca must be a fraction in (0, 1) or a "
                                        f"count > 0, got {self.pca!r}")
            self.pca_ = PCA(n_components=n, svd_solver="full", random_state=self.random_state).fit(Z)
            self.n_components_ = int(self.pca_.n_components_)
            self.explained_variance_ratio_ = self.pca_.explained_variance_ratio_.astype(float)
        if self.pca_ is None:
            self.n_components_ = X.shape[1]
            self.explained_variance_ratio_ = None
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Prepared block ``float32 (n_rows, n_components_)``."""
        X = self._check(X)
        if X.shape[1] != self.n_features_in_:
            raise InvalidInputError(f"block {self.block!r}: expected {self.n_features_in_} columns, "
                                    f"got {X.shape[1]}")
        Z = X
        if self.imputer_ is not None:
            Z = self.imputer_.transform(Z)
        if self.scaler_ is not None:
            Z = self.scaler_.transform(Z)
        if self.pca_ is not None:
            Z = self.pca_.transform(Z)
        return np.asarray(Z, dtype=np.float32)

    def fit_transform(self, X, y=None, feature_names=None) -> np.ndarray:
        return self.fit(X, y, feature_names).transform(X)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        if self.pca_ is not None:
            names = [f"{self.block}.pc{i + 1}" for i in range(self.n_components_)]
        else:
            names = list(self.feature_names_in_)
        return np.asarray(names, dtype=object)

    def report(self) -> dict[str, Any]:
        """What was kept: input width, components, explained variance per component."""
        evr = self.explained_variance_ratio_
        return {
            "n_features_in": int(self.n_features_in_),
            "n_components": int(self.n_components_),
            "pca": self.pca,
            "impute": self.impute,
            "scale": self.scale,
            "explained_variance_ratio": None if evr is None else [float(v) for v in evr],
            "explained_variance": None if evr is None else float(np.sum(evr)),
            "note": self.note_,
        }

    def _check(self, X: Any, fitting: bool = False) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        if X.ndim != 2:
            X = X.reshape(len(X), -1)
        if fitting and X.shape[0] < 2:
            raise InvalidInputError(f"block {self.block!r}: need at least 2 training rows, got {X.shape[0]}")
        if np.isinf(X).any():
            X = np.where(np.isinf(X), np.nan, X)
        return X


def early_concat(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """Early fusion: prepared blocks ``(n, f_i)`` side by side -> ``float32 (n, sum f_i)``."""
    if not blocks:
        raise InvalidInputError("early fusion needs at least one block")
    n = {len(b) for b in blocks}
    if len(n) != 1:
        raise InvalidInputError(f"blocks have different row counts {sorted(n)}")
    return np.hstack([np.asarray(b, dtype=np.float32).reshape(len(b), -1) for b in blocks])


# ---- combiners --------------------------------------------------------------------------------

def aligned_proba(model: Any, X: Any, classes: np.ndarray) -> np.ndarray:
    """``model.predict_proba(X)`` with columns reordered to ``classes`` (absent classes get 0)."""
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    out = np.zeros((proba.shape[0], len(classes)))
    index = {c: i for i, c in enumerate(classes)}
    for j, c in enumerate(model.classes_):
        out[:, index[c]] = proba[:, j]
    return out


def soft_vote(probas: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of aligned probability matrices, renormalised per row."""
    w = np.ones(len(probas)) if weights is None else np.asarray(weights, dtype=float)
    if len(w) != len(probas):
        raise InvalidInputError(f"{len(w)} weights for {len(probas)} models")
    P = sum(wi * p for wi, p in zip(w, probas)) / w.sum()
    return P / np.clip(P.sum(axis=1, keepdims=True), 1e-12, None)


def inner_folds(y: np.ndarray, cv: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified inner folds over ``y`` (fewer when the rarest class is small)."""
    _, counts = np.unique(y, return_counts=True)
    k = int(min(cv, counts.min()))
    if k < 2:
        raise InvalidInputError(f"stacking needs at least 2 samples of every class, got counts {counts.tolist()}")
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def fit_stacked(fit_predict: Callable[[np.ndarray, np.ndarray], list[np.ndarray]], n_models: int,
                y: np.ndarray, classes: np.ndarray, cv: int, seed: int, C: float = 1.0) -> LogisticRegression:
    """Fit the stacking meta-learner on out-of-fold probabilities.

    ``fit_predict(train_idx, test_idx)`` fits every base model on ``train_idx`` (positions into
    ``y``) and returns their aligned probabilities on ``test_idx``. Returns a logistic regression
    over the concatenated ``n_models * n_classes`` probabilities.
    """
    oof = np.zeros((len(y), n_models * len(classes)))
    for tr, te in inner_folds(y, cv, seed):
        probas = fit_predict(tr, te)
        oof[te] = np.hstack(probas)
    return LogisticRegression(C=C, max_iter=2000).fit(oof, y)


def stacked_proba(meta: LogisticRegression, probas: Sequence[np.ndarray], classes: np.ndarray) -> np.ndarray:
    return aligned_proba(meta, np.hstack(probas), classes)


class LateFusion(BaseEstimator):
    """Late fusion: one clone of ``estimator`` per block, combined by soft voting or stacking.

    Parameters
    ----------
    estimator : classifier
        Template (a medfuse classifier plugin or any sklearn classifier with ``predict_proba``).
    combine : {"soft", "stack"}
        Mean of block probabilities, or a logistic regression on their out-of-fold values.
    cv : int
        Inner folds for stacking.
    random_state : int
        Seed of the inner folds.
    """

    def __init__(self, estimator: Any = None, combine: str = "soft", cv: int = 3, random_state: int = 0):
        self.estimator = estimator
        self.combine = combine
        self.cv = cv
        self.random_state = random_state

    def fit(self, blocks: Sequence[np.ndarray], y: np.ndarray) -> LateFusion:
        """Fit one model per block ``blocks[i] (n, f_i)`` on labels ``y (n,)``."""
        if self.combine not in ("soft", "stack"):
            raise InvalidInputError(f"late fusion: combine must be 'soft' or 'stack', got {self.combine!r}")
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if self.combine == "stack":
            def fit_predict(tr: np.ndarray, te: np.ndarray) -> list[np.ndarray]:
                return [aligned_proba(clone(self.estimator).fit(B[tr], y[tr]), B[te], self.classes_)
                        for B in blocks]

            self.meta_ = fit_stacked(fit_predict, len(blocks), y, self.classes_, self.cv, self.random_state)
        self.estimators_ = [clone(self.estimator).fit(B, y) for B in blocks]
        return self

    def predict_proba(self, blocks: Sequence[np.ndarray]) -> np.ndarray:
        if len(blocks) != len(self.estimators_):
            raise InvalidInputError(f"late fusion fitted on {len(self.estimators_)} blocks, got {len(blocks)}")
        probas = [aligned_proba(m, B, self.classes_) for m, B in zip(self.estimators_, blocks)]
        if self.combine == "stack":
            return stacked_proba(self.meta_, probas, self.classes_)
        return soft_vote(probas)

    def predict(self, blocks: Sequence[np.ndarray]) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(blocks), axis=1)]
