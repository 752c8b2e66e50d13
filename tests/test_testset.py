"""External test sets: the study's `test` table, and CV on development rows only with test figures beside."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from medfuse.cli import main
from medfuse.errors import DataError, StudyError
from medfuse.evaluation import run_study
from medfuse.host import get_host
from medfuse.metrics import METRICS
from medfuse.study import check_plugins, load_studies, parse_study
from medfuse.synthetic import write_dataset
from medfuse.testset import match_pattern
from test_evaluation import FakeRunner, fake_data

BASE = """
[studies.toy]
dataset = { loader = "folder", params = { path = "images" } }
%s
blocks.colour = { plugin = "colour" }
pipelines.p = { blocks = ["colour"], classifier = { plugin = "logreg" } }
"""


def _load(tmp_path, extra: str):
    path = tmp_path / "study.toml"
    path.write_text(textwrap.dedent(BASE % extra))
    study = load_studies(path)["toy"]
    check_plugins(study, get_host())
    return path, study


# ---- parsing ------------------------------------------------------------------------------------

def test_test_spec_parses_pattern_and_loader(tmp_path):
    _, s = _load(tmp_path, 'test = { pattern = "val_*" }')
    assert s.test.pattern == "val_*" and s.test.loader is None
    _, s = _load(tmp_path, 'test = { loader = "folder", params = { path = "external" } }')
    assert s.test.loader == "folder" and s.test.params == {"path": "external"} and s.test.pattern is None
    _, s = _load(tmp_path, "")
    assert s.test is None and s.evaluation.shortcuts and s.evaluation.shortcut_margin == 0.05


@pytest.mark.parametrize(("extra", "key", "message"), [
    ('test = { pattern = "val_*", loader = "folder" }', "studies.toy.test", "exactly one of `pattern`"),
    ("test = {}", "studies.toy.test", "exactly one of `pattern`"),
    ('test = { patern = "val_*" }', "studies.toy.test.patern", "did you mean 'pattern'"),
    ('test = { pattern = "" }', "studies.toy.test.pattern", "empty pattern"),
    ('test = { pattern = 3 }', "studies.toy.test.pattern", "expected a string"),
    ('test = { pattern = "val_*", params = { path = "x" } }', "studies.toy.test.params", "take"),
    ('test = "val_*"', "studies.toy.test", 'expected a table like { pattern = "val_*" }'),
    ('test = { loader = "foldr" }', "studies.toy.test.plugin", "did you mean 'folder'"),
    ('test = { loader = "folder", params = { pth = "x" } }', "studies.toy.test.params", "pth"),
    ('test = { pattern = "val_*" }\nevaluation = { holdout = 0.2 }', "evaluation.holdout", "drop one"),
    ("evaluation = { shortcut_margin = 1.5 }", "evaluation.shortcut_margin", "between 0 and 1"),
])
def test_bad_test_specs_name_file_key_and_fix(tmp_path, extra, key, message):
    with pytest.raises(StudyError) as info:
        _load(tmp_path, extra)
    text = str(info.value)
    assert str(tmp_path / "study.toml") in text and key in text and message in text, text


def test_pattern_matches_file_name_or_path_end():
    samples = pd.DataFrame({"id": ["t1", "v1", "v2", "x"],
                            "path": ["/d/normal/train_1.png", "/d/normal/val_1.png", "/d/pneu/val_2.png", None]})
    assert match_pattern(samples, "val_*").tolist() == [False, True, True, False]
    assert match_pattern(samples, "normal/val_*").tolist() == [False, True, False, False]
    assert match_pattern(samples, "x").tolist() == [False, False, False, True]  # no file: the id


# ---- the run loop (fake engine) -----------------------------------------------------------------

def _study(test: dict | None, **ev):
    table = {"dataset": {"loader": "table"}, "evaluation": {"folds": 3, "seed": 0, "bootstrap": 100} | ev,
             "pipelines": {"good": {"classifier": {"plugin": "logreg"}}}}
    if test is not None:
        table["test"] = test
    return parse_study("fake", table, "<test>")


def test_pattern_test_set_is_kept_out_of_cv_and_scored_after():
    data = fake_data(30)  # ids a000..a029, b..., c...; paths <class>/<id>.png
    FakeRunner.log = {}
    out = run_study(_study({"pattern": "?02?.png"}), data, runner_factory=lambda s, p: FakeRunner(s, p, ("b021", "a001")))
    r = out.results
    test_ids = {f"{c}02{i}" for c in "abc" for i in range(10)}
    good = r["pipelines"]["good"]
    # CV saw development rows only: folds, fits and predictions never hold a test row
    assert r["data"]["n_selected"] == 60 and sum(r["splits"]["fold_sizes"]) == 60
    assert not set(out.predictions["good"]["id"]) & test_ids
    *cv_fits, final = FakeRunner.log["good"]
    assert len(cv_fits) == 3 and all(not f["train_ids"] & test_ids for f in cv_fits)
    assert final["train_ids"] == {i for i in data.samples["id"] if i not in test_ids} - {"a001"}
    # test figures beside CV, with intervals and the gap; the failed test image is counted apart
    t = good["test"]
    assert t["n"] == 29 and t["n_failed"] == 1 and t["failed"][0]["id"] == "b021"
    assert good["n_failed"] == 1 and good["failed"][0]["id"] == "a001"
    assert set(t["metrics"]) == set(METRICS) and set(t["ci95"]) == set(METRICS)
    for m in METRICS:
        assert t["gap"][m] == pytest.approx(t["metrics"][m] - good["metrics"][m])
    row = r["leaderboard"][0]
    assert row["test_accuracy"] == t["metrics"]["accuracy"] and row["gap_accuracy"] == t["gap"]["accuracy"]
    assert r["data"]["test"]["n_selected"] == 30 and r["splits"]["holdout"] == 30
    assert set(out.test_predictions["good"]["id"]) == test_ids - {"b021"}
    assert r["splits"]["leakage"]["ok"]


def test_test_duplicates_of_development_are_dropped_and_reported():
    data = fake_data(20)
    s = data.samples
    s.loc[s["id"] == "a015", "sha1"] = s.loc[s["id"] == "a003", "sha1"].iloc[0]  # a test image = a dev image
    out = run_study(_study({"pattern": "?01?.png"}), data, runner_factory=FakeRunner)
    t = out.results["data"]["test"]
    assert t["n_loaded"] == 30 and t["duplicates_of_development"] == 1 and t["n_selected"] == 29
    assert t["duplicate_examples"] == ["a015 = a003"]
    assert "a015" not in set(out.test_predictions["good"]["id"])


def test_loader_test_set_classes_and_ids():
    dev = fake_data(20, seed=0)
    ext = fake_data(8, seed=5)
    ext.samples["sha1"] = "ext-" + ext.samples["sha1"]
    out = run_study(_study({"loader": "table"}), dev, runner_factory=FakeRunner, test_data=ext)
    ids = set(out.test_predictions["good"]["id"])
    assert len(ids) == 24 and all(i.startswith("test:") for i in ids)
    assert out.results["pipelines"]["good"]["test"]["n"] == 24
    wrong = fake_data(5, classes=("a", "z"))
    with pytest.raises(DataError, match=r"classes \['z'\] are not among the development classes"):
        run_study(_study({"loader": "table"}), dev, runner_factory=FakeRunner, test_data=wrong)
    with pytest.raises(StudyError, match="test.pattern.*matched none"):
        run_study(_study({"pattern": "val_*"}), dev, runner_factory=FakeRunner)


# ---- end to end: compare with real plugins --------------------------------------------------------

STUDY = """
[studies.tiny]
dataset = { loader = "folder", params = { path = "images", masks = "masks" } }
test = { pattern = "*_000[0-3].png" }
evaluation = { folds = 3, seed = 0, bootstrap = 50 }
blocks.morphology = { plugin = "morphology" }
pipelines.shape = { mask = "dataset", blocks = ["morphology"], classifier = { plugin = "logreg" } }
"""


def test_compare_reports_cv_and_test_side_by_side(tmp_path):
    root = write_dataset(tmp_path / "data", n_per_class=12, size=32, seed=0)
    names = sorted(p.name for p in (root / "images").rglob("*.png"))
    assert any(n.endswith("_0000.png") for n in names), names[:3]
    study = tmp_path / "tiny.toml"
    study.write_text(STUDY)
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["compare", str(study), "--data", str(root), "--out", str(out), "--no-cache", "-q"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    p = res["pipelines"]["shape"]
    assert res["data"]["test"]["n_selected"] == 12 and res["data"]["n_selected"] == 24
    assert p["n_evaluated"] == 24 and p["test"]["n"] == 12
    assert p["test"]["gap"]["accuracy"] == pytest.approx(p["test"]["metrics"]["accuracy"] - p["metrics"]["accuracy"])
    pred = pd.read_csv(out / "predictions" / "shape.csv")
    assert not pred["id"].str.match(r".*_000[0-3]$").any() and len(pred) == 24
    assert len(pd.read_csv(out / "predictions" / "test" / "shape.csv")) == 12
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for text in (md, html):
        assert "CV vs external test set" in text and "Shortcut baselines" in text and "gap (test - CV)" in text
    assert "shortcut baselines" in r.output and "gap" in r.output
    assert np.isfinite(res["shortcuts"]["baselines"]["intensity"]["test"]["metrics"]["accuracy"])


@pytest.mark.slow
def test_cxr_pneumonia_classical_reports_val_test_set(data_root, tmp_path):
    """Registry study on real PneumoniaMNIST files: CV on train_* only, val_* scored as the test set."""
    if not (data_root / "cxr_pneumonia").is_dir():
        pytest.skip("cxr_pneumonia not in the data root")
    out = tmp_path / "run"
    r = CliRunner(env={"COLUMNS": "200"}).invoke(
        main, ["compare", "cxr-pneumonia", "--data", str(data_root), "--out", str(out), "--pipelines", "classical",
               "--max-per-class", "40", "--folds", "3", "--bootstrap", "100", "--no-cache", "-q"],
        catch_exceptions=False)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["test"] == "pattern 'val_*' over the dataset"
    t = res["data"]["test"]
    assert t["n_selected"] == 80 and t["class_counts"] == {"normal": 40, "pneumonia": 40}
    p = res["pipelines"]["classical"]
    assert p["n_evaluated"] == 80 and p["test"]["n"] + p["test"]["n_failed"] == 80
    assert 0.5 < p["test"]["metrics"]["accuracy"] <= 1 and len(p["test"]["ci95"]["accuracy"]) == 2
    pred = pd.read_csv(out / "predictions" / "classical.csv")
    assert pred["id"].str.startswith("train_").all()
    assert res["shortcuts"]["status"] == "ok" and "intensity" in res["shortcuts"]["baselines"]
    assert "test Accuracy" in r.output and "CV vs external test set" in (out / "report.md").read_text()
