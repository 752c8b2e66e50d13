"""Paired comparison (paired bootstrap, McNemar exact, Holm), per-class intervals and calibration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from medfuse.calibration import (
    brier_score,
    calibration_summary,
    expected_calibration_error,
    reliability_bins,
    weighted_calibration,
)
from medfuse.evaluation import run_study
from medfuse.metrics import bootstrap_weights, class_scores, per_class_intervals, weighted_confusion
from medfuse.paired import binomial_two_sided, compare_pipelines, holm, mcnemar_exact, paired_bootstrap
from medfuse.study import parse_study
from sklearn.metrics import brier_score_loss, precision_recall_fscore_support
from test_evaluation import FakeRunner, fake_data, fake_study

CLASSES = np.array(["a", "b", "c"])


def _synthetic(n: int = 300, right: float = 0.9, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class codes and probabilities whose arg-max is right with probability ``right``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    hit = rng.random(n) < right
    top = np.where(hit, y, (y + 1 + rng.integers(0, 2, n)) % 3)
    proba = rng.dirichlet(np.ones(3), n) * 0.4
    proba[np.arange(n), top] += 0.6
    return y, proba


def _frame(y: np.ndarray, proba: np.ndarray, ids: list[str] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame({"id": ids or [f"s{i}" for i in range(len(y))], "label": CLASSES[y]})
    for j, c in enumerate(CLASSES):
        frame[f"proba.{c}"] = proba[:, j]
    return frame


# ---- paired bootstrap ---------------------------------------------------------------------------

def test_a_pipeline_against_itself_differs_by_exactly_zero():
    y, proba = _synthetic()
    res = paired_bootstrap(y, proba, proba.copy(), n_boot=300, seed=3)
    assert res["diff"] == {"accuracy": 0.0, "f1_macro": 0.0, "roc_auc_ovr": 0.0}
    assert res["ci95"] == {"accuracy": [0.0, 0.0], "f1_macro": [0.0, 0.0], "roc_auc_ovr": [0.0, 0.0]}
    assert mcnemar_exact(proba.argmax(1) == y, proba.argmax(1) == y) == {"a_only": 0, "b_only": 0, "p": 1.0}
    groups = np.arange(len(y)) // 5
    out = compare_pipelines({"x": _frame(y, proba), "y": _frame(y, proba)}, ["x", "y"], CLASSES,
                            groups={f"s{i}": str(g) for i, g in enumerate(groups)}, n_boot=200)
    pair = out["pairs"][0]
    assert pair["ci95"]["accuracy"] == [0.0, 0.0] and pair["p_holm"] == 1.0 and not pair["significant"]
    assert out["not_worse_than_best"] == ["x", "y"]


def test_a_clearly_better_pipeline_wins_with_an_interval_excluding_zero():
    y, good = _synthetic(right=0.9, seed=1)
    _, bad = _synthetic(right=0.6, seed=2)
    res = paired_bootstrap(y, good, bad, n_boot=500, seed=0)
    for m in ("accuracy", "f1_macro", "roc_auc_ovr"):
        lo, hi = res["ci95"][m]
        assert res["diff"][m] > 0 and 0 < lo <= res["diff"][m] <= hi, m
    out = compare_pipelines({"good": _frame(y, good), "bad": _frame(y, bad)}, ["good", "bad"], CLASSES, n_boot=300)
    pair = out["pairs"][0]
    assert pair["diff"]["accuracy"] == pytest.approx(np.mean(good.argmax(1) == y) - np.mean(bad.argmax(1) == y))
    assert pair["mcnemar"]["a_only"] > pair["mcnemar"]["b_only"] and pair["p_holm"] < 1e-6 and pair["significant"]
    assert out["not_worse_than_best"] == ["good"]


def test_pairs_use_the_samples_both_pipelines_scored():
    y, p = _synthetic(n=60)
    a = _frame(y, p)
    b = _frame(y[5:], p[5:], [f"s{i}" for i in range(5, 60)])  # b could not prepare s0..s4
    out = compare_pipelines({"a": a, "b": b}, ["a", "b"], CLASSES, n_boot=50)
    assert out["pairs"][0]["n"] == 55 and out["pairs"][0]["diff"]["accuracy"] == 0.0


# ---- McNemar and Holm ------------------------------------------------------------------------------

def test_mcnemar_exact_p_is_the_binomial_tail():
    # 2 discordant pairs won by A, 8 by B: p = 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 2 * 56 / 1024
    a = np.array([True] * 2 + [False] * 8 + [True] * 5 + [False] * 3)
    b = np.array([False] * 2 + [True] * 8 + [True] * 5 + [False] * 3)
    res = mcnemar_exact(a, b)
    assert res == {"a_only": 2, "b_only": 8, "p": 0.109375}
    assert mcnemar_exact(b, a)["p"] == 0.109375
    assert binomial_two_sided(0, 5) == 0.0625  # 2 / 32
    assert binomial_two_sided(3, 6) == 1.0  # capped at 1


def test_holm_adjusted_p_values():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    out = holm([0.5, np.nan, 0.2])  # NaN neither counted nor changed: m = 2
    np.testing.assert_allclose(out[[0, 2]], [0.5, 0.4])
    assert np.isnan(out[1])
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])


# ---- grouped resampling ----------------------------------------------------------------------------

def test_grouped_resampling_keeps_groups_together():
    groups = np.array(["p1", "p1", "p2", "p3", "p3", "p3", "p4"])
    W = np.concatenate(list(bootstrap_weights(len(groups), 300, seed=0, groups=groups, chunk=70)))
    assert W.shape == (300, 7)
    for g in np.unique(groups):
        cols = W[:, groups == g]
        assert (cols == cols[:, :1]).all(), g  # every member of a group drawn as often as the group
    draws = W[:, [0, 2, 3, 6]]  # one member per group: group draws per resample sum to the number of groups
    assert (draws.sum(axis=1) == 4).all()
    assert len({tuple(r) for r in W}) > 20  # real resampling (35 possible), not one fixed draw
    plain = np.concatenate(list(bootstrap_weights(7, 300, seed=0)))
    assert not all((plain[:, groups == g] == plain[:, groups == g][:, :1]).all() for g in ("p1", "p3"))


# ---- per-class table -------------------------------------------------------------------------------

def test_per_class_scores_equal_sklearn_and_intervals_bracket_them():
    y, proba = _synthetic(n=200, right=0.75, seed=4)
    pred = proba.argmax(1)
    p, r, f, _ = precision_recall_fscore_support(y, pred, labels=[0, 1, 2], zero_division=0)
    scores = class_scores(weighted_confusion(y, pred, np.ones((1, len(y))), 3))
    np.testing.assert_allclose(scores["precision"][0], p)
    np.testing.assert_allclose(scores["recall"][0], r)
    np.testing.assert_allclose(scores["f1"][0], f)
    ci = per_class_intervals(CLASSES[y], proba, CLASSES, n_boot=300, seed=0)
    for i, c in enumerate(CLASSES):
        for key, point in (("precision", p[i]), ("recall", r[i]), ("f1", f[i])):
            lo, hi = ci[c][key]
            assert lo <= point <= hi and hi - lo < 0.4, (c, key)
    assert per_class_intervals(CLASSES[y], proba, CLASSES, n_boot=0) == {}


def test_run_study_per_class_against_sklearn():
    out = run_study(fake_study(), fake_data(20), ["good", "noise"], runner_factory=FakeRunner)
    good = out.results["pipelines"]["good"]
    pred = out.predictions["good"]
    p, r, f, s = precision_recall_fscore_support(pred["label"], pred["pred"], labels=list("abc"), zero_division=0)
    for i, c in enumerate("abc"):
        row = good["per_class"][c]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx((p[i], r[i], f[i], s[i]))
        assert set(good["per_class_ci95"][c]) == {"precision", "recall", "f1"}


# ---- calibration -----------------------------------------------------------------------------------

def test_brier_and_ece_against_hand_computed_values():
    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.85, 0.15]])
    # Brier: (2*.2^2 + 2*.3^2 + 2*.6^2 + 2*.15^2) / 4 = (.08 + .18 + .72 + .045) / 4
    assert brier_score(y, proba) == pytest.approx(0.25625)
    assert brier_score(y, proba) == pytest.approx(2 * brier_score_loss(y, proba[:, 1]))
    # ECE: bin .8 holds 0.8 and 0.85 (both right): 2/4 * |1 - .825|; bin .7: 1/4 * |1 - .7|;
    # bin .6 holds the wrong 0.6: 1/4 * |0 - .6|
    assert expected_calibration_error(y, proba) == pytest.approx(0.5 * 0.175 + 0.25 * 0.3 + 0.25 * 0.6)
    bins = reliability_bins(y, proba)
    assert bins["count"] == [0, 0, 0, 0, 0, 0, 1, 1, 2, 0]
    assert bins["confidence"][8] == pytest.approx(0.825) and bins["accuracy"][6] == 0.0
    perfect = np.eye(3)[[0, 1, 2, 1]]
    assert brier_score(np.array([0, 1, 2, 1]), perfect) == 0.0
    assert expected_calibration_error(np.array([0, 1, 2, 1]), perfect) == 0.0
    # weights = repeated samples
    w = np.array([[2.0, 0.0, 1.0, 1.0]])
    rep = np.array([0, 0, 2, 3])
    wc = weighted_calibration(y, proba, w)
    assert wc["brier"][0] == pytest.approx(brier_score(y[rep], proba[rep]))
    assert wc["ece"][0] == pytest.approx(expected_calibration_error(y[rep], proba[rep]))
    summary = calibration_summary(y, proba, n_boot=100)
    assert summary["brier"] == pytest.approx(0.25625) and set(summary["ci95"]) == {"brier", "ece"}


# ---- in run_study --------------------------------------------------------------------------------

def test_run_study_paired_section_marks_the_leaderboard_and_covers_the_test_set():
    study = parse_study("fake", {"dataset": {"loader": "table"}, "test": {"pattern": "?02?.png"},
                                 "evaluation": {"folds": 3, "seed": 0, "bootstrap": 100},
                                 "pipelines": {"good": {"classifier": {"plugin": "logreg"}},
                                               "noise": {"classifier": {"plugin": "logreg"}}}}, "<test>")
    out = run_study(study, fake_data(30, patients=4), runner_factory=FakeRunner)
    r = out.results
    cv = r["paired"]["cv"]
    assert cv["best"] == "good" and cv["grouped"] and cv["not_worse_than_best"] == ["good"]
    pair = cv["pairs"][0]
    assert (pair["a"], pair["b"], pair["n"]) == ("good", "noise", 59)  # good could not prepare b001
    assert pair["significant"] and pair["ci95"]["accuracy"][0] > 0
    board = {row["pipeline"]: row for row in r["leaderboard"]}
    assert board["good"]["not_worse_than_best"] and not board["noise"]["not_worse_than_best"]
    assert board["noise"]["p_vs_best"] == pair["p_holm"]
    assert board["good"]["brier"] == r["pipelines"]["good"]["calibration"]["brier"]
    test = r["paired"]["test"]["pairs"][0]
    assert test["n"] == 30 and test["mcnemar"]["a_only"] + test["mcnemar"]["b_only"] > 0
    assert "calibration" in r["pipelines"]["good"]["test"]
