"""bench/run_studies.py: its plan names real studies and pipelines, and its table formatting works."""

from __future__ import annotations

import importlib.util
import itertools
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
    assert ("| pbc-cells | fused | – | 0.97 [0.96, 0.98] † | – | – / 0.96 [0.95, 0.97] | – | 5957 samples, StratifiedKFold, "
            "fold 1 of 5 (one 80/20 split) | accuracy 0.95 (goal) |") in out
    assert "| deep |" not in out
    part["lines"] += ["", "Paired comparisons, every pair (out-of-fold predictions; paired bootstrap, McNemar's exact test, "
                      "Holm across all 1 pairs). Not significantly worse than the best (fused): fused, deep.", ""]
    assert "| – / 0.96 [0.95, 0.97] | fused, deep | 5957 samples" in bench.with_summary(readme, [part])


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


def results_with_test() -> dict:
    """A results.json of a study with an external test set and shortcut baselines (one flagged)."""
    ci = {"accuracy": [0.8, 0.9], "f1_macro": [0.7, 0.9], "roc_auc_ovr": [0.9, 1.0]}
    timing = {"fit_seconds_mean": 2.0, "materialize_seconds": 1.5, "predict_seconds_total": 0.5}
    return {
        "study": {"name": "cxr-pneumonia", "description": "chest X-rays", "reported": {}},
        "settings": {"max_per_class": 0},
        "data": {"n_selected": 100, "class_counts": {"normal": 40, "pneumonia": 60}, "duplicates_removed": 0,
                 "capped": {}, "report": None,
                 "test": {"source": "pattern 'val_*'", "n_selected": 50, "class_counts": {"normal": 20, "pneumonia": 30},
                          "duplicates_of_development": 2, "duplicates_removed": 0}},
        "splits": {"method": "StratifiedKFold", "folds": 5, "run_folds": 1, "grouped": False, "leakage": {"ok": True}},
        "leaderboard": [{"pipeline": "fused"}, {"pipeline": "classical"}],
        "pipelines": {
            "fused": {"status": "ok", "n_evaluated": 100, "timing": timing, "ci95": ci,
                      "metrics": {"accuracy": 0.95, "f1_macro": 0.9, "roc_auc_ovr": 0.99},
                      "test": {"metrics": {"accuracy": 0.84, "f1_macro": 0.8, "roc_auc_ovr": 0.93}, "n": 50, "n_fit": 100,
                               "ci95": {"accuracy": [0.75, 0.9], "f1_macro": [0.7, 0.88], "roc_auc_ovr": None},
                               "gap": {"accuracy": -0.11, "f1_macro": -0.1, "roc_auc_ovr": -0.06}}},
            "classical": {"status": "ok", "n_evaluated": 100, "timing": timing, "ci95": ci,
                          "metrics": {"accuracy": 0.9, "f1_macro": 0.85, "roc_auc_ovr": 0.95},
                          "test": {"status": "failed", "n": 0, "error": "no test sample could be prepared"}},
        },
        "shortcuts": {"status": "ok", "model": "logistic regression", "chance": 0.6, "chance_test": 0.6,
                      "margin": 0.05, "separable": 0.95, "flagged": True,
                      "warnings": ["test: the 'intensity' shortcut baseline (accuracy 0.820) is within 0.05 of the "
                                   "best pipeline 'fused' (0.840)"],
                      "baselines": {
                          "size": {"status": "ok", "metrics": {"accuracy": 0.6}, "ci95": {"accuracy": [0.5, 0.7]},
                                   "test": {"metrics": {"accuracy": 0.6}, "ci95": {"accuracy": [0.45, 0.75]}}},
                          "intensity": {"status": "ok", "metrics": {"accuracy": 0.7}, "ci95": {"accuracy": [0.6, 0.8]},
                                        "test": {"metrics": {"accuracy": 0.82}, "ci95": {"accuracy": [0.7, 0.9]}}},
                          "file": {"status": "skipped", "reason": "no descriptor could be computed"}}},
    }


