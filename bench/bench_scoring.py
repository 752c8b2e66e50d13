"""Benchmark: batch scoring of PBC with a fused format-2 bundle, as a user runs it (issue #13).

Not a timed test: it prints figures and PASS/MISS against the issue's targets.

Setup (once; reused from ``--work`` on later runs unless ``--retrain``): trains two bundles on a
per-class subset of PBC with the same fused pipeline -- ``resize 128`` transform, ``otsu_cell``
mask, classical blocks morphology / texture / colour plus ``cnn_embedding`` (64 px, 32-d), early
fusion, XGBoost head -- one with ``tta = false`` and one with ``tta = true`` (the same network:
TTA does not change training). It also pickles, with joblib, what a hand-written loop needs
beside the Keras network: the transforms, mask maker, classical extractors, per-block preparers
(impute / scale / PCA) and the XGBoost classifier (``<work>/naive.joblib``).

Measurements (each scoring run is ``python -m medfuse score BUNDLE INPUT --out OUT --jobs N`` in a
fresh process, timed from launch to exit: imports, bundle verification and loading, worker start,
decoding, mask, classical features, CNN (onnxruntime), classifier, OOD warnings, writing):

* ``--n`` PBC images (evenly spaced over the classes, default 3000) with ``--jobs 1`` and
  ``--jobs 2``, without and with TTA: images/s, CPU seconds of the whole process tree,
  images per CPU-second, and peak resident memory of the tree (sampled every 0.1 s);
* memory: ``--jobs 2`` on a CSV manifest of 1,000 and of ``--n-memory`` (default 10,000; PBC
  paths repeated) inputs: peak tree RSS must be flat (within 10 %);
* the hand-written loop on ``--naive`` images in a fresh process: PIL decode, medfuse's
  transforms / mask / classical extractors, ``keras`` ``model.predict`` on one image (the
  ``.keras`` file the bundle keeps beside the ONNX, cut at the embedding layer), the joblib
  pickle's preparers and classifier -- one image at a time, no OOD warnings (timed after a
  one-image warm-up; model loading not timed);
* ``--jobs 1`` and ``--jobs 2`` outputs identical (every column, both TTA settings).

The machine may be shared: wall-clock figures then understate the speed. The report prints the
load average, images per CPU-second of each run and a projection for 2 idle cores
(``min(2 x img/CPU-s of the jobs-2 run, img/s x 2 / share of 2 cores it got)``).

Reproduce (data root from ``--data``, ``$MEDFUSE_DATA`` or ../shared/datasets)::

    PYTHONPATH=core:plugins nice -n 5 python bench/bench_scoring.py            # full run
    PYTHONPATH=core:plugins nice -n 5 python bench/bench_scoring.py --n 600 --n-memory 2000 --naive 50  # quick
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
[studies.{name}]
description = "PBC, fused classical + CNN embedding, XGBoost head (scoring benchmark)"
dataset = {{ loader = "folder", params = {{ path = "pbc" }} }}
evaluation = {{ folds = 3, seed = 0, bootstrap = 100 }}
blocks.morphology = {{ plugin = "morphology" }}
blocks.texture = {{ plugin = "texture" }}
blocks.colour = {{ plugin = "colour" }}
blocks.cnn = {{ plugin = "cnn_embedding", params = {{ size = 64, epochs = 6, embedding_dim = 32, tta = {tta} }} }}
[studies.{name}.pipelines]
fused = {{ transforms = [{{ plugin = "resize", params = {{ size = 128 }} }}], mask = {{ plugin = "otsu_cell" }}, blocks = ["morphology", "texture", "colour", "cnn"], classifier = {{ plugin = "xgboost" }} }}
"""
VARIANTS = {"notta": "false", "tta": "true"}
TARGETS = {"ips2": 150.0, "speedup": 1.8, "naive": 10.0, "memory": 1.10}


# ---- setup ----------------------------------------------------------------------------------------

