"""Evaluation of a study's pipelines on shared folds: the run loop and its results.

Sample selection and folds live in :mod:`medfuse.splits`, metrics and bootstrap intervals in
:mod:`medfuse.metrics`; :mod:`medfuse.studyrun` adds loading, the report folder and the run index.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from .calibration import calibration_summary
from .contracts import SampleTable
from .errors import DataError, StudyError, did_you_mean
from .fusion import align_columns
from .metrics import (
    METRICS,
    bootstrap_intervals,
    check_metric_names,
    label_codes,
    per_class_intervals,
    point_metrics,
    roc_points,
    summarize_folds,
)
from .splits import Splits, add_test_rows, make_splits, rows_by_fold, select_samples
from .study import Study
from .util.versions import library_versions

RESULTS_SCHEMA = 1

Progress = Callable[..., None]


def _noop(event: str, **info: Any) -> None:
    return None


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


def empty_block_warnings(prepared: Any) -> list[str]:
    """One line per feature block that is NaN in every feature of every sample: it carries nothing
    (imputed to a constant), so the pipeline runs near chance without an error; the usual cause is an
    extractor that needs a mask in a pipeline without one."""
    return [f"block {b!r}: every feature is NaN for all {len(arr)} samples, so it carries no information "
            "(an extractor that needs a mask, in a pipeline without `mask`?)"
            for b, arr in (getattr(prepared, "blocks", None) or {}).items()
            if getattr(arr, "size", 0) and np.isnan(arr).all()]


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
    folds, hold = rows_by_fold(splits, ids)
    warnings = empty_block_warnings(prepared)
    progress("materialized", pipeline=name, n=len(ids), failed=n_failed, seconds=timing["materialize_seconds"],
             warnings=warnings)

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
    for i, (k, (train, test)) in enumerate(zip(splits.run, folds)):  # k: the fold's index, i: its place in the run
        if len(test) == 0:
            continue
        t = time.perf_counter()
        fitted = runner.fit(prepared, train, seed)
        fit_s.append(time.perf_counter() - t)
        fit_inner.append(float(getattr(fitted, "fit_seconds_", fit_s[-1])))
        t = time.perf_counter()
        proba = fitted.predict_proba(prepared, test)
        pred_s.append(time.perf_counter() - t)
        proba = align_columns(np.asarray(proba), fitted.classes_, classes)
        oof[test] = proba
        fold_col[test] = k
        m = point_metrics(y[test], proba, classes)
        per_fold.append({key: m[key] for key in (*METRICS, "n")} | {"fold": k + 1, "n_train": int(len(train))})
        reports.append(dict(getattr(fitted, "block_reports_", {}) or {}))
        if getattr(fitted, "reliability_", None):
            reliability.append(dict(fitted.reliability_) | {"fold": k + 1})
        if spec is None and hasattr(fitted, "spec"):
            spec = fitted.spec()
        if i < top_features_folds:
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
        progress("fold", pipeline=name, fold=k + 1, folds=splits.n_folds, metrics={m_: per_fold[-1][m_] for m_ in METRICS})
        del fitted

    evaluated = fold_col >= 0
    pooled = point_metrics(y[evaluated], oof[evaluated], classes)
    ci = bootstrap_intervals(y[evaluated], oof[evaluated], classes, n_boot=n_boot, seed=seed,
                             groups=groups[evaluated] if groups is not None and splits.grouped else None)
    boot_groups = groups[evaluated] if groups is not None and splits.grouped else None
    per_class_ci = per_class_intervals(y[evaluated], oof[evaluated], classes, n_boot=n_boot, seed=seed,
                                       groups=boot_groups)
    calibration = calibration_summary(label_codes(y[evaluated], classes), oof[evaluated], n_boot=n_boot, seed=seed,
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
        "warnings": warnings,
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
        proba = align_columns(np.asarray(fitted.predict_proba(prepared, hold_rows)), fitted.classes_, classes)
        timing[f"{key}_predict_seconds"] = time.perf_counter() - t
        hm = point_metrics(y[hold_rows], proba, classes)
        hold_groups = groups[hold_rows] if groups is not None and splits.grouped else None
        result[key] = {"metrics": {m: hm[m] for m in METRICS}, "n": hm["n"],
                       "ci95": bootstrap_intervals(y[hold_rows], proba, classes, n_boot=n_boot, seed=seed,
                                                   groups=hold_groups),
                       "per_class": hm["per_class"],
                       "per_class_ci95": per_class_intervals(y[hold_rows], proba, classes, n_boot=n_boot, seed=seed,
                                                             groups=hold_groups),
                       "calibration": calibration_summary(label_codes(y[hold_rows], classes), proba, n_boot=n_boot,
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
              run_folds: int | None = None, only_folds: str | Sequence[int] | None = None,
              progress: Progress | None = None,
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
    only_folds : str or sequence of int, optional
        Evaluate only these folds, numbered from 1 (``"2"``, ``"2-5"``, ``[2, 4]``): e.g. leave out a
        fold on which a recipe was chosen. Same fold assignment as without it; exclusive with ``run_folds``.
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
    names = list(study.pipelines) if pipelines is None else list(pipelines)  # []: shortcut baselines only
    for p in names:
        if p not in study.pipelines:
            raise StudyError(study.source, f"studies.{study.name}.pipelines",
                             f"no pipeline {p!r}{did_you_mean(p, study.pipelines)}; defined: {', '.join(study.pipelines)}")
    check_metric_names(study)
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
        splits = make_splits(dev_samples, n_folds, ev.seed, 0.0, run_folds, only_folds)
        scored = combine(kept, test_sel.data)
        splits = add_test_rows(splits, scored.samples, test_source)
    else:
        scored = kept
        splits = make_splits(kept.samples, n_folds, ev.seed, ev.holdout, run_folds, only_folds)
    progress("splits", **splits.to_dict())
    test_ids = set(test_sel.data.samples["id"].astype(str)) if test_sel is not None else None

    results: dict[str, Any] = {
        "medfuse_results": RESULTS_SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "study": {"name": study.name, "source": study.source, "description": study.description,
                  "reported": study.reported, "pipelines_defined": list(study.pipelines)},
        "settings": {"folds": n_folds, "run_folds": splits.n_run, "fold_numbers": [k + 1 for k in splits.run],
                     "seed": ev.seed, "holdout": ev.holdout,
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
        "versions": library_versions(environment=True),
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
