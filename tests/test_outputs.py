"""Output safety for unattended runs: one run per output (lock), unwritable outputs fail before any
work, full disks leave no partial file, Parquet scores say which bundle made them, Dask options.

A read-only location is simulated with a path *under a regular file* (``blocker/out.csv``): no
folder can be created there, which stops root too (``chmod`` does not: these tests may run as root).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import after_each_part
from medfuse.cli import main
from medfuse.outputs import OutputBusyError, OutputError, atomic_output, lock_path, output_lock, write_text
from medfuse.scoring import ScoringError, score
from test_bundle import make_bundle, write_images

FULL = OSError(errno.ENOSPC, "No space left on device")
TINY_STUDY = """
[studies.tiny]
dataset = { loader = "folder", params = { path = "images", masks = "masks" } }
evaluation = { folds = 2, seed = 0, bootstrap = 10 }
blocks.morphology = { plugin = "morphology" }
[studies.tiny.pipelines]
shape = { mask = "dataset", blocks = ["morphology"], classifier = { plugin = "logreg" } }
"""


@pytest.fixture
def imgs(tmp_path) -> Path:
    write_images(tmp_path / "imgs", n=8, size=8)
    return tmp_path / "imgs"


@pytest.fixture
def blocker(tmp_path) -> Path:
    """A regular file: any path under it is unwritable, also for root."""
    p = tmp_path / "blocker"
    p.write_text("not a folder")
    return p


def _no_work(*args, **kwargs):
    raise AssertionError("work started before the output location was checked")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _failed_cleanly(res) -> bool:
    """Exit code 1 with a message, no traceback."""
    return res.exit_code == 1 and (res.exception is None or isinstance(res.exception, SystemExit))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix in (".tmp", ".lock"))


# ---- the helpers ------------------------------------------------------------------------------------

def test_atomic_output_keeps_the_old_file_on_failure_and_says_disk_full(tmp_path):
    target = write_text(tmp_path / "t.csv", "old\n")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    with pytest.raises(OutputError, match=r"disk full while writing .*t\.csv; nothing was written"), \
            atomic_output(target) as tmp:
        tmp.write_text("half")
        raise FULL
    assert target.read_text() == "old\n" and _leftovers(tmp_path) == []


def test_second_lock_names_the_holder_and_a_dead_holder_is_taken_over(tmp_path):
    out = tmp_path / "o.csv"
    with output_lock(out, command="first"):
        info = json.loads(lock_path(out).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["command"] == "first"
        with pytest.raises(OutputBusyError) as busy, output_lock(out):
            pass
        msg = str(busy.value)
        assert f"pid {os.getpid()}" in msg and socket.gethostname() in msg and info["started"] in msg
        assert "delete" in msg and str(lock_path(out)) in msg
    assert not lock_path(out).exists()  # released
    notes: list[str] = []
    lock_path(out).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "started": "x"}))
    with output_lock(out, note=notes.append) as lock:
        assert lock.taken_over is not None and json.loads(lock_path(out).read_text())["pid"] == os.getpid()
    assert notes and "no longer running" in notes[0] and not lock_path(out).exists()


# ---- score: concurrent runs, stale locks, metadata -------------------------------------------------

def test_second_score_on_the_same_out_refuses_and_the_first_is_intact(imgs, tmp_path, monkeypatch):
    """The hostile-tester case: a second run on the same --out while the first runs. It used to
    delete the first's parts; the first then assembled the other run's rows and exited 0."""
    b = make_bundle(tmp_path / "bundle")
    other = tmp_path / "other"
    write_images(other / "x", n=5, size=8)
    reference = tmp_path / "ref.parquet"
    score(b, imgs, reference, chunk_size=2, progress=False)
    out = tmp_path / "scores.parquet"
    parts = out.with_name(out.name + ".parts")
    seen: dict[str, object] = {}

    def second_run(done: int) -> None:
        if done == 1:
            before = sorted(p.name for p in parts.iterdir())
            seen["res"] = CliRunner().invoke(main, ["score", str(b), str(other), "--out", str(out), "-q"])
            seen["parts_kept"] = sorted(p.name for p in parts.iterdir()) == before

    after_each_part(monkeypatch, second_run)
    score(b, imgs, out, chunk_size=2, progress=False)
    res = seen["res"]
    assert _failed_cleanly(res), res.output
    assert f"in use by another run: pid {os.getpid()} on host {socket.gethostname()}" in res.output
    assert "started" in res.output and seen["parts_kept"]
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(reference))
    assert not lock_path(out).exists()


def test_score_takes_over_a_dead_runs_lock_but_not_another_hosts(imgs, tmp_path):
    b = make_bundle(tmp_path / "bundle")
    out = tmp_path / "s.csv"
    lock_path(out).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(),
                                          "started": "2020-01-01T00:00:00", "command": "medfuse score (killed)"}))
    res = CliRunner().invoke(main, ["score", str(b), str(imgs), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert "took over" in res.output and "no longer running" in res.output
    assert len(pd.read_csv(out)) == 8 and not lock_path(out).exists()
    lock_path(out).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": "2020-01-01T00:00:00"}))
    res = CliRunner().invoke(main, ["score", str(b), str(imgs), "--out", str(out), "-q"])
    assert res.exit_code == 1 and "on host elsewhere.example" in res.output and "another host" in res.output
    assert lock_path(out).exists()


def test_parquet_scores_record_the_bundle_and_version_csv_nothing_extra(imgs, tmp_path):
    import pyarrow.parquet as pq
    from medfuse import __version__
    from medfuse.bundle import read_manifest

    b = make_bundle(tmp_path / "bundle")
    score(b, imgs, tmp_path / "s.parquet", chunk_size=3, progress=False)
    meta = pq.read_schema(tmp_path / "s.parquet").metadata
    assert meta[b"medfuse.bundle_manifest_sha256"].decode() == read_manifest(b)[1]
    assert meta[b"medfuse.version"].decode() == __version__
    assert Path(meta[b"medfuse.bundle"].decode()) == Path(b).resolve()
    score(b, imgs, tmp_path / "s.csv", chunk_size=3, progress=False)
    assert list(pd.read_csv(tmp_path / "s.csv").columns) == list(pd.read_parquet(tmp_path / "s.parquet").columns)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "imgs", "s.csv", "s.parquet"]  # no sidecar


# ---- unwritable outputs fail before any work ----------------------------------------------------------

def _assert_refused_early(res, started: float, folder: Path) -> None:
    assert _failed_cleanly(res), (res.output, res.exception)
    assert "cannot write" in res.output and str(folder) in res.output, res.output
    assert time.perf_counter() - started < 20


def test_score_and_extract_refuse_an_unwritable_out_before_any_work(imgs, blocker, tmp_path, monkeypatch):
    import medfuse.bundle
    import medfuse.extract

    b = make_bundle(tmp_path / "bundle")
    monkeypatch.setattr(medfuse.bundle, "verify_bundle", _no_work)
    monkeypatch.setattr(medfuse.extract, "extract_columns", _no_work)
    t0 = time.perf_counter()
    res = CliRunner().invoke(main, ["score", str(b), str(imgs), "--out", str(blocker / "s.csv"), "-q"])
    _assert_refused_early(res, t0, blocker)
    t0 = time.perf_counter()
    res = CliRunner().invoke(main, ["extract", str(imgs), "--out", str(blocker / "f.csv"), "--no-progress"])
    _assert_refused_early(res, t0, blocker)


def test_train_compare_and_data_refuse_an_unwritable_out_before_any_work(imgs, blocker, tmp_path, monkeypatch):
    import medfuse.cli.data_cmd
    import medfuse.evaluation
    import medfuse.training
    from medfuse.synthetic import write_dataset

    study = tmp_path / "tiny.toml"
    study.write_text(TINY_STUDY)

    monkeypatch.setattr(medfuse.training, "train_bundle", _no_work)
    monkeypatch.setattr(medfuse.evaluation, "run_study", _no_work)
    monkeypatch.setattr(medfuse.cli.data_cmd, "detect", _no_work)
    runner = CliRunner()
    t0 = time.perf_counter()
    res = runner.invoke(main, ["train", str(study), "--pipeline", "shape", "--data", str(tmp_path),
                               "--out", str(blocker / "bundle")])
    _assert_refused_early(res, t0, blocker)
    root = tmp_path / "demo-data"
    write_dataset(root, n_per_class=6, size=32, seed=0)
    t0 = time.perf_counter()
    res = runner.invoke(main, ["compare", str(study), "--data", str(root), "--out", str(blocker / "run"), "-q"])
    _assert_refused_early(res, t0, blocker)
    t0 = time.perf_counter()
    res = runner.invoke(main, ["data", str(imgs), "--json", str(blocker / "report.json")])
    _assert_refused_early(res, t0, blocker)


# ---- a full disk leaves no partial file ------------------------------------------------------------

def test_extract_on_a_full_disk_leaves_no_partial_csv(imgs, tmp_path, monkeypatch):
    import medfuse.extract

    real = medfuse.extract._write_csv  # the CSV writer of feature tables (no pandas)

    def fills_the_disk(columns, path, sep):
        real({k: v[:2] for k, v in columns.items()}, path, sep)  # a truncated table, as on a real full disk
        raise FULL

    monkeypatch.setattr(medfuse.extract, "_write_csv", fills_the_disk)
    out = tmp_path / "res" / "feat.csv"
    res = CliRunner().invoke(main, ["extract", str(imgs), "--blocks", "morphology", "--out", str(out),
                                    "--no-progress"])
    assert _failed_cleanly(res), res.output
    assert f"disk full while writing {out}; nothing was written" in res.output
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_score_on_a_full_disk_leaves_no_partial_output(imgs, tmp_path, monkeypatch, suffix):
    import pyarrow.parquet as pq

    b = make_bundle(tmp_path / "bundle")
    real_csv, real_write = pd.DataFrame.to_csv, pq.ParquetWriter.write_table

    def csv_full(self, path=None, *args, **kwargs):
        real_csv(self.head(1), path, *args, **kwargs)
        raise FULL

    def parquet_full(self, table, *args, **kwargs):
        real_write(self, table.slice(0, 1), *args, **kwargs)
        if b"medfuse.version" in (self.schema.metadata or {}):  # the chunks fit; the final output fills the disk
            raise FULL

    monkeypatch.setattr(pd.DataFrame, "to_csv", csv_full)
    monkeypatch.setattr(pq.ParquetWriter, "write_table", parquet_full)
    out = tmp_path / "res" / f"s{suffix}"
    res = CliRunner().invoke(main, ["score", str(b), str(imgs), "--out", str(out), "-q", "--chunk-size", "4"])
    assert res.exit_code == 1 and f"disk full while writing {out}; nothing was written" in res.output, res.output
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name + ".parts"]  # parts kept for --resume
    with pytest.raises(OutputError, match="disk full"):
        score(b, imgs, out, chunk_size=4, progress=False, resume=True)
    assert not out.exists() and not lock_path(out).exists()


# ---- Dask options -----------------------------------------------------------------------------------

def test_malformed_scheduler_is_a_clear_error_before_any_work(imgs, tmp_path):
    pytest.importorskip("distributed")
    b = make_bundle(tmp_path / "bundle")
    for bad in ("tcp://host:notaport", "http://10.0.0.5:8786", "localhost", "tcp://127.0.0.1:99999"):
        with pytest.raises(ScoringError, match="is not a Dask scheduler address"):
            score(b, imgs, tmp_path / "o.csv", scheduler=bad, progress=False)
        res = CliRunner().invoke(main, ["score", str(b), str(imgs), "--out", str(tmp_path / "o.csv"),
                                        "--scheduler", bad, "-q"])
        assert _failed_cleanly(res) and "expected tcp://HOST:PORT" in res.output, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "imgs"]


def test_scheduler_alone_implies_dask_and_contradicts_loky(imgs, tmp_path):
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    b = make_bundle(tmp_path / "bundle")
    args = ["score", str(b), str(imgs), "--out", str(tmp_path / "o.csv"), "-q", "--scheduler", "tcp://127.0.0.1:9"]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in res.output, res.output
    res = CliRunner().invoke(main, [*args, "--backend", "loky"])
    assert res.exit_code == 1 and "is for the Dask backend" in res.output
    assert not (tmp_path / "o.csv").exists()
