"""Segmentation metrics in pixels: Dice and Hausdorff distance (95th percentile and maximum).

Masks are canonical (``uint8 (H, W)``, 0 background / 1 cell / 2 nucleus) or boolean. A *region*
selects the pixels compared: ``"cell"`` is ``mask > 0`` (the whole cell), ``"nucleus"`` is
``mask == 2``, ``"cytoplasm"`` is ``mask == 1``.

Hausdorff distances are measured between the boundaries (pixels of the region with a
4-neighbour outside it) with exact Euclidean distance transforms. ``hd95`` follows the usual
(MedPy) convention: the 95th percentile of the pooled boundary-to-boundary distances in both
directions; ``hd_max`` is the classical Hausdorff distance. Conventions for empty regions: both
empty gives Dice 1 and distances 0; exactly one empty gives Dice 0 and distances NaN (left out
of means, and counted in ``n_undefined``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from .errors import InvalidInputError

REGIONS = {"cell": lambda m: m > 0, "nucleus": lambda m: m == 2, "cytoplasm": lambda m: m == 1}


def region(mask: np.ndarray, name: str = "cell") -> np.ndarray:
    """Boolean (H, W) array of the pixels of ``name`` (``cell``, ``nucleus`` or ``cytoplasm``)."""
    if name not in REGIONS:
        raise InvalidInputError(f"unknown region {name!r}; choose one of {', '.join(REGIONS)}")
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask if name == "cell" else np.zeros_like(mask)
    return REGIONS[name](mask)


def _pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise InvalidInputError(f"masks must be 2-D and of equal shape, got {pred.shape} and {truth.shape}")
    return pred, truth


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient ``2|A∩B| / (|A| + |B|)`` of two boolean masks; 1.0 when both are empty."""
    pred, truth = _pair(pred, truth)
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, truth).sum()) / total


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with at least one 4-neighbour outside it (image edges count as outside)."""
    mask = np.asarray(mask, dtype=bool)
    inner = ndi.binary_erosion(mask, structure=ndi.generate_binary_structure(2, 1), border_value=0)
    return mask & ~inner


def surface_distances(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances (px) from each boundary pixel of ``pred`` to ``truth``'s boundary, and back."""
    pred, truth = _pair(pred, truth)
    bp, bt = boundary(pred), boundary(truth)
    if not bp.any() or not bt.any():
        return np.zeros(0), np.zeros(0)
    to_truth = ndi.distance_transform_edt(~bt)
    to_pred = ndi.distance_transform_edt(~bp)
    return to_truth[bp], to_pred[bt]


def hausdorffs(pred: np.ndarray, truth: np.ndarray, percentiles: Sequence[float]) -> list[float]:
    """Hausdorff distances in pixels at each of ``percentiles`` (100: the maximum, 95: HD95), from
    one distance transform; 0 when both regions are empty, NaN when one is."""
    pred, truth = _pair(pred, truth)
    if not pred.any() and not truth.any():
        return [0.0] * len(percentiles)
    if not pred.any() or not truth.any():
        return [float("nan")] * len(percentiles)
    d = np.concatenate(surface_distances(pred, truth))
    return [float(d.max()) if q >= 100 else float(np.percentile(d, q)) for q in percentiles]


def scores(pred: np.ndarray, truth: np.ndarray, regions: Sequence[str] = ("cell",)) -> dict[str, float]:
    """``{<region>_dice, <region>_hd95, <region>_hd_max}`` for one canonical mask pair."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise InvalidInputError(f"predicted mask {pred.shape} and true mask {truth.shape} differ in shape")
    out: dict[str, float] = {}
    for name in regions:
        p, t = region(pred, name), region(truth, name)
        out[f"{name}_dice"] = dice(p, t)
        out[f"{name}_hd95"], out[f"{name}_hd_max"] = hausdorffs(p, t, (95, 100))
    return out


def score_table(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray], ids: Sequence[str] | None = None,
                regions: Sequence[str] = ("cell",)) -> pd.DataFrame:
    """Per-image scores (one row per image, index ``id``) followed by a ``mean`` row.

    The mean row averages over images where a value is defined; ``n_undefined`` counts the
    images whose Hausdorff distance was undefined (exactly one region empty).
    """
    if len(preds) != len(truths):
        raise InvalidInputError(f"{len(preds)} predicted masks but {len(truths)} true masks")
    ids = [str(i) for i in (ids if ids is not None else range(len(preds)))]
    rows = [scores(p, t, regions) for p, t in zip(preds, truths)]
    table = pd.DataFrame(rows, index=pd.Index(ids, name="id"))
    hd_cols = [c for c in table.columns if "_hd" in c]
    table["n_undefined"] = table[hd_cols].isna().any(axis=1).astype(int) if hd_cols else 0
    mean = table.mean(numeric_only=True)
    mean["n_undefined"] = table["n_undefined"].sum()
    table.loc["mean"] = mean
    return table
