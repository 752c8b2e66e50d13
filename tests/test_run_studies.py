"""bench/run_studies.py: its plan names real studies and pipelines, and its table formatting works."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from medfuse.errors import MedfuseError
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


def load_eval_unet():
    spec = importlib.util.spec_from_file_location("eval_unet", BENCH.parent / "eval_unet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_segmentation_reuses_the_folds_of_its_study(tmp_path):
    """anerbc-segmentation scores the U-Nets of anemia-multimodal: its folds come from that study's predictions."""
    bench, eval_unet = load_bench(), load_eval_unet()
    seg = next(s for s in bench.SEGMENTATION if s.dataset == "anerbc")
    assert seg.folds_from in {run.study for run in bench.PLAN}
    csv = tmp_path / "image.csv"
    csv.write_text("id,label,fold,pred\n001_a,anemic,2,anemic\n002_h,healthy,1,healthy\n003_a,anemic,1,healthy\n")
    ids = ["anemic/001_a", "anemic/003_a", "healthy/002_h"]
    parts = eval_unet.folds_from_predictions(csv, ids)
    assert [p.tolist() for p in parts] == [[1, 2], [0]]
    with pytest.raises(MedfuseError, match="ids do not match"):
        eval_unet.folds_from_predictions(csv, ids[:2] + ["healthy/009_h"])
    tables = {"unet": pd.DataFrame({"cell_dice": [0.9]}, index=["mean"])}
    infos = {"unet": {"fit_seconds": 0.1, "predict_seconds_per_image": 0.3, "params": {"width": 8},
                      "folds_run": 2, "folds_reused": 2}}
    lines = bench.seg_section(seg, tables, infos, "the 2 folds of the anemia-multimodal study")
    assert "| unet | 0.9000 | shared | 0.30 |" in lines
    assert any("2 of the 2 U-Nets are the ones the anemia-multimodal study trained" in line for line in lines)
    assert "(the 2 folds of the anemia-multimodal study)" in lines[2]


def test_extra_parts_are_listed_but_not_counted_in_the_hour(tmp_path):
    bench = load_bench()
    extra = next(run.study for run in bench.PLAN if run.extra)
    for name, seconds in (("anemia-cbc", 600.0), (extra, 1800.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "section.json").write_text(json.dumps(
            {"name": name, "seconds": seconds, "date": "2026-11-23 06:00", "settings": "budget",
             "lines": [f"### {name}", "", "text", ""]}))
    target = tmp_path / "RESULTS.md"
    bench.write_results(tmp_path, target)
    text = target.read_text()
    assert "10 minutes in all" in text and f"{extra} 30.0 (extra, not in the hour)" in text
    assert "Over budget" not in text
