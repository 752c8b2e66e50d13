"""Benchmark: batch scoring of the PBC folder with a fused bundle (not a timed test).

Trains (or reuses) a fused bundle on a per-class subset of PBC — classical blocks (morphology,
texture, colour on an otsu_cell mask) + a CNN embedding, fused early, XGBoost head — then, in
the same run:

* scores every PBC image (or ``--n`` of them, evenly spaced) with ``--jobs 1`` and ``--jobs 2``
  (each in a fresh process, so the figures include worker start-up and bundle loading) and
  prints images/second. Both run the same code on the same 256-image chunks with the same thread
  settings (1 TensorFlow intra-/inter-op thread, 1 BLAS/OpenMP thread per process): ``--jobs 1``
  scores in the scoring process itself, ``--jobs 2`` in two loky worker processes while the
  scoring process writes the parts, so the ratio measures process parallelism alone;
* runs the naive loop (decode one image, ``predict_proba_images([image])``, repeat) on a subset,
  in a plain process with library defaults (TensorFlow may use both cores there);
* prints the peak memory of the whole process tree (scorer + workers), sampled every 0.1 s,
  for a 1,000-image subset and for the full folder (flat = streaming);
* checks that ``--jobs 1`` and ``--jobs 2`` give identical predictions.

Usage (the machine is shared: run it niced)::

    nice -n 10 .venv/bin/python bench/bench_scoring.py [--data ROOT] [--work /tmp/medfuse-bench] [--n 1500]

Targets on a 2-core machine: >= 100 images/s with 2 jobs, >= 1.7x over 1 job, >= 5x over the
naive loop, peak memory flat in the number of images.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STUDY = """
[studies.pbc-bench]
description = "PBC, fused classical + CNN embedding, XGBoost head (scoring benchmark)"
dataset = { loader = "folder", params = { path = "pbc" } }
evaluation = { folds = 3, seed = 0, bootstrap = 100 }
blocks.morphology = { plugin = "morphology" }
blocks.texture = { plugin = "texture" }
blocks.colour = { plugin = "colour" }
blocks.cnn = { plugin = "cnn_embedding", params = { size = 64, epochs = 6, embedding_dim = 32 } }
[studies.pbc-bench.pipelines]
fused = { transforms = [{ plugin = "resize", params = { size = 128 } }], mask = { plugin = "otsu_cell" }, blocks = ["morphology", "texture", "colour", "cnn"], classifier = { plugin = "xgboost" } }
"""


def tree_sample(pid: int, cpu: dict[int, float]) -> int:
    """Resident memory (bytes) of a process and all its descendants; updates ``cpu`` (pid -> CPU
    seconds, user + system) for each of them."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
            t = p.cpu_times()
            cpu[p.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def run_child(mode: str, args: list[str]) -> tuple[dict, int, float]:
    """Run this script in ``mode``; return its JSON report, the peak RSS of its process tree
    (sampled every 0.1 s) and the CPU seconds the tree used."""
    cmd = [sys.executable, __file__, mode, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, cpu = [0], {}

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_sample(proc.pid, cpu))
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"{mode} {' '.join(args)} failed ({proc.returncode}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), peak[0], sum(cpu.values())


def child(argv: list[str]) -> None:
    """Score INPUT with BUNDLE into OUT using JOBS; print a JSON line."""
    bundle, inputs, out, jobs = argv[0], argv[1], argv[2], int(argv[3])
    from medfuse.scoring import score

    s = score(bundle, inputs, out, jobs=jobs, progress=False)
    print(json.dumps({"n": s.n_inputs, "scored": s.n_scored, "failed": s.n_failed, "seconds": s.seconds,
                      "images_per_second": s.images_per_second}))


def naive(argv: list[str]) -> None:
    """Naive loop: decode each image and call the pipeline on it alone; print a JSON line."""
    import numpy as np
    from medfuse.bundle import load_bundle
    from medfuse.imageio import read_image

    bundle = load_bundle(argv[0])
    paths = Path(argv[1]).read_text().split("\n")
    bundle.pipeline.predict_proba_images([read_image(paths[0])])  # warm-up (graph tracing), not timed
    t0, c0 = time.perf_counter(), time.process_time()
    for p in paths:
        proba = bundle.pipeline.predict_proba_images([read_image(p)])
        assert np.isfinite(proba).all()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"n": len(paths), "seconds": seconds, "images_per_second": len(paths) / seconds,
                      "loop_cpu_seconds": cpu}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="data root holding pbc/ (default: $MEDFUSE_DATA or ../shared/datasets)")
    ap.add_argument("--work", default="/tmp/medfuse-bench", help="folder for the bundle and score files")
    ap.add_argument("--train-per-class", type=int, default=40, help="training images per class for the bundle")
    ap.add_argument("--n", type=int, default=None, help="score this many images (evenly spaced) instead of all")
    ap.add_argument("--naive", type=int, default=150, help="images in the naive loop")
    ap.add_argument("--subset", type=int, default=1000, help="images in the memory comparison subset")
    ap.add_argument("--retrain", action="store_true", help="train a new bundle even if one exists")
    args = ap.parse_args()

    import pandas as pd
    from medfuse.bundle import read_manifest, train_bundle
    from medfuse.datapath import resolve_data_root
    from medfuse.scoring import list_inputs

    root = resolve_data_root(args.data)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    bundle = work / "bundle"
    if args.retrain or not (bundle / "manifest.json").is_file():
        (work / "study.toml").write_text(STUDY)
        t = time.perf_counter()
        train_bundle(str(work / "study.toml"), "fused", root, bundle, jobs=2, cv=False,
                     max_per_class=args.train_per_class, overwrite=True, progress=False)
        print(f"trained bundle on {args.train_per_class}/class in {time.perf_counter() - t:.0f} s -> {bundle}")
    manifest, _ = read_manifest(bundle)
    print(f"bundle: {manifest['study']['name']}/{manifest['study']['pipeline']}, "
          f"plugins {sorted({p['name'] for p in manifest['plugins']})}, "
          f"{len(manifest['feature_schema'])} fused features, {manifest['training_data']['n_samples']} training images")

    inputs = list_inputs(root / "pbc")
    n_all = len(inputs)

    def subset(n: int, name: str) -> Path:
        csv = work / name
        picked = inputs.iloc[::max(1, n_all // n)].head(n)
        picked[["read_path"]].rename(columns={"read_path": "path"}).to_csv(csv, index=False)
        return csv

    full: Path = root / "pbc"
    tag = "all"
    if args.n and args.n < n_all:
        full, tag = subset(args.n, "n.csv"), str(args.n)
        args.subset = min(args.subset, max(1, args.n // 4))
    subset_csv = subset(args.subset, "subset.csv")
    naive_list = work / "naive.txt"
    naive_list.write_text("\n".join(inputs["read_path"].iloc[::max(1, n_all // args.naive)].head(args.naive)))
    print("modes: jobs 1 = chunks scored in the scoring process; jobs 2 = two loky worker processes "
          "(bundle loaded once per worker); both 256-image chunks, 1 TensorFlow thread and 1 BLAS thread "
          "per process; naive = one image per pipeline call, library default threads")

    rows = []
    for label, source, jobs in ((f"jobs 1, {tag}", full, 1), (f"jobs 2, {tag}", full, 2),
                                (f"jobs 2, {args.subset}", subset_csv, 2)):
        out = work / f"scores-{label.replace(' ', '').replace(',', '-')}.parquet"
        rep, peak, cpu = run_child("child", [str(bundle), str(source), str(out), str(jobs)])
        rows.append({"run": label, "n": rep["n"], "ips": rep["images_per_second"], "peak": peak / 2**20,
                     "cpu": cpu, "out": out})
        print(f"  {label:14s} {rep['n']:5d} images {rep['seconds']:7.1f} s {rep['images_per_second']:7.1f} img/s "
              f"| peak RSS (tree) {peak / 2**20:6.0f} MiB | CPU {cpu:6.1f} s = {rep['n'] / cpu:5.1f} img/CPU-s "
              f"| failed {rep['failed']}")
    nv, _, _ = run_child("naive", [str(bundle), str(naive_list)])
    print(f"  naive loop     {nv['n']:5d} images {nv['seconds']:7.1f} s {nv['images_per_second']:7.1f} img/s "
          f"| CPU {nv['loop_cpu_seconds']:6.1f} s = {nv['n'] / nv['loop_cpu_seconds']:5.1f} img/CPU-s")

    first, second = pd.read_parquet(rows[0]["out"]), pd.read_parquet(rows[1]["out"])
    same = first.equals(second)
    proba = [c for c in first.columns if c.startswith("proba.")]
    print(f"  jobs 1 vs jobs 2: max |proba difference| {abs(first[proba] - second[proba]).to_numpy().max():.3g}, "
          f"labels differ in {int((first['prediction'] != second['prediction']).sum())} row(s)")
    one, two, naive_ips = rows[0]["ips"], rows[1]["ips"], nv["images_per_second"]
    load = os.getloadavg()
    print(f"\nresults: wall-clock figures on a shared machine (load average now {load[0]:.1f} / 15 min "
          f"{load[2]:.1f}, {os.cpu_count()} cores); the img/CPU-s column does not depend on the load")
    checks = [("images/s with 2 jobs", two, ">= 100", two >= 100),
              ("speed-up 2 jobs / 1 job", two / one, ">= 1.7", two / one >= 1.7),
              ("speed-up 2 jobs / naive loop", two / naive_ips, ">= 5", two / naive_ips >= 5),
              (f"peak RSS {tag} / {args.subset} (2 jobs)", rows[1]["peak"] / rows[2]["peak"], "~1 (flat)",
               rows[1]["peak"] / rows[2]["peak"] < 1.15),
              ("jobs 1 == jobs 2 predictions", float(same), "1", same)]
    for name, value, target, ok in checks:
        print(f"  {name:34s} {value:8.2f}   target {target:10s} {'PASS' if ok else 'MISS'}")
    per_cpu = rows[1]["n"] / rows[1]["cpu"]
    print(f"  projection for 2 idle cores (2 x img/CPU-s of the jobs-2 run, start-up included): "
          f"{2 * per_cpu:.0f} img/s; naive loop on 1 idle core: {nv['n'] / nv['loop_cpu_seconds']:.0f} img/s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "naive":
        naive(sys.argv[2:])
    else:
        main()
