"""Classifier plugins over feature matrices (and, for ``branch_mlp``, over a list of blocks).

All take string labels (encoded internally), expose ``classes_`` (sorted labels) and
``predict_proba`` with columns in that order. ``xgboost`` and ``branch_mlp`` write native model
files in ``save_artifacts`` (XGBoost JSON; ``.keras`` plus ONNX, which a bundle runs under
onnxruntime); everything also pickles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from medfuse import hookimpl
from medfuse.contracts import Classifier
from medfuse.errors import InvalidInputError, PluginError

from medfuse_plugins._keras import KerasStateMixin

# ---- shared helpers ---------------------------------------------------------------------------


def _check_X(name: str, X: Any, n_features: int | None = None) -> np.ndarray:
    try:
        X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name}: features must be numeric: {exc}") from None
    if X.ndim != 2:
        raise InvalidInputError(f"{name}: expected a feature matrix (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise InvalidInputError(f"{name}: empty feature matrix")
    if n_features is not None and X.shape[1] != n_features:
        raise InvalidInputError(f"{name}: fitted on {n_features} features, got {X.shape[1]}")
    return X


def _encode(name: str, y: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    if y.ndim != 1:
        raise InvalidInputError(f"{name}: labels must be 1-D, got shape {y.shape}")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise InvalidInputError(f"{name}: need at least 2 classes to fit, got {classes.tolist()}")
    return classes, codes


def _balanced_weights(codes: np.ndarray) -> np.ndarray:
    counts = np.bincount(codes)
    return (len(codes) / (len(counts) * counts))[codes]


class _SklearnClassifier(Classifier):
    """Wraps one scikit-learn classifier built by :meth:`_build` on integer-coded labels."""

    def _estimator(self) -> Any:
        """The scikit-learn estimator this plugin's parameters configure (unfitted)."""
        raise NotImplementedError

    def _build(self, codes: np.ndarray) -> Any:
        """The estimator fitted on integer-coded labels ``codes`` (default: :meth:`_estimator`)."""
        return self._estimator()

    def validate_params(self) -> None:
        """The wrapped scikit-learn estimator's own parameter validation (ranges, choices)."""
        self._estimator()._validate_params()

    def fit(self, X, y):
        X = _check_X(self.name, X)
        if len(X) != len(y):
            raise InvalidInputError(f"{self.name}: {len(X)} rows but {len(y)} labels")
        self.classes_, codes = _encode(self.name, y)
        self.n_features_in_ = X.shape[1]
        self.model_ = self._build(codes).fit(X, codes)
        return self

    def predict_proba(self, X) -> np.ndarray:
        X = _check_X(self.name, X, self.n_features_in_)
        proba = np.zeros((len(X), len(self.classes_)))
        proba[:, self.model_.classes_] = self.model_.predict_proba(X)
        return proba


# ---- plain classifiers ------------------------------------------------------------------------


class LogReg(_SklearnClassifier):
    """Multinomial logistic regression (scikit-learn, L2).

    Parameters
    ----------
    C
        Inverse regularisation strength.
    max_iter
        Solver iterations.
    class_weight
        "balanced" to weight classes inversely to their frequency, or none.
    random_state
        Seed (unused by the lbfgs solver, kept for uniformity).
    """

    name: ClassVar[str] = "logreg"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict[str, Any]] = {"max_iter": 200}

    def __init__(self, C: float = 1.0, max_iter: int = 2000, class_weight: str | None = None,
                 random_state: int = 0):
        self._store_params(locals())

    def _estimator(self):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight=self.class_weight,
                                  random_state=self.random_state)