def test_section_shows_each_pipeline_against_the_best_with_paired_intervals():
    bench = load_bench()
    results = results_with_test()
    pair = {"n": 100, "diff": {"accuracy": 0.05, "f1_macro": 0.04, "roc_auc_ovr": 0.01},
            "ci95": {"accuracy": [0.01, 0.09], "f1_macro": [0.0, 0.08], "roc_auc_ovr": [-0.01, 0.03]},
            "mcnemar": {"a_only": 7, "b_only": 2, "p": 0.18}, "p_holm": 0.36, "significant": False}
    results["paired"] = {"cv": {"status": "ok", "best": "fused", "not_worse_than_best": ["fused", "classical"],
                                "n_boot": 200, "alpha": 0.05,
                                "pairs": [pair | {"a": "fused", "b": "classical"}, pair | {"a": "classical", "b": "x"}]}}
    lines = bench.study_section(results, next(r for r in bench.PLAN if r.study == "cxr-pneumonia"), 60.0)
    text = "\n".join(lines)
    assert "Paired comparisons, every pair (out-of-fold predictions" in text
    assert "Not significantly worse than the best (fused): fused, classical." in text
    assert "| fused - classical | 100 |" in text and "| classical - x |" in text
    assert "external test set;" not in text  # no test section without results["paired"]["test"]
    many = [pair | {"a": a, "b": b} for a, b in itertools.combinations(["fused", "p1", "p2", "p3", "p4", "p5"], 2)]
    results["paired"]["cv"]["pairs"] = many
    text = "\n".join(bench.paired_lines(results))
    assert "each against the best, fused" in text and "Holm across all 15 pairs" in text
    assert text.count("| fused - ") == 5 and "| p1 - p2 |" not in text


def test_tested_study_shows_test_beside_cv_with_the_gap():
    bench = load_bench()
    rows = bench.study_rows(results_with_test())
    assert rows[0] == ("| fused | 0.840 [0.750, 0.900] | 0.950 [0.800, 0.900] | 0.800 [0.700, 0.880] "
                       "| 0.900 [0.700, 0.900] | 0.930 | 0.990 [0.900, 1.000] | -0.110 / -0.100 / -0.060 | 2.0 | 50 |")
    assert rows[1].startswith("| classical | – | 0.900 [0.800, 0.900] | – |")
    assert "test failed: no test sample could be prepared" in rows[1]
    assert all(r.count("|") == bench.TEST_HEAD.count("|") for r in rows)


def test_section_says_test_set_tuning_and_shortcuts():
    bench = load_bench()
    run = next(r for r in bench.PLAN if r.study == "cxr-pneumonia")
    lines = bench.study_section(results_with_test(), run, 300.0)
    text = "\n".join(lines)
    assert bench.TEST_HEAD in lines
    assert ("External test set: 50 samples (normal 20, pneumonia 30), pattern 'val_*'; kept out of CV and of every "
            "fit on it: each pipeline is fitted once on all 100 development samples") in text
    assert "2 duplicates of development images dropped" in text
    assert "The largest class is 60.0% of the development samples and 60.0% of the test set" not in text
    results = results_with_test()
    results["data"]["test"]["class_counts"] = {"normal": 10, "pneumonia": 40}
    assert ("The largest class is 60.0% of the development samples and 80.0% of the test set: where these differ, "
            "accuracy is not comparable") in "\n".join(bench.study_section(results, run, 300.0))
    assert "- the classical blocks' input normalisation" in text and "bench/xray_shift.py" in text
    assert "`val_*` files: never used for fitting or for a choice" in text
    assert "| shortcut baseline | test accuracy [95% CI] | CV accuracy [95% CI] |" in lines
    assert "| intensity | 0.820 [0.700, 0.900] | 0.700 [0.600, 0.800] |" in lines
    assert any(ln.startswith("| file | skipped: no descriptor") for ln in lines)
    assert "- test: the 'intensity' shortcut baseline (accuracy 0.820) is within 0.05 of the best pipeline 'fused' " \
           "(0.840)." in lines
    assert "chance (majority class) 0.600 on CV, 0.600 on the test set" in text


