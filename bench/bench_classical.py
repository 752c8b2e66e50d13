"""Speed of the classical feature set on PBC, against PyRadiomics on the same images and masks.

Usage::

    python bench/bench_classical.py [--data ROOT] [--n 600] [--compare 100] [--jobs 1,2]

Prints, in one run:

0. the one-off cost of importing numba and compiling the kernels (or loading them from numba's
   on-disk cache, ``cache=True``), excluded from every per-image figure;
1. per-image median milliseconds of our full classical set (``otsu_cell`` mask + morphology +
   texture + colour), decoding excluded and included, over ``--compare`` images, and the mean
   process CPU milliseconds of each family;
2. PyRadiomics (first-order + shape2D + GLCM + GLRLM + GLSZM, ``force2D``, default settings)
   on the same images (grey) and the same ``otsu_cell`` masks, in the same process; the ratio,
   in wall-clock and in process CPU time (CPU time is less distorted on a shared, loaded machine);
3. throughput (images/second, decoding included) of :func:`medfuse.extract.prepare_images` over
   ``--n`` images for each ``--jobs`` value. A short warm-up run first starts the worker pool
   and pays the workers' imports (a one-off cost of a second or two that a long run pays once).

PyRadiomics is optional (``pip install pyradiomics``, which builds from source); without it the
comparison is skipped with a message. Data: ``--data``, ``$MEDFUSE_DATA`` or
``<repo>/../shared/datasets``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="data root holding pbc/ (default: $MEDFUSE_DATA or ../shared/datasets)")
    ap.add_argument("--n", type=int, default=600, help="images for the throughput runs")
    ap.add_argument("--compare", type=int, default=100, help="images for the per-image comparison")
    ap.add_argument("--jobs", default="1,2", help="comma-separated job counts for throughput")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.simplefilter("ignore")
    pbc = data_root(args.data) / "pbc"
    paths = pick_images(pbc, max(args.n, args.compare))
    cmp_paths = paths[:args.compare]
    print(f"PBC: {pbc} ({len(paths)} images picked over the classes); cpus={os.cpu_count()}, "
          f"load average={os.getloadavg()[0]:.1f}")

    print(kernel_warmup())
    t_feat, t_all, c_feat, images, masks, n_ours, families = ours_per_image(cmp_paths)
    print(f"\nours: otsu_cell mask + morphology + texture + colour = {n_ours} features")
    print(f"  per image (median over {len(cmp_paths)}): {np.median(t_feat):.2f} ms mask+features, "
          f"{np.median(t_all):.2f} ms with JPEG decoding  (p90 {np.percentile(t_feat, 90):.2f} ms); "
          f"CPU time {np.median(c_feat):.2f} ms mask+features")
    print("  CPU ms per family (mean): " + ", ".join(f"{k} {v:.2f}" for k, v in families.items()))

    rad = radiomics_per_image(images, masks)
    if isinstance(rad, str):
        print(f"\nPyRadiomics comparison skipped: {rad}")
    else:
        r_times, r_cpu, n_rad = rad
        import radiomics

        print(f"\nPyRadiomics {radiomics.__version__}: firstorder + shape2D + glcm + glrlm + glszm, "
              f"force2D, same grey images and masks = {n_rad} features")
        print(f"  per image (median over {len(r_times)}): {np.median(r_times):.2f} ms (features only, "
              f"mask given); CPU time {np.median(r_cpu):.2f} ms")
        print(f"  ratio PyRadiomics / ours (ours including the mask): wall {np.median(r_times) / np.median(t_feat):.1f}x, "
              f"CPU {np.median(r_cpu) / np.median(c_feat):.1f}x; features ours/PyRadiomics: {n_ours}/{n_rad}")

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