class SVM(_SklearnClassifier):
    """Support vector machine (scikit-learn SVC; probabilities by Platt scaling on inner folds).

    Parameters
    ----------
    C
        Regularisation parameter.
    kernel
        Kernel: rbf, linear, poly or sigmoid.
    gamma
        Kernel coefficient: "scale", "auto" or a float.
    class_weight
        "balanced" or none.
    random_state
        Seed of the probability calibration.
    """

    name: ClassVar[str] = "svm"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, C: float = 1.0, kernel: str = "rbf", gamma: str | float = "scale",
                 class_weight: str | None = None, random_state: int = 0):
        self._store_params(locals())

    def _estimator(self):
        from sklearn.svm import SVC

        return SVC(C=self.C, kernel=self.kernel, gamma=self.gamma, class_weight=self.class_weight,
                   random_state=self.random_state)

    def _build(self, codes):
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.model_selection import StratifiedKFold

        svc = self._estimator()
        k = int(min(5, np.bincount(codes).min()))
        if k < 2:
            raise InvalidInputError(f"{self.name}: probability calibration needs 2 samples of every class")
        cv = StratifiedKFold(k, shuffle=True, random_state=self.random_state)
        return CalibratedClassifierCV(svc, method="sigmoid", cv=cv, ensemble=False)


class RandomForest(_SklearnClassifier):
    """Random forest (scikit-learn); ``feature_importances_`` is the impurity decrease.

    Parameters
    ----------
    n_estimators
        Number of trees.
    max_depth
        Maximum tree depth (none: unlimited).
    min_samples_leaf
        Minimum samples per leaf.
    class_weight
        "balanced", "balanced_subsample" or none.
    n_jobs
        Parallel threads.
    random_state
        Seed of bootstrap and feature sampling.
    """

    name: ClassVar[str] = "random_forest"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict[str, Any]] = {"n_estimators": 20}

    def __init__(self, n_estimators: int = 300, max_depth: int | None = None, min_samples_leaf: int = 1,
                 class_weight: str | None = None, n_jobs: int = 1, random_state: int = 0):
        self._store_params(locals())

    def _estimator(self):
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                      min_samples_leaf=self.min_samples_leaf, class_weight=self.class_weight,
                                      n_jobs=self.n_jobs, random_state=self.random_state)

    @property
    def feature_importances_(self) -> np.ndarray:
        return self.model_.feature_importances_


class MLP(_SklearnClassifier):
    """Multi-layer perceptron (scikit-learn, Adam, optional early stopping).

    Parameters
    ----------
    hidden_layer_sizes
        Units per hidden layer, e.g. [128, 64].
    alpha
        L2 penalty.
    learning_rate_init
        Adam learning rate.
    max_iter
        Maximum epochs.
    early_stopping
        Stop when a 10% inner validation split stops improving (for large training sets).
    random_state
        Seed of weights, shuffling and the validation split.
    """

    name: ClassVar[str] = "mlp"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict[str, Any]] = {"hidden_layer_sizes": [16], "max_iter": 200,
                                                    "learning_rate_init": 0.01}

    def __init__(self, hidden_layer_sizes: list[int] | tuple[int, ...] = (128, 64), alpha: float = 1e-3,
                 learning_rate_init: float = 1e-3, max_iter: int = 300, early_stopping: bool = False,
                 random_state: int = 0):
        self._store_params(locals())

    def fit(self, X, y):
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return super().fit(X, y)

    def _estimator(self):
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(hidden_layer_sizes=tuple(int(h) for h in self.hidden_layer_sizes), alpha=self.alpha,
                             learning_rate_init=self.learning_rate_init, max_iter=self.max_iter,
                             early_stopping=self.early_stopping, random_state=self.random_state)


# ---- XGBoost ----------------------------------------------------------------------------------


