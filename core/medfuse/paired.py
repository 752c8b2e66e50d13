"""Paired comparison of pipelines scored on the same samples.

For two pipelines A and B (A ranked above B on the leaderboard) and the samples both scored:

* **Difference** ``A - B`` in accuracy, macro F1 and ROC AUC, with a **paired bootstrap**
  percentile interval: each resample draws samples (or whole groups — patients, smears — when the
  split is grouped) once, and *both* pipelines are scored on that same resample
  (:func:`medfuse.metrics.bootstrap_weights` with one seed), so the interval is that of the
  difference, not of two independent estimates.
* **McNemar's exact test** on the discordant pairs: ``a_only`` samples A got right and B wrong,
  ``b_only`` the reverse; under "equal error rates" ``a_only ~ Binomial(a_only + b_only, 1/2)``,
  two-sided ``p = min(1, 2 P(X <= min(a_only, b_only)))`` (1 when there is no discordant pair).
  It treats samples as independent; with grouped data the grouped interval is the safer guide.
* **Holm** step-down adjustment of the McNemar p-values across all pairs of a family (the CV
  pairs; separately the external-test pairs), controlling the family-wise error rate.

A pipeline is *not significantly worse than the best* unless its Holm-adjusted McNemar p-value
against the best is below ``alpha`` (0.05) **and** the best got more of their discordant pairs
right.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from .metrics import bootstrap_weights, percentile_interval, weighted_metrics

PAIRED_METRICS = ("accuracy", "f1_macro", "roc_auc_ovr")
"""Metrics whose paired difference is reported."""

ALPHA = 0.05


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """McNemar's exact (binomial) test of two classifiers' correctness on the same samples.

    Parameters
    ----------
    correct_a, correct_b : bool arrays, shape (n,)
        Whether pipeline A (B) predicted each sample right.

    Returns
    -------
    ``{"a_only": int, "b_only": int, "p": float}``: discordant counts and the two-sided exact p-value.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    return {"a_only": a_only, "b_only": b_only, "p": binomial_two_sided(min(a_only, b_only), a_only + b_only)}


