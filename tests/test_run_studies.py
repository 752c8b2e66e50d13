"""bench/run_studies.py: its plan names real studies and pipelines, and its table formatting works."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from medfuse.study import builtin_studies

BENCH = Path(__file__).resolve().parents[1] / "bench" / "run_studies.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("run_studies", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_plan_names_registry_studies_and_pipelines():
    bench = load_bench()
    studies = builtin_studies()
    seeds = {"pbc-cells", "all-subtypes", "cxr-pneumonia", "anemia-cbc", "anemia-multimodal", "anerbc-cbc"}
    assert seeds <= {run.study for run in bench.PLAN}
    for run in bench.PLAN:
        assert run.study in studies
        assert set(run.pipelines) <= set(studies[run.study].pipelines)
    assert {s.dataset for s in bench.SEGMENTATION} == {"wbc_seg", "anerbc"}


def test_rows_show_intervals_rates_and_failures():
    bench = load_bench()
    results = {
        "leaderboard": [{"pipeline": "fused"}],
        "pipelines": {
            "fused": {"status": "ok", "n_evaluated": 100,
                      "metrics": {"accuracy": 0.9, "f1_macro": 0.8, "roc_auc_ovr": 0.95},
                      "ci95": {"accuracy": [0.85, 0.95], "f1_macro": [0.7, 0.9], "roc_auc_ovr": None},
                      "timing": {"fit_seconds_mean": 2.0, "materialize_seconds": 1.5, "predict_seconds_total": 0.5}},
            "deep": {"status": "failed", "error": "DataError: no images"},
        },
    }
    rows = bench.study_rows(results)
    assert rows[0] == "| fused | 0.900 [0.850, 0.950] | 0.800 [0.700, 0.900] | 0.950 | 2.0 | 50 |"
    assert rows[1].startswith("| deep | failed: DataError: no images")


def test_readme_summary_takes_the_best_row_of_each_study():
    bench = load_bench()
    readme = "intro\n<!-- results:start -->\nOLD-ROWS\n<!-- results:end -->\nafter\n"
    part = {"lines": ["### pbc-cells", "", "5957 samples (a 1, b 2); StratifiedKFold, fold 1 of 5 (one 80/20 split); "
                      "no sample shared across folds.", "", "Reported by the original study: accuracy 0.95 (goal).", "",
                      "| pipeline | accuracy [95% CI] | macro-F1 [95% CI] | ROC AUC [95% CI] | fit s/fold | scored/s |",
                      "|---|---|---|---|---|---|", "| fused | 0.97 [0.96, 0.98] | 0.96 [0.95, 0.97] | 0.99 | 10.0 | 50 |",
                      "| deep | 0.95 [0.94, 0.96] | 0.94 [0.93, 0.95] | 0.99 | 10.0 | 50 |"]}
    out = bench.with_summary(readme, [part])
    assert "OLD-ROWS" not in out and out.startswith("intro\n") and out.endswith("<!-- results:end -->\nafter\n")
    assert ("| pbc-cells | fused | 0.97 [0.96, 0.98] | 0.96 [0.95, 0.97] | 5957 samples, StratifiedKFold, fold 1 of 5 "
            "(one 80/20 split) | accuracy 0.95 (goal) |") in out
    assert "| deep |" not in out
