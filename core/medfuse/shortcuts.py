"""Shortcut baselines: how far can a trivial model get on what the acquisition leaks?

A classifier that beats chance on image size, file format or the global colour of an image has
learnt the scanner, the site or the export path, not the biology. Beside the pipelines,
``medfuse compare`` fits plain logistic regression (median-imputed, standardised) on one group of
such descriptors at a time, on the study's folds (and the external test set, fitted on all
development data), and flags the study when a baseline comes within ``evaluation.shortcut_margin``
accuracy of the best pipeline or reaches ``evaluation.shortcut_separable``.

Descriptor groups (one pass over the files: the header for size/format, one reduced-scale decode
for the statistics; no pipeline):

* ``size``: log height, log width, aspect (width / height);
* ``file``: file suffix (one-hot), log file size, bytes per pixel, grey vs colour mode;
* ``intensity``: mean and standard deviation of each RGB channel (grey images: three equal channels);
* ``all``: the three together.

An object sample (``IMAGE#box=...``, :mod:`medfuse.objects`) gets the descriptors of its source
image, computed once per image: the acquisition is the smear's; the crop's size and colour are
the cell itself, not a shortcut.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .intensity import ReadOptions

GROUPS = ("size", "file", "intensity", "all")
STAT_SIDE = 64
"""JPEGs are decoded at the smallest DCT scale keeping both sides >= this (means are unchanged,
spreads barely: the statistics only need to be consistent across images)."""
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def describe_file(path: str, options: ReadOptions | None = None) -> dict[str, float | str]:
    """Header and global statistics of one image file; NaN fields (and ``error``) when unreadable.
    ``options``: the study's reader (bit depth / percentile windowing), so the statistics describe the
    intensities the pipelines see.

    An object (``IMAGE#box=...``, :mod:`medfuse.objects`): suffix, bytes and mode of its source
    file, height and width of its box, channel statistics of its crop."""
    from PIL import Image, UnidentifiedImageError

    from .imageio import read_image, read_image_info
    from .objects import ObjectRef

    ref = ObjectRef.parse(path)
    file = ref.image if ref is not None else path
    out: dict[str, float | str] = {"suffix": Path(file).suffix.lower() or "(none)"}
    try:
        out["bytes"] = float(Path(file).stat().st_size)
        try:
            with Image.open(file) as img:  # lazy: reads the header only
                w, h = img.size
                out["grey"] = float(img.mode in _GREY_MODES)
        except UnidentifiedImageError:  # a format PIL does not read (DICOM): the decoder's info
            info = read_image_info(file)
            w, h, out["grey"] = info.width, info.height, float(info.channels == 1)
        if ref is not None:
            w, h = ref.box[2] - ref.box[0], ref.box[3] - ref.box[1]
        out |= {"height": float(h), "width": float(w)}
        arr = read_image(path, min_side=STAT_SIDE, options=options).reshape(-1, 3).astype(np.float64)
        for c, name in enumerate("rgb"):
            out[f"mean_{name}"] = float(arr[:, c].mean())
            out[f"std_{name}"] = float(arr[:, c].std())
    except Exception as exc:  # noqa: BLE001 - an unreadable file gets NaN descriptors, counted
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def _describe_chunk(paths: list[str], options: ReadOptions | None = None) -> list[dict[str, float | str]]:
    return [describe_file(p, options) for p in paths]


def describe_files(paths: Sequence[str | None], jobs: int = 1, chunk: int = 256,
                   options: ReadOptions | None = None) -> pd.DataFrame:
    """Raw descriptors of each path (rows in order; ``None`` paths give an all-NaN row; objects
    get their source image's row)."""
    from .objects import split_ref

    files = [split_ref(p)[0] if isinstance(p, str) and p else None for p in paths]
    if len(set(files)) < len(files):  # objects: describe each source image once
        unique = list(dict.fromkeys(f for f in files if f))
        raw = describe_files(unique, jobs, chunk, options)
        pos = {f: i for i, f in enumerate(unique)}
        return pd.DataFrame([raw.iloc[pos[f]].to_dict() if f else {"error": "no file"} for f in files])
    paths = files
    todo = [(i, str(p)) for i, p in enumerate(paths) if isinstance(p, str) and p]
    rows: list[dict[str, Any]] = [{"error": "no file"} for _ in paths]
    parts = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    if jobs > 1 and len(parts) > 1:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=jobs)(delayed(_describe_chunk)([p for _, p in part], options) for part in parts)
    else:
        results = [_describe_chunk([p for _, p in part], options) for part in parts]
    for part, res in zip(parts, results):
        for (i, _), r in zip(part, res):
            rows[i] = r
    return pd.DataFrame(rows)


def feature_groups(raw: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Numeric design matrices of each descriptor group (see the module docstring)."""
    def col(name: str) -> pd.Series:
        return raw[name].astype(float) if name in raw.columns else pd.Series(np.nan, index=raw.index)

    h, w = col("height"), col("width")
    size = pd.DataFrame({"log_height": np.log(h), "log_width": np.log(w), "aspect": w / h})
    suffix = raw["suffix"] if "suffix" in raw.columns else pd.Series("(none)", index=raw.index)
    file = pd.get_dummies(suffix.fillna("(none)"), prefix="suffix", dtype=float)
    file["log_bytes"] = np.log(col("bytes"))
    file["bytes_per_pixel"] = col("bytes") / (h * w)
    file["grey"] = col("grey")
    intensity = pd.DataFrame({f"{s}_{c}": col(f"{s}_{c}") for s in ("mean", "std") for c in "rgb"})
    groups = {"size": size, "file": file, "intensity": intensity}
    groups["all"] = pd.concat(groups.values(), axis=1)
    return groups


def _model(seed: int) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                         LogisticRegression(max_iter=2000, random_state=seed))


def _fit_predict(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, classes: np.ndarray,
                 seed: int) -> np.ndarray:
    from .fusion import aligned_proba

    if len(np.unique(y[train])) < 2:  # one class in training: predict it
        proba = np.zeros((len(test), len(classes)))
        proba[:, list(classes).index(y[train][0])] = 1.0
        return proba
    model = _model(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence / constant-column warnings: a baseline, not a model
        model.fit(X[train], y[train])
        return aligned_proba(model, X[test], classes)


def _majority(y: np.ndarray) -> float | None:
    """Accuracy of always predicting the most frequent class (the chance level)."""
    counts = pd.Series(y).value_counts()
    return float(counts.max() / counts.sum()) if len(counts) else None


def run_shortcuts(samples: pd.DataFrame, splits: Any, classes: np.ndarray, *, seed: int = 0, n_boot: int = 1000,
                  jobs: int = 1, progress: Callable[..., None] | None = None,
                  options: ReadOptions | None = None) -> dict[str, Any]:
    """Fit every shortcut baseline on ``splits`` (rows of ``samples`` = ``splits.ids``); JSON-ready.
    ``options``: the study's reader, applied when the images are described.

    Returns ``{"status": "ok", "baselines": {group: {metrics, ci95, n, test?}}, "chance", ...}`` or
    ``{"status": "skipped", "reason": ...}`` when the samples have no readable image files.
    """
    from .metrics import METRICS, bootstrap_intervals, point_metrics

    t0 = time.perf_counter()
    paths = samples["path"].tolist() if "path" in samples.columns else [None] * len(samples)
    if not any(isinstance(p, str) and p for p in paths):
        return {"status": "skipped", "reason": "the samples have no image files (tabular data)"}
    raw = describe_files(paths, jobs=jobs, options=options)
    unreadable = int(raw["error"].notna().sum()) if "error" in raw.columns else 0
    if unreadable == len(raw):
        return {"status": "skipped", "reason": f"none of the {len(raw)} files could be read for descriptors",
                "first_error": str(raw["error"].iloc[0])}
    y = samples["label"].astype(str).to_numpy()
    groups = samples["group"].astype(str).to_numpy() if "group" in samples.columns and splits.grouped else None
    folds = splits.folds()
    evaluated = np.zeros(len(y), bool)
    for _, test in folds:
        evaluated[test] = True
    hold = splits.holdout
    dev = np.flatnonzero(splits.fold_of >= 0)
    out: dict[str, Any] = {"status": "ok", "model": "logistic regression (median impute, standardise)",
                           "n_unreadable": unreadable, "features": {}, "baselines": {},
                           "chance": _majority(y[evaluated]), "describe_seconds": time.perf_counter() - t0}
    if len(hold):
        out["chance_test"] = _majority(y[hold])
    for name, frame in feature_groups(raw).items():
        X = np.array(frame.to_numpy(dtype=np.float64), copy=True)
        X[~np.isfinite(X)] = np.nan
        usable = ~np.all(np.isnan(X), axis=0)
        out["features"][name] = [c for c, u in zip(frame.columns, usable) if u]
        if not usable.any():
            out["baselines"][name] = {"status": "skipped", "reason": "no descriptor could be computed"}
            continue
        X = X[:, usable]
        oof = np.full((len(y), len(classes)), np.nan)
        for train, test in folds:
            if len(test):
                oof[test] = _fit_predict(X, y, train, test, classes, seed)
        m = point_metrics(y[evaluated], oof[evaluated], classes)
        base: dict[str, Any] = {"status": "ok", "metrics": {k: m[k] for k in METRICS}, "n": m["n"],
                                "ci95": bootstrap_intervals(y[evaluated], oof[evaluated], classes, n_boot=n_boot,
                                                            seed=seed,
                                                            groups=groups[evaluated] if groups is not None else None)}
        if len(hold):
            proba = _fit_predict(X, y, dev, hold, classes, seed)
            tm = point_metrics(y[hold], proba, classes)
            base["test"] = {"metrics": {k: tm[k] for k in METRICS}, "n": tm["n"],
                            "ci95": bootstrap_intervals(y[hold], proba, classes, n_boot=n_boot, seed=seed,
                                                        groups=groups[hold] if groups is not None else None)}
        out["baselines"][name] = base
        if progress is not None:
            progress("shortcut", baseline=name, accuracy=base["metrics"]["accuracy"],
                     test_accuracy=base.get("test", {}).get("metrics", {}).get("accuracy"))
    out["seconds"] = time.perf_counter() - t0
    return out


def flag_shortcuts(shortcuts: dict[str, Any], pipelines: dict[str, dict[str, Any]], margin: float = 0.05,
                   separable: float = 0.95) -> dict[str, Any]:
    """Add ``flagged`` and ``warnings`` to ``shortcuts``: a baseline within ``margin`` accuracy of the
    best pipeline (on CV, or on the test set), or at ``separable`` accuracy or more.

    A baseline that does not beat the chance level (majority-class share) by more than ``margin``
    is never flagged: on skewed classes a majority vote comes close to any pipeline, and that says
    the classes are skewed, not that the acquisition leaks the label.
    """
    shortcuts |= {"margin": margin, "separable": separable, "flagged": False, "warnings": []}
    if shortcuts.get("status") != "ok":
        return shortcuts
    ok = {n: p for n, p in pipelines.items() if p.get("status") == "ok"}

    def best(where: str) -> tuple[str, float] | None:
        vals = [(n, (p.get(where, {}) if where == "test" else p).get("metrics", {}).get("accuracy")) for n, p in ok.items()]
        vals = [(n, v) for n, v in vals if v is not None and np.isfinite(v)]
        return max(vals, key=lambda t: t[1]) if vals else None

    notes: list[str] = []
    for where, label in (("cv", "CV"), ("test", "test")):
        top = best(where)
        chance = shortcuts.get("chance" if where == "cv" else "chance_test") or 0.0
        for name, b in shortcuts["baselines"].items():
            if b.get("status") != "ok":
                continue
            part = b if where == "cv" else b.get("test")
            if not part:
                continue
            acc = part["metrics"]["accuracy"]
            if acc <= chance + margin:
                continue
            if acc >= separable:
                notes.append(f"{label}: the '{name}' shortcut baseline separates the classes "
                             f"(accuracy {acc:.3f} >= {separable:g}): acquisition alone predicts the label")
            elif top is not None and acc >= top[1] - margin:
                notes.append(f"{label}: the '{name}' shortcut baseline (accuracy {acc:.3f}) is within {margin:g} "
                             f"of the best pipeline '{top[0]}' ({top[1]:.3f})")
    shortcuts["flagged"] = bool(notes)
    shortcuts["warnings"] = notes
    return shortcuts