class XGBoost(Classifier):
    """Gradient-boosted trees (XGBoost ``hist``), early stopping on an inner stratified split.

    With ``early_stopping_rounds > 0`` a stratified ``validation_fraction`` of the training rows
    picks the number of trees, then the model is refitted on all training rows with that many.
    ``feature_importances_`` is the normalised total gain per feature.

    Parameters
    ----------
    n_estimators
        Maximum number of boosting rounds.
    max_depth
        Maximum tree depth.
    learning_rate
        Shrinkage per round.
    subsample
        Row subsampling per tree.
    colsample_bytree
        Column subsampling per tree.
    min_child_weight
        Minimum hessian sum per leaf.
    reg_lambda
        L2 regularisation of leaf weights.
    early_stopping_rounds
        Stop after this many rounds without improvement on the inner split (0: no early stopping, use n_estimators).
    validation_fraction
        Share of the training rows in the inner validation split.
    class_weight
        "balanced": sample weights inversely proportional to class frequency; none.
    n_jobs
        Threads.
    random_state
        Seed of subsampling and of the inner split.
    """

    name: ClassVar[str] = "xgboost"
    version: ClassVar[str] = "1.0.0"
    extras: ClassVar[tuple[str, ...]] = ("xgboost",)
    conformance_params: ClassVar[dict[str, Any]] = {"n_estimators": 20, "max_depth": 3,
                                                    "early_stopping_rounds": 5}

    def __init__(self, n_estimators: int = 500, max_depth: int = 6, learning_rate: float = 0.1,
                 subsample: float = 0.9, colsample_bytree: float = 0.8, min_child_weight: float = 1.0,
                 reg_lambda: float = 1.0, early_stopping_rounds: int = 30, validation_fraction: float = 0.15,
                 class_weight: str | None = "balanced", n_jobs: int = 1, random_state: int = 0):
        self._store_params(locals())

    def _model(self, n_estimators: int, early: int | None, n_classes: int):
        import xgboost as xgb

        kw: dict[str, Any] = {"objective": "multi:softprob"} if n_classes > 2 else {"objective": "binary:logistic"}
        return xgb.XGBClassifier(
            n_estimators=n_estimators, max_depth=self.max_depth, learning_rate=self.learning_rate,
            subsample=self.subsample, colsample_bytree=self.colsample_bytree,
            min_child_weight=self.min_child_weight, reg_lambda=self.reg_lambda, tree_method="hist",
            n_jobs=self.n_jobs, random_state=self.random_state, early_stopping_rounds=early,
            eval_metric="mlogloss" if n_classes > 2 else "logloss", **kw)

    def fit(self, X, y):
        X = _check_X(self.name, X)
        if len(X) != len(y):
            raise InvalidInputError(f"{self.name}: {len(X)} rows but {len(y)} labels")
        if self.class_weight not in (None, "balanced"):
            raise InvalidInputError(f"{self.name}: class_weight must be \"balanced\" or none, got {self.class_weight!r}")
        self.classes_, codes = _encode(self.name, y)
        self.n_features_in_ = X.shape[1]
        k = len(self.classes_)
        weights = _balanced_weights(codes) if self.class_weight == "balanced" else np.ones(len(codes))
        n_rounds = self.n_estimators
        self.best_iteration_ = None
        counts = np.bincount(codes, minlength=k)
        n_val = int(round(self.validation_fraction * len(codes)))
        if self.early_stopping_rounds and counts.min() >= 2 and n_val >= k and len(codes) - n_val >= k:
            from sklearn.model_selection import StratifiedShuffleSplit

            split = StratifiedShuffleSplit(1, test_size=n_val, random_state=self.random_state)
            tr, va = next(split.split(X, codes))
            if len(np.unique(codes[tr])) == k:
                probe = self._model(self.n_estimators, self.early_stopping_rounds, k)
                probe.fit(X[tr], codes[tr], sample_weight=weights[tr], eval_set=[(X[va], codes[va])],
                          sample_weight_eval_set=[weights[va]], verbose=False)
                self.best_iteration_ = int(probe.best_iteration)
                n_rounds = self.best_iteration_ + 1
        self.n_rounds_ = n_rounds
        self.model_ = self._model(n_rounds, None, k).fit(X, codes, sample_weight=weights, verbose=False)
        return self

    def predict_proba(self, X) -> np.ndarray:
        X = _check_X(self.name, X, self.n_features_in_)
        return np.asarray(self.model_.predict_proba(X), dtype=np.float64)

    @property
    def feature_importances_(self) -> np.ndarray:
        """Total gain per feature, normalised to sum to 1 (0 for unused features)."""
        gain = self.model_.get_booster().get_score(importance_type="total_gain")
        imp = np.zeros(self.n_features_in_)
        for key, value in gain.items():
            imp[int(key[1:])] = value
        total = imp.sum()
        return imp / total if total > 0 else imp

    def __getstate__(self) -> dict[str, Any]:
        from medfuse.contracts import state_saved_separately

        state = dict(self.__dict__)
        if state_saved_separately():  # a bundle: the booster is written as XGBoost JSON
            state.pop("model_", None)
        return state

    def save_artifacts(self, directory: Path) -> list[Path]:
        """Write the booster as ``xgboost.json`` (XGBoost's own format)."""
        if not hasattr(self, "model_"):
            return []
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "xgboost.json"
        self.model_.save_model(path)
        return [path]

    def load_artifacts(self, directory: Path) -> None:
        """Read the booster written by :meth:`save_artifacts`."""
        path = Path(directory) / "xgboost.json"
        if not hasattr(self, "classes_"):
            return
        if not path.is_file():
            raise PluginError(f"{path}: XGBoost model file not found")
        model = self._model(self.n_rounds_, None, len(self.classes_))
        model.load_model(path)
        self.model_ = model


