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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["bccd", "anerbc", "both"], default="both")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets",
                    help="Data root holding bccd/ and anerbc/ (default ../shared/datasets).")
    ap.add_argument("--limit", type=int, default=None, help="Use only the first N images (sorted).")
    ap.add_argument("--min-iou", type=float, default=0.5, help="Box IoU needed for a match (default 0.5).")
    ap.add_argument("--min-gt-area", type=int, default=50,
                    help="AneRBC: ground-truth components smaller than this (px) are ignored (default 50).")
    args = ap.parse_args(argv)
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
