"""Scoring on a Dask cluster (joblib's Dask backend) gives exactly the local run's output."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from conftest import after_each_part
from medfuse.scoring import ScoringError, score
from test_bundle import make_bundle, write_images

TESTS = Path(__file__).resolve().parent

distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed (pip install 'medfuse[dask]')")
dask = pytest.importorskip("dask")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as c:
        yield c


def test_dask_equals_local(cluster, tmp_path):
    folder = tmp_path / "imgs"
    write_images(folder / "x", n=9)
    (folder / "x" / "bad.png").write_bytes(b"PNG?")
    b = make_bundle(tmp_path / "bundle")
    local = score(b, folder, tmp_path / "local.parquet", chunk_size=4, progress=False)
    before = cluster.scheduler.transition_counter
    remote = score(b, folder, tmp_path / "dask.parquet", chunk_size=4, progress=False, backend="dask",
                   scheduler=cluster.scheduler_address, jobs=-1)
    assert cluster.scheduler.transition_counter > before  # the chunks really ran on the cluster
    assert (remote.n_scored, remote.n_failed) == (local.n_scored, local.n_failed) == (9, 1)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "local.parquet"), pd.read_parquet(tmp_path / "dask.parquet"))
    before = cluster.scheduler.transition_counter
    score(b, folder, tmp_path / "dask1.parquet", chunk_size=4, progress=False, backend="dask",
          scheduler=cluster.scheduler_address, jobs=1)
    assert cluster.scheduler.transition_counter > before  # jobs=1 too runs on the cluster, not here
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "local.parquet"), pd.read_parquet(tmp_path / "dask1.parquet"))


def test_dask_worker_processes_run_onnxruntime_like_local_jobs(tmp_path):
    """Dask worker processes load bundles with the same onnxruntime threads as loky workers and
    ``jobs=1`` do, so a bundle whose output depends on that setting scores identically everywhere.

    Runs in a fresh interpreter, as ``medfuse score`` does.
    """
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        import distributed, pandas as pd
        from medfuse.scoring import score
        from test_bundle import make_bundle, write_images

        if __name__ == "__main__":
            tmp = Path({str(tmp_path)!r})
            write_images(tmp / "imgs", n=6)
            b = make_bundle(tmp / "bundle", threads_probe=True)
            score(b, tmp / "imgs", tmp / "local.parquet", chunk_size=2, progress=False, jobs=1)
            with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, protocol="tcp",
                                          host="127.0.0.1", dashboard_address=":0") as procs:
                score(b, tmp / "imgs", tmp / "dask.parquet", chunk_size=2, progress=False, backend="dask",
                      scheduler=procs.scheduler_address, jobs=-1)
    """))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "local.parquet"), pd.read_parquet(tmp_path / "dask.parquet"),
                                  check_exact=True)


def test_dask_needs_a_reachable_scheduler(tmp_path):
    b = make_bundle(tmp_path / "bundle")
    write_images(tmp_path / "imgs", n=1)
    with pytest.raises(ScoringError, match="needs --scheduler"):
        score(b, tmp_path / "imgs", tmp_path / "o.csv", backend="dask", progress=False)
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(ScoringError, match="cannot reach the Dask scheduler"):
        score(b, tmp_path / "imgs", tmp_path / "o.csv", backend="dask", scheduler="tcp://127.0.0.1:9", progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_and_repeats_no_chunk(tmp_path, monkeypatch):
    """A real ``dask scheduler`` and two ``dask worker`` processes (one thread each, no nanny);
    the worker running a chunk is SIGKILLed after the first chunk is in: its chunks run again on
    the other worker, and the output equals the local run, every input exactly once."""
    dask_cli = Path(sys.executable).with_name("dask")
    if not dask_cli.exists():
        pytest.skip(f"no `dask` command beside {sys.executable}")
    folder = tmp_path / "imgs"
    write_images(folder, n=24, size=8)
    b = make_bundle(tmp_path / "bundle", delay=0.05)  # 0.15 s per chunk of 3
    local = tmp_path / "local.parquet"
    score(b, folder, local, chunk_size=3, progress=False)
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([str(dask_cli), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], **quiet)]
    try:
        procs += [subprocess.Popen([str(dask_cli), "worker", address, "--nworkers", "1", "--nthreads", "1",
                                    "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"], **quiet)
                  for _ in range(2)]
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            pids = client.run(os.getpid)  # worker address -> pid
            killed: list[int] = []

            def kill_a_busy_worker(done: int) -> None:
                if killed:
                    return
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(pids[busy[0]])

            out = tmp_path / "dask.parquet"
            after_each_part(monkeypatch, kill_a_busy_worker)
            summary = score(b, folder, out, chunk_size=3, progress=False, scheduler=address,
                            jobs=-1)  # --scheduler alone: Dask
            assert killed and killed[0] in {p.pid for p in procs[1:]}
            assert summary.n_scored == 24 and summary.n_chunks == 8
            assert len(client.scheduler_info(n_workers=-1)["workers"]) == 1  # the killed one is gone
        got, want = pd.read_parquet(out), pd.read_parquet(local)
        assert got["path"].tolist() == sorted(str(p) for p in folder.glob("*.png"))  # each once, in order
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
