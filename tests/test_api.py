"""The notebook API (docs/api.md): medfuse.extract, medfuse.compare -> Results, medfuse.runs and
`medfuse runs`, on tiny synthetic data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import medfuse
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import write_synthetic_study
from medfuse.cli import main
from medfuse.synthetic import study_toml

REPO = Path(__file__).resolve().parents[1]

STUDY = study_toml("tiny", description="synthetic cells", folds=3, bootstrap=50, shortcuts=False, colour_pca=0.9)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    return write_synthetic_study(tmp_path_factory, STUDY)


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    root, study = tiny
    index = tmp_path_factory.mktemp("index") / "runs.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDFUSE_RUNS_INDEX", str(index))
        out = tmp_path_factory.mktemp("runs") / "tiny-api"
        res = medfuse.compare(str(study), data=root, out=out, cache=False)
        yield res, index


def test_extract_equals_the_cli_table(tiny, tmp_path):
    root, _ = tiny
    out = tmp_path / "cli.parquet"
    r = CliRunner().invoke(main, ["extract", str(root / "images"), "--blocks", "morphology,colour",
                                  "--set", "colour.bins=8", "--out", str(out), "-q"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    df = medfuse.extract(root / "images", blocks=["morphology", "colour"], params={"colour": {"bins": 8}})
    pd.testing.assert_frame_equal(df, pd.read_parquet(out))
    assert list(df.attrs["medfuse"]["blocks"]) == ["morphology", "colour"]
    assert (df["error"] == "").all() and len(df) == 18


def test_extract_names_what_is_wrong(tiny):
    root, _ = tiny
    with pytest.raises(medfuse.errors.MedfuseError, match="'texture'.*does not use"):
        medfuse.extract(root / "images", blocks=["colour"], params={"texture": {"levels": 8}})


def test_compare_returns_what_results_json_holds(run):
    res, _ = run
    on_disk = json.loads((res.out_dir / "results.json").read_text())
    assert res.results == on_disk
    board = res.leaderboard
    pd.testing.assert_frame_equal(board, pd.DataFrame(on_disk["leaderboard"]))
    for got, want in zip(board.to_dict("records"), on_disk["leaderboard"], strict=True):
        assert set(got) == set(want)
        assert all(pd.isna(got[k]) if want[k] is None else got[k] == want[k] for k in want), (got, want)
    assert list(board["pipeline"]) == [r["pipeline"] for r in on_disk["leaderboard"]]
    assert res.best == board["pipeline"].iloc[0]
    # paired: the one pair, as results.json has it
    pair = on_disk["paired"]["cv"]["pairs"][0]
    assert len(res.paired) == 1
    row = res.paired.iloc[0]
    assert (row["a"], row["b"], row["n"]) == (pair["a"], pair["b"], pair["n"])
    assert row["diff_accuracy"] == pytest.approx(pair["diff"]["accuracy"])
    assert row["p_holm"] == pytest.approx(pair["p_holm"])
    # per class: 2 pipelines x 3 classes, with intervals
    pc = res.per_class
    assert len(pc) == 6 and {"precision", "recall", "f1", "support", "f1_ci95"} <= set(pc.columns)
    assert pc.groupby("pipeline")["support"].sum().tolist() == [18, 18]
    # predictions: every pipeline's out-of-fold rows with the image path
    pred = res.predictions
    assert set(pred["pipeline"]) == {"shape", "both"} and len(pred) == 36
    assert pred["path"].map(lambda p: Path(p).is_file()).all()
    csv = pd.read_csv(res.out_dir / "predictions" / "shape.csv")
    assert "path" in csv.columns
    # the files
    assert res.report_path == res.out_dir / "report.html" and res.report_path.is_file()
    assert res.figures and all(p.is_file() for p in res.figures.values())


def test_compare_names_an_unknown_pipeline(tiny):
    root, study = tiny
    with pytest.raises(medfuse.errors.StudyError, match="no pipeline 'shap'.*did you mean 'shape'"):
        medfuse.compare(str(study), pipelines=["shap"], data=root)


def test_runs_lists_a_run_made_in_the_test(run, monkeypatch, tmp_path):
    res, index = run
    monkeypatch.setenv("MEDFUSE_RUNS_INDEX", str(index))
    monkeypatch.chdir(tmp_path)  # no runs/ folder here: the run is found through the index
    r = CliRunner().invoke(main, ["runs", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert len(rows) == 1
    row = rows[0]
    assert row["study"] == "tiny" and row["path"] == str(res.out_dir.resolve())
    assert row["best"] == res.best and row["created"] == res.results["created"]
    assert row["score"] == pytest.approx(res.leaderboard[row["metric"]].iloc[0])
    # the table form names the same run; the API gives it as a DataFrame
    r = CliRunner().invoke(main, ["runs", "--study", "tiny"], catch_exceptions=False)
    assert r.exit_code == 0 and str(res.out_dir.resolve()) in r.output and "tiny" in r.output
    assert medfuse.runs()["path"].tolist() == [str(res.out_dir.resolve())]


def test_runs_scans_a_folder_and_skips_deleted_runs(run, monkeypatch, tmp_path):
    res, _ = run
    monkeypatch.setenv("MEDFUSE_RUNS_INDEX", str(tmp_path / "index.jsonl"))
    (tmp_path / "index.jsonl").write_text(json.dumps({"out_dir": str(tmp_path / "gone")}) + "\n{torn\n")
    rows = medfuse.runs([res.out_dir.parent])
    assert rows["path"].tolist() == [str(res.out_dir.resolve())]


def test_import_medfuse_stays_light():
    code = ("import sys, medfuse; heavy = [m for m in ('pandas', 'sklearn', 'tensorflow') if m in sys.modules]; "
            "print(','.join(heavy)); assert callable(medfuse.extract) and medfuse.ImageFeatures and medfuse.compare")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": f"{REPO / 'core'}:{REPO / 'plugins'}", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == ""  # nothing heavy before first use


def test_medfuse_extract_is_still_the_module():
    from medfuse.extract import extract_table

    assert medfuse.extract.extract_table is extract_table and callable(medfuse.extract)
    assert isinstance(np.asarray([1]), np.ndarray)


def test_example_script_runs(tmp_path):
    env = {"PYTHONPATH": f"{REPO / 'core'}:{REPO / 'plugins'}", "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg",
           "MEDFUSE_RUNS_INDEX": str(tmp_path / "runs.jsonl"), "MEDFUSE_CACHE": str(tmp_path / "cache"),
           "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, str(REPO / "examples" / "notebook_api.py"), str(tmp_path / "nb")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "extract: 24 images" in out.stdout and "ImageFeatures + LogisticRegression: accuracy" in out.stdout
    assert "diff_accuracy" in out.stdout and "report:" in out.stdout
    assert (tmp_path / "nb" / "report" / "report.html").is_file()
    assert str((tmp_path / "nb" / "report").resolve()) in (tmp_path / "runs.jsonl").read_text()