def test_tuned_paragraph_comes_from_the_registry_selection_tables(tmp_path):
    """Each study's *Tuned* paragraph is rendered from registry.toml's [selection.STUDY]: what was chosen, on
    what data, and which figures no choice saw; a choice on the reported fold or the same images marks it †."""
    bench = load_bench()
    for run in bench.PLAN:
        assert bench.selection(run.study) is not None, f"registry.toml has no [selection.{run.study}]"
    for study in ("pbc-cells", "all-subtypes"):
        text = "\n".join(bench.tuned_lines(study))
        assert f"Tuned (registry.toml `[selection.{study}]`)" in text and "TTA" in text
        assert " — *same-images*: on a split of the same images that overlaps the CV folds" in text
        reported = {"pbc-cells": "folds 2-5, the folds reported here", "all-subtypes": "folds 2-5, the folds reported here"}
        assert reported[study] in text and bench.optimistic(study)  # fold 1 chose, later folds report
    assert "whole-image input" in "\n".join(bench.tuned_lines("all-subtypes"))
    assert "*nested*" in "\n".join(bench.tuned_lines("pbc-cells"))  # the classical blocks: inner splits
    assert bench.optimistic("all-subtypes-blocked") and bench.optimistic("cxr-pneumonia")  # the same images
    assert not bench.optimistic("anemia-cbc") and "— *fixed*: set when" in "\n".join(bench.tuned_lines("anemia-cbc"))
    assert bench.tuned_lines("no-such-study")[0].startswith("Tuned: not recorded for this study (add a "
                                                            "`[selection.no-such-study]`")
    bad = tmp_path / "registry.toml"
    bad.write_text('[selection.x]\nchoices = [{ what = "lr", on = "fold1" }]\nuntouched = "all"\n')
    with pytest.raises(ValueError, match=r"\[selection.x\] choices\[0\].on = 'fold1': expected one of fixed, nested"):
        bench.selection("x", bad)
    bad.write_text('[selection.y]\nchoices = [{ what = "lr", on = "nested" }]\n')
    with pytest.raises(ValueError, match=r"\[selection.y\]: `untouched` must say"):
        bench.selection("y", bad)


def test_study_section_states_the_shortcut_flag_rule():
    bench = load_bench()
    results = results_with_test()
    results["shortcuts"] = {"status": "ok", "chance": 0.6, "flagged": False, "warnings": [], "margin": 0.05,
                            "separable": 0.95, "baselines": {}}
    lines = bench.study_section(results, bench.PLAN[0], 60.0)
    assert "No shortcut warning: no baseline comes within 0.05 accuracy of the best pipeline or reaches 0.95." in lines
    del results["shortcuts"]
    assert any(ln.startswith("Shortcut baselines: not in these results") for ln in
               bench.study_section(results, bench.PLAN[0], 60.0))


def test_readme_leads_with_the_external_test_figure():
    bench = load_bench()
    run = next(r for r in bench.PLAN if r.study == "cxr-pneumonia")
    tested = {"lines": bench.study_section(results_with_test(), run, 300.0)}
    out = bench.with_summary("<!-- results:start -->\n<!-- results:end -->\n", [tested])
    head = next(ln for ln in out.splitlines() if ln.startswith("| study"))
    assert head.index("external test") < head.index("CV accuracy")
    assert ("| cxr-pneumonia | fused | 0.840 [0.750, 0.900] | 0.950 [0.800, 0.900] † | -0.110 "
            "| 0.800 [0.700, 0.880] / 0.900 [0.700, 0.900] | – | 100 samples, StratifiedKFold, fold 1 of 5 "
            "(one 80/20 split); test: 50 samples | – |") in out


