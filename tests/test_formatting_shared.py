"""Model cards and MLflow logging share medfuse.util.formatting: one rounding, one missing-value mark
and one rule for what counts as missing (None, NaN, inf, not a number)."""

from __future__ import annotations

import copy

import numpy as np
from medfuse import mlflowlog
from medfuse.modelcard import render_model_card
from medfuse.util.formatting import MISSING, finite, fmt_number
from test_modelcard import MANIFEST, section


def test_finite_is_the_one_missing_rule():
    assert [finite(v) for v in (None, float("nan"), np.float32("inf"), "n/a", [1])] == [None] * 5
    assert finite(np.float32(0.5)) == 0.5 and finite(2) == 2.0
    assert finite("0.5") is None and fmt_number("0.5") == MISSING  # text is not a number
    assert fmt_number(np.float32("nan")) == MISSING and fmt_number(np.float64(0.25)) == "0.250"


def test_model_card_marks_missing_metrics_as_the_reports_do():
    m = copy.deepcopy(MANIFEST)
    m["cv_metrics"]["metrics"]["auc_macro"] = None  # NaN, saved as JSON null
    m["cv_metrics"]["metrics"]["ece"] = float("nan")
    evaluation = section(render_model_card(m), "Evaluation")
    assert "| auc_macro | – | – |" in evaluation and "| ece | – | – |" in evaluation, evaluation
    assert "| accuracy | 0.912 | [0.880, 0.940] |" in evaluation  # unchanged where present
    seg = {**MANIFEST, "kind": "segmentation",
           "cv_metrics": {"n_images": 4, "mean": {"dice": 0.8123, "iou": None}, "median": {"dice": 0.8}}}
    assert "| dice | 0.812 | 0.800 |" in render_model_card(seg)
    assert "| iou | – | – |" in render_model_card(seg)


def test_mlflow_logs_only_finite_values():
    results = {"settings": {"metrics": ["accuracy"]},
               "leaderboard": [{"pipeline": "p", "accuracy": np.float32(0.5), "accuracy_ci95": [None, "x"],
                                "brier": float("inf"), "ece": None}]}
    assert mlflowlog.run_metrics(results) == {"p.accuracy": 0.5}
