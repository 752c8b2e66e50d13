"""Evaluation of a study: sample selection, splits, metrics with bootstrap intervals, the run loop.

The flow of :func:`run_study`::

    SampleTable ─► split_test (an external test set, by pattern or its own loader, set apart first)
                ─► select_samples (dedupe by sha1, per-class cap) on the development rows
                ─► select_test (classes checked, duplicates of development content dropped, cap)
                ─► make_splits (stratified k-fold over development rows, grouped by patient/smear;
                   optional held-out part; test rows appended as fold -1)
                ─► per pipeline: materialize once, then fit on each training fold / predict its test fold,
                   then fit on all development rows and score the test set (gap = test - CV)
                ─► pooled out-of-fold metrics + bootstrap 95% intervals (also per class), calibration
                   (Brier, top-label ECE: medfuse.calibration), per-fold mean ± sd, timings
                ─► paired comparison of every pair of pipelines on the same resamples, McNemar + Holm
                   (medfuse.paired), marking the leaderboard's pipelines not significantly worse than the best
                ─► shortcut baselines (medfuse.shortcuts) on the same folds, and the study's flag

Every pipeline of a study is evaluated on the same folds: folds are drawn once over sample ids,
and rows a pipeline could not prepare (``Prepared.failed``) are left out of its train and test
sets and reported. Everything random comes from ``evaluation.seed``, so the same seed gives the
same numbers in ``results.json`` (timings aside).
"""

from __future__ import annotations

import contextlib
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, StratifiedShuffleSplit

from .calibration import calibration_summary
from .contracts import SampleTable
from .errors import DataError, StudyError, did_you_mean
from .study import Study

METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "roc_auc_ovr")
"""Metrics computed for every pipeline (the study's ``evaluation.metrics`` chooses the leaderboard)."""

RESULTS_SCHEMA = 1
HOLDOUT_VALUES = ("test", "holdout")
"""Values of an optional ``split`` column of the samples that mark a fixed held-out set."""

Progress = Callable[..., None]


def _noop(event: str, **info: Any) -> None:
    return None


# ---- sample selection -------------------------------------------------------------------------

@dataclass
class Selection:
    """Samples kept for evaluation and what was removed on the way.

    Attributes
    ----------
    data : SampleTable
        The kept samples (and table rows), index reset.
    n_loaded : int
        Rows the loader returned.
    duplicates_removed : int
        Rows dropped because an earlier row has the same content hash (``sha1``).
    duplicate_groups : list of list of str
        Ids sharing one content hash (at most 50 groups listed).
    label_conflicts : int
        Rows dropped because identical content carried different labels (the whole group goes).
    capped : dict
        Rows removed per class by ``max_per_class``.
    """

    data: SampleTable
    n_loaded: int
    duplicates_removed: int = 0
    duplicate_groups: list[list[str]] = field(default_factory=list)
    label_conflicts: int = 0
    capped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"n_loaded": self.n_loaded, "n_selected": len(self.data),
                "duplicates_removed": self.duplicates_removed, "duplicate_groups": self.duplicate_groups,
                "label_conflicts_removed": self.label_conflicts, "capped": self.capped}


def _subset(data: SampleTable, keep: np.ndarray) -> SampleTable:
    samples = data.samples.iloc[keep].reset_index(drop=True)
    table = data.table.iloc[keep].reset_index(drop=True) if data.table is not None else None
    return SampleTable(samples, table, data.report, dict(data.meta))


def select_samples(data: SampleTable, dedupe: bool = True, max_per_class: int = 0, seed: int = 0) -> Selection:
    """Drop exact duplicates (same ``sha1``) and cap the samples per class.

    Parameters
    ----------
    data : SampleTable
        What the loader returned; ``samples`` needs ``id`` and ``label`` (``sha1`` for dedupe).
    dedupe : bool
        Keep the first row of each content hash. Identical content with different labels is
        ambiguous: every row of such a group is dropped.
    max_per_class : int
        Keep at most this many rows per class (a seeded random subset, in original order); 0 = all.
    seed : int
        Seed of the per-class subset.
    """
    samples = data.samples
    for col in ("id", "label"):
        if col not in samples.columns:
            raise DataError(f"sample table has no {col!r} column (columns: {', '.join(map(str, samples.columns))})")
    ids = samples["id"].astype(str)
    if ids.duplicated().any():
        dup = ids[ids.duplicated()].unique()[:5]
        raise DataError(f"sample ids are not unique, e.g. {', '.join(dup)}; the loader must give one id per sample")
    n = len(samples)
    keep = np.ones(n, bool)
    sel = Selection(data, n)
    if dedupe and "sha1" in samples.columns:
        sha = samples["sha1"]
        known = sha.notna().to_numpy()
        labels = samples["label"].astype(str)
        frame = pd.DataFrame({"sha1": sha[known], "label": labels[known], "id": ids[known]})
        groups = frame.groupby("sha1", sort=False)
        for _, g in groups:
            if len(g) < 2:
                continue
            rows = g.index.to_numpy()
            if len(sel.duplicate_groups) < 50:
                sel.duplicate_groups.append(g["id"].tolist())
            if g["label"].nunique() > 1:
                keep[rows] = False
                sel.label_conflicts += len(rows)
            else:
                keep[rows[1:]] = False
                sel.duplicates_removed += len(rows) - 1
    if max_per_class and max_per_class > 0:
        rng = np.random.default_rng(seed)
        labels = samples["label"].astype(str).to_numpy()
        for cls in sorted(np.unique(labels[keep])):
            rows = np.flatnonzero(keep & (labels == cls))
            if len(rows) > max_per_class:
                drop = np.setdiff1d(rows, rng.choice(rows, max_per_class, replace=False))
                keep[drop] = False
                sel.capped[str(cls)] = int(len(drop))
    sel.data = _subset(data, np.flatnonzero(keep))
    return sel