def test_a_partial_run_keeps_the_other_sections_of_results_md(tmp_path):
    """--only X with no section.json of the other parts at hand: their sections come from RESULTS.md as it is."""
    bench = load_bench()
    target = tmp_path / "RESULTS.md"
    target.write_text("# Results\n\n*Written by (runs of 2026-11-22, 2026-11-23; medfuse 0.1.0); 30 minutes in all.*\n\n"
                      "Intro. Minutes per part: anemia-cbc 0.1; pbc-cells 19.8; wbc-segmentation 4.3.\n\n"
                      "### anemia-cbc\n\ntext a\n\nReported by the original study: –.\n\n| pipeline | x |\n|---|---|\n"
                      "| all-xgboost | 0.997 |\n\n### pbc-cells\n\nTuned: an old line.\n\nReported by the original study: "
                      "0.95.\n\n| pipeline | accuracy [95% CI] |\n|---|---|\n| fused | 0.983 [0.975, 0.991] |\n\n"
                      "### wbc-segmentation\n\n| method | dice |\n|---|---|\n| unet | 0.9 |\n")
    (tmp_path / "anemia-pediatric").mkdir()
    (tmp_path / "anemia-pediatric" / "section.json").write_text(json.dumps(
        {"name": "anemia-pediatric", "seconds": 60.0, "date": "2026-11-29 06:00", "settings": "budget",
         "lines": ["### anemia-pediatric", "", "fresh", ""]}))
    bench.write_results(tmp_path, target)
    text = target.read_text()
    assert "text a" in text and "| fused | 0.983 [0.975, 0.991] |" in text and "| unet | 0.9 |" in text and "fresh" in text
    assert text.index("### anemia-cbc") < text.index("### anemia-pediatric") < text.index("### pbc-cells")
    assert "runs of 2026-11-22, 2026-11-23, 2026-11-29" in text
    assert "anemia-cbc 0.1; anemia-pediatric 1.0; pbc-cells 19.8; wbc-segmentation 4.3" in text
    assert "Tuned: an old line." not in text and "\n".join(bench.tuned_lines("pbc-cells")) in text
    assert text.count("Shortcut baselines: not run for this section") == 2  # the two kept studies, not segmentation
    assert "Not run yet: anerbc-cbc" in text
    assert "### wbc-segmentation\n\n| method |" in text  # segmentation sections get no study notes
    bench.write_results(tmp_path, target)
    assert target.read_text() == text  # rewriting from the kept sections changes nothing
    readme = bench.with_summary("<!-- results:start -->\n<!-- results:end -->\n", bench.kept_parts(target).values())
    assert "| pbc-cells | fused | – | 0.983 [0.975, 0.991] † | – |" in readme


def test_hand_written_sections_below_the_marker_survive_a_rewrite(tmp_path):
    bench = load_bench()
    target = tmp_path / "RESULTS.md"
    target.write_text("# Results\n\nMinutes per part: pbc-cells 1.0.\n\n### pbc-cells\n\nReported by the original study: 0.95."
                      "\n\n| pipeline | x |\n\nShortcut baselines: none.\n\n"
                      f"{bench.HAND_WRITTEN}\n\n## Finding cells\n\n| data | precision |\n| bccd | 0.92 |\n")
    bench.write_results(tmp_path, target)
    text = target.read_text()
    assert "## Finding cells\n\n| data | precision |\n| bccd | 0.92 |" in text
    assert text.index("### pbc-cells") < text.index(bench.HAND_WRITTEN) < text.index("## Finding cells")
    assert "## Finding cells" not in "".join(bench.kept_parts(target)["pbc-cells"]["lines"])
    bench.write_results(tmp_path, target)
    assert target.read_text() == text


def test_help_says_how_to_reproduce():
    bench = load_bench()
    for usage in ("python bench/run_studies.py --only cxr-pneumonia", "--render", "--full", "external test set",
                  "--profile gpu", "RESULTS-NAME.md"):
        assert usage in bench.__doc__


def test_cnn_ablation_tables_form_one_section_after_the_studies(tmp_path, monkeypatch):
    """bench/results/ablation-*.md (bench/ablate_cnn.py) become RESULTS.md's last section, once, on every rewrite."""
    bench = load_bench()
    repo = tmp_path / "repo"
    (repo / "bench" / "results").mkdir(parents=True)
    (repo / "bench" / "results" / "ablation-pbc-cells.md").write_text(
        "#### CNN ablation: pbc-cells\n\n| step | val accuracy |\n|---|---|\n| baseline | 0.9 |\n")
    monkeypatch.setattr(bench, "REPO", repo)
    target = tmp_path / "RESULTS.md"
    target.write_text("# Results\n\n*Written (runs of 2026-11-22; medfuse 0.1.0); 1 minutes in all.*\n\n"
                      "Minutes per part: wbc-segmentation 4.3.\n\n### wbc-segmentation\n\n| method | dice |\n"
                      "|---|---|\n| unet | 0.9 |\n")
    out = tmp_path / "out"
    out.mkdir()
    bench.write_results(out, target)
    text = target.read_text()
    assert text.count("## CNN recipe ablation") == 1 and text.count("| baseline | 0.9 |") == 1
    assert text.index("| unet | 0.9 |") < text.index("## CNN recipe ablation") < text.index("#### CNN ablation: pbc-cells")
    assert "inside the training part of each study's CV fold 1" in text
    bench.write_results(out, target)  # the kept segmentation part must not swallow the ablation section
    assert target.read_text() == text


