"""Where a pipeline goes wrong and why, collected while :func:`medfuse.evaluation.run_study` fits its folds.

JSON-ready pieces of ``results["pipelines"][NAME]`` (rendered by :mod:`medfuse.report`):

* ``learning_curves``: per network trained (``block-cnn``, ``classifier``, ...), one entry per fold with
  loss and accuracy per epoch, training and validation (the plugin's Keras ``history_``).
* ``misclassified``: the most confident wrong out-of-fold predictions (id, path, truth, prediction,
  its probability, the true class's probability, fold) and the count of all wrong ones.
* ``saliency``: for pipelines with a network that offers saliency (CNN classifier, CNN embedding
  block), maps on a sample of correct and wrong test images of the first fold, each stored with the
  network's own input image as small base64 PNGs (so the report needs no image file).
* ``raw_importance``: permutation importance on the raw block features (before PCA), pooled over
  every fold: mean and standard deviation of the per-fold drops in accuracy.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

HISTORY_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy")
MISCLASSIFIED_LIMIT = 24
SALIENCY_PER_KIND = 4
SALIENCY_SIDE = 64


def encode_png(array: np.ndarray) -> str:
    """``uint8`` image (H, W) or (H, W, 3) as a base64 PNG string."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png(text: str) -> np.ndarray:
    """Inverse of :func:`encode_png`."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


def _small(array: np.ndarray, side: int) -> np.ndarray:
    """Downscale (never up) so the longer side is at most ``side``."""
    h, w = array.shape[:2]
    if max(h, w) <= side:
        return array
    scale = side / max(h, w)
    img = Image.fromarray(array).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                        Image.Resampling.BILINEAR)
    return np.asarray(img)


# ---- learning curves --------------------------------------------------------------------------

def fold_histories(fitted: Any) -> dict[str, dict[str, Any]]:
    """The per-epoch histories of the networks a fold's fit trained (``training_histories()``), trimmed
    to :data:`HISTORY_KEYS` plus ``plugin``, ``epochs_run`` and ``reused``."""
    fn = getattr(fitted, "training_histories", None)
    if fn is None:
        return {}
    out = {}
    for slot, h in (fn() or {}).items():
        out[slot] = {k: [float(v) for v in h[k]] for k in HISTORY_KEYS if h.get(k)}
        out[slot] |= {"plugin": str(h.get("plugin", "")), "epochs_run": int(h.get("epochs_run") or len(h["loss"])),
                      "reused": bool(h.get("reused", False))}
    return out


def learning_curves(per_fold: list[tuple[int, dict[str, dict[str, Any]]]]) -> dict[str, list[dict[str, Any]]]:
    """``{slot: [{"fold": k, "loss": [...], ...}, ...]}`` from ``(fold, fold_histories)`` pairs."""
    out: dict[str, list[dict[str, Any]]] = {}
    for fold, hists in per_fold:
        for slot, h in hists.items():
            out.setdefault(slot, []).append({"fold": fold, **h})
    return out


# ---- misclassified samples ----------------------------------------------------------------------

def misclassified(samples: pd.DataFrame, y: np.ndarray, proba: np.ndarray, fold: np.ndarray, classes: np.ndarray,
                  limit: int = MISCLASSIFIED_LIMIT) -> dict[str, Any]:
    """The ``limit`` most confident wrong predictions among rows with ``fold >= 0`` (``proba`` rows
    of the others are ignored), and the number of wrong ones."""
    rows = np.flatnonzero(fold >= 0)
    if not len(rows):
        return {"n_wrong": 0, "n": 0, "samples": []}
    p = np.nan_to_num(proba[rows])
    pred = p.argmax(axis=1)
    truth = pd.Index(classes.astype(str)).get_indexer(np.asarray(y[rows]).astype(str))
    wrong = np.flatnonzero(pred != truth)
    order = wrong[np.argsort(-p[wrong, pred[wrong]], kind="stable")][:limit]
    paths = samples["path"].astype(str).to_numpy() if "path" in samples.columns else np.full(len(samples), "")
    ids = samples["id"].astype(str).to_numpy()
    out = [{"id": ids[rows[i]], "path": paths[rows[i]], "label": str(classes[truth[i]]), "pred": str(classes[pred[i]]),
            "p_pred": float(p[i, pred[i]]), "p_true": float(p[i, truth[i]]), "fold": int(fold[rows[i]]) + 1}
           for i in order]
    return {"n_wrong": int(len(wrong)), "n": int(len(rows)), "samples": out}


# ---- saliency -----------------------------------------------------------------------------------

def saliency_samples(fitted: Any, prepared: Any, test: np.ndarray, y: np.ndarray, proba: np.ndarray,
                     classes: np.ndarray, fold: int, per_kind: int = SALIENCY_PER_KIND,
                     side: int = SALIENCY_SIDE) -> dict[str, Any] | None:
    """Saliency maps on up to ``per_kind`` wrong and ``per_kind`` correct rows of one test fold (the
    most confident of each), towards the predicted class; None when the pipeline has no network
    that offers saliency (``FittedPipeline.saliency``)."""
    fn = getattr(fitted, "saliency", None)
    if fn is None or not len(test):
        return None
    pred = proba.argmax(axis=1)
    truth = pd.Index(classes.astype(str)).get_indexer(np.asarray(y[test]).astype(str))
    conf = proba[np.arange(len(test)), pred]
    picks = []
    for want in (False, True):
        pos = np.flatnonzero((pred == truth) == want)
        picks += list(pos[np.argsort(-conf[pos], kind="stable")][:per_kind])
    if not picks:
        return None
    picks = np.asarray(picks)
    got = fn(prepared, test[picks], [str(classes[pred[i]]) for i in picks])
    if got is None:
        return None
    ids = prepared.samples["id"].astype(str).to_numpy()
    out = []
    for j, i in enumerate(picks):
        image = np.asarray(got["images"][j])
        image = np.repeat(image[..., :1], 3, axis=2) if image.ndim == 3 and image.shape[2] == 1 else image
        heat = np.clip(np.nan_to_num(np.asarray(got["maps"][j], dtype=np.float32)), 0, 1)
        out.append({"id": ids[test[i]], "label": str(classes[truth[i]]), "pred": str(classes[pred[i]]),
                    "p_pred": float(conf[i]), "correct": bool(pred[i] == truth[i]),
                    "image": encode_png(_small(image.astype(np.uint8), side)),
                    "map": encode_png(_small((heat * 255).round().astype(np.uint8), side))})
    return {"method": got.get("method", "saliency"), "plugin": got.get("plugin", ""), "slot": got.get("slot", ""),
            "fold": fold, "target": "predicted class", "samples": out}


# ---- raw-feature importance ---------------------------------------------------------------------

def fold_raw_importance(fitted: Any, prepared: Any, test: np.ndarray, seed: int,
                        n_repeats: int = 1) -> pd.DataFrame | None:
    """One fold's permutation importance on raw features (``FittedPipeline.raw_importance``), or None."""
    fn = getattr(fitted, "raw_importance", None)
    return None if fn is None else fn(prepared, test, n_repeats=n_repeats, seed=seed)


def pool_importance(frames: list[pd.DataFrame], limit: int = 30) -> dict[str, Any] | None:
    """Mean and sd over folds of each raw feature's drop in accuracy; the ``limit`` largest, and the
    share of the total positive importance held by each block."""
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return None
    both = pd.concat([f.assign(fold=k) for k, f in enumerate(frames)], ignore_index=True)
    g = both.groupby(["feature", "block"], sort=False)["importance"]
    pooled = pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "folds": g.size()}).reset_index()
    pooled = pooled.sort_values("mean", ascending=False, kind="mergesort")
    positive = pooled["mean"].clip(lower=0)
    share = (positive.groupby(pooled["block"]).sum() / positive.sum()) if positive.sum() > 0 else None
    top = [{"feature": r.feature, "block": r.block, "importance": float(r.mean),
            "sd": None if pd.isna(r.sd) else float(r.sd), "folds": int(r.folds)}
           for r in pooled.head(limit).itertuples()]
    return {"method": "permutation on raw features (drop in accuracy)", "folds": len(frames),
            "n_features": int(len(pooled)), "features": top,
            "block_share": {str(b): float(v) for b, v in share.items()} if share is not None else {}}