# ---- splits -----------------------------------------------------------------------------------

@dataclass
class Splits:
    """Folds over sample ids, shared by every pipeline of a study.

    Attributes
    ----------
    ids : ndarray of str, shape (n,)
        Sample ids in selection order; positions below index this array.
    fold_of : ndarray of int, shape (n,)
        CV fold of each sample's test part (0..k-1), or -1 for held-out samples.
    n_folds : int
    grouped : bool
        Whether folds keep groups (patients, smears, identical content) together.
    method : str
        Splitter used, for the report.
    leakage : dict
        Content hashes and groups found on both sides of any split (should be zero).
    """

    ids: np.ndarray
    fold_of: np.ndarray
    n_folds: int
    grouped: bool
    method: str
    holdout_method: str = ""
    leakage: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    run_folds: int | None = None

    @property
    def n_run(self) -> int:
        """Folds actually evaluated: the first ``run_folds`` (all by default)."""
        return self.n_folds if self.run_folds is None else min(self.run_folds, self.n_folds)

    @property
    def holdout(self) -> np.ndarray:
        return np.flatnonzero(self.fold_of < 0)

    def folds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(train, test)`` positions of each evaluated CV fold (held-out samples are in neither)."""
        dev = self.fold_of >= 0
        return [(np.flatnonzero(dev & (self.fold_of != k)), np.flatnonzero(self.fold_of == k))
                for k in range(self.n_run)]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "folds": self.n_folds, "run_folds": self.n_run, "grouped": self.grouped,
                "fold_sizes": [int((self.fold_of == k).sum()) for k in range(self.n_folds)],
                "holdout": int((self.fold_of < 0).sum()), "holdout_method": self.holdout_method,
                "leakage": self.leakage, "warnings": self.warnings}


def cv_text(settings: dict[str, Any]) -> str:
    """``5-fold CV``, or ``fold 1 of 5 (one 80/20 split)`` when only some folds were evaluated."""
    k, run = int(settings["folds"]), int(settings.get("run_folds") or settings["folds"])
    if run >= k:
        return f"{k}-fold CV"
    if run == 1:
        return f"fold 1 of {k} (one {100 - round(100 / k)}/{round(100 / k)} split)"
    return f"folds 1-{run} of {k}"


def _union_groups(groups: np.ndarray, sha1: np.ndarray | None) -> np.ndarray:
    """Merge groups that share a content hash, so identical samples never straddle a split."""
    codes, uniq = pd.factorize(pd.Series(groups, dtype=str))
    parent = np.arange(len(uniq))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    if sha1 is not None:
        first: dict[str, int] = {}
        for code, h in zip(codes, sha1):
            if h is None or (isinstance(h, float) and np.isnan(h)):
                continue
            if h in first:
                ra, rb = find(first[h]), find(code)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
            else:
                first[h] = code
    return np.array([find(c) for c in codes])


def make_splits(samples: pd.DataFrame, folds: int = 5, seed: int = 0, holdout: float = 0.0,
                run_folds: int | None = None) -> Splits:
    """Stratified k-fold over ``samples`` (grouped when groups differ from ids), plus a held-out part.

    Parameters
    ----------
    samples : DataFrame
        Columns ``id``, ``label``; optional ``group`` (patient/smear), ``sha1`` (content hash) and
        ``split`` (rows marked ``test``/``holdout`` form a fixed held-out set).
    folds : int
        Number of CV folds over the development rows.
    seed : int
        Seed of the shuffling.
    holdout : float
        Fraction held out (grouped, stratified) when there is no ``split`` column; 0 = none.
    run_folds : int, optional
        Evaluate only the first ``run_folds`` folds (``folds=5, run_folds=1``: one 80/20 split).
    """
    if run_folds is not None and not 1 <= run_folds <= folds:
        raise StudyError("<study>", "run_folds", f"expected 1..{folds} (the number of folds), got {run_folds}")
    n = len(samples)
    ids = samples["id"].astype(str).to_numpy()
    y = samples["label"].astype(str).to_numpy()
    raw_groups = samples["group"].astype(str).to_numpy() if "group" in samples.columns else ids
    sha1 = samples["sha1"].to_numpy(dtype=object) if "sha1" in samples.columns else None
    groups = _union_groups(raw_groups, sha1)
    grouped = len(np.unique(groups)) < n
    fold_of = np.zeros(n, dtype=int)
    notes: list[str] = []
    holdout_method = ""

    split_col = samples["split"].astype(str).str.lower() if "split" in samples.columns else None
    if split_col is not None and split_col.isin(HOLDOUT_VALUES).any():
        fold_of[split_col.isin(HOLDOUT_VALUES).to_numpy()] = -1
        holdout_method = "fixed (split column)"
    elif holdout and holdout > 0:
        if not 0 < holdout < 1:
            raise StudyError("<study>", "evaluation.holdout", f"expected a fraction in (0, 1), got {holdout}")
        if grouped:
            k = max(2, round(1 / holdout))
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            _, test = next(splitter.split(np.zeros(n), y, groups))
            holdout_method = f"StratifiedGroupKFold 1/{k} (grouped)"
        else:
            splitter = StratifiedShuffleSplit(n_splits=1, test_size=holdout, random_state=seed)
            _, test = next(splitter.split(np.zeros(n), y))
            holdout_method = f"StratifiedShuffleSplit {holdout:g}"
        fold_of[test] = -1

    dev = np.flatnonzero(fold_of >= 0)
    n_groups = len(np.unique(groups[dev]))
    if n_groups < folds:
        raise DataError(f"{folds}-fold cross-validation needs at least {folds} "
                        f"{'groups' if grouped else 'samples'}; the development set has {n_groups}")
    counts = pd.Series(y[dev]).value_counts()
    small = counts[counts < folds]
    if len(small):
        notes.append(f"classes with fewer samples than folds ({folds}): "
                        + ", ".join(f"{c} ({v})" for c, v in small.items())
                        + "; some test folds lack them")
    if grouped:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(dev)), y[dev], groups[dev])
        method = "StratifiedGroupKFold"
    else:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(dev)), y[dev])
        method = "StratifiedKFold"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # small classes: reported in ``warnings`` above
        for k, (_, test) in enumerate(parts):
            fold_of[dev[test]] = k
    splits = Splits(ids, fold_of, folds, grouped, method, holdout_method, warnings=notes, run_folds=run_folds)
    splits.leakage = check_leakage(splits, samples)
    return splits


def check_leakage(splits: Splits, samples: pd.DataFrame) -> dict[str, Any]:
    """Content hashes and groups present on both sides of any split (each CV fold, and dev vs held-out).

    Returns counts and up to 10 examples; zero everywhere means no sample leaked.
    """
    sha1 = samples["sha1"].astype(str).to_numpy() if "sha1" in samples.columns else None
    has_sha = samples["sha1"].notna().to_numpy() if "sha1" in samples.columns else None
    groups = samples["group"].astype(str).to_numpy() if "group" in samples.columns else None
    pairs = list(splits.folds())
    names = [f"fold {k + 1}" for k in range(splits.n_run)]
    if len(splits.holdout):
        pairs.append((np.flatnonzero(splits.fold_of >= 0), splits.holdout))
        names.append("held-out")
    shared_sha: set[str] = set()
    shared_groups: set[str] = set()
    examples: list[str] = []
    for name, (train, test) in zip(names, pairs):
        if sha1 is not None:
            both = (set(sha1[train][has_sha[train]]) & set(sha1[test][has_sha[test]]))
            shared_sha |= both
            examples += [f"{name}: sha1 {h[:12]}" for h in sorted(both)][: max(0, 10 - len(examples))]
        if groups is not None:
            both = set(groups[train]) & set(groups[test])
            shared_groups |= both
            examples += [f"{name}: group {g}" for g in sorted(both)][: max(0, 10 - len(examples))]
    return {"splits_checked": len(pairs), "shared_sha1": len(shared_sha), "shared_groups": len(shared_groups),
            "examples": examples, "ok": not shared_sha and not shared_groups}


def add_test_rows(splits: Splits, samples: pd.DataFrame, source: str) -> Splits:
    """Append the external test rows (``samples`` = development rows then test rows) as fold ``-1``.

    The folds were drawn over the development rows alone; the leakage check is redone over both
    (dev vs test is one more split checked).
    """
    n_dev = len(splits.ids)
    test_ids = samples["id"].astype(str).to_numpy()[n_dev:]
    out = Splits(np.concatenate([splits.ids, test_ids]), np.concatenate([splits.fold_of, -np.ones(len(test_ids), int)]),
                 splits.n_folds, splits.grouped, splits.method, f"external test set ({source})",
                 warnings=list(splits.warnings), run_folds=splits.run_folds)
    out.leakage = check_leakage(out, samples)
    return out


def positions_in(splits: Splits, ids: Sequence[str]) -> np.ndarray:
    """Position in ``splits.ids`` of each id (a pipeline's ``Prepared.samples.id``)."""
    index = pd.Index(splits.ids)
    pos = index.get_indexer(pd.Index([str(i) for i in ids]))
    if (pos < 0).any():
        missing = [str(i) for i, p in zip(ids, pos) if p < 0][:5]
        raise DataError(f"prepared samples not in the study's selection: {', '.join(missing)}")
    return pos


def fold_rows(splits: Splits, ids: Sequence[str]) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple | None]:
    """Map the shared folds onto a pipeline's rows (``Prepared.samples`` order).

    Returns ``(folds, holdout)``: each fold a ``(train_rows, test_rows)`` pair; ``holdout`` is
    ``(dev_rows, holdout_rows)`` or ``None``.
    """
    f = splits.fold_of[positions_in(splits, ids)]
    folds = [(np.flatnonzero((f >= 0) & (f != k)), np.flatnonzero(f == k)) for k in range(splits.n_run)]
    hold = (np.flatnonzero(f >= 0), np.flatnonzero(f < 0)) if (f < 0).any() else None
    return folds, hold