def binomial_two_sided(k: int, n: int) -> float:
    """``min(1, 2 P(X <= k))`` for ``X ~ Binomial(n, 1/2)`` and ``k <= n / 2``, exact (integer sums)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2 ** n)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (same order as given; NaN stays NaN and is not counted).

    Sorted ascending ``p_(1) <= ... <= p_(m)``: ``adj_(j) = max_{i <= j} min(1, (m - i + 1) p_(i))``.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if not m:
        return out
    order = ok[np.argsort(p[ok], kind="mergesort")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def bootstrap_values(y: np.ndarray, proba: np.ndarray, n_boot: int, seed: int = 0,
                     groups: Sequence[Any] | None = None,
                     metrics: Sequence[str] = PAIRED_METRICS) -> dict[str, np.ndarray]:
    """Each metric in every bootstrap resample, shape ``(n_boot,)`` (``y`` = column codes of ``proba``).

    The resamples depend only on ``(len(y), groups, n_boot, seed)``: two pipelines' values from
    the same arguments are paired resample by resample.
    """
    parts: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for W in bootstrap_weights(len(y), n_boot, seed, groups):
        values = weighted_metrics(y, proba, W)
        for m in metrics:
            parts[m].append(values[m])
    return {m: np.concatenate(v) if v else np.empty(0) for m, v in parts.items()}


def paired_bootstrap(y: np.ndarray, proba_a: np.ndarray, proba_b: np.ndarray, n_boot: int = 1000, seed: int = 0,
                     groups: Sequence[Any] | None = None, level: float = 0.95,
                     metrics: Sequence[str] = PAIRED_METRICS) -> dict[str, dict[str, Any]]:
    """Difference ``A - B`` of each metric and its paired-bootstrap percentile interval.

    Returns ``{"diff": {metric: value}, "ci95": {metric: [lo, hi]}}`` (``ci95`` empty when ``n_boot`` is 0).
    """
    ones = np.ones((1, len(y)))
    pa, pb = weighted_metrics(y, proba_a, ones), weighted_metrics(y, proba_b, ones)
    out: dict[str, dict[str, Any]] = {"diff": {m: float(pa[m][0] - pb[m][0]) for m in metrics}, "ci95": {}}
    if n_boot > 0:
        va = bootstrap_values(y, proba_a, n_boot, seed, groups, metrics)
        vb = bootstrap_values(y, proba_b, n_boot, seed, groups, metrics)
        out["ci95"] = _diff_intervals(va, vb, level)
    return out


def _diff_intervals(va: dict[str, np.ndarray], vb: dict[str, np.ndarray], level: float) -> dict[str, list[float]]:
    return {m: percentile_interval(va[m] - vb[m], level) for m in va}


def _proba(frame: pd.DataFrame, classes: np.ndarray) -> np.ndarray:
    return frame[[f"proba.{c}" for c in classes]].to_numpy(dtype=np.float64)


def compare_pipelines(frames: dict[str, pd.DataFrame], order: Sequence[str], classes: Sequence[Any], *,
                      groups: dict[str, str] | None = None, n_boot: int = 1000, seed: int = 0,
                      alpha: float = ALPHA, level: float = 0.95) -> dict[str, Any]:
    """Every pair of pipelines (``order`` = leaderboard order, best first) on their shared samples.

    Parameters
    ----------
    frames : dict of DataFrame
        Predictions per pipeline (``id``, ``label``, ``proba.<class>``), e.g. out-of-fold.
    order : sequence of str
        Pipelines to compare, best first; pair ``(A, B)`` has A ranked above B.
    classes : sequence
        Class order of the ``proba.`` columns.
    groups : dict id -> group, optional
        Resample whole groups (grouped splits).
    n_boot, seed, level : bootstrap resamples, their seed and the interval's coverage.
    alpha : float
        Level of the "significantly worse than the best" decision (Holm-adjusted).

    Returns
    -------
    dict with ``pairs`` (each: ``a``, ``b``, ``n``, ``diff``, ``ci95``, ``mcnemar``, ``p_holm``,
    ``significant``), ``best``, ``not_worse_than_best`` (the best included) and the settings.
    """
    classes = np.asarray(classes).astype(str)
    names = [n for n in order if n in frames]
    index = pd.Index(classes)
    boot_cache: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    pairs: list[dict[str, Any]] = []
    for a, b in combinations(names, 2):
        fa = frames[a].assign(id=frames[a]["id"].astype(str)).set_index("id")
        fb = frames[b].assign(id=frames[b]["id"].astype(str)).set_index("id")
        common = np.intersect1d(fa.index.to_numpy(dtype=str), fb.index.to_numpy(dtype=str))
        if not len(common):
            pairs.append({"a": a, "b": b, "n": 0, "diff": {}, "ci95": {}, "mcnemar": None, "p_holm": None,
                          "significant": False})
            continue
        fa, fb = fa.loc[common], fb.loc[common]
        y = index.get_indexer(fa["label"].astype(str))
        pa, pb = _proba(fa, classes), _proba(fb, classes)
        g = [groups.get(i, i) for i in common] if groups else None
        res = paired_bootstrap(y, pa, pb, n_boot=0)
        if n_boot > 0:
            key = hash(common.tobytes())
            for name, p in ((a, pa), (b, pb)):
                if (name, key) not in boot_cache:
                    boot_cache[(name, key)] = bootstrap_values(y, p, n_boot, seed, g)
            res["ci95"] = _diff_intervals(boot_cache[(a, key)], boot_cache[(b, key)], level)
        mc = mcnemar_exact(pa.argmax(axis=1) == y, pb.argmax(axis=1) == y)
        pairs.append({"a": a, "b": b, "n": int(len(common)), **res, "mcnemar": mc})
    adjusted = holm([p["mcnemar"]["p"] if p["mcnemar"] else np.nan for p in pairs])
    for p, adj in zip(pairs, adjusted):
        if p["mcnemar"]:
            p["p_holm"] = float(adj)
            p["significant"] = bool(adj < alpha)
    best = names[0] if names else None
    worse = {p["b"] for p in pairs if p["a"] == best and p["significant"] and p["mcnemar"]["a_only"] > p["mcnemar"]["b_only"]}
    return {"status": "ok" if len(names) >= 2 else "skipped",
            "reason": "" if len(names) >= 2 else "fewer than two pipelines ran",
            "best": best, "not_worse_than_best": [n for n in names if n not in worse],
            "metrics": list(PAIRED_METRICS), "alpha": alpha, "n_boot": n_boot, "grouped": bool(groups),
            "pairs": pairs}