# ---- ensembles of classifier plugins ----------------------------------------------------------

_DEFAULT_MEMBERS: list[dict[str, Any]] = [{"plugin": "logreg"}, {"plugin": "random_forest"},
                                          {"plugin": "xgboost"}]


def _member_classifiers(owner: str, estimators: list[Any] | None, seed: int) -> list[Classifier]:
    """The ensemble's members, created through :func:`medfuse.get_plugin` (parameters checked)."""
    import medfuse

    out = []
    for i, ref in enumerate(estimators if estimators is not None else _DEFAULT_MEMBERS):
        if isinstance(ref, str):
            ref = {"plugin": ref}
        if not isinstance(ref, dict) or "plugin" not in ref:
            raise PluginError(f"{owner}: estimators[{i}] must be a table {{ plugin = \"name\", params = {{...}} }}, "
                              f"got {ref!r}")
        if ref["plugin"] in ("soft_vote", "stacking"):
            raise PluginError(f"{owner}: estimators[{i}] cannot itself be an ensemble")
        params = dict(ref.get("params", {}))
        try:
            member = medfuse.get_plugin(ref["plugin"], "classifier", **params)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"{owner}: estimators[{i}] {ref['plugin']!r}: {exc}") from None
        if member.input != "features":
            raise PluginError(f"{owner}: estimators[{i}] {ref['plugin']!r} does not take feature matrices")
        if "random_state" in member.param_schema() and "random_state" not in params:
            member.set_params(random_state=seed)
        out.append(member)
    if not out:
        raise PluginError(f"{owner}: estimators is empty")
    return out


class SoftVote(Classifier):
    """Soft-voting ensemble: weighted mean of the members' probabilities.

    Parameters
    ----------
    estimators
        Member classifiers as plugin tables, e.g. [{ plugin = "svm" }, { plugin = "xgboost", params = { max_depth = 4 }
        }]; default logreg, random_forest, xgboost.
    weights
        Weight per member (default equal).
    random_state
        Seed given to members that take one (unless set in their params).
    """

    name: ClassVar[str] = "soft_vote"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict[str, Any]] = {
        "estimators": [{"plugin": "logreg"}, {"plugin": "random_forest", "params": {"n_estimators": 10}}]}

    def __init__(self, estimators: list | None = None, weights: list | None = None, random_state: int = 0):
        self._store_params(locals())

    def validate_params(self) -> None:
        """Every member is a known feature classifier with valid parameters; one weight per member."""
        members = _member_classifiers(self.name, self.estimators, self.random_state)
        weights = getattr(self, "weights", None)  # Stacking has none
        if weights is not None and len(weights) != len(members):
            raise InvalidInputError(f"{self.name}: {len(weights)} weights for {len(members)} estimators")

    def fit(self, X, y):
        X = _check_X(self.name, X)
        self.classes_, _ = _encode(self.name, y)
        self.n_features_in_ = X.shape[1]
        self.estimators_ = [m.fit(X, y) for m in _member_classifiers(self.name, self.estimators, self.random_state)]
        return self

    def predict_proba(self, X) -> np.ndarray:
        from medfuse.fusion import aligned_proba, soft_vote  # scikit-learn: imported when used

        X = _check_X(self.name, X, self.n_features_in_)
        return soft_vote([aligned_proba(m, X, self.classes_) for m in self.estimators_], self.weights)

    def save_artifacts(self, directory: Path) -> list[Path]:
        return [p for i, m in enumerate(getattr(self, "estimators_", []))
                for p in m.save_artifacts(Path(directory) / f"member{i}")]

    def load_artifacts(self, directory: Path) -> None:
        for i, m in enumerate(getattr(self, "estimators_", [])):
            m.load_artifacts(Path(directory) / f"member{i}")