# ---- metrics ----------------------------------------------------------------------------------

def _codes(y: Sequence[Any], classes: np.ndarray) -> np.ndarray:
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
    y = _codes(y_true, classes)
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
    y = _codes(y_true, classes)
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
    y = _codes(y_true, classes)
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
    y = _codes(y_true, classes)
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


def align_proba(proba: np.ndarray, fitted_classes: Sequence[Any], classes: np.ndarray) -> np.ndarray:
    """Re-order ``proba`` columns from ``fitted_classes`` to ``classes`` (absent classes get 0)."""
    fitted = np.asarray(fitted_classes).astype(str)
    if fitted.tolist() == classes.astype(str).tolist():
        return np.asarray(proba, dtype=np.float64)
    out = np.zeros((proba.shape[0], len(classes)))
    idx = pd.Index(classes.astype(str)).get_indexer(fitted)
    if (idx < 0).any():
        raise ValueError(f"pipeline predicts classes {list(fitted[idx < 0])} not in the study's labels")
    out[:, idx] = proba
    return out


# ---- the run loop -----------------------------------------------------------------------------

@dataclass
class StudyResult:
    """What :func:`run_study` returns: ``results`` (JSON-ready, every number) and out-of-fold predictions."""

    results: dict[str, Any]
    predictions: dict[str, pd.DataFrame] = field(default_factory=dict)
    test_predictions: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def ok(self) -> list[str]:
        return [n for n, p in self.results["pipelines"].items() if p["status"] == "ok"]


