"""Batch scoring: inputs, output format, error rows, parallel = serial, resume after kill -9."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import after_each_part
from medfuse.cli import main
from medfuse.errors import DataError
from medfuse.scoring import ScoringError, list_inputs, score
from test_bundle import make_bundle, write_images

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "imgs"
    write_images(folder / "a", n=7)
    write_images(folder / "b", n=6)
    (folder / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    (folder / "notes.txt").write_text("not an image, not listed")
    return folder


def test_list_inputs_folder_glob_csv(images, tmp_path):
    listed = list_inputs(images)
    assert len(listed) == 14 and listed["path"].is_monotonic_increasing
    assert list_inputs(str(images / "a" / "*.png"))["path"].tolist() == sorted(str(p) for p in (images / "a").glob("*.png"))
    csv = tmp_path / "m.csv"
    pd.DataFrame({"path": ["imgs/a/img000.png", str(images / "b" / "img001.png")], "mask_path": ["x.png", None],
                  "HGB": [12.0, 9.5]}).to_csv(csv, index=False)
    m = list_inputs(csv)
    assert m["path"].tolist()[0] == "imgs/a/img000.png"
    assert m["read_path"].tolist()[0] == str(tmp_path / "imgs/a/img000.png")
    assert m["mask_path"].tolist() == [str(tmp_path / "x.png"), None]
    assert m["HGB"].tolist() == [12.0, 9.5]
    with pytest.raises(DataError, match="needs a 'path' column"):
        (tmp_path / "bad.csv").write_text("file,label\na.png,x\n")
        list_inputs(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="glob matches no files"):
        list_inputs(str(tmp_path / "*.nothing"))
    with pytest.raises(DataError, match="no such folder"):
        list_inputs(tmp_path / "absent")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_score_writes_one_row_per_input(images, tmp_path, suffix):
    b = make_bundle(tmp_path / "bundle")
    out = tmp_path / f"scores{suffix}"
    summary = score(b, images, out, chunk_size=4, progress=False)
    df = pd.read_csv(out, keep_default_na=False) if suffix == ".csv" else pd.read_parquet(out)
    assert list(df.columns) == ["path", "prediction", "proba.dark", "proba.light", "warning", "error"]
    assert df["path"].tolist() == list_inputs(images)["path"].tolist()
    assert (summary.n_inputs, summary.n_scored, summary.n_failed, summary.n_chunks) == (14, 13, 1, 4)
    bad = df[df["path"].str.endswith("broken.jpg")]
    assert len(bad) == 1 and re.search("(corrupt|truncated) JPEG", bad["error"].iloc[0])
    assert "JPEG" in summary.describe() and "broken.jpg" in summary.describe()
    assert not out.with_name(out.name + ".parts").exists()


def test_parallel_equals_serial(images, tmp_path):
    b = make_bundle(tmp_path / "bundle")
    score(b, images, tmp_path / "one.parquet", jobs=1, chunk_size=3, progress=False)
    score(b, images, tmp_path / "two.parquet", jobs=2, chunk_size=3, progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet"))


def test_jobs_1_and_2_run_onnxruntime_with_the_same_threads(images, tmp_path):
    """Every scoring mode loads the bundle with SCORING_THREADS onnxruntime threads; the probe
    bundle's probabilities encode the thread setting it was loaded with."""
    from medfuse.scoring import SCORING_THREADS

    b = make_bundle(tmp_path / "bundle", threads_probe=True)
    score(b, images, tmp_path / "one.parquet", jobs=1, chunk_size=3, progress=False)
    score(b, images, tmp_path / "two.parquet", jobs=2, chunk_size=3, progress=False)
    one, two = pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet")
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    plain = score(make_bundle(tmp_path / "plain"), images, tmp_path / "plain.parquet", chunk_size=3, progress=False)
    assert plain.n_scored == 13
    expected = pd.read_parquet(tmp_path / "plain.parquet")["proba.light"] / (1 + 2 * SCORING_THREADS)
    np.testing.assert_array_equal(one["proba.light"].to_numpy(), expected.to_numpy())


def test_resume_after_interruption(images, tmp_path, monkeypatch):
    b = make_bundle(tmp_path / "bundle")
    out = tmp_path / "scores.parquet"

    def stop_after_two(done):
        if done == 2:
            raise KeyboardInterrupt

    after_each_part(monkeypatch, stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        score(b, images, out, chunk_size=3, progress=False)
    assert not out.exists()
    assert len(list(out.with_name(out.name + ".parts").glob("part-*.parquet"))) == 2
    monkeypatch.undo()
    summary = score(b, images, out, chunk_size=3, resume=True, progress=False)
    after_each_part(monkeypatch, stop_after_two)
    assert (summary.chunks_resumed, summary.n_chunks, summary.resumed_rows) == (2, 5, 6)
    df = pd.read_parquet(out)
    assert df["path"].tolist() == list_inputs(images)["path"].tolist()
    with pytest.raises(KeyboardInterrupt):
        score(b, images, out, chunk_size=3, progress=False)
    write_images(images / "c", n=1)
    with pytest.raises(ScoringError, match="list of inputs differs"):
        score(b, images, out, chunk_size=3, resume=True, progress=False)


def test_cli_exit_codes_and_summary(images, tmp_path):
    b = make_bundle(tmp_path / "bundle")
    runner = CliRunner()
    res = runner.invoke(main, ["score", str(b), str(images), "--out", str(tmp_path / "s.csv"), "--jobs", "1"])
    assert res.exit_code == 0, res.output
    assert "scored 13 of 14" in res.output and "1 failed" in res.output
    assert "img/s" in res.output  # the progress bar (rich, on stderr) with its rate column
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"")
    res = runner.invoke(main, ["score", str(b), str(bad), "--out", str(tmp_path / "t.csv"), "-q"])
    assert res.exit_code == 1
    assert "no input could be scored" in res.output and "empty file" in res.output
    res = runner.invoke(main, ["score", str(b), str(bad), "--out", str(tmp_path / "t.txt"), "-q"])
    assert res.exit_code == 1 and "must end in .csv or .parquet" in res.output


@pytest.mark.slow
def test_kill_9_then_resume_loses_and_repeats_nothing(tmp_path):
    """A real `medfuse score --jobs 2` process is killed with SIGKILL mid-run (its workers exit
    too), then rerun with --resume."""
    psutil = pytest.importorskip("psutil")
    folder = tmp_path / "imgs"
    write_images(folder, n=60, size=8)
    b = make_bundle(tmp_path / "bundle", delay=0.02)  # ~1.2 s of scoring
    out = tmp_path / "scores.csv"
    parts = out.with_name(out.name + ".parts")
    cmd = [sys.executable, "-m", "medfuse", "score", str(b), str(folder), "--out", str(out), "--chunk-size", "5", "-q",
           "--jobs", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(parts.glob("part-*.parquet"))) < 3:
        time.sleep(0.02)
    workers = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"worker processes outlived the killed scorer: {alive}"
    done = len(list(parts.glob("part-*.parquet")))
    assert proc.returncode == -signal.SIGKILL and 3 <= done < 12 and not out.exists()
    res = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"resumed: {done} of 12 chunk(s)" in res.stdout
    assert "took over" in res.stderr and "no longer running" in res.stderr  # the killed run's lock
    assert not out.with_name(out.name + ".lock").exists()
    df = pd.read_csv(out, keep_default_na=False)
    expected = sorted(str(p) for p in folder.glob("*.png"))
    assert df["path"].tolist() == expected  # every input exactly once, in order
    assert (df["error"] == "").all() and np.isfinite(df["proba.light"]).all()
