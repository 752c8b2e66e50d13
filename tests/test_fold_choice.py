"""Chosen folds (``only_folds`` / ``--only-folds``): the same seeded split, only other folds evaluated (issue #18)."""

from __future__ import annotations

import numpy as np
import pytest
from medfuse.errors import StudyError
from medfuse.evaluation import run_study
from medfuse.splits import cv_text, fold_choice, make_splits
from test_evaluation import FakeRunner, fake_data, fake_study


def test_only_fold_2_scores_fold_2s_rows_of_the_same_split():
    data = fake_data(20)
    full = make_splits(data.samples, 5, seed=0)
    out = run_study(fake_study(), data, ["good"], runner_factory=FakeRunner, folds=5, only_folds="2")
    res, pred = out.results, out.predictions["good"]
    fold2 = set(full.ids[full.fold_of == 1]) - {"b001"}  # b001's preparation fails in FakeRunner
    fold1 = set(full.ids[full.fold_of == 0])
    assert set(pred["id"]) == fold2 and not fold2 & fold1
    assert set(pred["fold"]) == {2} and [f["fold"] for f in res["pipelines"]["good"]["folds"]] == [2]
    (fit,) = FakeRunner.log["good"]
    assert fit["train_ids"] == set(full.ids[full.fold_of != 1]) - {"b001"}  # fold 1 trains, fold 2 is scored
    assert res["splits"]["fold_sizes"] == [int((full.fold_of == k).sum()) for k in range(5)]
    assert res["settings"]["fold_numbers"] == [2] and res["settings"]["run_folds"] == 1
    assert cv_text(res["settings"]) == "fold 2 of 5 (one 80/20 split)"


def test_fold_selection_keeps_the_assignment_and_words_the_folds():
    data = fake_data(20)
    full = make_splits(data.samples, 5, seed=0)
    part = make_splits(data.samples, 5, seed=0, only_folds="2-5")
    assert np.array_equal(part.fold_of, full.fold_of) and part.run == (1, 2, 3, 4)
    assert [len(t) for _, t in part.folds()] == [int((full.fold_of == k).sum()) for k in (1, 2, 3, 4)]
    assert cv_text(part.to_dict()) == "folds 2-5 of 5"
    assert cv_text(make_splits(data.samples, 5, only_folds=[1, 3, 4]).to_dict()) == "folds 1, 3-4 of 5"
    assert cv_text(make_splits(data.samples, 5, only_folds="1-5").to_dict()) == "5-fold CV"
    assert cv_text({"folds": 5, "run_folds": 1}) == "fold 1 of 5 (one 80/20 split)"  # results before fold_numbers


@pytest.mark.parametrize(("run_folds", "only_folds", "message"), [
    (None, "6", r"only_folds \(--only-folds\): fold 6 is out of range: fold numbers run 1-5"),
    (None, "0,2", r"fold 0 is out of range: fold numbers run 1-5"),
    (None, "2-x", r"expected fold numbers such as 2, 2-5 or 1,3-5; got '2-x'"),
    (None, "4-2", r"range '4-2' runs backwards; write 2-4"),
    (1, "2", r"run_folds / only_folds: give one"),
])
def test_bad_fold_choice_names_the_option_and_the_range(run_folds, only_folds, message):
    with pytest.raises(StudyError, match=message):
        fold_choice(5, run_folds, only_folds)


def test_compare_rejects_a_fold_out_of_range_before_any_work(tmp_path):
    from click.testing import CliRunner
    from medfuse.cli import main

    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["compare", "pbc-cells", "--data", str(tmp_path), "--folds", "5",
                                       "--only-folds", "7", "--out", str(out)])
    assert result.exit_code != 0 and "--only-folds" in result.output and "1-5" in result.output
    assert not out.exists()


def test_results_section_says_when_its_folds_are_not_the_plans():
    from test_run_studies import load_bench, results_with_test

    bench = load_bench()
    results = results_with_test()  # fold 1 of 5, as run before the plan named fold 2
    old = bench.study_section(results, bench.Run("cxr-pneumonia", folds=5, only_folds="2", why="fold 2"), 60.0)
    assert ("Settings: these results evaluated fold 1 of 5 (one 80/20 split), not the folds the plan asks for now; "
            "re-run `python bench/run_studies.py --only cxr-pneumonia`.") in old
    results["splits"]["fold_numbers"] = [2]
    new = bench.study_section(results, bench.Run("cxr-pneumonia", folds=5, only_folds="2", why="fold 2"), 60.0)
    assert "Settings: fold 2." in new and any("fold 2 of 5 (one 80/20 split)" in line for line in new)


def test_mlflow_params_name_the_folds_scored():
    import copy

    from medfuse import mlflowlog
    from test_mlflow import RESULTS

    results = copy.deepcopy(RESULTS)
    results["settings"]["fold_numbers"] = [2, 3]
    assert mlflowlog.run_params(results)["fold_numbers"] == "2,3"