def setup(work: Path, root: Path, per_class: int, retrain: bool) -> dict[str, Path]:
    """Train (or reuse) the two bundles and write the naive loop's joblib pickle."""
    bundles = {v: work / f"bundle-{v}" for v in VARIANTS}
    if retrain or not all((b / "manifest.json").is_file() for b in bundles.values()):
        from medfuse.training import train_bundle

        for variant, tta in VARIANTS.items():
            toml = work / f"study-{variant}.toml"
            toml.write_text(STUDY.format(name=f"pbc-bench-{variant}", tta=tta))
            t = time.perf_counter()
            train_bundle(str(toml), "fused", root, bundles[variant], jobs=2, cv=False,
                         max_per_class=per_class, overwrite=True, progress=False)
            print(f"trained bundle {variant} on {per_class}/class in {time.perf_counter() - t:.0f} s "
                  f"-> {bundles[variant]}", flush=True)
    pickle = work / "naive.joblib"
    if retrain or not pickle.is_file():
        import joblib
        from medfuse.bundle import load_bundle

        fp = load_bundle(bundles["notta"]).pipeline
        blocks = [(fb.name, None if fb.name == "cnn" else fb.plugin, fb.preparer) for fb in fp.blocks_]
        joblib.dump({"transforms": fp.transforms, "mask_maker": fp.mask_maker_, "blocks": blocks,
                     "model": fp.model_, "classes": list(fp.classes_),
                     "cnn": {"size": int(fp.blocks_[-1].plugin.size), "masked": bool(fp.blocks_[-1].plugin.masked)}},
                    pickle)
    return bundles


def manifest(work: Path, name: str, paths: list[str], n: int) -> Path:
    """A CSV manifest of ``n`` paths: evenly spaced over ``paths`` (``n <= len(paths)``) or
    ``paths`` repeated."""
    import pandas as pd

    if n <= len(paths):
        picked = paths[::max(1, len(paths) // n)][:n]
    else:
        picked = [paths[i % len(paths)] for i in range(n)]
    csv = work / name
    pd.DataFrame({"path": picked}).to_csv(csv, index=False)
    return csv


# ---- measuring a process tree ---------------------------------------------------------------------

def tree_sample(pid: int, cpu: dict[int, float]) -> int:
    """Resident memory (bytes) of a process and its descendants; updates ``cpu`` (pid -> CPU s)."""
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


def run_tree(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run ``cmd``; its wall seconds, peak tree RSS (MiB), tree CPU seconds, stdout."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    peak, cpu = [0], {}

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_sample(proc.pid, cpu))
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # the child and every descendant it waited for (loky workers are reaped by it)
    rusage_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "peak": peak[0] / 2**20, "cpu": max(rusage_cpu, sum(cpu.values())),
            "stdout": out, "stderr": err}


def score_run(bundle: Path, source: Path, out: Path, jobs: int) -> dict:
    cmd = [sys.executable, "-m", "medfuse", "score", str(bundle), str(source), "--out", str(out),
           "--jobs", str(jobs), "--quiet"]
    return run_tree(cmd)


# ---- the hand-written loop (child mode) -----------------------------------------------------------

def naive(argv: list[str]) -> None:
    """One image at a time, as a user without medfuse's scoring would write it; print a JSON line."""
    import joblib
    import keras
    import numpy as np
    from medfuse_plugins.cnn import resize_square
    from PIL import Image

    bundle, pickle, paths = Path(argv[0]), argv[1], Path(argv[2]).read_text().split("\n")
    parts = joblib.load(pickle)
    keras_files = sorted(bundle.rglob("*.keras"))
    net = keras.models.load_model(keras_files[0], compile=False)
    embed = next((layer for layer in net.layers if "embedding" in layer.name), None)
    if embed is not None and embed is not net.layers[-1]:
        net = keras.Model(net.inputs, embed.output)
    size, masked = parts["cnn"]["size"], parts["cnn"]["masked"]

    def one(path: str) -> np.ndarray:
        image = np.asarray(Image.open(path).convert("RGB"))
        mask = None
        for t in parts["transforms"]:
            image, mask = t.apply(image, mask)
        mask = parts["mask_maker"].predict_mask(image)
        feats = []
        for _name, extractor, preparer in parts["blocks"]:
            if extractor is None:  # the CNN: medfuse's resize to its input, model.predict on one image
                X = net.predict(resize_square(image, mask, size, masked)[None], verbose=0)
            else:
                X = extractor.transform(np.asarray(extractor.prepare(image, mask))[None])
            feats.append(preparer.transform(X))
        return parts["model"].predict_proba(np.hstack(feats))[0]

    one(paths[0])  # warm-up (graph tracing), not timed
    t0, c0 = time.perf_counter(), time.process_time()
    for p in paths:
        assert np.isfinite(one(p)).all()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"n": len(paths), "seconds": seconds, "cpu": cpu, "keras_file": str(keras_files[0])}))