def test_section_lists_the_weights_select_pipelines_learnt():
    bench = load_bench()
    run = next(r for r in bench.PLAN if r.study == "cxr-pneumonia")
    results = results_with_test()
    part = {"oof_accuracy": 0.9, "oof_log_loss": 0.3, "gain_log_loss": None, "p_value": None}
    fit = {"weights": [1.5, 0.0], "parts": [part | {"name": "classical", "weight": 1.5, "kept": True},
                                           part | {"name": "deep", "weight": 0.0, "kept": False}]}
    results["pipelines"]["fused"]["reliability"] = [fit | {"fold": 1}]
    results["pipelines"]["fused"]["test"]["reliability"] = fit
    lines = bench.study_section(results, run, 300.0)
    assert "- fused: fold 1: classical 1.50, deep 0.00; test fit: classical 1.50, deep 0.00" in lines
    assert not any("combine = " in ln for ln in bench.study_section(results_with_test(), run, 300.0))


LEAKY = """
[studies.leaky]
dataset = { loader = "folder", params = { path = "images" } }
evaluation = { folds = 3, seed = 0, bootstrap = 50 }
blocks.hog = { plugin = "hog", params = { size = 24, pixels_per_cell = 6 } }
pipelines.hog = { blocks = ["hog"], classifier = { plugin = "logreg" } }
"""


