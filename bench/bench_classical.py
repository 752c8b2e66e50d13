"""Speed of the classical feature set on PBC, against PyRadiomics on the same images and masks.

Usage::

    python bench/bench_classical.py [--data ROOT] [--sections startup,identity,whole]
        [--whole 1600] [--radiomics-python PY] [--reference REV] [--work DIR]
        [--n 600] [--compare 100] [--jobs 1,2]

Sections (``--sections``, comma-separated; default ``startup,identity,whole``):

``startup``
    the whole process ``medfuse --help`` and ``medfuse extract ONE_IMAGE --out one.parquet`` (and
    ``one.csv``), wall and CPU (user + system) seconds, median of ``--startup-runs`` runs (default 5)
    after one warm-up run (numba's on-disk cache filled); the same for the ``--reference`` code (the
    code before the issue-15 speed work); then this code's one-image extract against the issue-15
    target (:data:`STARTUP_TARGET_S`, CPU seconds: the steadier figure on a shared machine).
``identity``
    ``medfuse extract`` of 50 images (the default ``otsu_cell`` mask, and ``--mask file``), and of
    a short run of 8 (computed by the NumPy twins of the compiled kernels), by this code and by the
    ``--reference`` code: the largest absolute difference of the 415 features and whether the NaN
    patterns and errors agree (bit-identical is the goal).
``whole``
    the issue-15 comparison, measured as a user runs it: ``--whole`` PBC images spread over the
    classes, their ``otsu_cell`` masks written once as PNG files beside a ``path,mask`` manifest,
    then ``medfuse extract MANIFEST --mask file --out ours.parquet`` (one job, 415 features) against
    ``bench/radiomics_whole.py`` (first order, shape 2D, GLCM, GLRLM, GLSZM, force2D, default
    settings) run by ``--radiomics-python`` on the same image and mask files; the ratio in wall
    and in CPU seconds of the two processes (CPU is less distorted on a shared, loaded machine).
    The ``--reference`` code's ``medfuse extract`` is timed in the same run for the before figure.
``perimage``
    per-image milliseconds of our set (mask + morphology + texture + colour) in this process, and,
    when ``radiomics`` is importable here, PyRadiomics on the same grey images and masks.
``throughput``
    images/second of :func:`medfuse.extract.prepare_images` over ``--n`` images per ``--jobs`` value.

PyRadiomics lives best in its own virtual environment (``python3 -m venv RADVENV &&
RADVENV/bin/pip install pyradiomics numpy SimpleITK``); pass ``--radiomics-python RADVENV/bin/python``
(or set ``$RADIOMICS_PYTHON``). Without it the comparison prints the figure recorded in issue 15
(33.6 s for 1,600 images), labelled as such. The reference code is ``git archive REV`` of this
repository unpacked under ``--work`` (its numba kernels compile once there). Data: ``--data``,
``$MEDFUSE_DATA`` or ``<repo>/../shared/datasets``. Run it under ``nice``; the load average is printed. ``--record FILE`` also appends what the run
printed (with its command line) to ``FILE`` (e.g. ``bench/results/classical-speed.md``).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REFERENCE_REV = "064d406"  # main before the issue-15 speed work (lazy imports, faster kernels)
ISSUE_RADIOMICS_SECONDS = 33.6  # PyRadiomics, 1,600 PBC images, whole process, as recorded in issue 15
STARTUP_TARGET_S = 1.0  # issue 15: `medfuse extract` of one image under 1 s (whole process)


def data_root(arg: str | None) -> Path:
    for cand in (arg, os.environ.get("MEDFUSE_DATA"), str(REPO.parent / "shared" / "datasets")):
        if cand and (Path(cand) / "pbc").is_dir():
            return Path(cand)
    sys.exit("PBC data not found: pass --data ROOT (a folder holding pbc/<class>/*.jpg) or set MEDFUSE_DATA")


def pick_images(pbc: Path, n: int) -> list[str]:
    """``n`` images spread over the classes (round robin over sorted file lists)."""
    per_class = [sorted(str(p) for p in d.glob("*.jpg")) for d in sorted(pbc.iterdir()) if d.is_dir()]
    out: list[str] = []
    i = 0
    while len(out) < n and any(i < len(c) for c in per_class):
        out += [c[i] for c in per_class if i < len(c)]
        i += 1
    return out[:n]


def build():
    from medfuse.host import get_host

    host = get_host()
    mask = host.create("otsu_cell")
    extractors = [(name, host.create(name)) for name in ("morphology", "texture", "colour")]
    return mask, extractors


def kernel_warmup() -> str:
    """Import numba and compile (or load from numba's on-disk cache) the mask, morphology,
    texture and colour kernels: a one-off cost per environment (compile) or per process (cache load),
    excluded from the per-image figures. Plugin imports are not counted."""
    from medfuse_plugins.colour import Colour
    from medfuse_plugins.morphology import Morphology
    from medfuse_plugins.segmentation import cell_mask
    from medfuse_plugins.texture import Texture

    image = np.random.default_rng(0).integers(0, 256, (24, 24, 3)).astype(np.uint8)
    mask = np.zeros((24, 24), np.uint8)
    mask[4:20, 4:20] = 1
    t0 = time.perf_counter()
    from medfuse_plugins import _kernels

    cell_mask(image)
    Morphology().prepare(image, mask)
    Texture().prepare(image, mask)
    Colour().prepare(image, mask)
    seconds = time.perf_counter() - t0
    kernels = (_kernels.blue_minus_green, _kernels.class_variance_table, _kernels.multiotsu4,
               _kernels.label_components, _kernels.fill_holes4, _kernels.shape_stats,
               _kernels.lbp_uniform, _kernels.glcm_counts, _kernels.glcm_features,
               _kernels.colour_histograms, _kernels.hist_stats)
    misses = sum(sum(k.stats.cache_misses.values()) for k in kernels)
    how = "compiled (no cache yet)" if misses else "loaded from the on-disk cache"
    return f"numba import + kernels {how}: {seconds:.2f} s one-off, excluded from the per-image figures"


def ours_per_image(paths: list[str]):
    """Per-image wall ms without and with decoding, CPU ms without decoding, the decoded images
    and masks, and the feature count."""
    from medfuse.imageio import read_image

    mask_maker, extractors = build()
    # warm-up: lazy imports and first-call costs are not per-image costs
    im0 = read_image(paths[0])
    m0 = mask_maker.predict_mask(im0)
    for _, ex in extractors:
        ex.prepare(im0, m0)
    t_feat, t_all, c_feat, images, masks = [], [], [], [], []
    c_family: dict[str, list[float]] = {"mask": [], **{name: [] for name, _ in extractors}}
    n_features = sum(len(ex.feature_names()) for _, ex in extractors)
    for p in paths:
        t0 = time.perf_counter()
        image = read_image(p)
        t1, c1 = time.perf_counter(), time.process_time()
        mask = mask_maker.predict_mask(image)
        c_prev = time.process_time()
        c_family["mask"].append((c_prev - c1) * 1000)
        for name, ex in extractors:
            ex.prepare(image, mask)
            c_now = time.process_time()
            c_family[name].append((c_now - c_prev) * 1000)
            c_prev = c_now
        t2, c2 = time.perf_counter(), time.process_time()
        t_feat.append((t2 - t1) * 1000)
        c_feat.append((c2 - c1) * 1000)
        t_all.append((t2 - t0) * 1000)
        images.append(image)
        masks.append(mask)
    families = {k: float(np.mean(v)) for k, v in c_family.items()}
    return np.asarray(t_feat), np.asarray(t_all), np.asarray(c_feat), images, masks, n_features, families


def radiomics_per_image(images: list[np.ndarray], masks: list[np.ndarray]):
    """PyRadiomics per-image wall and CPU ms on the grey images and cell masks, and its feature
    count; or a string saying why it was skipped."""
    try:
        import radiomics
        import SimpleITK as sitk
        from radiomics import featureextractor
    except ImportError as exc:
        return f"PyRadiomics not importable ({exc}); install it with `pip install pyradiomics`"
    from medfuse_plugins.transforms import to_gray

    radiomics.logger.setLevel(logging.ERROR)
    ex = featureextractor.RadiomicsFeatureExtractor(force2D=True)
    ex.disableAllFeatures()
    for family in ("firstorder", "shape2D", "glcm", "glrlm", "glszm"):
        ex.enableFeatureClassByName(family)
    times, cpu, n_features = [], [], 0
    pairs = [(im, m) for im, m in zip(images, masks) if (m > 0).sum() > 1]
    for k, (im, m) in enumerate(pairs):
        t0, c0 = time.perf_counter(), time.process_time()
        g = sitk.GetImageFromArray(to_gray(im)[None].astype(np.float32))
        mk = sitk.GetImageFromArray((m > 0).astype(np.uint8)[None])
        result = ex.execute(g, mk)
        if k > 0:  # the first call pays imports
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        n_features = sum(1 for key in result if not key.startswith("diagnostics"))
    return np.asarray(times), np.asarray(cpu), n_features


def throughput(paths: list[str], jobs: int) -> tuple[float, int]:
    from medfuse.extract import prepare_images

    mask_maker, extractors = build()
    # warm-up outside the timed run: starts the worker pool and pays each worker's imports
    prepare_images(paths[:8 * max(jobs, 1) * 2], None, (), mask_maker, extractors, jobs=jobs, chunk_size=8)
    t0 = time.perf_counter()
    prep = prepare_images(paths, None, (), mask_maker, extractors, jobs=jobs, chunk_size=32)
    seconds = time.perf_counter() - t0
    return len(paths) / seconds, sum(bool(e) for e in prep.errors)


# ---- whole-process measurements (start-up, identity, the issue-15 comparison) ------------------
def medfuse_env(tree: Path) -> dict[str, str]:
    """Environment running the ``medfuse`` of source tree ``tree`` (its core/ and plugins/ first)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join([str(tree / "core"), str(tree / "plugins"),
                                         *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the child) and stdout of one command."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), proc.stdout


def reference_tree(rev: str, work: Path) -> Path:
    """``git archive rev`` of core/ and plugins/, unpacked once under ``work``."""
    tree = work / f"reference-{rev}"
    if not (tree / "core").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "core", "plugins"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def trees(args: argparse.Namespace, work: Path) -> list[tuple[str, Path]]:
    """``[("this code", REPO), ("reference REV", tree)]`` (the reference left out with ``--reference none``)."""
    out = [("this code", REPO)]
    if args.reference.lower() != "none":
        out.append((f"reference {args.reference}", reference_tree(args.reference, work)))
    return out


def startup(image: str, work: Path, pairs: list[tuple[str, Path]], runs: int = 5) -> None:
    py = sys.executable
    print(f"\nstart-up: whole process, median of {runs} runs after one warm-up run (wall / CPU s)")
    target: dict[str, tuple[float, float]] = {}
    for label, tree in pairs:
        env = medfuse_env(tree)
        for what, cmd in (("medfuse --help", [py, "-m", "medfuse", "--help"]),
                          *((f"medfuse extract ONE_IMAGE .{fmt}",
                             [py, "-m", "medfuse", "extract", image, "--out", str(work / f"one.{fmt}"),
                              "--no-progress"]) for fmt in ("parquet", "csv"))):
            timed(cmd, env)
            walls, cpus = zip(*[timed(cmd, env)[:2] for _ in range(runs)])
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            print(f"  {label:>18}: {what:<33} {wall:5.2f} s wall, {cpu:5.2f} s CPU   "
                  f"[CPU {' '.join(f'{c:.2f}' for c in cpus)}]")
            if label == "this code" and what.startswith("medfuse extract"):
                target[what] = (wall, cpu)
    print(f"  command: PYTHONPATH=TREE/core:TREE/plugins {py} -m medfuse extract {image} "
          f"--out {work / 'one.parquet'} --no-progress")
    for what, (wall, cpu) in target.items():
        verdict = "met" if cpu < STARTUP_TARGET_S else f"NOT met ({cpu - STARTUP_TARGET_S:.2f} s over)"
        print(f"  start-up target (issue 15): {what} under {STARTUP_TARGET_S:.1f} s CPU: {cpu:.2f} s CPU "
              f"({wall:.2f} s wall), median of {runs}: {verdict}")


def write_masks(paths: list[str], work: Path) -> Path:
    """The ``otsu_cell`` mask of every image as a PNG (0 background, 1 cell, 2 nucleus) and a
    ``path,mask`` manifest; written once per image list (reused when present)."""
    from PIL import Image

    folder = work / f"masks-{len(paths)}"
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    from medfuse.imageio import read_image
    from medfuse_plugins.segmentation import cell_mask

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, p in enumerate(paths):
        m = folder / f"{i:05d}_{Path(p).stem}.png"
        Image.fromarray(cell_mask(read_image(p))).save(m)
        rows.append((p, str(m)))
    with open(manifest, "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "mask"), *rows])
    return manifest


def radiomics_python(arg: str | None) -> str | None:
    """A Python that imports ``radiomics`` and ``SimpleITK``, or None."""
    for cand in (arg, os.environ.get("RADIOMICS_PYTHON"), sys.executable):
        if cand and subprocess.run([cand, "-c", "import radiomics, SimpleITK"], capture_output=True).returncode == 0:
            return cand
    return None


def identity(paths: list[str], work: Path, pairs: list[tuple[str, Path]]) -> None:
    """Feature tables of ``paths`` by this code and the reference code, compared value by value."""
    import pandas as pd
    from medfuse_plugins._kernels_np import SHORT_RUN_IMAGES  # a run this short uses the NumPy kernel twins

    if len(pairs) < 2:
        print("\nidentity check skipped (--reference none)")
        return
    manifest = write_masks(paths, work)
    py = sys.executable
    print(f"\nidentity: {len(paths)} images, this code vs {pairs[1][0]}")
    short = work / "identity-short.csv"
    pd.DataFrame({"path": paths[:SHORT_RUN_IMAGES]}).to_csv(short, index=False)
    pd.DataFrame({"path": paths}).to_csv(work / "identity.csv", index=False)
    for mode, inputs, extra in (("otsu_cell mask", work / "identity.csv", []),
                                ("--mask file", manifest, ["--mask", "file"]),
                                (f"short run ({SHORT_RUN_IMAGES})", short, [])):
        tables = []
        for label, tree in pairs:
            out = work / f"identity-{label.split()[0]}.parquet"
            timed([py, "-m", "medfuse", "extract", str(inputs), *extra, "--out", str(out), "--no-progress"],
                  medfuse_env(tree))
            tables.append(pd.read_parquet(out))
        new, old = tables
        feats = [c for c in new.columns if c not in ("path", "label", "error")]
        same_cols = feats == [c for c in old.columns if c not in ("path", "label", "error")]
        a = new[feats].to_numpy(np.float64)
        b = old[feats].to_numpy(np.float64) if same_cols else np.full_like(a, np.nan)
        nan_same = bool((np.isnan(a) == np.isnan(b)).all())
        both = ~np.isnan(a) & ~np.isnan(b)
        diff = float(np.abs(a[both] - b[both]).max()) if both.any() else float("nan")
        n_diff = int((a[both] != b[both]).sum())
        errors_same = new["error"].tolist() == old["error"].tolist()
        verdict = "bit-identical" if same_cols and nan_same and errors_same and n_diff == 0 else (
            "within 1e-9" if same_cols and nan_same and errors_same and diff <= 1e-9 else "DIFFERENT")
        print(f"  {mode:<16}: {len(feats)} features x {len(new)} images: {verdict} (values differing "
              f"{n_diff}, max |diff| {diff:.3g}; same columns {same_cols}, same NaNs {nan_same}, "
              f"same errors {errors_same})")


def whole(paths: list[str], work: Path, pairs: list[tuple[str, Path]], rad_py: str | None,
          repeat: int = 3) -> None:
    """The issue-15 comparison: both whole processes on the same image and mask files."""
    manifest = write_masks(paths, work)
    py = sys.executable
    print(f"\nwhole process, {len(paths)} PBC images, the same otsu_cell masks given to both as files "
          f"({manifest}), one job:")
    ours: dict[str, tuple[float, float]] = {}
    for label, tree in pairs:
        cmd = [py, "-m", "medfuse", "extract", str(manifest), "--mask", "file", "--out", str(work / "ours.parquet"),
               "--no-progress", "-j", "1"]
        runs = [timed(cmd, medfuse_env(tree)) for _ in range(repeat)]
        ours[label] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
        print(f"  medfuse ({label:>18}): {ours[label][0]:6.2f} s wall, {ours[label][1]:6.2f} s CPU "
              f"(median of {repeat})")
    print(f"  command: PYTHONPATH=TREE/core:TREE/plugins {cmd[0]} -m medfuse extract MANIFEST "
          "--mask file --out ours.parquet --no-progress -j 1")
    if rad_py is None:
        print(f"  PyRadiomics not available (pass --radiomics-python); the figure recorded in issue 15, "
              f"NOT measured here: {ISSUE_RADIOMICS_SECONDS} s wall for 1,600 images")
        for label, (wall, _) in ours.items():
            print(f"  ratio against the RECORDED figure ({label}): {ISSUE_RADIOMICS_SECONDS / wall:.1f}x wall")
        return
    rcmd = [rad_py, str(REPO / "bench" / "radiomics_whole.py"), str(manifest), str(work / "radiomics.csv")]
    r_wall, r_cpu, r_out = timed(rcmd)
    print(f"  PyRadiomics script: {r_wall:6.2f} s wall, {r_cpu:6.2f} s CPU ({r_out.strip()})")
    print(f"  command: {' '.join(rcmd)}")
    for label, (wall, cpu) in ours.items():
        print(f"  ratio PyRadiomics / medfuse ({label}): {r_wall / wall:.1f}x wall, {r_cpu / cpu:.1f}x CPU")


class _Recorder:
    """``sys.stdout`` that also keeps what was printed, for ``--record``."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.parts = stream, []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def append_to(self, path: Path) -> None:
        command = "PYTHONPATH=core:plugins python " + " ".join(sys.argv)
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        with open(path, "a") as fh:
            fh.write(f"\n## {stamp}: {command}\n```\n{''.join(self.parts).strip()}\n```\n")
        self.stream.write(f"recorded in {path}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="data root holding pbc/ (default: $MEDFUSE_DATA or ../shared/datasets)")
    ap.add_argument("--sections", default="startup,identity,whole",
                    help="comma-separated: startup, identity, whole, perimage, throughput")
    ap.add_argument("--whole", type=int, default=1600, help="images for the whole-process comparison")
    ap.add_argument("--identity", type=int, default=50, help="images for the identity check")
    ap.add_argument("--repeat", type=int, default=3, help="runs of medfuse extract in the whole comparison")
    ap.add_argument("--radiomics-python", help="a Python with pyradiomics (default: $RADIOMICS_PYTHON)")
    ap.add_argument("--reference", default=REFERENCE_REV,
                    help=f"git revision timed and compared as the old code (default {REFERENCE_REV}; 'none')")
    ap.add_argument("--work", help="folder for masks, tables and the reference tree (default: a temp folder)")
    ap.add_argument("--n", type=int, default=600, help="images for the throughput runs")
    ap.add_argument("--compare", type=int, default=100, help="images for the per-image comparison")
    ap.add_argument("--jobs", default="1,2", help="comma-separated job counts for throughput")
    ap.add_argument("--startup-runs", type=int, default=5, help="timed runs per start-up command (median)")
    ap.add_argument("--record", help="also append this run's printout to FILE (e.g. bench/results/classical-speed.md)")
    args = ap.parse_args()
    if args.record:
        sys.stdout = _Recorder(sys.stdout)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.simplefilter("ignore")
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    pbc = data_root(args.data) / "pbc"
    work = Path(args.work or Path(tempfile.gettempdir()) / "medfuse-bench-classical")
    work.mkdir(parents=True, exist_ok=True)
    print(f"PBC: {pbc}; cpus={os.cpu_count()}, load average={' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    pairs = trees(args, work) if sections & {"startup", "identity", "whole"} else []
    if "startup" in sections:
        startup(pick_images(pbc, 1)[0], work, pairs, args.startup_runs)
    if "identity" in sections:
        identity(pick_images(pbc, args.identity), work, pairs)
    if "whole" in sections:
        whole(pick_images(pbc, args.whole), work, pairs, radiomics_python(args.radiomics_python), args.repeat)
    if sections & {"perimage", "throughput"}:
        per_image_sections(pbc, args, sections)
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if args.record:
        sys.stdout.append_to(Path(args.record))


def per_image_sections(pbc: Path, args: argparse.Namespace, sections: set[str]) -> None:
    """The in-process figures: per-image milliseconds (and PyRadiomics when importable), throughput."""
    paths = pick_images(pbc, max(args.n, args.compare))
    cmp_paths = paths[:args.compare]
    if "perimage" in sections:
        print(kernel_warmup())
        t_feat, t_all, c_feat, images, masks, n_ours, families = ours_per_image(cmp_paths)
        print(f"\nours: otsu_cell mask + morphology + texture + colour = {n_ours} features")
        print(f"  per image (median over {len(cmp_paths)}): {np.median(t_feat):.2f} ms mask+features, "
              f"{np.median(t_all):.2f} ms with JPEG decoding  (p90 {np.percentile(t_feat, 90):.2f} ms); "
              f"CPU time {np.median(c_feat):.2f} ms mask+features")
        print("  CPU ms per family (mean): " + ", ".join(f"{k} {v:.2f}" for k, v in families.items()))
        rad = radiomics_per_image(images, masks)
        if isinstance(rad, str):
            print(f"\nPyRadiomics in-process comparison skipped: {rad}")
        else:
            r_times, r_cpu, n_rad = rad
            import radiomics

            print(f"\nPyRadiomics {radiomics.__version__}: firstorder + shape2D + glcm + glrlm + glszm, "
                  f"force2D, same grey images and masks = {n_rad} features")
            print(f"  per image (median over {len(r_times)}): {np.median(r_times):.2f} ms (features only, "
                  f"mask given); CPU time {np.median(r_cpu):.2f} ms")
            print(f"  ratio PyRadiomics / ours (ours including the mask): wall "
                  f"{np.median(r_times) / np.median(t_feat):.1f}x, CPU {np.median(r_cpu) / np.median(c_feat):.1f}x; "
                  f"features ours/PyRadiomics: {n_ours}/{n_rad}")
    if "throughput" in sections:
        rates = {}
        for jobs in [int(j) for j in args.jobs.split(",") if j.strip()]:
            rate, errors = throughput(paths[:args.n], jobs)
            rates[jobs] = rate
            print(f"\nthroughput, {jobs} job(s), {args.n} images incl. decoding: {rate:.1f} images/s "
                  f"({errors} errors)")
        if 1 in rates and len(rates) > 1:
            for jobs, rate in rates.items():
                if jobs != 1:
                    print(f"  speed-up {jobs} jobs vs 1: {rate / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
