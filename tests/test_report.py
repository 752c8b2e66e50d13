"""The report folder: results.json, report.md, a self-contained report.html and its figures."""

from __future__ import annotations

import base64
import json
import math
import re

import numpy as np
import pytest
from medfuse.evaluation import run_study
from medfuse.report import make_figures, render_html, to_jsonable, write_report
from test_evaluation import FakeRunner, fake_data, fake_study

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def result():
    return run_study(fake_study(holdout=0.2), fake_data(20, patients=5, duplicates=2), runner_factory=FakeRunner)


def test_to_jsonable_handles_numpy_and_nan():
    out = to_jsonable({"a": np.float32(0.5), "b": [np.int64(3), float("nan")], "c": np.array([1.0, np.inf]),
                       1: np.bool_(True)})
    assert out == {"a": 0.5, "b": [3, None], "c": [1.0, None], "1": True}
    json.dumps(out, allow_nan=False)


def test_report_folder(result, tmp_path):
    paths = write_report(result, tmp_path / "rep")
    rep = tmp_path / "rep"
    results = json.loads(paths["json"].read_text())
    assert results["pipelines"]["good"]["status"] == "ok"
    assert results["pipelines"]["broken"]["status"] == "failed"
    assert results["data"]["duplicates_removed"] == 2 and results["splits"]["leakage"]["ok"]
    # every number is JSON (no NaN tokens); predictions written per pipeline that ran
    assert "NaN" not in paths["json"].read_text()
    assert sorted(p.name for p in (rep / "predictions").iterdir()) == ["good.csv", "noise.csv"]
    figures = sorted(p.name for p in (rep / "figures").iterdir())
    for name in ("leaderboard.png", "good-confusion.png", "good-roc.png", "good-pca.png", "good-top-features.png",
                 "good-holdout-confusion.png"):
        assert name in figures
    for f in (rep / "figures").iterdir():
        assert f.read_bytes().startswith(PNG)

    page = paths["html"].read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    # self-contained: every image inline, nothing fetched from elsewhere
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == len(figures)
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(base64.b64decode(s.split(",", 1)[1]).startswith(PNG) for s in srcs)
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert "classifier exploded" in page and "Leaderboard" in page and "nowhere" in page
    good = results["pipelines"]["good"]
    assert f"{good['metrics']['accuracy']:.3f} [{good['ci95']['accuracy'][0]:.3f}" in page

    md = paths["md"].read_text()
    assert "| 1 | good |" in md and "| 2 | noise |" in md
    assert "![good confusion](figures/good-confusion.png)" in md
    assert "**broken**: `RuntimeError: classifier exploded`" in md
    assert "Exact duplicates removed before splitting: 2" in md


def test_report_rebuilds_from_results_json(result, tmp_path):
    paths = write_report(result, tmp_path / "a")
    again = write_report(json.loads(paths["json"].read_text()), tmp_path / "b")
    assert again["html"].read_text() == paths["html"].read_text()
    assert again["md"].read_text() == paths["md"].read_text()


def test_a_broken_figure_does_not_lose_the_report(result):
    results = to_jsonable(result.results)
    results["pipelines"]["good"]["roc"] = {"a": {"fpr": [0, 1], "tpr": [0], "auc": 0.5}}  # mismatched lengths
    figures = make_figures(results)
    assert "good-roc.png" not in figures and "good-confusion.png" in figures
    assert any("good-roc.png" in w for w in results["report_warnings"])
    assert "Report warnings" in render_html(results, figures)


def test_pca_figure_only_for_blocks_with_pca(result):
    results = to_jsonable(result.results)
    for block in results["pipelines"]["good"]["blocks"].values():
        block["explained_variance_ratio"] = [None for _ in block["explained_variance_ratio"]]
    assert "good-pca.png" not in make_figures(results)
    assert math.isclose(sum(result.results["pipelines"]["good"]["blocks"]["x"]["explained_variance_ratio"][0]), 1.0)


def test_report_has_paired_per_class_and_calibration_sections(result, tmp_path):
    paths = write_report(result, tmp_path / "rep")
    results = json.loads(paths["json"].read_text())
    pair = results["paired"]["cv"]["pairs"][0]
    # 47 shared samples, 15 vs 7 discordant: not significant (the fixture is small)
    assert (pair["a"], pair["b"], pair["n"]) == ("good", "noise", 47) and not pair["significant"]
    assert set(pair["ci95"]) == {"accuracy", "f1_macro", "roc_auc_ovr"} and 0 <= pair["p_holm"] <= 1
    assert results["paired"]["cv"]["not_worse_than_best"] == ["good", "noise"]
    good = results["pipelines"]["good"]
    assert set(good["per_class_ci95"]["a"]) == {"precision", "recall", "f1"}
    assert {"brier", "ece", "bins", "ci95"} <= set(good["calibration"])
    assert [r["not_worse_than_best"] for r in results["leaderboard"]] == [True, True]
    assert (tmp_path / "rep" / "figures" / "calibration.png").read_bytes().startswith(PNG)

    md = paths["md"].read_text()
    page = paths["html"].read_text()
    diff = f"+{pair['diff']['accuracy']:.3f} [{pair['ci95']['accuracy'][0]:.3f}, {pair['ci95']['accuracy'][1]:.3f}]"
    ece = f"{good['calibration']['ece']:.3f} [{good['calibration']['ci95']['ece'][0]:.3f}"
    prec = good["per_class"]["a"]["precision"], good["per_class_ci95"]["a"]["precision"]
    per_class = f"{prec[0]:.3f} [{prec[1][0]:.3f}, {prec[1][1]:.3f}]"
    for text in (md, page):
        assert "Paired comparisons" in text and "McNemar" in text and "Holm" in text and "good - noise" in text
        assert diff in text and "Calibration" in text and "top-label, 10 equal-width" in text and ece in text
        assert per_class in text and f"≈ best (p {pair['p_holm']:.3f})" in text
    assert "| 2 | noise |" in md and "![calibration](figures/calibration.png)" in md
    assert 'alt="reliability diagram"' in page


def test_report_shows_per_part_reliability(result, tmp_path):
    """combine = "select" pipelines carry their learnt weights per fold; the report tabulates them."""
    import copy

    res = copy.deepcopy(result)
    part = {"oof_accuracy": 0.9, "oof_log_loss": 0.3, "gain_log_loss": None, "p_value": None}
    fit = {"method": "select", "weights": [1.7, 0.0],
           "parts": [part | {"name": "texture", "weight": 1.7, "kept": True},
                     part | {"name": "hog", "weight": 0.0, "kept": False, "oof_accuracy": 0.6}]}
    res.results["pipelines"]["good"]["reliability"] = [fit | {"fold": 1}, fit | {"fold": 2}]
    paths = write_report(res, tmp_path / "rep")
    md = paths["md"].read_text()
    assert "Per-part reliability" in md
    assert "| texture | 1.700, 1.700 | 0.900 | 2/2 |" in md and "| hog | 0.000, 0.000 | 0.600 | 0/2 |" in md
    assert "Per-part reliability" in paths["html"].read_text()
    assert json.loads(paths["json"].read_text())["pipelines"]["good"]["reliability"][0]["weights"] == [1.7, 0.0]