def default_runner_factory(host: Any = None, cache_dir: Any = None, jobs: int = 1,
                           progress: Progress | None = None, trained: Any = None) -> Callable[[Study, str], Any]:
    """Build ``PipelineRunner`` objects (imported lazily: the engine may import TensorFlow).

    ``progress(event, **info)`` receives ``prepare`` events (``pipeline``, ``done``, ``total``,
    ``what``) while images are prepared. The runners share ``trained`` (default:
    :func:`medfuse.trained.for_run`, one cache for this factory, i.e. one run).
    """
    from .trained import for_run

    trained = for_run(trained)

    def make(study: Study, pipeline: str) -> Any:
        from .pipeline import PipelineRunner

        hook: Any = False
        if progress is not None:
            def hook(done: int, total: int, what: str) -> None:
                progress("prepare", pipeline=pipeline, done=done, total=total, what=what)

        return PipelineRunner(study, pipeline, host=host, cache_dir=cache_dir, jobs=jobs, progress=hook,
                              ood_checks=False, trained=trained)  # fold fits never score new images

    return make


def _top_features(fitted: Any, prepared: Any, idx: np.ndarray, n: int = 20) -> list[dict[str, Any]] | None:
    fn = getattr(fitted, "top_features", None)
    if fn is None:
        return None
    frame = fn(prepared, idx, n=n)
    if frame is None or len(frame) == 0:
        return None
    method = str(frame["method"].iloc[0]) if "method" in frame.columns else ""
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    name_col = next((c for c in frame.columns if frame[c].dtype == object), frame.columns[0])
    num_cols = [c for c in frame.columns if c != name_col and pd.api.types.is_numeric_dtype(frame[c])]
    rows = []
    for _, r in frame.iterrows():
        row: dict[str, Any] = {"feature": str(r[name_col])}
        for c in num_cols:
            row[str(c)] = float(r[c])
        if method:
            row["method"] = method
        rows.append(row)
    return rows


def _block_summary(reports: list[dict[str, dict]]) -> dict[str, Any]:
    """Per block: input features, components kept per fold, explained variance per fold."""
    out: dict[str, Any] = {}
    for k, rep in enumerate(reports):
        for block, r in (rep or {}).items():
            b = out.setdefault(block, {"n_features_in": r.get("n_features_in"), "n_components": [],
                                       "explained_variance": [], "explained_variance_ratio": []})
            b["n_components"].append(r.get("n_components"))
            evr = r.get("explained_variance_ratio")
            evr = [float(v) for v in evr] if evr is not None else None
            b["explained_variance_ratio"].append(evr)
            b["explained_variance"].append(float(np.sum(evr)) if evr else None)
            for key, val in r.items():
                if key not in ("n_features_in", "n_components", "explained_variance_ratio") and k == 0:
                    b.setdefault("extra", {})[key] = val
    return out


def _failed_rows(prepared: Any, limit: int = 50,
                 keep: Callable[[str], bool] | None = None) -> tuple[int, list[dict[str, str]]]:
    """Count and the first ``limit`` rows (id, path, error) of samples that failed to prepare
    (only those whose id passes ``keep`` when given)."""
    failed = getattr(prepared, "failed", None)
    if failed is not None and keep is not None and len(failed):
        failed = failed[[keep(str(i)) for i in failed["id"]]]
    if failed is None or len(failed) == 0:
        return 0, []
    rows = [{c: str(r.get(c, "")) for c in ("id", "path", "error")} for r in failed.head(limit).to_dict("records")]
    return int(len(failed)), rows


def _diagnose_fold(fitted: Any, prepared: Any, test: np.ndarray, y: np.ndarray, proba: np.ndarray,
                   classes: np.ndarray, k: int, seed: int, curves: list, raw_frames: list, errors: list[str],
                   want_saliency: bool, repeats: int = 1) -> dict[str, Any] | None:
    """One fold's diagnostics (:mod:`medfuse.diagnostics`): its networks' histories and raw-feature
    importance (``repeats`` shuffles per feature) appended to ``curves`` / ``raw_frames``; saliency
    samples returned when wanted. A
    failing diagnostic is recorded in ``errors`` and never sinks the evaluation."""
    from .diagnostics import fold_histories, fold_raw_importance, saliency_samples

    hist = fold_histories(fitted)
    if hist:
        curves.append((k + 1, hist))
    try:
        raw_frames.append(fold_raw_importance(fitted, prepared, test, seed + k, n_repeats=repeats))
    except Exception as exc:  # noqa: BLE001 - optional diagnostic; say why it is missing
        errors.append(f"raw importance, fold {k + 1}: {type(exc).__name__}: {exc}")
    if not want_saliency:
        return None
    try:
        return saliency_samples(fitted, prepared, test, y, proba, classes, k + 1)
    except Exception as exc:  # noqa: BLE001
        errors.append(f"saliency, fold {k + 1}: {type(exc).__name__}: {exc}")
        return None


