"""Found objects as a table, and found objects matched against annotated ones.

:func:`measure_instances` turns an instance label image (0 background, one value per object)
into one row per object: id, centroid, bounding box (``x1``/``y1`` exclusive, the box convention
of :mod:`medfuse.objects`) and area. :func:`match_boxes` matches found boxes to annotated boxes
one-to-one by box IoU (greedy, best pair first, pairs with IoU >= ``min_iou`` only) or by centre
distance (within half the annotated box's smaller side);
:func:`precision_recall` sums the matches of many images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .objects import CropRule

if TYPE_CHECKING:  # pandas and scipy.ndimage are imported when used: registering plugins needs neither
    import pandas as pd

__all__ = ["MatchCounts", "expand_box", "instances_from_mask", "match_boxes", "measure_instances",
           "precision_recall", "box_iou", "centre_score"]

BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")


def measure_instances(labels: np.ndarray) -> pd.DataFrame:
    """One row per object of ``labels``: ``object_id`` (its label value), ``centroid_x``,
    ``centroid_y`` (pixel centre of mass), ``box_x0, box_y0, box_x1, box_y1`` (tight box,
    ``x1``/``y1`` exclusive) and ``area`` (pixels); ordered by label."""
    import pandas as pd
    from scipy import ndimage as ndi

    labels = np.asarray(labels)
    cols = ["object_id", "centroid_x", "centroid_y", *BOX_COLUMNS, "area"]
    slices = ndi.find_objects(labels) if labels.size and labels.max() > 0 else []
    rows = []
    for i, sl in enumerate(slices, start=1):
        if sl is None:  # a label value not present
            continue
        ys, xs = np.nonzero(labels[sl] == i)
        rows.append((i, sl[1].start + xs.mean(), sl[0].start + ys.mean(), sl[1].start, sl[0].start, sl[1].stop,
                     sl[0].stop, int(ys.size)))
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=float if c.startswith("centroid") else np.int64) for c in cols})
    return pd.DataFrame(rows, columns=cols)


def expand_box(box: tuple[int, int, int, int], margin: float) -> tuple[int, int, int, int]:
    """``box`` grown on every side by ``margin`` times its larger side (rounded to pixels); the
    result may extend past the image (:func:`medfuse.objects.crop` repeats the edge there)."""
    return CropRule("box", margin=margin).box(box)


def instances_from_mask(mask: np.ndarray, min_area: int = 1) -> np.ndarray:
    """Instance labels of a binary ground-truth mask: its 8-connected components of at least
    ``min_area`` pixels, numbered ``1..n``."""
    from scipy import ndimage as ndi

    labels, n = ndi.label(np.asarray(mask) > 0, structure=np.ones((3, 3), bool))
    if n == 0:
        return labels.astype(np.int32)
    area = np.bincount(labels.ravel())
    keep = area >= min_area
    keep[0] = False
    new = np.zeros(area.size, np.int32)
    new[keep] = np.arange(1, int(keep.sum()) + 1)
    return new[labels]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of boxes ``(x0, y0, x1, y1)``, ``x1``/``y1`` exclusive."""
    a = np.asarray(a, float).reshape(-1, 4)
    b = np.asarray(b, float).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def centre_score(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(len(found), len(truth))``: 1 minus the distance between box centres divided by half the
    annotated box's smaller side (>= 0 when a found centre lies that close to an annotated one)."""
    f = np.asarray(found, float).reshape(-1, 4)
    t = np.asarray(truth, float).reshape(-1, 4)
    fc = np.stack([(f[:, 0] + f[:, 2]) / 2, (f[:, 1] + f[:, 3]) / 2], 1)
    tc = np.stack([(t[:, 0] + t[:, 2]) / 2, (t[:, 1] + t[:, 3]) / 2], 1)
    half = np.maximum(np.minimum(t[:, 2] - t[:, 0], t[:, 3] - t[:, 1]) / 2, 1.0)
    d = np.hypot(fc[:, None, 0] - tc[None, :, 0], fc[:, None, 1] - tc[None, :, 1])
    return 1.0 - d / half[None, :]


def match_boxes(found: np.ndarray, truth: np.ndarray, min_iou: float = 0.5,
                by: str = "iou") -> list[tuple[int, int, float]]:
    """One-to-one matches ``(found index, truth index, score)``, greedily the best pair first.

    ``by="iou"``: box IoU, pairs with IoU >= ``min_iou``; ``by="centre"``: the found box's centre
    within half the annotated box's smaller side of the annotated box's centre (score
    :func:`centre_score` >= 0; ``min_iou`` unused).
    """
    if by not in ("iou", "centre"):
        raise ValueError(f"match by {by!r}: expected 'iou' or 'centre'")
    score = box_iou(found, truth) if by == "iou" else centre_score(found, truth)
    if score.size == 0:
        return []
    fi, ti = np.nonzero(score >= (min_iou if by == "iou" else 0.0))
    iou = score
    order = np.argsort(-iou[fi, ti], kind="stable")
    used_f, used_t, out = set(), set(), []
    for k in order:
        f, t = int(fi[k]), int(ti[k])
        if f in used_f or t in used_t:
            continue
        used_f.add(f)
        used_t.add(t)
        out.append((f, t, float(iou[f, t])))
    return out


@dataclass
class MatchCounts:
    """Found, annotated and matched objects summed over images."""

    found: int = 0
    truth: int = 0
    matched: int = 0

    def add(self, found: np.ndarray, truth: np.ndarray, min_iou: float = 0.5, by: str = "iou") -> None:
        found = np.asarray(found).reshape(-1, 4)
        truth = np.asarray(truth).reshape(-1, 4)
        self.found += len(found)
        self.truth += len(truth)
        self.matched += len(match_boxes(found, truth, min_iou, by))

    @property
    def precision(self) -> float:
        return self.matched / self.found if self.found else float("nan")

    @property
    def recall(self) -> float:
        return self.matched / self.truth if self.truth else float("nan")


def precision_recall(found: list[np.ndarray], truth: list[np.ndarray], min_iou: float = 0.5,
                     by: str = "iou") -> MatchCounts:
    """Matches of found boxes against annotated boxes, image by image, summed (see :func:`match_boxes`)."""
    counts = MatchCounts()
    for f, t in zip(found, truth, strict=True):
        counts.add(f, t, min_iou, by)
    return counts
