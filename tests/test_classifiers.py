"""Classifier plugins: learning, string labels, XGBoost details, ensembles, native model files.

(The conformance kit runs over every plugin in tests/test_conformance.py.)"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from medfuse.errors import InvalidInputError, PluginError
from medfuse.testing import sample_features
from medfuse_plugins.classifiers import MLP, SVM, BranchMLP, LogReg, RandomForest, SoftVote, Stacking, XGBoost

FEATURE_CLASSIFIERS = [LogReg, SVM, RandomForest, MLP, XGBoost, SoftVote, Stacking]


@pytest.mark.parametrize("cls", FEATURE_CLASSIFIERS, ids=lambda c: c.name)
def test_learns_string_labels(cls):
    X, y = sample_features(90, seed=1)
    Xt, yt = sample_features(60, seed=2)
    clf = cls(**cls.conformance_params).fit(X, y)
    assert list(clf.classes_) == ["a", "b", "c"]
    assert np.mean(clf.predict(Xt) == yt) > 0.8


def test_labels_missing_from_a_fold_and_bad_input():
    X, y = sample_features(60)
    keep = y != "c"
    clf = LogReg().fit(X[keep], y[keep])
    assert list(clf.classes_) == ["a", "b"] and clf.predict_proba(X).shape == (60, 2)
    with pytest.raises(InvalidInputError, match="at least 2 classes"):
        LogReg().fit(X[y == "a"], y[y == "a"])
    with pytest.raises(InvalidInputError, match="fitted on 6 features"):
        clf.predict_proba(X[:, :4])
    with pytest.raises(InvalidInputError, match="numeric"):
        LogReg().fit(np.asarray([["x", "y"]] * 4), ["a", "b"] * 2)


def test_xgboost_early_stopping_class_weights_gain_and_json(tmp_path):
    X, y = sample_features(150, seed=3)
    X = np.r_[X, X[y == "a"][:5]]
    y = np.r_[y, y[y == "a"][:5]]
    clf = XGBoost(n_estimators=400, learning_rate=0.3, early_stopping_rounds=10).fit(X, y)
    assert clf.best_iteration_ is not None and clf.n_rounds_ < 400, "early stopping should cut rounds"
    imp = clf.feature_importances_
    assert imp.shape == (6,) and np.isclose(imp.sum(), 1) and set(np.argsort(-imp)[:2]) == {0, 1}
    no_es = XGBoost(n_estimators=25, early_stopping_rounds=0).fit(X, y)
    assert no_es.best_iteration_ is None and no_es.n_rounds_ == 25
    files = clf.save_artifacts(tmp_path)
    assert [f.name for f in files] == ["xgboost.json"] and files[0].read_text().startswith("{")
    again = pickle.loads(pickle.dumps(clf))
    del again.model_
    again.load_artifacts(tmp_path)
    assert np.allclose(again.predict_proba(X), clf.predict_proba(X))
    unweighted = XGBoost(n_estimators=30, class_weight=None, early_stopping_rounds=0).fit(X, y)
    weighted = XGBoost(n_estimators=30, early_stopping_rounds=0).fit(X, y)
    assert not np.allclose(unweighted.predict_proba(X), weighted.predict_proba(X))
    with pytest.raises(InvalidInputError, match="class_weight"):
        XGBoost(class_weight="other").fit(X, y)


def test_xgboost_binary_labels():
    X, y = sample_features(60)
    keep = y != "b"
    proba = XGBoost(n_estimators=20).fit(X[keep], y[keep]).predict_proba(X[keep])
    assert proba.shape == (keep.sum(), 2) and np.allclose(proba.sum(1), 1)


def test_ensemble_members_and_errors():
    X, y = sample_features(90)
    vote = SoftVote(estimators=[{"plugin": "logreg"}, "svm"], weights=[2, 1]).fit(X, y)
    assert [m.name for m in vote.estimators_] == ["logreg", "svm"]
    stack = Stacking(estimators=["logreg", {"plugin": "xgboost", "params": {"n_estimators": 20}}], cv=3).fit(X, y)
    assert stack.meta_.coef_.shape == (3, 6)
    with pytest.raises(PluginError, match="unknown classifier plugin 'nope'"):
        SoftVote(estimators=["nope"]).fit(X, y)
    with pytest.raises(PluginError, match="cannot itself be an ensemble"):
        Stacking(estimators=["soft_vote"]).fit(X, y)
    with pytest.raises(PluginError, match="does not take feature matrices"):
        SoftVote(estimators=["branch_mlp"]).fit(X, y)


def test_branch_mlp_blocks_keras_file_and_pickle(tmp_path):
    X, y = sample_features(120, seed=4)
    blocks = [X[:, :1], X[:, 1:]]
    clf = BranchMLP(branch_units=8, head_units=8, epochs=40, learning_rate=0.01, patience=5).fit(blocks, y)
    proba = clf.predict_proba(blocks)
    assert proba.shape == (120, 3) and np.mean(clf.classes_[proba.argmax(1)] == y) > 0.8
    files = clf.save_artifacts(tmp_path)
    assert [f.name for f in files] == ["branch_mlp.keras", "branch_mlp.probs.onnx"]
    again = pickle.loads(pickle.dumps(clf))
    assert np.allclose(again.predict_proba(blocks), proba, atol=1e-6)
    again.model_ = None
    again.load_artifacts(tmp_path)
    assert np.allclose(again.predict_proba(blocks), proba, atol=1e-6)
    with pytest.raises(InvalidInputError, match="block widths"):
        clf.predict_proba([X])


def test_ensemble_members_come_through_the_public_get_plugin(monkeypatch):
    """No built-in plugin reaches for the process's host (``medfuse.host``): ensemble members are
    looked up through ``medfuse.get_plugin`` with ``kind="classifier"``, like a third-party plugin would."""
    import ast

    import medfuse
    import medfuse_plugins

    offenders = []
    for source in sorted(Path(medfuse_plugins.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("medfuse.host"):
                offenders.append(source.name)
    assert not offenders, offenders
    with pytest.raises(PluginError, match="unknown classifier plugin 'morphology'"):
        medfuse.get_plugin("morphology", "classifier")
    calls, real = [], medfuse.get_plugin
    monkeypatch.setattr(medfuse, "get_plugin", lambda *a, **k: calls.append(a) or real(*a, **k))
    X, y = sample_features(60)
    SoftVote(estimators=["logreg", {"plugin": "svm", "params": {"C": 2.0}}]).fit(X, y)
    assert calls == [("logreg", "classifier"), ("svm", "classifier")]
