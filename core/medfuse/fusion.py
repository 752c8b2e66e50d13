"""Per-block preparation and fusion of feature blocks.

* :class:`BlockPreparer`: impute -> scale -> PCA (by explained variance or component count) for
  one block, fitted on the training fold only, with a report of what it kept.
* :func:`early_concat`: early fusion, the prepared blocks side by side.
* :class:`LateFusion`: one classifier per block, combined by soft voting, stacking or
  reliability selection.
* :func:`soft_vote` / :func:`fit_stacked`: the combiners, shared with the ``soft_vote`` and
  ``stacking`` classifier plugins and with pipeline ensembles.
* :func:`select_parts`: per-part reliability (``combine = "select"``): weights of the parts (blocks
  of a late fusion, members of an ensemble) learnt on out-of-fold probabilities from an inner CV
  over the training rows only, combined by a log-linear pool; a part is kept only when adding it
  lowers the inner-CV log loss significantly, so the combination falls back to its best part
  when the others add nothing.
* :func:`select_blocks`: the same reliability rule for early fusion (``fusion = "early"``,
  ``combine = "select"``): which blocks enter the concatenation, judged by the classifier's
  out-of-fold log loss on inner folds of the training rows; a dropped block leaves the pipeline.
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

from .contracts import store_params
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
        store_params(self, locals())

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

def align_columns(proba: np.ndarray, fitted_classes: Sequence[Any], classes: np.ndarray) -> np.ndarray:
    """Re-order ``proba`` columns from ``fitted_classes`` to ``classes`` (absent classes get 0)."""
    proba = np.asarray(proba, dtype=np.float64)
    fitted = np.asarray(fitted_classes).astype(str)
    if fitted.tolist() == np.asarray(classes).astype(str).tolist():
        return proba
    out = np.zeros((proba.shape[0], len(classes)))
    position = {c: i for i, c in enumerate(np.asarray(classes).astype(str).tolist())}
    idx = np.asarray([position.get(c, -1) for c in fitted.tolist()], dtype=np.int64)
    if (idx < 0).any():
        raise ValueError(f"model predicts classes {fitted[idx < 0].tolist()} not in the study's labels")
    out[:, idx] = proba
    return out


def aligned_proba(model: Any, X: Any, classes: np.ndarray) -> np.ndarray:
    """``model.predict_proba(X)`` with columns reordered to ``classes`` (:func:`align_columns`)."""
    return align_columns(model.predict_proba(X), model.classes_, classes)


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


SELECT_ALPHA = 0.05
"""One-sided significance level of :func:`select_parts`' paired test on per-row log loss."""
MIN_WEIGHT = 0.02
"""A kept part whose weight falls under this share of the largest weight is dropped."""
_EPS = 1e-6


