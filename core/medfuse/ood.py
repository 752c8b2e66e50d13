"""How far an input lies from a model's training data (out-of-distribution warnings).

Two checks, both fitted at training time on the training rows only and stored on the fitted
pipeline as plain arrays and floats (a dict per check, see :func:`fit_distance`):

* ``feature``: the Mahalanobis distance, under a Ledoit-Wolf shrinkage covariance, in the fused
  feature space the classifier sees (every block after impute / scale / PCA, side by side);
* ``image``: the same distance on a cheap acquisition descriptor of the decoded image
  (:func:`image_descriptor`: per-channel mean and spread, colourfulness, size, aspect), so that
  image classifiers (no feature blocks) are checked too.

The threshold of each check is the ``quantile`` (99.5 %) of **cross-fitted** training distances:
each training row's distance is measured with the mean and covariance fitted on the other folds
(in-sample distances are biased low, which would flag too many genuine inputs). The block
preparers (PCA) are fitted once on all training rows, so the feature distances keep that part of
the in-sample bias.
"""

from __future__ import annotations

import numpy as np

QUANTILE = 0.995
FOLDS = 5
MIN_ROWS = 10  # fewer training rows: no check (a threshold from so few distances means nothing)
DESCRIPTOR = ("mean.r", "mean.g", "mean.b", "std.r", "std.g", "std.b", "chroma", "log_height", "log_width")
# smallest spread each descriptor dimension is given (same units as the descriptor): a training
# set where a dimension barely varies (all images 360x363) must not make a 2 % change an outlier
_DESCRIPTOR_FLOOR = np.array([0.02] * 6 + [0.01, 0.05, 0.05])


def image_descriptor(image: np.ndarray) -> np.ndarray:
    """Acquisition descriptor of a canonical ``uint8 (H, W, 3)`` image, ``float64 (9,)``.

    Per-channel mean and standard deviation (intensities in [0, 1]), mean colourfulness (max minus
    min channel), log height and log width. Large images are subsampled to about 256 x 256 pixels.
    """
    h, w = image.shape[:2]
    step = max(1, int(max(h, w) // 256))
    px = np.asarray(image[::step, ::step], dtype=np.float32).reshape(-1, image.shape[2] if image.ndim == 3 else 1)
    if px.shape[1] == 1:
        px = np.repeat(px, 3, axis=1)
    px = px[:, :3] / 255.0
    chroma = float(np.mean(px.max(axis=1) - px.min(axis=1)))
    return np.concatenate([px.mean(axis=0), px.std(axis=0), [chroma, np.log(h), np.log(w)]]).astype(np.float64)


def _gaussian(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and precision (pseudo-inverse of the Ledoit-Wolf covariance) of the rows of ``X``."""
    from sklearn.covariance import LedoitWolf

    lw = LedoitWolf(assume_centered=False).fit(X)
    return lw.location_, np.linalg.pinv(lw.covariance_, hermitian=True)


def _mahalanobis(X: np.ndarray, center: np.ndarray, precision: np.ndarray) -> np.ndarray:
    D = X - center
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", D, precision, D), 0.0))


def fit_distance(X: np.ndarray, seed: int = 0, floor: np.ndarray | float = 1e-6,
                 quantile: float = QUANTILE, folds: int = FOLDS) -> dict[str, np.ndarray | float] | None:
    """Fit the distance check on training rows ``X (n, d)``; ``None`` when it cannot be fitted.

    Columns are standardised by ``max(std, floor)``; returns ``{center, scale, precision,
    threshold, quantile, n_train}`` (numpy arrays and floats only, so a bundle stores it as data).
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) < MIN_ROWS or X.shape[1] == 0:
        return None
    finite = np.isfinite(X).all(axis=1)
    X = X[finite]
    if len(X) < MIN_ROWS:
        return None
    center0 = X.mean(axis=0)
    scale = np.maximum(X.std(axis=0), floor)
    S = (X - center0) / scale
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(len(S)) % min(folds, len(S))
    held_out = np.empty(len(S))
    for k in np.unique(fold_of):
        test = fold_of == k
        c, P = _gaussian(S[~test])
        held_out[test] = _mahalanobis(S[test], c, P)
    c, P = _gaussian(S)
    return {"center": center0 + c * scale, "scale": scale, "precision": P,
            "threshold": float(np.quantile(held_out, quantile)), "quantile": float(quantile),
            "n_train": float(len(S))}


def distances(check: dict[str, np.ndarray | float], X: np.ndarray) -> np.ndarray:
    """Distance of each row of ``X`` under a check from :func:`fit_distance` (NaN for non-finite rows)."""
    X = np.asarray(X, dtype=np.float64)
    S = (X - np.asarray(check["center"])) / np.asarray(check["scale"])
    out = np.full(len(X), np.nan)
    ok = np.isfinite(S).all(axis=1)
    out[ok] = _mahalanobis(S[ok], np.zeros(S.shape[1]), np.asarray(check["precision"]))
    return out


def fit_checks(features: np.ndarray | None, descriptors: np.ndarray | None, seed: int) -> dict[str, dict]:
    """Both checks for one fitted pipeline (the ones that could be fitted)."""
    out: dict[str, dict] = {}
    if features is not None:
        check = fit_distance(features, seed)
        if check is not None:
            out["feature"] = check
    if descriptors is not None:
        check = fit_distance(descriptors, seed, floor=_DESCRIPTOR_FLOOR)
        if check is not None:
            out["image"] = check
    return out


_WHAT = {"feature": "feature distance", "image": "image descriptor distance"}


def warnings_for(checks: dict[str, dict], values: dict[str, np.ndarray], n: int) -> list[str]:
    """One warning per row ('' when inside every check); ``values`` maps a check to ``(n, d)`` rows
    (rows of NaN are not judged)."""
    out: list[list[str]] = [[] for _ in range(n)]
    for name, check in checks.items():
        X = values.get(name)
        if X is None:
            continue
        d = distances(check, X)
        thr = float(check["threshold"])
        for i in np.flatnonzero(d > thr):
            out[i].append(f"{_WHAT.get(name, name)} {d[i]:.1f} > threshold {thr:.1f}")
    return [f"outside training data: {'; '.join(parts)}" if parts else "" for parts in out]
