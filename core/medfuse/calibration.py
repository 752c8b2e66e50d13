"""Calibration of predicted probabilities: Brier score, top-label ECE and reliability bins.

Definitions (``p`` the predicted probabilities, ``n`` samples, ``K`` classes, ``y`` the true class):

* **Brier score** (multi-class, Brier 1950): ``mean_i sum_k (p_ik - [y_i = k])^2``, in ``[0, 2]``;
  0 is perfect. For two classes this is twice scikit-learn's binary ``brier_score_loss``
  (which scores the positive class only); the same definition is used for every study so
  numbers compare across them.
* **Expected calibration error**, top-label, 10 equal-width bins: each sample's confidence is its
  largest probability ``c_i = max_k p_ik`` and it is *correct* when that class is ``y_i``.
  Samples go to bin ``b = floor(10 c_i)`` (``[0, .1), [.1, .2), ..., [.9, 1]``, 1.0 in the last).
  ``ECE = sum_b (n_b / n) |acc_b - conf_b|`` with ``acc_b`` the fraction correct and ``conf_b``
  the mean confidence in bin ``b``; empty bins count 0. In ``[0, 1]``; 0 is perfect.
* The **reliability diagram** plots ``acc_b`` against ``conf_b`` per non-empty bin; a calibrated
  model lies on the diagonal.

Everything is vectorised over bootstrap weight matrices ``W (B, n)`` (integer counts per sample,
see :func:`medfuse.metrics.bootstrap_weights`), so intervals use the same resamples as the
other metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .metrics import bootstrap_weights, percentile_interval

N_BINS = 10
DEFINITION = ("Brier: mean over samples of the sum over classes of (probability - indicator)^2, in [0, 2]. "
              "ECE: top-label, 10 equal-width confidence bins, sum over bins of (bin share) x "
              "|accuracy - mean confidence|.")


def _onehot(y: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(y), k))
    out[np.arange(len(y)), y] = 1.0
    return out


def brier_losses(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Per-sample multi-class Brier loss ``sum_k (p_ik - [y_i = k])^2`` (``y`` = column codes)."""
    proba = np.asarray(proba, dtype=np.float64)
    return ((proba - _onehot(np.asarray(y), proba.shape[1])) ** 2).sum(axis=1)


def confidence_bins(proba: np.ndarray, n_bins: int = N_BINS) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence, bin)`` per sample: the top probability and its equal-width bin index."""
    conf = np.asarray(proba, dtype=np.float64).max(axis=1)
    return conf, np.clip(np.floor(conf * n_bins).astype(int), 0, n_bins - 1)


def weighted_calibration(y: np.ndarray, proba: np.ndarray, W: np.ndarray,
                         n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """Brier score and top-label ECE for every row of sample weights ``W (B, n)`` (vectorised).

    With ``W`` all ones these are :func:`brier_score` and :func:`expected_calibration_error`.
    """
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y)
    total = W.sum(axis=1)
    conf, b = confidence_bins(proba, n_bins)
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    onehot = _onehot(b, n_bins)
    gap = W @ (onehot * (correct - conf)[:, None])  # (B, bins): sum correct - sum confidence per bin
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"brier": (W @ brier_losses(y, proba)) / total, "ece": np.abs(gap).sum(axis=1) / total}


def brier_score(y: np.ndarray, proba: np.ndarray) -> float:
    """Multi-class Brier score (module docstring); ``y`` holds column codes of ``proba``."""
    return float(brier_losses(y, proba).mean())


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, n_bins: int = N_BINS) -> float:
    """Top-label ECE with ``n_bins`` equal-width bins (module docstring)."""
    return float(weighted_calibration(y, proba, np.ones((1, len(y))), n_bins)["ece"][0])


def reliability_bins(y: np.ndarray, proba: np.ndarray, n_bins: int = N_BINS) -> dict[str, list[Any]]:
    """Per bin: ``lower`` edge, sample ``count``, mean ``confidence`` and ``accuracy`` (None when empty)."""
    proba = np.asarray(proba, dtype=np.float64)
    conf, b = confidence_bins(proba, n_bins)
    correct = proba.argmax(axis=1) == np.asarray(y)
    count = np.bincount(b, minlength=n_bins)
    sum_conf = np.bincount(b, weights=conf, minlength=n_bins)
    sum_corr = np.bincount(b, weights=correct.astype(float), minlength=n_bins)
    return {"lower": [round(i / n_bins, 6) for i in range(n_bins)], "count": count.astype(int).tolist(),
            "confidence": [float(sum_conf[i] / count[i]) if count[i] else None for i in range(n_bins)],
            "accuracy": [float(sum_corr[i] / count[i]) if count[i] else None for i in range(n_bins)]}


def calibration_summary(y: np.ndarray, proba: np.ndarray, n_boot: int = 0, seed: int = 0,
                        groups: Sequence[Any] | None = None, level: float = 0.95,
                        n_bins: int = N_BINS) -> dict[str, Any]:
    """Brier, ECE (with bootstrap intervals when ``n_boot`` > 0) and the reliability bins.

    ``y`` holds column codes of ``proba``; ``groups`` as in :func:`medfuse.metrics.bootstrap_weights`.
    """
    y = np.asarray(y)
    out: dict[str, Any] = {"brier": brier_score(y, proba), "ece": expected_calibration_error(y, proba, n_bins),
                           "n_bins": n_bins, "bins": reliability_bins(y, proba, n_bins), "ci95": {}}
    if n_boot > 0:
        parts: dict[str, list[np.ndarray]] = {"brier": [], "ece": []}
        for W in bootstrap_weights(len(y), n_boot, seed, groups):
            for key, v in weighted_calibration(y, proba, W, n_bins).items():
                parts[key].append(v)
        out["ci95"] = {key: percentile_interval(np.concatenate(v), level) for key, v in parts.items()}
    return out
