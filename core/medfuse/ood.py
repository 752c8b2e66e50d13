"""How far an input lies from a model's training data (out-of-distribution warnings).

Two checks, both fitted at training time on the training rows only and stored on the fitted
pipeline as plain arrays and floats (a dict per check, see :func:`fit_distance`):

* ``feature``: the Mahalanobis distance, under a Ledoit-Wolf shrinkage covariance, in the fused
  feature space the classifier sees (every block after impute / scale / PCA, side by side),
  taken on its top :data:`RANK` principal axes plus the residual norm off them (so that a few
  hundred features and a few dozen training rows still give a usable distance);
* ``image``: the same distance on a cheap acquisition descriptor of the decoded image
  (:func:`image_descriptor`: per-channel mean and spread, colourfulness, size, aspect), so that
  image classifiers (no feature blocks) are checked too.

The threshold of each check is the ``quantile`` (99.5 %) of **cross-fitted** training distances:
each training row's distance is measured by a model (axes, mean, covariance) fitted on the other
folds (in-sample distances are biased low, which would flag too many genuine inputs); a new
row's distance is the mean of its distances under those same fold models. The block preparers
(impute / scale / PCA) are fitted once on all training rows, so the feature distances keep that
part of the in-sample bias.
"""

from __future__ import annotations

import numba
import numpy as np

from .intensity import as_uint8

QUANTILE = 0.995
FOLDS = 5
RANK = 32  # principal axes per fold model (plus the residual off them)
MIN_ROWS = 10  # fewer training rows: no check (a threshold from so few distances means nothing)
DESCRIPTOR = ("mean.r", "mean.g", "mean.b", "std.r", "std.g", "std.b", "chroma", "log_height", "log_width")
# smallest spread each descriptor dimension is given (same units as the descriptor): a training
# set where a dimension barely varies (all images 360x363) must not make a 2 % change an outlier
_DESCRIPTOR_FLOOR = np.array([0.02] * 6 + [0.01, 0.05, 0.05])


