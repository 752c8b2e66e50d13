"""Metrics of probabilistic predictions: point values (scikit-learn), bootstrap intervals
vectorised over resamples (overall and per class), ROC points for plots, per-fold summaries.

Bootstrap resamples are integer weight matrices (:func:`bootstrap_weights`) that depend only on
the number of samples (or groups), the number of resamples and the seed, so two pipelines scored
on the same samples get the same resamples (:mod:`medfuse.paired`, :mod:`medfuse.calibration`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "roc_auc_ovr")
"""Metrics computed for every pipeline (the study's ``evaluation.metrics`` chooses the leaderboard)."""


def check_metric_names(study: Any) -> None:
    """A :class:`~medfuse.errors.StudyError` naming the key when ``study.evaluation.metrics`` holds an
    unknown metric (``medfuse validate`` and ``compare`` both call it before loading data)."""
    from .errors import StudyError, did_you_mean

    unknown = [m for m in study.evaluation.metrics if m not in METRICS]
    if unknown:
        raise StudyError(study.source, f"studies.{study.name}.evaluation.metrics",
                         f"unknown metric {unknown[0]!r}{did_you_mean(unknown[0], METRICS)}; known: {', '.join(METRICS)}")


def label_codes(y: Sequence[Any], classes: np.ndarray) -> np.ndarray:
    """Column index in ``classes`` of each label of ``y`` (compared as text); ``ValueError`` for a stranger."""
    index = pd.Index(classes.astype(str))
    codes = index.get_indexer(pd.Index(np.asarray(y).astype(str)))
    if (codes < 0).any():
        raise ValueError(f"labels not among classes {list(classes)}")
    return codes


def _auc_ovr(y: np.ndarray, proba: np.ndarray) -> float:
    """sklearn's one-vs-rest AUC (binary: of the positive class), NaN where undefined."""
    k = proba.shape[1]
    if k == 2:
        pos = y == 1
        return float(roc_auc_score(pos, proba[:, 1])) if 0 < pos.sum() < len(y) else float("nan")
    aucs = []
    for c in range(k):
        pos = y == c
        aucs.append(roc_auc_score(pos, proba[:, c]) if 0 < pos.sum() < len(y) else np.nan)
    return float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else float("nan")


def point_metrics(y_true: Sequence[Any], proba: np.ndarray, classes: Sequence[Any]) -> dict[str, Any]:
    """Metrics of probabilistic predictions, computed with scikit-learn.

    Parameters
    ----------
    y_true : sequence of labels, shape (n,)
    proba : ndarray, shape (n, n_classes)
        Columns in the order of ``classes``; the prediction is the arg-max.
    classes : sequence, shape (n_classes,)

    Returns
    -------
    dict with ``accuracy``, ``balanced_accuracy``, ``f1_macro``, ``f1_weighted``, ``roc_auc_ovr``
    (one-vs-rest macro; binary: AUC of ``classes[1]``), ``per_class`` (precision, recall, f1,
    support per class) and ``confusion`` (rows true, columns predicted, in ``classes`` order).
    """
    classes = np.asarray(classes).astype(str)
    y = label_codes(y_true, classes)
    proba = np.asarray(proba, dtype=np.float64)
    pred = proba.argmax(axis=1)
    labels = np.arange(len(classes))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    with warnings.catch_warnings():
        # a small test fold may lack a class that is predicted: its recall is left out, as intended
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(y, pred))
    out: dict[str, Any] = {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": balanced,
        "f1_macro": float(f1_score(y, pred, average="macro")),
        "f1_weighted": float(f1_score(y, pred, average="weighted")),
        "roc_auc_ovr": _auc_ovr(y, proba),
        "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                      for i, c in enumerate(classes)},
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
        "n": int(len(y)),
    }
    return out


def weighted_confusion(y: np.ndarray, pred: np.ndarray, W: np.ndarray, k: int) -> np.ndarray:
    """Confusion matrices ``(B, k, k)`` (rows true, columns predicted) for each row of weights ``W (B, n)``."""
    onehot = np.zeros((len(y), k * k))
    onehot[np.arange(len(y)), y * k + pred] = 1.0
    return (W @ onehot).reshape(-1, k, k)


