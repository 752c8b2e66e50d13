"""Precision and recall of found cells against annotations, per class.

BCCD (``bccd/``): the Pascal VOC boxes of RBC / WBC / Platelets; each class is found by its own
finder (``rbc_instances``, ``wbc_instances``, ``platelet_instances``) and ``smear_cells`` is
scored against all boxes (class-agnostic, ``any``). AneRBC (``anerbc/``): the ground-truth
objects are the 8-connected components of the binary RBC masks with at least ``--min-gt-area``
pixels (the masks hold many 1-pixel specks), found by ``rbc_instances``.

A found object matches an annotated one, one-to-one and best pairs first
(:func:`medfuse.cellfinding.match_boxes`), in two ways, both printed: ``iou``, the boxes (the
found instance's tight box) have IoU >= ``--min-iou`` (default 0.5); ``centre``, the found box's
centre lies within half the annotated box's smaller side of the annotated box's centre (fairer to
loosely drawn boxes, e.g. BCCD's platelets).

    PYTHONPATH=core:plugins python bench/eval_cell_finding.py --dataset bccd --limit 100
    PYTHONPATH=core:plugins python bench/eval_cell_finding.py --dataset anerbc

``--unet-folds K`` (AneRBC): ``unet_instances`` (a U-Net foreground, then the ``rbc_instances``
watershed split) against ``rbc_instances`` on the same held-out images. The images are split into
K folds (seeded permutation; each image is its own patient, so its own group); per fold the U-Net
trains on the other folds' images and masks only. ``--unet-max-folds`` runs the first folds only
(time cap). Besides precision/recall, the foreground Dice and HD95 of both finders are printed.

    nice -n 10 python bench/eval_cell_finding.py --dataset anerbc --unet-folds 2 --unet-epochs 10
"""

from __future__ import annotations

import argparse
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

BCCD_FINDERS = {"RBC": "rbc_instances", "WBC": "wbc_instances", "Platelets": "platelet_instances"}