def image_descriptor(image: np.ndarray) -> np.ndarray:
    """Acquisition descriptor of a canonical ``uint8 (H, W, 3)`` image, ``float64 (9,)``.

    Per-channel mean and standard deviation (intensities in [0, 1]), mean colourfulness (max minus
    min channel), log height and log width. Large images are subsampled to about 256 x 256 pixels.
    A uint8 image goes through a compiled pass (:func:`_uint8_moments`) that gives bit-identical
    values to the numpy reference (:func:`_descriptor_numpy`), about 20x faster.
    An image at its stored depth (:class:`~medfuse.intensity.SourceImage`) is described by its
    8-bit view, as the shortcut baselines see it.
    """
    if getattr(image, "view_rule", None) is not None:
        image = as_uint8(image)
    h, w = image.shape[:2]
    step = max(1, int(max(h, w) // 256))
    sub = image[::step, ::step]
    if sub.ndim == 2:
        sub = sub[:, :, None]
    if sub.dtype != np.uint8 or sub.size == 0 or sub.shape[2] not in (1, 3, 4):
        return _descriptor_numpy(image)
    chans = np.array([0, 0, 0] if sub.shape[2] == 1 else [0, 1, 2], dtype=np.int64)
    sums, squares, spread = _uint8_moments(sub, chans, _UNIT)
    n = np.float32(sub.shape[0] * sub.shape[1])
    means = sums / n
    stds = np.sqrt(squares / n)
    chroma = float(np.mean(spread))
    return np.concatenate([means, stds, [chroma, np.log(h), np.log(w)]]).astype(np.float64)


_UNIT = np.arange(256, dtype=np.float32) / 255.0  # uint8 -> float32 intensity, exactly as numpy divides


def _descriptor_numpy(image: np.ndarray) -> np.ndarray:
    """The reference :func:`image_descriptor` in numpy (any dtype; the definition of its values)."""
    h, w = image.shape[:2]
    step = max(1, int(max(h, w) // 256))
    px = np.asarray(image[::step, ::step], dtype=np.float32).reshape(-1, image.shape[2] if image.ndim == 3 else 1)
    if px.shape[1] == 1:
        px = np.repeat(px, 3, axis=1)
    px = px[:, :3] / 255.0
    chroma = float(np.mean(px.max(axis=1) - px.min(axis=1)))
    return np.concatenate([px.mean(axis=0), px.std(axis=0), [chroma, np.log(h), np.log(w)]]).astype(np.float64)


@numba.njit(cache=True, nogil=True)
def _uint8_moments(img, chans, unit):  # pragma: no cover - compiled
    """Per channel ``chans`` of uint8 ``img (h, w, c)``: float32 sums of intensities and of squared
    deviations from the float32 mean, accumulated in pixel order in float32 as numpy's axis-0
    reductions do; and the per-pixel max-minus-min intensity (float32, pixel order)."""
    h, w = img.shape[0], img.shape[1]
    c0, c1, c2 = chans[0], chans[1], chans[2]
    s0 = np.float32(0.0)
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    spread = np.empty(h * w, np.float32)
    k = 0
    for i in range(h):
        for j in range(w):
            a, b, c = img[i, j, c0], img[i, j, c1], img[i, j, c2]
            s0 += unit[a]
            s1 += unit[b]
            s2 += unit[c]
            spread[k] = unit[max(a, b, c)] - unit[min(a, b, c)]
            k += 1
    n = np.float32(h * w)
    m0, m1, m2 = s0 / n, s1 / n, s2 / n
    q0 = np.float32(0.0)
    q1 = np.float32(0.0)
    q2 = np.float32(0.0)
    for i in range(h):
        for j in range(w):
            d0 = unit[img[i, j, c0]] - m0
            d1 = unit[img[i, j, c1]] - m1
            d2 = unit[img[i, j, c2]] - m2
            q0 += d0 * d0
            q1 += d1 * d1
            q2 += d2 * d2
    return (np.array([s0, s1, s2], dtype=np.float32), np.array([q0, q1, q2], dtype=np.float32), spread)


def _fold_model(S: np.ndarray, rank: int) -> tuple[np.ndarray, ...]:
    """One fold's model of standardised rows ``S``: their mean, the top ``rank`` principal axes,
    and a Ledoit-Wolf Gaussian of (principal scores, residual norm off those axes)."""
    from sklearn.covariance import LedoitWolf

    mean = S.mean(axis=0)
    k = max(1, min(rank, len(S) - 1, S.shape[1]))
    _, _, vt = np.linalg.svd(S - mean, full_matrices=False)
    axes = vt[:k]
    T = _project(S, mean, axes)
    lw = LedoitWolf().fit(T)
    return mean, axes, lw.location_, np.linalg.pinv(lw.covariance_, hermitian=True)


def _project(S: np.ndarray, mean: np.ndarray, axes: np.ndarray) -> np.ndarray:
    D = S - mean
    scores = D @ axes.T
    residual = np.linalg.norm(D - scores @ axes, axis=1)
    return np.column_stack([scores, residual])


def _mahalanobis(T: np.ndarray, center: np.ndarray, precision: np.ndarray) -> np.ndarray:
    D = T - center
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", D, precision, D), 0.0))


def fit_distance(X: np.ndarray, seed: int = 0, floor: np.ndarray | float = 1e-6, quantile: float = QUANTILE,
                 folds: int = FOLDS, rank: int = RANK) -> dict[str, np.ndarray | float] | None:
    """Fit the distance check on training rows ``X (n, d)``; ``None`` when it cannot be fitted.

    Columns are standardised by ``max(std, floor)``. Each of ``folds`` fold models (fitted on the
    other folds' rows, see :func:`_fold_model`) measures the Mahalanobis distance of its held-out
    rows; the threshold is the ``quantile`` of those held-out distances. A new row's distance is
    the mean of its distances under the fold models, so a training-like row is judged exactly as
    the held-out rows were (with less noise). Returns numpy arrays and floats only.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] == 0:
        return None
    X = X[np.isfinite(X).all(axis=1)]
    if len(X) < MIN_ROWS:
        return None
    offset = X.mean(axis=0)
    scale = np.maximum(X.std(axis=0), floor)
    S = (X - offset) / scale
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(len(S)) % min(folds, len(S))
    held_out = np.empty(len(S))
    models = []
    for k in np.unique(fold_of):
        test = fold_of == k
        mean, axes, center, precision = _fold_model(S[~test], rank)
        held_out[test] = _mahalanobis(_project(S[test], mean, axes), center, precision)
        models.append((mean, axes, center, precision))
    r = min(m[1].shape[0] for m in models)  # same rank in every fold, so the arrays stack
    return {"offset": offset, "scale": scale,
            "means": np.stack([m[0] for m in models]), "axes": np.stack([m[1][:r] for m in models]),
            "centers": np.stack([np.r_[m[2][:r], m[2][-1]] for m in models]),
            "precisions": np.stack([_drop_axes(m[3], r) for m in models]),
            "threshold": float(np.quantile(held_out, quantile)), "quantile": float(quantile),
            "n_train": float(len(S))}


def _drop_axes(precision: np.ndarray, r: int) -> np.ndarray:
    keep = [*range(r), precision.shape[0] - 1]
    return precision[np.ix_(keep, keep)]


def distances(check: dict[str, np.ndarray | float], X: np.ndarray) -> np.ndarray:
    """Distance of each row of ``X`` under a check from :func:`fit_distance` (NaN for non-finite rows)."""
    X = np.asarray(X, dtype=np.float64)
    S = (X - np.asarray(check["offset"])) / np.asarray(check["scale"])
    out = np.full(len(X), np.nan)
    ok = np.isfinite(S).all(axis=1)
    if ok.any():
        out[ok] = np.mean([_mahalanobis(_project(S[ok], mean, axes), center, precision)
                           for mean, axes, center, precision in zip(
                               check["means"], check["axes"], check["centers"], check["precisions"])], axis=0)
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