def leaky_study(tmp_path, monkeypatch, fit: bool = False, extra: str = ""):
    """Noise images whose two classes differ only in size and brightness, a study file for them (plus
    ``extra`` lines) that ``resolve_study("leaky")`` finds, and the bench module planning that study
    alone; fitting a pipeline fails unless ``fit``."""
    import medfuse.study as study_module
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for label, side, mean in (("small", 24, 90), ("large", 32, 160)):
        (root / "images" / label).mkdir(parents=True)
        for i in range(12):
            img = np.clip(rng.normal(mean, 30, (side, side)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / "images" / label / f"{label}_{i:03d}.png")
    (tmp_path / "leaky.toml").write_text(LEAKY + extra)
    real = study_module.resolve_study
    monkeypatch.setattr(study_module, "resolve_study", lambda name: real(f"{tmp_path / 'leaky.toml'}:{name}"))
    bench = load_bench()
    run = bench.Run("leaky", folds=3, bootstrap=50)
    monkeypatch.setattr(bench, "PLAN", [run])
    monkeypatch.setattr(bench, "SEGMENTATION", [])

    def no_fit(*a, **k):
        raise AssertionError("--shortcuts-only fitted a pipeline")

    if not fit:
        monkeypatch.setattr("medfuse.pipeline.PipelineRunner.fit", no_fit)
    return bench, run, root


def test_shortcuts_only_adds_baselines_to_a_kept_section_without_fitting(tmp_path, monkeypatch):
    import argparse

    bench, run, root = leaky_study(tmp_path, monkeypatch)
    target = tmp_path / "RESULTS.md"
    target.write_text("# Results\n\n*Written (runs of 2026-11-23; medfuse 0.1.0); 2 minutes in all.*\n\n"
                      "Minutes per part: leaky 2.0.\n\n### leaky\n\nReported by the original study: –.\n\n"
                      "| pipeline | accuracy [95% CI] |\n|---|---|\n| hog | 0.700 [0.500, 0.900] |\n\n"
                      "Shortcut baselines: not run for this section (kept from an earlier run).\n")
    out = tmp_path / "out"
    args = argparse.Namespace(out=out, results=target, jobs=1, quick=False, full=False)
    sc = bench.shortcuts_only(run, root, args)
    assert sc["status"] == "ok" and sc["baselines"]["intensity"]["metrics"]["accuracy"] >= 0.95
    assert sc["flagged"] and json.loads((out / "leaky" / "shortcuts.json").read_text())["flagged"]
    assert sc["added"]["n_selected"] == 24 and sc["added"]["pipelines_from"] == "its table in RESULTS.md"
    bench.write_results(out, target)
    text = target.read_text()
    assert "not run for this section" not in text and "| shortcut baseline | CV accuracy [95% CI] |" in text
    assert "**Shortcut warning** (the study is flagged):" in text and "separates the classes" in text
    assert "`python bench/run_studies.py --shortcuts-only --only leaky`" in text
    assert "| hog | 0.700 [0.500, 0.900] |" in text and "leaky 2.0" in text  # the pipelines and minutes are kept
    bench.write_results(out, target)
    assert target.read_text() == text


def test_shortcuts_only_merges_into_stored_results_on_the_same_folds(tmp_path, monkeypatch):
    import argparse

    import medfuse.study as study_module
    from medfuse.evaluation import run_study
    from medfuse.host import get_host

    bench, run, root = leaky_study(tmp_path, monkeypatch)
    study = study_module.resolve_study("leaky")
    data = get_host().create("folder", study.dataset.params, kind="loader").load(root)
    stored = run_study(study, data, [], folds=3, n_boot=50, shortcuts=False).results
    assert stored["pipelines"] == {} and stored["shortcuts"]["status"] == "off"  # [] runs no pipeline
    stored["pipelines"] = {"hog": {"status": "ok", "metrics": {"accuracy": 1.0}}}
    (tmp_path / "out" / "leaky").mkdir(parents=True)
    stored_file = tmp_path / "out" / "leaky" / "results.json"
    stored_file.write_text(json.dumps(stored))
    args = argparse.Namespace(out=tmp_path / "out", results=tmp_path / "RESULTS.md", jobs=1, quick=False, full=False)
    bench.shortcuts_only(run, root, args)
    merged = json.loads(stored_file.read_text())
    assert merged["shortcuts"]["status"] == "ok" and merged["pipelines"] == stored["pipelines"]
    assert merged["shortcuts"]["added"]["pipelines_from"] == "its stored results.json"
    stored["splits"]["fold_sizes"] = [1, 2, 3]  # another split: refused, results.json unchanged
    stored_file.write_text(json.dumps(stored))
    with pytest.raises(SystemExit, match="differ from those of"):
        bench.shortcuts_only(run, root, args)
    assert "shortcuts" in json.loads(stored_file.read_text()) and \
        json.loads(stored_file.read_text())["shortcuts"]["status"] == "off"


def test_a_profile_run_writes_its_own_folder_and_results_file_never_results_md(tmp_path, monkeypatch):
    """--profile NAME: each study declaring it runs with it applied, into runs/studies-NAME and RESULTS-NAME.md."""
    bench, _, root = leaky_study(tmp_path, monkeypatch, fit=True, extra=(
        '[studies.leaky.profiles.big]\ndescription = "coarser HOG cells"\nblocks.hog = { pixels_per_cell = 8 }\n'))
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "RESULTS.md").write_text("the CPU figures\n")
    (repo / "registry.toml").write_text("")  # no [selection.leaky] table
    (repo / "README.md").write_text("<!-- results:start -->\nrows\n<!-- results:end -->\n")
    monkeypatch.setattr(bench, "REPO", repo)
    monkeypatch.setattr(sys, "argv", ["run_studies.py", "--profile", "big", "--data", str(root), "--jobs", "1"])
    bench.main()
    results = json.loads((repo / "runs" / "studies-big" / "leaky" / "results.json").read_text())
    assert results["settings"]["profile"]["blocks"] == {"hog": {"pixels_per_cell": 8}}
    text = (repo / "RESULTS-big.md").read_text()
    assert "**Profile `big`**" in text and "### leaky" in text and "no GPU" not in text
    assert (repo / "RESULTS.md").read_text() == "the CPU figures\n"
    assert "rows" in (repo / "README.md").read_text()
    monkeypatch.setattr(sys, "argv", ["run_studies.py", "--profile", "big", "--results", str(repo / "RESULTS.md")])
    with pytest.raises(SystemExit) as info:
        bench.main()
    assert info.value.code == 2 and (repo / "RESULTS.md").read_text() == "the CPU figures\n"