# ---- report ---------------------------------------------------------------------------------------

def compare(a: Path, b: Path) -> tuple[bool, float]:
    """Whether two score files are identical (every column), and the max |proba difference|."""
    import pandas as pd

    x, y = pd.read_parquet(a), pd.read_parquet(b)
    proba = [c for c in x.columns if c.startswith("proba.")]
    diff = float((x[proba] - y[proba]).abs().to_numpy().max()) if len(x) == len(y) else float("inf")
    return bool(x.equals(y)), diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="data root holding pbc/ (default: $MEDFUSE_DATA or ../shared/datasets)")
    ap.add_argument("--work", default="/tmp/medfuse-bench", help="folder for bundles, manifests and score files")
    ap.add_argument("--train-per-class", type=int, default=40, help="training images per class for the bundles")
    ap.add_argument("--n", type=int, default=3000, help="images per throughput run (>= 3000 for the issue's targets)")
    ap.add_argument("--n-memory", type=int, default=10000, help="inputs of the large memory run (the small one: 1000)")
    ap.add_argument("--naive", type=int, default=150, help="images in the hand-written loop")
    ap.add_argument("--no-tta", action="store_true", help="skip the TTA runs")
    ap.add_argument("--retrain", action="store_true", help="train new bundles even if they exist")
    args = ap.parse_args()

    from medfuse.datapath import resolve_data_root
    from medfuse.scoring import list_inputs

    root = resolve_data_root(args.data)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    bundles = setup(work, root, args.train_per_class, args.retrain)
    paths = list_inputs(root / "pbc")["read_path"].tolist()
    n = min(args.n, len(paths))
    main_csv = manifest(work, f"n{n}.csv", paths, n)
    naive_list = work / "naive.txt"
    naive_list.write_text("\n".join(paths[::max(1, len(paths) // args.naive)][:args.naive]))
    load0 = os.getloadavg()
    print(f"{n} of {len(paths)} PBC images; {os.cpu_count()} cores; load average at start "
          f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)

    rows: dict[str, dict] = {}

    def record(label: str, n_in: int, r: dict) -> dict:
        r.update(label=label, n=n_in, ips=n_in / r["wall"], ipc=n_in / r["cpu"], load=os.getloadavg()[0])
        rows[label] = r
        print(f"  {label:22s} {n_in:6d} inputs {r['wall']:7.1f} s {r['ips']:7.1f} img/s | CPU {r['cpu']:7.1f} s "
              f"= {r['ipc']:6.1f} img/CPU-s | peak RSS (tree) {r['peak']:6.0f} MiB | load {r['load']:.2f}",
              flush=True)
        return r

    variants = ["notta"] if args.no_tta else ["notta", "tta"]
    outs = {}
    for v in variants:
        for jobs in (1, 2):
            out = work / f"scores-{v}-j{jobs}.parquet"
            record(f"{v} jobs {jobs}", n, score_run(bundles[v], main_csv, out, jobs))
            outs[(v, jobs)] = out
    for m in (1000, args.n_memory):
        csv = manifest(work, f"mem{m}.csv", paths, m)
        record(f"memory {m} jobs 2", m, score_run(bundles["notta"], csv, work / f"scores-mem{m}.parquet", 2))
    nv = run_tree([sys.executable, __file__, "naive", str(bundles["notta"]), str(work / "naive.joblib"),
                   str(naive_list)])
    rep = json.loads(nv["stdout"].strip().splitlines()[-1])
    naive_ips, naive_ipc = rep["n"] / rep["seconds"], rep["n"] / rep["cpu"]
    print(f"  {'hand-written loop':22s} {rep['n']:6d} inputs {rep['seconds']:7.1f} s {naive_ips:7.1f} img/s | "
          f"CPU {rep['cpu']:7.1f} s = {naive_ipc:6.1f} img/CPU-s (loop only; keras {Path(rep['keras_file']).name})",
          flush=True)

    load = os.getloadavg()
    print(f"\nload average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores, shared); "
          "img/CPU-s does not depend on the load; 'idle' = projection for 2 idle cores")

    def idle(r: dict, jobs: int) -> float:
        """Projected img/s on idle cores: the CPU it used, spread over ``jobs`` cores at the
        parallel efficiency it showed (CPU s / (wall s x jobs), capped at 1 core each)."""
        share = min(1.0, r["cpu"] / (r["wall"] * jobs))
        return r["ips"] / share if share > 0 else float("nan")

    checks = []
    for v in variants:
        one, two = rows[f"{v} jobs 1"], rows[f"{v} jobs 2"]
        same, diff = compare(outs[(v, 1)], outs[(v, 2)])
        checks += [
            (f"[{v}] img/s, 2 jobs (measured)", two["ips"], f">= {TARGETS['ips2']:.0f}", two["ips"] >= TARGETS["ips2"]),
            (f"[{v}] img/s, 2 jobs (idle proj.)", idle(two, 2), f">= {TARGETS['ips2']:.0f}",
             idle(two, 2) >= TARGETS["ips2"]),
            (f"[{v}] img/CPU-s, 2 jobs", two["ipc"], f">= {TARGETS['ips2'] / 2:.0f}", two["ipc"] >= TARGETS["ips2"] / 2),
            (f"[{v}] 2 jobs / 1 job (measured)", two["ips"] / one["ips"], f">= {TARGETS['speedup']}",
             two["ips"] / one["ips"] >= TARGETS["speedup"]),
            (f"[{v}] 2 jobs / 1 job (idle proj.)", idle(two, 2) / idle(one, 1), f">= {TARGETS['speedup']}",
             idle(two, 2) / idle(one, 1) >= TARGETS["speedup"]),
            (f"[{v}] 2 jobs / hand loop (meas.)", two["ips"] / naive_ips, f">= {TARGETS['naive']:.0f}",
             two["ips"] / naive_ips >= TARGETS["naive"]),
            (f"[{v}] 2 jobs / hand loop (idle)", idle(two, 2) / naive_ipc, f">= {TARGETS['naive']:.0f}",
             idle(two, 2) / naive_ipc >= TARGETS["naive"]),
            (f"[{v}] jobs 1 == jobs 2 (max dp {diff:.0e})", float(same), "1", same),
        ]
    small, large = rows["memory 1000 jobs 2"], rows[f"memory {args.n_memory} jobs 2"]
    ratio = large["peak"] / small["peak"]
    checks.append((f"peak RSS {args.n_memory} / 1000", ratio, f"<= {TARGETS['memory']}",
                   ratio <= TARGETS["memory"]))
    print(f"  {'figure':36s} {'value':>8s}   {'target':10s}")
    for name, value, target, ok in checks:
        print(f"  {name:36s} {value:8.2f}   {target:10s} {'PASS' if ok else 'MISS'}")
    (work / "results.json").write_text(json.dumps(
        {k: {f: r[f] for f in ("n", "wall", "cpu", "peak", "ips", "ipc", "load")} for k, r in rows.items()}
        | {"naive": rep}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "naive":
        naive(sys.argv[2:])
    else:
        main()