class Stacking(SoftVote):
    """Stacking ensemble: a logistic regression over the members' out-of-fold probabilities.

    Parameters
    ----------
    cv
        Inner stratified folds giving the out-of-fold probabilities.
    final_C
        Inverse regularisation of the final logistic regression.
    random_state
        Seed of the inner folds and of members that take one.
    """

    name: ClassVar[str] = "stacking"
    version: ClassVar[str] = "1.0.0"
    conformance_params: ClassVar[dict[str, Any]] = {
        "estimators": [{"plugin": "logreg"}, {"plugin": "random_forest", "params": {"n_estimators": 10}}], "cv": 3}

    def __init__(self, estimators: list | None = None, cv: int = 5, final_C: float = 1.0, random_state: int = 0):
        self._store_params(locals())

    def fit(self, X, y):
        from medfuse.fusion import aligned_proba, fit_stacked
        from sklearn.base import clone

        X = _check_X(self.name, X)
        y = np.asarray(y)
        self.classes_, _ = _encode(self.name, y)
        self.n_features_in_ = X.shape[1]
        members = _member_classifiers(self.name, self.estimators, self.random_state)

        def fit_predict(tr: np.ndarray, te: np.ndarray) -> list[np.ndarray]:
            return [aligned_proba(clone(m).fit(X[tr], y[tr]), X[te], self.classes_) for m in members]

        self.meta_ = fit_stacked(fit_predict, len(members), y, self.classes_, self.cv, self.random_state,
                                 self.final_C)
        self.estimators_ = [m.fit(X, y) for m in members]
        return self

    def predict_proba(self, X) -> np.ndarray:
        from medfuse.fusion import aligned_proba, stacked_proba

        X = _check_X(self.name, X, self.n_features_in_)
        return stacked_proba(self.meta_, [aligned_proba(m, X, self.classes_) for m in self.estimators_],
                             self.classes_)


# ---- Keras branch MLP (intermediate fusion) ---------------------------------------------------