def voc_boxes(xml: Path) -> tuple[str, dict[str, list[tuple[int, int, int, int]]]]:
    """``(image file name, {class: [box]})`` of a VOC file; VOC's inclusive max -> exclusive."""
    root = ET.parse(xml).getroot()
    boxes: dict[str, list[tuple[int, int, int, int]]] = {}
    for obj in root.findall("object"):
        b = obj.find("bndbox")
        x0, y0, x1, y1 = (int(float(b.find(k).text)) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.setdefault(obj.find("name").text.strip(), []).append((x0, y0, x1 + 1, y1 + 1))
    return root.find("filename").text.strip(), boxes


def found_boxes(finder, image: np.ndarray) -> np.ndarray:
    from medfuse.cellfinding import BOX_COLUMNS, measure_instances

    return measure_instances(finder.predict_instances(image))[list(BOX_COLUMNS)].to_numpy()


def eval_bccd(root: Path, limit: int | None, min_iou: float) -> list[tuple[str, str, object, float]]:
    from medfuse.cellfinding import MatchCounts
    from medfuse.host import get_host
    from medfuse.imageio import read_image

    host = get_host()
    finders = {c: host.create(n, kind="mask") for c, n in BCCD_FINDERS.items()}
    finders["any"] = host.create("smear_cells", kind="mask")
    counts = {(c, by): MatchCounts() for c in finders for by in ("iou", "centre")}
    seconds = dict.fromkeys(finders, 0.0)
    xmls = sorted((root / "Annotations").glob("*.xml"))[:limit]
    for xml in xmls:
        name, boxes = voc_boxes(xml)
        image = read_image(root / "JPEGImages" / name)
        for cls, finder in finders.items():
            truth = sum(boxes.values(), []) if cls == "any" else boxes.get(cls, [])
            t0 = time.perf_counter()
            found = found_boxes(finder, image)
            seconds[cls] += time.perf_counter() - t0
            for by in ("iou", "centre"):
                counts[cls, by].add(found, np.asarray(truth).reshape(-1, 4), min_iou, by)
    return [(f"bccd ({len(xmls)} images)", cls, by, counts[cls, by], seconds[cls] / max(len(xmls), 1))
            for cls in finders for by in ("iou", "centre")]


def eval_anerbc(root: Path, limit: int | None, min_iou: float, min_gt_area: int) -> list[tuple[str, str, object, float]]:
    from medfuse.cellfinding import BOX_COLUMNS, MatchCounts, instances_from_mask, measure_instances
    from medfuse.host import get_host
    from medfuse.imageio import read_image, read_mask

    finder = get_host().create("rbc_instances", kind="mask")
    counts, seconds = {"iou": MatchCounts(), "centre": MatchCounts()}, 0.0
    images = sorted((root / "images").glob("*/*.jpg"))[:limit]
    for path in images:
        mask = read_mask(root / "masks" / path.parent.name / f"{path.stem}.png")
        truth = measure_instances(instances_from_mask(mask, min_gt_area))[list(BOX_COLUMNS)].to_numpy()
        image = read_image(path)
        t0 = time.perf_counter()
        found = found_boxes(finder, image)
        seconds += time.perf_counter() - t0
        for by, c in counts.items():
            c.add(found, truth, min_iou, by)
    return [(f"anerbc ({len(images)} images)", "RBC", by, c, seconds / max(len(images), 1)) for by, c in counts.items()]


UNET_SETTINGS = dict(n_classes=2, width=8, depth=3, scale=0.5, patch_size=128, batch_size=8, validation_fraction=0.0)


def anerbc_pairs(root: Path, limit: int | None = None) -> list[tuple[str, Path, Path]]:
    """``(id, image, mask)`` of the AneRBC smears, sorted (``id`` = ``cohort/stem``, one patient each)."""
    images = sorted((root / "images").glob("*/*.jpg"))[:limit]
    return [(f"{p.parent.name}/{p.stem}", p, root / "masks" / p.parent.name / f"{p.stem}.png") for p in images]


def eval_anerbc_unet(root: Path, folds: int, max_folds: int | None, min_iou: float, min_gt_area: int,
                     seed: int = 0, limit: int | None = None, log=print, **unet_params) -> list[tuple]:
    """``unet_instances`` trained on the other folds vs ``rbc_instances``, on each fold's held-out
    smears; rows as :func:`eval_anerbc` plus ``(dice, hd95)`` means of the foregrounds."""
    from medfuse.cellfinding import BOX_COLUMNS, MatchCounts, instances_from_mask, measure_instances
    from medfuse.imageio import read_image, read_mask
    from medfuse.segmetrics import scores
    from medfuse_plugins.instances import RbcInstances
    from medfuse_plugins.unet import UNetInstances

    pairs = anerbc_pairs(root, limit)
    ims = [read_image(p) for _, p, _ in pairs]
    ms = [read_mask(m) for _, _, m in pairs]
    order = np.random.default_rng(seed).permutation(len(pairs))
    parts = [np.sort(order[k::folds]) for k in range(folds)][: max_folds or None]
    names = ("unet_instances", "rbc_instances")
    counts = {(n, by): MatchCounts() for n in names for by in ("iou", "centre")}
    seg = {n: [] for n in names}
    seconds = dict.fromkeys(names, 0.0)
    n_test = 0
    for k, test in enumerate(parts):
        train = np.setdiff1d(np.arange(len(pairs)), test)
        assert not set(train) & set(test)
        t0 = time.perf_counter()
        unet = UNetInstances(**{**UNET_SETTINGS, **unet_params, "random_state": seed}).fit(
            [ims[i] for i in train], [ms[i] for i in train])
        log(f"fold {k}: U-Net trained on {[pairs[i][0] for i in train]} in {time.perf_counter() - t0:.0f}s "
            f"({unet.history_['epochs_run']} epochs); testing on {[pairs[i][0] for i in test]}")
        finders = {"unet_instances": unet, "rbc_instances": RbcInstances()}
        for i in test:
            truth = measure_instances(instances_from_mask(ms[i], min_gt_area))[list(BOX_COLUMNS)].to_numpy()
            for n, finder in finders.items():
                t0 = time.perf_counter()
                labels = finder.predict_instances(ims[i])
                seconds[n] += time.perf_counter() - t0
                found = measure_instances(labels)[list(BOX_COLUMNS)].to_numpy()
                for by in ("iou", "centre"):
                    counts[n, by].add(found, truth, min_iou, by)
                s = scores(labels > 0, ms[i] > 0)
                seg[n].append((s["cell_dice"], s["cell_hd95"]))
        n_test += len(test)
    label = f"anerbc held-out ({n_test} images)"
    return [(label, n, by, counts[n, by], seconds[n] / max(n_test, 1), np.nanmean(seg[n], axis=0))
            for n in names for by in ("iou", "centre")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["bccd", "anerbc", "both"], default="both")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets",
                    help="Data root holding bccd/ and anerbc/ (default ../shared/datasets).")
    ap.add_argument("--limit", type=int, default=None, help="Use only the first N images (sorted).")
    ap.add_argument("--min-iou", type=float, default=0.5, help="Box IoU needed for a match (default 0.5).")
    ap.add_argument("--min-gt-area", type=int, default=50,
                    help="AneRBC: ground-truth components smaller than this (px) are ignored (default 50).")
    ap.add_argument("--unet-folds", type=int, default=0,
                    help="AneRBC: also train unet_instances per fold (K folds of images) and compare it with "
                         "rbc_instances on the held-out images (0 = skip).")
    ap.add_argument("--unet-max-folds", type=int, default=None, help="Run only the first N U-Net folds.")
    ap.add_argument("--unet-epochs", type=int, default=10, help="U-Net epochs (default 10).")
    ap.add_argument("--unet-steps", type=int, default=25, help="U-Net steps per epoch (default 25).")
    ap.add_argument("--seed", type=int, default=0, help="Fold permutation and U-Net seed.")
    args = ap.parse_args(argv)
    if args.unet_folds:
        rows = eval_anerbc_unet(args.data / "anerbc", args.unet_folds, args.unet_max_folds, args.min_iou,
                                args.min_gt_area, args.seed, args.limit, log=lambda m: print(m, flush=True),
                                epochs=args.unet_epochs, steps_per_epoch=args.unet_steps)
        print(f"U-Net settings: {dict(UNET_SETTINGS, epochs=args.unet_epochs, steps_per_epoch=args.unet_steps)}")
        print(f"{'data':30s} {'finder':15s} {'match':6s} {'annotated':>9s} {'found':>7s} {'matched':>7s} "
              f"{'precision':>9s} {'recall':>7s} {'s/image':>8s} {'fg dice':>8s} {'fg hd95':>8s}")
        for data, n, by, c, secs, (d, hd) in rows:
            print(f"{data:30s} {n:15s} {by:6s} {c.truth:9d} {c.found:7d} {c.matched:7d} {c.precision:9.3f} "
                  f"{c.recall:7.3f} {secs:8.3f} {d:8.3f} {hd:8.1f}")
        return 0
    rows = []
    if args.dataset in ("bccd", "both"):
        rows += eval_bccd(args.data / "bccd", args.limit, args.min_iou)
    if args.dataset in ("anerbc", "both"):
        rows += eval_anerbc(args.data / "anerbc", args.limit, args.min_iou, args.min_gt_area)
    print(f"matching one-to-one: iou = box IoU >= {args.min_iou}; centre = centres within half the annotated "
          "box's smaller side")
    print(f"{'data':22s} {'class':10s} {'match':6s} {'annotated':>9s} {'found':>7s} {'matched':>7s} {'precision':>9s} "
          f"{'recall':>7s} {'s/image':>8s}")
    for data, cls, by, c, secs in rows:
        print(f"{data:22s} {cls:10s} {by:6s} {c.truth:9d} {c.found:7d} {c.matched:7d} {c.precision:9.3f} {c.recall:7.3f} "
              f"{secs:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