def _weighted_confusion_metrics(y: np.ndarray, pred: np.ndarray, W: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Confusion-matrix metrics for every row of sample weights ``W (B, n)`` at once."""
    cm = weighted_confusion(y, pred, W, k)
    tp = np.einsum("bii->bi", cm)
    support = cm.sum(axis=2)
    predicted = cm.sum(axis=1)
    total = support.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        recall = np.where(support > 0, tp / support, np.nan)
        denom = support + predicted
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
        present = denom > 0
        return {
            "accuracy": tp.sum(axis=1) / total,
            "balanced_accuracy": np.nanmean(recall, axis=1),
            "f1_macro": (f1 * present).sum(axis=1) / present.sum(axis=1),
            "f1_weighted": (f1 * support).sum(axis=1) / total,
        }


def _weighted_auc(scores: np.ndarray, positive: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of ``scores`` for each row of sample weights ``W (B, n)``; ties count 1/2."""
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    pos = positive[order]
    Ws = W[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    neg_g = np.add.reduceat(Ws * ~pos, starts, axis=1)
    pos_g = np.add.reduceat(Ws * pos, starts, axis=1)
    below = np.cumsum(neg_g, axis=1) - neg_g
    n_pos, n_neg = pos_g.sum(axis=1), neg_g.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos_g * (below + 0.5 * neg_g)).sum(axis=1) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def weighted_metrics(y: np.ndarray, proba: np.ndarray, W: np.ndarray) -> dict[str, np.ndarray]:
    """The five summary metrics for every row of sample weights ``W (B, n)`` (vectorised).

    ``y`` holds class codes (column indices of ``proba``). With ``W`` all ones this equals
    :func:`point_metrics` (tested); bootstrap resamples are integer weights.
    """
    k = proba.shape[1]
    pred = proba.argmax(axis=1)
    out = _weighted_confusion_metrics(y, pred, W, k)
    if k == 2:
        out["roc_auc_ovr"] = _weighted_auc(proba[:, 1], y == 1, W)
    else:
        aucs = np.stack([_weighted_auc(proba[:, c], y == c, W) for c in range(k)], axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: AUC undefined there
            out["roc_auc_ovr"] = np.nanmean(aucs, axis=1)
    return out


def bootstrap_intervals(y_true: Sequence[Any], proba: np.ndarray, classes: Sequence[Any],
                        n_boot: int = 1000, seed: int = 0, groups: Sequence[Any] | None = None,
                        level: float = 0.95, chunk: int = 250) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of the summary metrics, vectorised over resamples.

    Parameters
    ----------
    y_true, proba, classes : as in :func:`point_metrics`.
    n_boot : int
        Resamples; 0 gives no intervals.
    seed : int
        Seed of the resampling (same seed, same intervals).
    groups : sequence, shape (n,), optional
        Resample whole groups (patients, smears) instead of single samples.
    level : float
        Coverage of the interval.
    chunk : int
        Resamples per vectorised batch (memory ~ ``chunk * n`` floats).

    Returns
    -------
    ``{metric: [low, high]}`` (NaN bounds where a metric is undefined in every resample).
    """
    if n_boot <= 0:
        return {}
    classes = np.asarray(classes).astype(str)
    y = label_codes(y_true, classes)
    proba = np.asarray(proba, dtype=np.float64)
    values: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    for W in bootstrap_weights(len(y), n_boot, seed, groups, chunk):
        for m, v in weighted_metrics(y, proba, W).items():
            values[m].append(v)
    return {m: percentile_interval(np.concatenate(chunks), level) for m, chunks in values.items()}


def bootstrap_weights(n: int, n_boot: int, seed: int = 0, groups: Sequence[Any] | None = None,
                      chunk: int = 250) -> Iterator[np.ndarray]:
    """Bootstrap resamples of ``n`` samples as integer weight matrices ``(b, n)``, ``chunk`` rows at a time.

    Each row counts how often each sample was drawn. With ``groups``, whole groups (patients,
    smears) are drawn with replacement and every member of a drawn group gets the group's count,
    so a group is never split. The draws depend only on ``(n_groups, n_boot, seed)``: two
    pipelines scored on the same samples get the *same* resamples (the paired bootstrap).
    """
    if groups is None:
        gcode = np.arange(n)
    else:
        gcode = pd.factorize(pd.Series(np.asarray(groups).astype(str)))[0]
    n_groups = int(gcode.max()) + 1 if n else 0
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        draw = rng.integers(0, n_groups, size=(b, n_groups))
        flat = (np.arange(b)[:, None] * n_groups + draw).ravel()
        counts = np.bincount(flat, minlength=b * n_groups).reshape(b, n_groups).astype(np.float64)
        yield counts[:, gcode]
        done += b


def percentile_interval(values: np.ndarray, level: float = 0.95) -> list[float]:
    """``[low, high]`` percentile interval of ``values``, NaNs (undefined resamples) left out."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return [float("nan"), float("nan")]
    alpha = (1 - level) / 2 * 100
    return [float(np.percentile(v, alpha)), float(np.percentile(v, 100 - alpha))]


def per_class_intervals(y_true: Sequence[Any], proba: np.ndarray, classes: Sequence[Any], n_boot: int = 1000,
                        seed: int = 0, groups: Sequence[Any] | None = None, level: float = 0.95,
                        chunk: int = 250) -> dict[str, dict[str, list[float]]]:
    """Percentile bootstrap intervals of each class's precision, recall and F1.

    Same resamples as :func:`bootstrap_intervals` (same ``seed`` and ``groups``). Undefined values
    are left out of the percentiles: precision in a resample where the class is never predicted,
    recall and F1 where the class is absent (the point values follow scikit-learn's
    ``zero_division=0``; a class never predicted at all gets no precision interval).

    Returns ``{class: {"precision": [lo, hi], "recall": [...], "f1": [...]}}``; ``{}`` when ``n_boot`` is 0.
    """
    if n_boot <= 0:
        return {}
    classes = np.asarray(classes).astype(str)
    y = label_codes(y_true, classes)
    pred = np.asarray(proba, dtype=np.float64).argmax(axis=1)
    k = len(classes)
    parts: dict[str, list[np.ndarray]] = {"precision": [], "recall": [], "f1": []}
    for W in bootstrap_weights(len(y), n_boot, seed, groups, chunk):
        for key, v in class_scores(weighted_confusion(y, pred, W, k)).items():
            parts[key].append(v)
    stacked = {key: np.concatenate(v) for key, v in parts.items()}
    return {str(c): {key: percentile_interval(v[:, i], level) for key, v in stacked.items()}
            for i, c in enumerate(classes)}


def class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 per class ``(B, k)`` of confusion matrices ``(B, k, k)`` (see
    :func:`per_class_intervals` for the undefined cases)."""
    tp = np.einsum("bii->bi", cm)
    support = cm.sum(axis=2)
    predicted = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1), np.nan)
        recall = np.where(support > 0, tp / np.where(support > 0, support, 1), np.nan)
        f1 = np.where(support > 0, 2 * tp / np.where(support > 0, support + predicted, 1), np.nan)
    return {"precision": precision, "recall": recall, "f1": f1}


def roc_points(y_true: Sequence[Any], proba: np.ndarray, classes: Sequence[Any],
               max_points: int = 101) -> dict[str, dict[str, list[float]]]:
    """One-vs-rest ROC curves (binary: the positive class), thinned to ``max_points`` for plotting."""
    classes = np.asarray(classes).astype(str)
    y = label_codes(y_true, classes)
    targets = [1] if len(classes) == 2 else range(len(classes))
    out = {}
    for c in targets:
        pos = y == c
        if not 0 < pos.sum() < len(y):
            continue
        fpr, tpr, _ = roc_curve(pos, proba[:, c])
        if len(fpr) > max_points:
            keep = np.unique(np.r_[np.linspace(0, len(fpr) - 1, max_points).round().astype(int)])
            fpr, tpr = fpr[keep], tpr[keep]
        out[str(classes[c])] = {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr],
                                "auc": float(roc_auc_score(pos, proba[:, c]))}
    return out


def summarize_folds(per_fold: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation of each summary metric over folds (NaN-aware)."""
    out = {}
    for m in METRICS:
        v = np.array([f[m] for f in per_fold], dtype=float)
        v = v[~np.isnan(v)]
        out[m] = {"mean": float(v.mean()) if len(v) else float("nan"),
                  "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan")}
    return out