def evaluate_pipeline(runner: Any, data: SampleTable, splits: Splits, classes: np.ndarray, *, seed: int = 0,
                      n_boot: int = 1000, top_features_folds: int = 1,
                      progress: Progress = _noop, name: str = "", test_ids: set[str] | None = None,
                      sink: dict[str, pd.DataFrame] | None = None,
                      diagnostics: bool = True) -> tuple[dict[str, Any], pd.DataFrame]:
    """Materialize once, fit/predict on every shared fold, and measure.

    With ``diagnostics``, also learning curves, raw-feature importance, misclassified samples and
    saliency (:mod:`medfuse.diagnostics`).

    Returns the JSON-ready result of the pipeline and its out-of-fold predictions
    (``id``, ``label``, ``fold``, ``pred``, ``proba.<class>``). Rows of fold ``-1`` are scored by a
    fit on all development rows: under ``result["test"]`` (with the gap to CV) when ``test_ids``
    names them as an external test set, else under ``result["holdout"]``; their predictions go
    to ``sink["test"]`` when a ``sink`` dict is given.
    """
    timing: dict[str, Any] = {}
    t0 = time.perf_counter()
    progress("materialize", pipeline=name)
    prepared = runner.materialize(data)
    timing["materialize_seconds"] = time.perf_counter() - t0
    stats = getattr(prepared, "cache_stats", None)
    if stats:
        timing["cache"] = {k: int(v) for k, v in stats.items()}
    n_failed, failed = _failed_rows(prepared)
    n_test_failed, test_failed = 0, []
    if test_ids:
        n_failed, failed = _failed_rows(prepared, keep=lambda i: i not in test_ids)
        n_test_failed, test_failed = _failed_rows(prepared, keep=lambda i: i in test_ids)
    if len(prepared.samples) == 0:
        first = f"; first error: {failed[0]['error']} ({failed[0]['path']})" if failed else ""
        raise DataError(f"pipeline {name!r}: no sample could be prepared ({n_failed} failed){first}")
    ids = prepared.samples["id"].astype(str).to_numpy()
    y = np.asarray(prepared.y).astype(str)
    groups = prepared.samples["group"].astype(str).to_numpy() if "group" in prepared.samples.columns else None
    folds, hold = fold_rows(splits, ids)
    progress("materialized", pipeline=name, n=len(ids), failed=n_failed, seconds=timing["materialize_seconds"])

    oof = np.full((len(ids), len(classes)), np.nan)
    fold_col = np.full(len(ids), -1)
    per_fold: list[dict[str, Any]] = []
    fit_s, fit_inner, pred_s, reports, tops, reliability = [], [], [], [], [], []
    spec = None
    top_error = None
    curves: list[tuple[int, dict[str, Any]]] = []
    raw_frames: list[Any] = []
    saliency = None
    diag_errors: list[str] = []
    for k, (train, test) in enumerate(folds):
        if len(test) == 0:
            continue
        t = time.perf_counter()
        fitted = runner.fit(prepared, train, seed)
        fit_s.append(time.perf_counter() - t)
        fit_inner.append(float(getattr(fitted, "fit_seconds_", fit_s[-1])))
        t = time.perf_counter()
        proba = fitted.predict_proba(prepared, test)
        pred_s.append(time.perf_counter() - t)
        proba = align_proba(np.asarray(proba), fitted.classes_, classes)
        oof[test] = proba
        fold_col[test] = k
        m = point_metrics(y[test], proba, classes)
        per_fold.append({key: m[key] for key in (*METRICS, "n")} | {"fold": k + 1, "n_train": int(len(train))})
        reports.append(dict(getattr(fitted, "block_reports_", {}) or {}))
        if getattr(fitted, "reliability_", None):
            reliability.append(dict(fitted.reliability_) | {"fold": k + 1})
        if spec is None and hasattr(fitted, "spec"):
            spec = fitted.spec()
        if k < top_features_folds:
            t = time.perf_counter()
            try:
                tf = _top_features(fitted, prepared, test)
            except Exception as exc:  # noqa: BLE001 - importance is optional; record why it is missing
                tf = None
                top_error = f"{type(exc).__name__}: {exc}"
            timing["top_features_seconds"] = timing.get("top_features_seconds", 0.0) + time.perf_counter() - t
            if tf:
                tops.append(tf)
        if diagnostics:
            t = time.perf_counter()
            found = _diagnose_fold(fitted, prepared, test, y, proba, classes, k, seed, curves, raw_frames,
                                   diag_errors, want_saliency=saliency is None,
                                   repeats=max(1, 3 // max(1, len(folds))))  # >= 3 shuffles in all
            saliency = saliency or found
            timing["diagnostics_seconds"] = timing.get("diagnostics_seconds", 0.0) + time.perf_counter() - t
        progress("fold", pipeline=name, fold=k + 1, folds=len(folds), metrics={m_: per_fold[-1][m_] for m_ in METRICS})
        del fitted

    evaluated = fold_col >= 0
    pooled = point_metrics(y[evaluated], oof[evaluated], classes)
    ci = bootstrap_intervals(y[evaluated], oof[evaluated], classes, n_boot=n_boot, seed=seed,
                             groups=groups[evaluated] if groups is not None and splits.grouped else None)
    boot_groups = groups[evaluated] if groups is not None and splits.grouped else None
    per_class_ci = per_class_intervals(y[evaluated], oof[evaluated], classes, n_boot=n_boot, seed=seed,
                                       groups=boot_groups)
    calibration = calibration_summary(_codes(y[evaluated], classes), oof[evaluated], n_boot=n_boot, seed=seed,
                                      groups=boot_groups)
    n_test = int(evaluated.sum())
    timing |= {"fit_seconds": fit_s, "fit_seconds_reported": fit_inner, "predict_seconds": pred_s,
               "fit_seconds_mean": float(np.mean(fit_s)) if fit_s else None,
               "predict_seconds_total": float(np.sum(pred_s)),
               "predict_images_per_second": float(n_test / np.sum(pred_s)) if pred_s and np.sum(pred_s) > 0 else None}
    if diagnostics:
        from .diagnostics import learning_curves, misclassified, pool_importance

        diag = {"learning_curves": learning_curves(curves) or None,
                "misclassified": misclassified(prepared.samples, y, oof, fold_col, classes),
                "saliency": saliency, "raw_importance": pool_importance(raw_frames),
                "diagnostics_errors": diag_errors or None}
    else:
        diag = {}
    result: dict[str, Any] = {
        "status": "ok",
        "n_samples": int(len(ids)), "n_evaluated": n_test, "n_failed": n_failed, "failed": failed,
        "classes": classes.tolist(),
        "metrics": {m: pooled[m] for m in METRICS},
        "ci95": ci,
        "per_class": pooled["per_class"],
        "per_class_ci95": per_class_ci,
        "calibration": calibration,
        "confusion": pooled["confusion"],
        "folds": per_fold,
        "fold_summary": summarize_folds(per_fold),
        "roc": roc_points(y[evaluated], oof[evaluated], classes),
        "blocks": _block_summary(reports),
        "top_features": _merge_top(tops),
        "top_features_folds": len(tops),
        "top_features_error": top_error,
        "spec": spec,
        "timing": timing,
        **diag,
    }
    if reliability:  # combine = "select": the weights learnt inside each training fold
        result["reliability"] = reliability
    key = "test" if test_ids else "holdout"
    if hold is not None and len(hold[1]):
        progress(key, pipeline=name)
        dev_rows, hold_rows = hold
        t = time.perf_counter()
        fitted = runner.fit(prepared, dev_rows, seed)
        timing[f"{key}_fit_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        proba = align_proba(np.asarray(fitted.predict_proba(prepared, hold_rows)), fitted.classes_, classes)
        timing[f"{key}_predict_seconds"] = time.perf_counter() - t
        hm = point_metrics(y[hold_rows], proba, classes)
        hold_groups = groups[hold_rows] if groups is not None and splits.grouped else None
        result[key] = {"metrics": {m: hm[m] for m in METRICS}, "n": hm["n"],
                       "ci95": bootstrap_intervals(y[hold_rows], proba, classes, n_boot=n_boot, seed=seed,
                                                   groups=hold_groups),
                       "per_class": hm["per_class"],
                       "per_class_ci95": per_class_intervals(y[hold_rows], proba, classes, n_boot=n_boot, seed=seed,
                                                             groups=hold_groups),
                       "calibration": calibration_summary(_codes(y[hold_rows], classes), proba, n_boot=n_boot,
                                                          seed=seed, groups=hold_groups),
                       "confusion": hm["confusion"], "n_fit": int(len(dev_rows))}
        if getattr(fitted, "reliability_", None):
            result[key]["reliability"] = dict(fitted.reliability_)
        if sink is not None:
            frame = pd.DataFrame({"id": ids[hold_rows], "label": y[hold_rows], "pred": classes[proba.argmax(axis=1)]})
            for j, c in enumerate(classes):
                frame[f"proba.{c}"] = proba[:, j]
            sink["test"] = frame
    elif test_ids:
        result[key] = {"status": "failed", "n": 0, "error": "no test sample could be prepared"}
    if test_ids:
        result[key] |= {"n_failed": n_test_failed, "failed": test_failed}
        if "metrics" in result[key]:
            result[key]["gap"] = {m: result[key]["metrics"][m] - pooled[m] for m in METRICS}
        progress("tested", pipeline=name, **{k: v for k, v in result[key].items() if k in ("metrics", "gap", "n",
                                                                                              "n_failed")})
    pred_frame = pd.DataFrame({"id": ids, "label": y, "fold": np.where(fold_col >= 0, fold_col + 1, 0)})
    pred_frame["pred"] = np.where(evaluated, classes[np.nan_to_num(oof).argmax(axis=1)], "")
    for j, c in enumerate(classes):
        pred_frame[f"proba.{c}"] = oof[:, j]
    return result, pred_frame[evaluated].reset_index(drop=True)


def _merge_top(tops: list[list[dict[str, Any]]]) -> list[dict[str, Any]] | None:
    """Average importances over the folds where they were computed, sorted by the first value column."""
    if not tops:
        return None
    frame = pd.concat([pd.DataFrame(t) for t in tops], ignore_index=True)
    method = frame.pop("method").iloc[0] if "method" in frame.columns else None
    value_cols = [c for c in frame.columns if c != "feature"]
    if not value_cols:
        return [{"feature": f} for f in frame["feature"].unique()]
    merged = frame.groupby("feature", sort=False)[value_cols].mean().reset_index()
    if method:
        merged["method"] = method
    merged = merged.sort_values(value_cols[0], ascending=False, kind="mergesort")
    return [{k: (float(v) if k in value_cols else v) for k, v in r.items()} for r in merged.to_dict("records")]


def versions() -> dict[str, str]:
    """Versions of Python and the libraries results depend on (read from metadata, nothing imported)."""
    from .util.versions import installed_versions

    return installed_versions(("medfuse", "numpy", "pandas", "scikit-learn", "scikit-image", "xgboost", "keras",
                               "tensorflow-cpu", "tensorflow", "joblib"), python=True)


def data_report_dict(report: Any) -> dict[str, Any] | None:
    """The loader's data report as a dict (``to_dict()``), with its summary lines when available."""
    if report is None:
        return None
    out: dict[str, Any] = {}
    if hasattr(report, "to_dict"):
        try:
            out = dict(report.to_dict())
        except Exception as exc:  # noqa: BLE001 - a broken report must not sink the evaluation
            out = {"error": f"{type(exc).__name__}: {exc}"}
    if hasattr(report, "summary_lines"):
        with contextlib.suppress(Exception):
            out["summary_lines"] = [str(s) for s in report.summary_lines()]
    if not out:
        out = {"summary_lines": [str(report)]}
    return out


def leaderboard(pipelines: dict[str, dict[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Pipelines that ran, best first by the first metric (ties: the next ones), with intervals."""
    rows = []
    for name, p in pipelines.items():
        if p["status"] != "ok":
            continue
        row: dict[str, Any] = {"pipeline": name}
        for m in metrics:
            row[m] = p["metrics"].get(m)
            row[f"{m}_ci95"] = p["ci95"].get(m)
        test = p.get("test") or {}
        if "metrics" in test:
            for m in metrics:
                row[f"test_{m}"] = test["metrics"].get(m)
                row[f"test_{m}_ci95"] = test["ci95"].get(m)
                row[f"gap_{m}"] = test["gap"].get(m)
        cal = p.get("calibration") or {}
        for c in ("brier", "ece"):
            row[c] = cal.get(c)
            row[f"{c}_ci95"] = (cal.get("ci95") or {}).get(c)
        timing = p.get("timing", {})
        row["fit_seconds_mean"] = timing.get("fit_seconds_mean")
        row["predict_images_per_second"] = timing.get("predict_images_per_second")
        rows.append(row)

    def key(r: dict[str, Any]) -> tuple:
        return tuple(-(r[m] if r[m] is not None and not np.isnan(r[m]) else -1.0) for m in metrics)

    return sorted(rows, key=key)


def paired_section(board: list[dict[str, Any]], predictions: dict[str, pd.DataFrame],
                   test_predictions: dict[str, pd.DataFrame], samples: pd.DataFrame, classes: np.ndarray, *,
                   grouped: bool, n_boot: int, seed: int, progress: Progress = _noop) -> dict[str, Any]:
    """``results["paired"]``: every pair of pipelines compared on the out-of-fold predictions (``cv``)
    and, with an external test set, on its predictions (``test``) — see :mod:`medfuse.paired`.

    Marks each leaderboard row with ``not_worse_than_best`` (CV) and the Holm-adjusted McNemar
    p-value against the best (``p_vs_best``).
    """
    from .paired import compare_pipelines

    order = [r["pipeline"] for r in board]
    groups = None
    if grouped and "group" in samples.columns:
        groups = dict(zip(samples["id"].astype(str), samples["group"].astype(str)))
    progress("paired", pipelines=order)
    out: dict[str, Any] = {"cv": compare_pipelines(predictions, order, classes, groups=groups, n_boot=n_boot,
                                                   seed=seed)}
    if len([n for n in order if n in test_predictions]) >= 2:
        out["test"] = compare_pipelines(test_predictions, order, classes, groups=groups, n_boot=n_boot, seed=seed)
    cv = out["cv"]
    vs_best = {p["b"]: p for p in cv["pairs"] if p["a"] == cv["best"]}
    for r in board:
        r["not_worse_than_best"] = r["pipeline"] in cv["not_worse_than_best"]
        r["p_vs_best"] = vs_best[r["pipeline"]]["p_holm"] if r["pipeline"] in vs_best else None
    return out


def run_study(study: Study, data: SampleTable, pipelines: Sequence[str] | None = None, *,
              runner_factory: Callable[[Study, str], Any] | None = None, folds: int | None = None,
              max_per_class: int | None = None, n_boot: int | None = None, top_features_folds: int = 1,
              run_folds: int | None = None, progress: Progress | None = None,
              meta: dict[str, Any] | None = None, test_data: SampleTable | None = None,
              shortcuts: bool | None = None, jobs: int = 1) -> StudyResult:
    """Evaluate ``pipelines`` of ``study`` (default: all) on ``data``, on shared folds.

    Parameters
    ----------
    study : Study
    data : SampleTable
        What the study's loader returned.
    pipelines : sequence of str, optional
        Names of pipelines to run, in order.
    runner_factory : callable ``(study, pipeline_name) -> runner``, optional
        Builds objects with ``materialize(data)`` and ``fit(prepared, train_idx, seed)``
        (default: :class:`medfuse.pipeline.PipelineRunner`).
    folds, max_per_class, n_boot : int, optional
        Override ``evaluation.folds``, ``evaluation.max_per_class``, ``evaluation.bootstrap``.
    top_features_folds : int
        Folds on which feature importances are computed (permutation importance is costly).
    run_folds : int, optional
        Evaluate only the first ``run_folds`` of the folds (e.g. 1 of 5: a single 80/20 split).
    progress : callable ``(event, **info)``, optional
        Told about each step (``selected``, ``splits``, ``pipeline``, ``materialize``, ``fold``, ``done``,
        ``failed``).
    meta : dict, optional
        Extra settings recorded in ``results["settings"]`` (data root, cache folder, ...).
    test_data : SampleTable, optional
        What the study's test ``loader`` returned (a ``pattern`` test set is split off ``data``).
        Test rows are set apart before selection and splits; each pipeline is then fitted on all
        development rows and scored on them (``pipelines.NAME.test``, with the gap to CV).
    shortcuts : bool, optional
        Override ``evaluation.shortcuts`` (the shortcut baselines, ``results["shortcuts"]``).
    jobs : int
        Workers for the shortcut descriptors.

    A pipeline that raises is recorded with its error and the others go on.
    """
    t_start = time.perf_counter()
    progress = progress or _noop
    ev = study.evaluation
    names = list(pipelines) if pipelines else list(study.pipelines)
    for p in names:
        if p not in study.pipelines:
            raise StudyError(study.source, f"studies.{study.name}.pipelines",
                             f"no pipeline {p!r}{did_you_mean(p, study.pipelines)}; defined: {', '.join(study.pipelines)}")
    unknown = [m for m in ev.metrics if m not in METRICS]
    if unknown:
        raise StudyError(study.source, f"studies.{study.name}.evaluation.metrics",
                         f"unknown metric {unknown[0]!r}{did_you_mean(unknown[0], METRICS)}; known: {', '.join(METRICS)}")
    n_folds = folds or ev.folds
    cap = ev.max_per_class if max_per_class is None else max_per_class
    n_boot = ev.bootstrap if n_boot is None else n_boot
    make_runner = runner_factory or default_runner_factory(progress=progress)

    from .testset import combine, select_test, split_test

    dev_data, test_raw, test_source = split_test(study, data, test_data)
    selection = select_samples(dev_data, dedupe=ev.dedupe, max_per_class=cap, seed=ev.seed)
    kept = selection.data
    if len(kept) == 0:
        raise DataError("no samples left to evaluate after loading and selection")
    classes = np.array(sorted(kept.samples["label"].astype(str).unique()))
    if len(classes) < 2:
        raise DataError(f"need at least two classes to evaluate; found {list(classes)}")
    progress("selected", **selection.to_dict())
    test_sel = None
    if test_raw is not None:
        test_sel = select_test(kept, test_raw, test_source, classes, dedupe=ev.dedupe, max_per_class=cap,
                               seed=ev.seed)
        progress("test_selected", **test_sel.to_dict())
        dev_samples = kept.samples.drop(columns=["split"], errors="ignore")
        splits = make_splits(dev_samples, n_folds, ev.seed, 0.0, run_folds)
        scored = combine(kept, test_sel.data)
        splits = add_test_rows(splits, scored.samples, test_source)
    else:
        scored = kept
        splits = make_splits(kept.samples, n_folds, ev.seed, ev.holdout, run_folds)
    progress("splits", **splits.to_dict())
    test_ids = set(test_sel.data.samples["id"].astype(str)) if test_sel is not None else None

    results: dict[str, Any] = {
        "medfuse_results": RESULTS_SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "study": {"name": study.name, "source": study.source, "description": study.description,
                  "reported": study.reported, "pipelines_defined": list(study.pipelines)},
        "settings": {"folds": n_folds, "run_folds": splits.n_run, "seed": ev.seed, "holdout": ev.holdout,
                     "test": study.test.describe() if study.test else None, "bootstrap": n_boot,
                     "max_per_class": cap, "dedupe": ev.dedupe, "metrics": list(ev.metrics),
                     "top_features_folds": top_features_folds, "pipelines": names, **(meta or {})},
        "data": {**selection.to_dict(), "loader": study.dataset.loader, "loader_params": study.dataset.params,
                 "classes": classes.tolist(),
                 "class_counts": {str(k): int(v) for k, v in
                                  kept.samples["label"].astype(str).value_counts().sort_index().items()},
                 "n_groups": int(kept.samples["group"].nunique()) if "group" in kept.samples.columns else None,
                 "has_table": kept.table is not None,
                 "report": data_report_dict(data.report),
                 "test": test_sel.to_dict() if test_sel is not None else None},
        "splits": splits.to_dict(),
        "pipelines": {},
        "versions": versions(),
        "timing": {},
    }
    predictions: dict[str, pd.DataFrame] = {}
    test_predictions: dict[str, pd.DataFrame] = {}
    for i, name in enumerate(names):
        progress("pipeline", pipeline=name, index=i, total=len(names), folds=splits.n_run)
        t = time.perf_counter()
        try:
            runner = make_runner(study, name)
            sink: dict[str, pd.DataFrame] = {}
            res, pred = evaluate_pipeline(runner, scored, splits, classes, seed=ev.seed, n_boot=n_boot,
                                          top_features_folds=top_features_folds, progress=progress, name=name,
                                          test_ids=test_ids, sink=sink)
            res["timing"]["total_seconds"] = time.perf_counter() - t
            results["pipelines"][name] = res
            predictions[name] = pred
            if test_ids and "test" in sink:
                test_predictions[name] = sink["test"]
            progress("done", pipeline=name, metrics=res["metrics"])
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one failing pipeline must not stop the others
            results["pipelines"][name] = {
                "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=8),
                "timing": {"total_seconds": time.perf_counter() - t}}
            progress("failed", pipeline=name, error=f"{type(exc).__name__}: {exc}")
    results["leaderboard"] = leaderboard(results["pipelines"], ev.metrics)
    results["paired"] = paired_section(results["leaderboard"], predictions, test_predictions, scored.samples,
                                       classes, grouped=splits.grouped, n_boot=n_boot, seed=ev.seed, progress=progress)
    if ev.shortcuts if shortcuts is None else shortcuts:
        from .shortcuts import flag_shortcuts, run_shortcuts

        progress("shortcuts")
        try:
            sc = run_shortcuts(scored.samples, splits, classes, seed=ev.seed, n_boot=n_boot, jobs=jobs,
                               progress=progress, options=study.reader)
        except Exception as exc:  # noqa: BLE001 - the baselines must not lose the pipelines' results
            sc = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        results["shortcuts"] = flag_shortcuts(sc, results["pipelines"], ev.shortcut_margin, ev.shortcut_separable)
        progress("shortcuts_done", **results["shortcuts"])
    else:
        results["shortcuts"] = {"status": "off", "flagged": False, "warnings": []}
    results["timing"]["total_seconds"] = time.perf_counter() - t_start
    return StudyResult(results, predictions, test_predictions)
