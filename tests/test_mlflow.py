"""`compare --mlflow URI`: the run logged to an MLflow store (skipped when MLflow is not installed),
and what is logged, computed without MLflow."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner
from medfuse import mlflowlog
from medfuse.cli import main
from medfuse.synthetic import write_dataset

STUDY = """
[studies.tiny]
dataset = { loader = "folder", params = { path = "images", masks = "masks", table = "table.csv", group_column = "patient" } }
evaluation = { folds = 3, seed = 0, bootstrap = 50, shortcuts = false }
blocks.morphology = { plugin = "morphology" }
blocks.colour = { plugin = "colour", params = { bins = 8 } }
[studies.tiny.pipelines]
shape = { mask = "dataset", blocks = ["morphology"], classifier = { plugin = "logreg" } }
both = { mask = "dataset", blocks = ["morphology", "colour"], classifier = { plugin = "logreg" } }
"""

RESULTS = {
    "study": {"name": "s"}, "data": {"n_selected": 10},
    "settings": {"metrics": ["accuracy"], "folds": 5, "run_folds": 1, "seed": 0, "bootstrap": 100,
                 "pipelines": ["a b", "c"], "overrides": {"texture": {"levels": 16}}, "data_root": "/d"},
    "leaderboard": [{"pipeline": "a b", "accuracy": 0.9, "accuracy_ci95": [0.8, 1.0], "brier": 0.1,
                     "brier_ci95": [0.05, 0.2], "ece": float("nan"), "ece_ci95": None},
                    {"pipeline": "c", "accuracy": 0.7, "accuracy_ci95": [0.5, 0.85]}],
    "paired": {"cv": {"pairs": [{"a": "a b", "b": "c", "diff": {"accuracy": 0.2}, "ci95": {"accuracy": [0.05, 0.35]},
                                 "p_holm": 0.03}]}},
}


def test_what_is_logged():
    m = mlflowlog.run_metrics(RESULTS)
    assert m["a b.accuracy"] == 0.9 and m["a b.accuracy.ci95_low"] == 0.8 and m["a b.accuracy.ci95_high"] == 1.0
    assert m["a b.brier.ci95_high"] == 0.2 and "a b.ece" not in m  # NaN is not logged
    assert m["paired.a b-vs-c.diff_accuracy"] == 0.2 and m["paired.a b-vs-c.diff_accuracy.ci95_low"] == 0.05
    assert m["paired.a b-vs-c.p_holm"] == 0.03
    p = mlflowlog.run_params(RESULTS)
    assert p["study"] == "s" and p["override.texture.levels"] == "16" and p["pipelines"] == "a b,c"


def test_missing_mlflow_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(mlflowlog.importlib.util, "find_spec", lambda name: None)
    out = tmp_path / "report"
    r = CliRunner().invoke(main, ["compare", "demo", "--data", str(tmp_path), "--out", str(out),
                                  "--mlflow", str(tmp_path / "mlruns")])
    assert r.exit_code == 1 and "MLflow is not installed" in r.output and "medfuse[mlflow]" in r.output
    assert not out.exists()


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed (medfuse[mlflow])")
def test_compare_logs_to_a_local_mlflow_folder(tmp_path):
    from mlflow.tracking import MlflowClient

    root = tmp_path / "data"
    write_dataset(root, n_per_class=6, size=32, seed=0)
    (tmp_path / "tiny.toml").write_text(STUDY)
    store = tmp_path / "mlruns"
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "tiny.toml"), "--data", str(root), "--no-cache", "-q",
                                  "--out", str(tmp_path / "report"), "--mlflow", str(store)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    client = MlflowClient(Path(store).resolve().as_uri())
    exp = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.params["study"] == "tiny" and run.data.params["folds"] == "3"
    assert {"shape.accuracy", "shape.accuracy.ci95_low", "both.f1_macro.ci95_high"} <= set(run.data.metrics)
    assert any(k.startswith("paired.") and k.endswith(".p_holm") for k in run.data.metrics)
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "report.md", "results.json", "figures"} <= files
    assert client.list_artifacts(run.info.run_id, "figures")
