"""Benchmark: whole-smear scoring (``medfuse score --objects``) against writing crop files first.

Fields: ``--fields`` synthetic 640x480 smears (:func:`medfuse.synthetic.make_smear`, ``--cells``
red cells each, radius ~30 px, every other cell tinted blue), or the images of ``--images DIR``.
Bundle: a ``colour`` block (``whole_image`` mask) and ``logreg`` trained on object crops of 4
further synthetic fields (two classes: blue / pink), trained once into ``--work``.

Timed, wall clock, bundle loading and worker start included:

* ``objects``: :func:`medfuse.objectscoring.score_objects` with ``--finder`` (default
  ``rbc_instances``) and ``--jobs`` (default 2): find, crop in memory, classify, write the
  per-object table and the per-image summary;
* ``crop files + score`` (the obvious alternative): a loop in this process finds the cells with
  the same finder, writes each crop (same box and margin) as a PNG, then
  :func:`medfuse.scoring.score` scores the crop folder with the same ``--jobs``.

Prints fields/s of both, their ratio, objects per field and the 1-minute load average. The machine
may be shared (then wall-clock figures understate both), so the CPU seconds of the whole process
tree (this process and its workers, sampled every 0.1 s with psutil) are printed too, with the
projection for 2 idle cores: ``2 / (CPU seconds per field)``.

    PYTHONPATH=core:plugins nice -n 5 python bench/bench_smear_scoring.py --fields 100 --jobs 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STUDY = """
[studies.cells]
dataset = { loader = "folder", params = { path = "train" } }
evaluation = { folds = 2, seed = 0 }
blocks.colour = { plugin = "colour" }
pipelines.plain = { mask = { plugin = "whole_image" }, blocks = ["colour"], classifier = { plugin = "logreg" } }
"""


def field(seed: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """A 640x480 synthetic smear with every other cell tinted blue, and its instance labels."""
    from medfuse.synthetic import make_smear

    img, labels = make_smear((480, 640), cells, seed=seed)
    blue = (labels > 0) & (labels % 2 == 0)
    out = img.astype(np.int16)
    out[blue] += np.array([-60, 0, 30], np.int16)
    return np.clip(out, 0, 255).astype(np.uint8), labels


def train(work: Path, cells: int) -> Path:
    from medfuse.cellfinding import expand_box, measure_instances
    from medfuse.objects import crop
    from medfuse.objectscoring import MARGIN
    from medfuse.study import resolve_study
    from medfuse.training import train_bundle
    from PIL import Image

    bundle = work / "bundle"
    if (bundle / "manifest.json").is_file():
        return bundle
    for seed in range(1000, 1004):
        img, labels = field(seed, cells)
        for row in measure_instances(labels).itertuples():
            cls = "blue" if row.object_id % 2 == 0 else "pink"
            (work / "train" / cls).mkdir(parents=True, exist_ok=True)
            box = expand_box((row.box_x0, row.box_y0, row.box_x1, row.box_y1), MARGIN)
            Image.fromarray(crop(img, box)).save(work / "train" / cls / f"{seed}-{row.object_id}.png")
    (work / "study.toml").write_text(STUDY)
    return train_bundle(resolve_study(str(work / "study.toml")), "plain", work, bundle, cv=False, progress=False)


def crop_files_then_score(bundle: Path, images: list[Path], out_dir: Path, finder: str, jobs: int) -> int:
    """The alternative: find cells, write every crop as a PNG, score the folder; returns crops."""
    from medfuse.cellfinding import expand_box, measure_instances
    from medfuse.imageio import read_image
    from medfuse.objects import crop
    from medfuse.objectscoring import MARGIN, make_finder
    from medfuse.scoring import score
    from PIL import Image

    f = make_finder(finder, {})
    crops = out_dir / "crops"
    crops.mkdir(parents=True)
    n = 0
    for path in images:
        image = read_image(path)
        for row in measure_instances(f.predict_instances(image)).itertuples():
            box = expand_box((row.box_x0, row.box_y0, row.box_x1, row.box_y1), MARGIN)
            Image.fromarray(crop(image, box)).save(crops / f"{path.stem}-{row.object_id}.png")
            n += 1
    score(bundle, crops, out_dir / "crops.parquet", jobs=jobs, progress=False)
    return n


class TreeCpu:
    """CPU seconds (user + system) used by this process and all its descendants while running:
    a thread samples every live process of the tree; a process's last sample counts."""

    def __init__(self) -> None:
        import psutil

        self.me = psutil.Process()
        self.seen: dict[int, float] = {}
        self.base = self._cpu(self.me)

    @staticmethod
    def _cpu(p) -> float:
        t = p.cpu_times()
        return t.user + t.system

    def sample(self) -> None:
        import psutil

        for p in [self.me, *self.me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                self.seen[p.pid] = self._cpu(p)

    def __enter__(self) -> TreeCpu:
        import threading

        self.stop = threading.Event()

        def loop() -> None:
            while not self.stop.wait(0.1):
                self.sample()

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.sample()
        self.seconds = sum(self.seen.values()) - self.base


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fields", type=int, default=100, help="Synthetic 640x480 fields to score (default 100).")
    ap.add_argument("--cells", type=int, default=30, help="Cells per synthetic field (default 30).")
    ap.add_argument("--images", type=Path, default=None, help="Score these images instead of synthetic fields.")
    ap.add_argument("--finder", default="rbc_instances", help="Instance finder (default rbc_instances).")
    ap.add_argument("--jobs", type=int, default=2, help="Worker processes (default 2).")
    ap.add_argument("--work", type=Path, default=Path("/tmp/medfuse-bench-smear"), help="Work folder.")
    args = ap.parse_args(argv)
    from medfuse.objectscoring import score_objects
    from PIL import Image

    args.work.mkdir(parents=True, exist_ok=True)
    bundle = train(args.work, args.cells)
    if args.images:
        fields = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    else:
        folder = args.work / f"fields-{args.fields}-{args.cells}"
        if not folder.is_dir():
            folder.mkdir()
            for i in range(args.fields):
                Image.fromarray(field(i, args.cells)[0]).save(folder / f"field{i:04d}.png")
        fields = sorted(folder.glob("*.png"))
    runs = args.work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir()
    t0 = time.perf_counter()
    with TreeCpu() as cpu_obj:
        res = score_objects(bundle, fields[0].parent if not args.images else args.images, runs / "objects.parquet",
                            args.finder, jobs=args.jobs, progress=False)
    t_obj = time.perf_counter() - t0
    t0 = time.perf_counter()
    with TreeCpu() as cpu_naive:
        n_crops = crop_files_then_score(bundle, fields, runs / "naive", args.finder, args.jobs)
    t_naive = time.perf_counter() - t0
    n = len(fields)
    print(f"{n} fields, {res.n_inputs - res.n_failed} objects classified ({n_crops} crop files in the alternative), "
          f"finder {args.finder}, jobs {args.jobs}, load average {os.getloadavg()[0]:.1f}")
    for what, secs, cpu in (("medfuse score --objects", t_obj, cpu_obj.seconds),
                            ("crop files + score", t_naive, cpu_naive.seconds)):
        print(f"  {what:24s}: {secs:6.1f} s  {n / secs:5.2f} fields/s wall;  {cpu:6.1f} CPU-s, {cpu / n:.3f} "
              f"CPU-s/field -> {2 * n / cpu:5.2f} fields/s on 2 idle cores")
    print(f"  ratio (alternative / objects): wall {t_naive / t_obj:.2f}x, CPU {cpu_naive.seconds / cpu_obj.seconds:.2f}x"
          "  (target: >= 5 fields/s with 2 jobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