def log_pool(probas: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Log-linear pool: rows of ``prod_j probas[j] ** weights[j]``, renormalised (parts with
    weight 0 are left out). Unlike the mean, a product lets two blocks that each know half the
    label agree on the class they share."""
    S = sum(w * np.log(np.clip(p, _EPS, None)) for w, p in zip(weights, probas) if w > 0)
    if isinstance(S, int):
        raise InvalidInputError("log_pool: every weight is 0")
    S = S - S.max(axis=1, keepdims=True)
    P = np.exp(S)
    return P / P.sum(axis=1, keepdims=True)


def pool_weights(probas: Sequence[np.ndarray], codes: np.ndarray, bound: float = 10.0) -> np.ndarray:
    """Non-negative weights (at most ``bound``) of :func:`log_pool` minimising the log loss of the
    labels ``codes`` (column index of each row's class); the problem is convex."""
    from scipy.optimize import minimize

    Ls = np.stack([np.log(np.clip(p, _EPS, None)) for p in probas])  # (parts, rows, classes)
    rows = np.arange(len(codes))
    own = Ls[:, rows, codes]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        S = np.tensordot(w, Ls, axes=1)
        m = S.max(axis=1, keepdims=True)
        Q = np.exp(S - m)
        z = Q.sum(axis=1)
        Q /= z[:, None]
        value = np.mean(m[:, 0] + np.log(z) - S[rows, codes])
        grad = (np.einsum("nc,jnc->jn", Q, Ls) - own).mean(axis=1)
        return float(value), grad

    res = minimize(loss, np.ones(len(probas)), jac=True, method="L-BFGS-B", bounds=[(0.0, bound)] * len(probas))
    return np.asarray(res.x, dtype=float)


def _row_loss(probas: Sequence[np.ndarray], w: Sequence[float], codes: np.ndarray) -> np.ndarray:
    P = log_pool(probas, w)
    return -np.log(np.clip(P[np.arange(len(codes)), codes], _EPS, None))


def _fit_set(probas: Sequence[np.ndarray], parts: list[int], codes: np.ndarray) -> np.ndarray:
    """:func:`pool_weights` of the parts ``parts`` (0 elsewhere), parts under :data:`MIN_WEIGHT`
    of the largest dropped. A single part gets a weight too (a temperature: its argmax is
    unchanged), so that adding a part is judged against the best part at its best calibration."""
    w = np.zeros(len(probas))
    w[parts] = pool_weights([probas[j] for j in parts], codes)
    if not w.any():  # an uninformative part alone: keep it as it is
        w[parts] = 1.0
    w[w < MIN_WEIGHT * w.max()] = 0.0
    return w


def select_parts(probas: Sequence[np.ndarray], y: np.ndarray, classes: np.ndarray, names: Sequence[str],
                 alpha: float = SELECT_ALPHA) -> dict[str, Any]:
    """Per-part reliability from out-of-fold probabilities ``probas[j] (n, n_classes)`` of part
    ``names[j]`` for labels ``y``.

    Forward selection: start from the part with the lowest out-of-fold log loss alone; add the
    part whose addition (weights re-learnt by :func:`pool_weights`) lowers the per-row log loss
    most, as long as a one-sided paired t-test says the drop is significant (p < ``alpha``). The
    combination is the :func:`log_pool` of the kept parts; with one part kept it is that part
    with a learnt temperature (same argmax).
    Returns plain data (for bundles and results.json): ``weights`` (one per part, 0 = dropped),
    ``parts`` (per part: out-of-fold accuracy and log loss alone, the log-loss gain and p-value
    of its last test, weight, kept) and the out-of-fold accuracy / log loss of the combination.
    """
    from scipy.stats import ttest_rel

    y = np.asarray(y)
    index = {c: i for i, c in enumerate(classes)}
    codes = np.asarray([index[v] for v in y])
    k = len(probas)
    if k != len(names):
        raise InvalidInputError(f"{k} parts but {len(names)} names")
    alone = [_row_loss([p], [1.0], codes) for p in probas]
    acc = [float(np.mean(np.argmax(p, axis=1) == codes)) for p in probas]
    chosen = [int(np.argmin([a.mean() for a in alone]))]
    weights = _fit_set(probas, chosen, codes)
    current = _row_loss(probas, weights, codes)
    gain: list[float | None] = [None] * k
    pval: list[float | None] = [None] * k
    while len(chosen) < k:
        best = None
        for c in (c for c in range(k) if c not in chosen):
            w = _fit_set(probas, chosen + [c], codes)
            loss = _row_loss(probas, w, codes)
            diff = current - loss
            g = float(diff.mean())
            p = 1.0 if not np.any(diff) else float(ttest_rel(current, loss, alternative="greater").pvalue)
            gain[c], pval[c] = g, p
            if p < alpha and g > 0 and w[c] > 0 and (best is None or g > best[1]):
                best = (c, g, loss, w)
        if best is None:
            break
        chosen.append(best[0])
        current, weights = best[2], best[3]
    final = log_pool(probas, weights)
    return {
        "method": "select", "pool": "log-linear", "alpha": alpha, "n_rows": int(len(y)),
        "weights": [float(w) for w in weights],
        "parts": [{"name": str(names[j]), "oof_accuracy": acc[j], "oof_log_loss": float(alone[j].mean()),
                   "gain_log_loss": gain[j], "p_value": pval[j], "weight": float(weights[j]),
                   "kept": bool(weights[j] > 0)} for j in range(k)],
        "oof_accuracy": float(np.mean(np.argmax(final, axis=1) == codes)),
        "oof_log_loss": float(_row_loss(probas, weights, codes).mean()),
    }


def select_blocks(fit_blocks: Callable[[np.ndarray, np.ndarray], tuple[Sequence[np.ndarray], Sequence[np.ndarray]]],
                  names: Sequence[str], y: np.ndarray, classes: np.ndarray, estimator: Any, cv: int = 3,
                  seed: int = 0, alpha: float = SELECT_ALPHA) -> dict[str, Any]:
    """Early fusion's per-block reliability: which blocks enter the concatenation.

    ``fit_blocks(tr, te)`` prepares every block (extractor, impute / scale / PCA) on the inner
    training rows ``tr`` only (positions into ``y``) and returns the blocks' matrices on ``tr`` and
    on ``te``. For a set of blocks, a clone of ``estimator`` is fitted on their concatenation in each
    inner fold and scored on the held-out rows. Forward selection as in :func:`select_parts`: start
    from the block with the lowest out-of-fold log loss alone; add the block whose addition lowers
    the per-row log loss most, while a one-sided paired t-test says the drop is significant
    (p < ``alpha``). A block whose gain is not significant gets weight 0 (dropped: the fusion is then
    its best block, or blocks, alone) and a kept block weight 1. Returns :func:`select_parts`' record
    (``pool = "early"``).
    """
    from scipy.stats import ttest_rel

    y = np.asarray(y)
    k = len(names)
    index = {c: i for i, c in enumerate(classes)}
    codes = np.asarray([index[v] for v in y])
    folds = inner_folds(y, cv, seed)
    prepared = [fit_blocks(tr, te) for tr, te in folds]
    if any(len(tr_blocks) != k or len(te_blocks) != k for tr_blocks, te_blocks in prepared):
        raise InvalidInputError(f"select_blocks: fit_blocks must return {k} blocks ({', '.join(names)}) per set")
    seen: dict[tuple[int, ...], np.ndarray] = {}

    def row_loss(subset: list[int]) -> np.ndarray:
        key = tuple(sorted(subset))
        if key not in seen:
            P = np.zeros((len(y), len(classes)))
            for (tr, te), (B_tr, B_te) in zip(folds, prepared):
                model = clone(estimator).fit(early_concat([B_tr[j] for j in key]), y[tr])
                P[te] = aligned_proba(model, early_concat([B_te[j] for j in key]), classes)
            seen[key] = P
        return -np.log(np.clip(seen[key][np.arange(len(y)), codes], _EPS, None))

    alone = [row_loss([j]) for j in range(k)]
    acc = [float(np.mean(np.argmax(seen[(j,)], axis=1) == codes)) for j in range(k)]
    chosen = [int(np.argmin([a.mean() for a in alone]))]
    current = alone[chosen[0]]
    gain: list[float | None] = [None] * k
    pval: list[float | None] = [None] * k
    while len(chosen) < k:
        best = None
        for c in (c for c in range(k) if c not in chosen):
            loss = row_loss(chosen + [c])
            diff = current - loss
            g = float(diff.mean())
            p = 1.0 if not np.any(diff) else float(ttest_rel(current, loss, alternative="greater").pvalue)
            gain[c], pval[c] = g, p
            if p < alpha and g > 0 and (best is None or g > best[1]):
                best = (c, g, loss)
        if best is None:
            break
        chosen.append(best[0])
        current = best[2]
    final = seen[tuple(sorted(chosen))]
    weights = [1.0 if j in chosen else 0.0 for j in range(k)]
    return {
        "method": "select", "pool": "early", "alpha": alpha, "n_rows": int(len(y)), "weights": weights,
        "parts": [{"name": str(names[j]), "oof_accuracy": acc[j], "oof_log_loss": float(alone[j].mean()),
                   "gain_log_loss": gain[j], "p_value": pval[j], "weight": weights[j],
                   "kept": bool(weights[j] > 0)} for j in range(k)],
        "oof_accuracy": float(np.mean(np.argmax(final, axis=1) == codes)),
        "oof_log_loss": float(current.mean()),
    }


def oof_probas(fit_predict: Callable[[np.ndarray, np.ndarray], list[np.ndarray]], n_models: int,
               y: np.ndarray, classes: np.ndarray, cv: int, seed: int) -> list[np.ndarray]:
    """Out-of-fold probabilities of ``n_models`` parts over inner folds of ``y`` (see
    :func:`fit_stacked` for ``fit_predict``)."""
    oof = [np.zeros((len(y), len(classes))) for _ in range(n_models)]
    for tr, te in inner_folds(y, cv, seed):
        for j, p in enumerate(fit_predict(tr, te)):
            oof[j][te] = p
    return oof


def stacked_proba(meta: LogisticRegression, probas: Sequence[np.ndarray], classes: np.ndarray) -> np.ndarray:
    return aligned_proba(meta, np.hstack(probas), classes)


class LateFusion(BaseEstimator):
    """Late fusion: one clone of ``estimator`` per block, combined by soft voting or stacking.

    Parameters
    ----------
    estimator : classifier
        Template (a medfuse classifier plugin or any sklearn classifier with ``predict_proba``).
    combine : {"soft", "stack", "select"}
        Mean of block probabilities, a logistic regression on their out-of-fold values, or
        :func:`select_parts` weights learnt on their out-of-fold values (``reliability_``).
    cv : int
        Inner folds for stacking.
    random_state : int
        Seed of the inner folds.
    """

    def __init__(self, estimator: Any = None, combine: str = "soft", cv: int = 3, random_state: int = 0):
        store_params(self, locals())

    def fit(self, blocks: Sequence[np.ndarray], y: np.ndarray, names: Sequence[str] | None = None,
            oof: Sequence[np.ndarray] | None = None) -> LateFusion:
        """Fit one model per block ``blocks[i] (n, f_i)`` on labels ``y (n,)``.

        ``combine = "select"``: ``oof`` gives each block's out-of-fold probabilities over ``y``
        (a pipeline computes them by refitting its whole block chain inside inner folds); without
        it they come from an inner CV of the block classifiers on the given (already fitted) blocks.
        ``names``: block names for ``reliability_``.
        """
        if self.combine not in ("soft", "stack", "select"):
            raise InvalidInputError(f"late fusion: combine must be 'soft', 'stack' or 'select', got {self.combine!r}")
        y = np.asarray(y)
        self.classes_ = np.unique(y)

        def fit_predict(tr: np.ndarray, te: np.ndarray) -> list[np.ndarray]:
            return [aligned_proba(clone(self.estimator).fit(B[tr], y[tr]), B[te], self.classes_)
                    for B in blocks]

        self.weights_ = None
        self.reliability_: dict[str, Any] = {}
        if self.combine == "stack":
            self.meta_ = fit_stacked(fit_predict, len(blocks), y, self.classes_, self.cv, self.random_state)
        elif self.combine == "select":
            if oof is None:
                oof = oof_probas(fit_predict, len(blocks), y, self.classes_, self.cv, self.random_state)
            names = list(names) if names is not None else [f"block{i}" for i in range(len(blocks))]
            self.reliability_ = select_parts(oof, y, self.classes_, names)
            self.weights_ = np.asarray(self.reliability_["weights"])
        self.estimators_ = [clone(self.estimator).fit(B, y) for B in blocks]
        return self

    def predict_proba(self, blocks: Sequence[np.ndarray]) -> np.ndarray:
        if len(blocks) != len(self.estimators_):
            raise InvalidInputError(f"late fusion fitted on {len(self.estimators_)} blocks, got {len(blocks)}")
        probas = [aligned_proba(m, B, self.classes_) for m, B in zip(self.estimators_, blocks)]
        if self.combine == "stack":
            return stacked_proba(self.meta_, probas, self.classes_)
        if getattr(self, "weights_", None) is not None:
            return log_pool(probas, self.weights_)
        return soft_vote(probas)

    def predict(self, blocks: Sequence[np.ndarray]) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(blocks), axis=1)]