class BranchMLP(KerasStateMixin, Classifier):
    """Keras MLP with one dense branch per feature block, concatenated before the head.

    Intermediate fusion: ``fit([block_1, block_2, ...], y)`` where ``block_i`` is
    ``(n_samples, f_i)``; each block gets its own ``Dense -> Dropout`` branch, the branch outputs
    are concatenated and fed to a dense head with a softmax. Early stopping on an inner stratified
    validation split; balanced class weights optional.

    Parameters
    ----------
    branch_units
        Units of each block's dense branch.
    head_units
        Units of the dense layer after concatenation (0: none).
    dropout
        Dropout after each branch and the head layer.
    epochs
        Maximum training epochs.
    batch_size
        Mini-batch size.
    learning_rate
        Adam learning rate.
    patience
        Early-stopping patience in epochs (0: no early stopping).
    validation_fraction
        Share of training rows used for early stopping.
    class_weight
        "balanced" or none.
    random_state
        Seed of weights, shuffling and the validation split.
    """

    name: ClassVar[str] = "branch_mlp"
    version: ClassVar[str] = "1.0.0"
    input: ClassVar[str] = "blocks"
    extras: ClassVar[tuple[str, ...]] = ("keras",)
    conformance_params: ClassVar[dict[str, Any]] = {"branch_units": 8, "head_units": 8, "epochs": 5,
                                                    "patience": 0}

    def __init__(self, branch_units: int = 64, head_units: int = 32, dropout: float = 0.2, epochs: int = 100,
                 batch_size: int = 32, learning_rate: float = 1e-3, patience: int = 10,
                 validation_fraction: float = 0.15, class_weight: str | None = "balanced", random_state: int = 0):
        self._store_params(locals())

    def _blocks(self, blocks: Any, fitting: bool = False) -> list[np.ndarray]:
        if isinstance(blocks, np.ndarray):
            blocks = [blocks]
        if not isinstance(blocks, list | tuple) or not blocks:
            raise InvalidInputError(f"{self.name}: expected a list of block matrices, got {type(blocks).__name__}")
        out = [_check_X(self.name, b) for b in blocks]
        if len({len(b) for b in out}) != 1:
            raise InvalidInputError(f"{self.name}: blocks have different row counts {[len(b) for b in out]}")
        if not fitting:
            widths = [b.shape[1] for b in out]
            if widths != self.block_widths_:
                raise InvalidInputError(f"{self.name}: fitted on block widths {self.block_widths_}, got {widths}")
        return out

    def _build(self, widths: list[int], n_classes: int):
        from medfuse_plugins._keras import keras

        keras = keras()

        inputs, branches = [], []
        for i, w in enumerate(widths):
            inp = keras.Input(shape=(w,), name=f"block{i}")
            h = keras.layers.Dense(self.branch_units, activation="relu")(inp)
            h = keras.layers.Dropout(self.dropout, seed=self.random_state + i)(h)
            inputs.append(inp)
            branches.append(h)
        h = keras.layers.Concatenate()(branches) if len(branches) > 1 else branches[0]
        if self.head_units:
            h = keras.layers.Dense(self.head_units, activation="relu")(h)
            h = keras.layers.Dropout(self.dropout, seed=self.random_state + 1000)(h)
        out = keras.layers.Dense(n_classes, activation="softmax")(h)
        model = keras.Model(inputs, out)
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss="sparse_categorical_crossentropy")
        return model

    def fit(self, blocks, y):
        from medfuse_plugins._keras import seeded

        blocks = self._blocks(blocks, fitting=True)
        if len(blocks[0]) != len(y):
            raise InvalidInputError(f"{self.name}: {len(blocks[0])} rows but {len(y)} labels")
        self.classes_, codes = _encode(self.name, y)
        self.block_widths_ = [b.shape[1] for b in blocks]
        with seeded(self.random_state):
            self.model_, self.onnx_ = self._train(blocks, codes), {}
        return self

    def _train(self, blocks: list[np.ndarray], codes: np.ndarray) -> Any:
        """Build and train the network (inside :func:`~medfuse_plugins._keras.seeded`)."""
        from medfuse_plugins._keras import build_before_fit, keras

        keras = keras()
        model = self._build(self.block_widths_, len(self.classes_))
        weights = None
        if self.class_weight == "balanced":
            w = _balanced_weights(codes)
            weights = {int(c): float(w[codes == c][0]) for c in np.unique(codes)}
        counts = np.bincount(codes)
        n_val = int(round(self.validation_fraction * len(codes)))
        callbacks, val = [], None
        tr = np.arange(len(codes))
        if self.patience and counts.min() >= 2 and n_val >= len(counts):
            from sklearn.model_selection import StratifiedShuffleSplit

            tr, va = next(StratifiedShuffleSplit(1, test_size=n_val, random_state=self.random_state)
                          .split(codes, codes))
            val = ([b[va] for b in blocks], codes[va])
            callbacks.append(keras.callbacks.EarlyStopping(patience=self.patience, restore_best_weights=True))
        first = tr[:self.batch_size]
        build_before_fit(model, [b[first] for b in blocks], codes[first])
        model.fit([b[tr] for b in blocks], codes[tr], epochs=self.epochs, batch_size=self.batch_size,
                  validation_data=val, callbacks=callbacks, class_weight=weights, verbose=0, shuffle=True)
        return model

    def predict_proba(self, blocks) -> np.ndarray:
        blocks = self._blocks(blocks)
        from medfuse_plugins._keras import iter_batches

        net = self._net("probs")
        parts = [np.asarray(net([b[s] for b in blocks], training=False))
                 for s in iter_batches(len(blocks[0]), 1024)]
        proba = np.concatenate(parts).astype(np.float64)
        return proba / proba.sum(axis=1, keepdims=True)

    def _example_input(self) -> list[np.ndarray]:
        return [np.zeros((1, w), np.float32) for w in self.block_widths_]


@hookimpl
def medfuse_plugins():
    return [LogReg, SVM, RandomForest, MLP, XGBoost, SoftVote, Stacking, BranchMLP]
