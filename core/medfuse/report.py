"""The report folder of a study run: ``results.json``, ``report.md``, ``report.html``, figures, predictions.

Everything is rendered from the JSON-ready ``results`` dict of :func:`medfuse.evaluation.run_study`,
so a report can be rebuilt from ``results.json`` alone (``write_report(json.load(...), out)``).

* ``results.json``: every number (NaN written as ``null``).
* ``report.html``: self-contained (inline CSS, figures as base64 PNG): leaderboard with 95%
  intervals, confusion matrices, ROC curves, PCA explained variance per block, top features,
  data report, settings and versions.
* ``report.md``: the same tables, figures linked from ``figures/``.
* ``predictions/<pipeline>.csv``: out-of-fold predictions (id, label, fold, pred, proba.*);
  ``predictions/test/<pipeline>.csv``: predictions on the external test set, when the study has one.
* Beside the leaderboard: CV vs external test figures with the gap, the shortcut-baseline table
  (:mod:`medfuse.shortcuts`) and, when the study is flagged, a SHORTCUT WARNING line at the top.
* Paired comparisons (:mod:`medfuse.paired`: difference of each pair with its paired-bootstrap
  interval, McNemar exact with Holm; the leaderboard's "vs best" column), calibration (Brier,
  top-label ECE, one reliability diagram; :mod:`medfuse.calibration`) and per-class precision,
  recall and F1 with intervals.

Figures use matplotlib's object API with the Agg canvas (no display, no global pyplot state).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import DEFINITION as CALIBRATION_DEFINITION
from .evaluation import METRICS, StudyResult, cv_text
from .outputs import atomic_output, write_bytes, write_text

METRIC_LABELS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced acc.", "f1_macro": "Macro F1",
                 "f1_weighted": "Weighted F1", "roc_auc_ovr": "ROC AUC (OvR)"}


# ---- JSON -------------------------------------------------------------------------------------

def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays converted, NaN/inf as ``None``, paths as strings."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        v = float(obj)
        return v if math.isfinite(v) else None
    if obj is None or isinstance(obj, str | int):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def write_results_json(results: dict[str, Any], path: Path) -> Path:
    return write_text(path, json.dumps(to_jsonable(results), indent=1, allow_nan=False) + "\n")


# ---- formatting -------------------------------------------------------------------------------

def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, int | np.integer):
        return str(int(v))
    return f"{float(v):.{digits}f}"


def _ci(ci: Any, digits: int = 3) -> str:
    if not ci or any(v is None or (isinstance(v, float) and not math.isfinite(v)) for v in ci):
        return ""
    return f"[{float(ci[0]):.{digits}f}, {float(ci[1]):.{digits}f}]"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "x"


def _seconds(v: Any) -> str:
    if v is None:
        return "–"
    v = float(v)
    return f"{v:.2f} s" if v < 100 else f"{v / 60:.1f} min"


# ---- figures ----------------------------------------------------------------------------------

def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def figure_leaderboard(results: dict[str, Any]) -> bytes | None:
    """Horizontal bars of each leaderboard metric per pipeline, with 95% bootstrap intervals."""
    board = results.get("leaderboard") or []
    if not board:
        return None
    metrics = [m for m in results["settings"].get("metrics", METRICS) if m in METRICS]
    names = [r["pipeline"] for r in board][::-1]
    fig = _new_figure(2.6 * len(metrics) + 1.5, 0.45 * len(names) + 1.2)
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    for ax, m in zip(axes, metrics):
        vals = np.array([r[m] if r[m] is not None else np.nan for r in board][::-1], dtype=float)
        cis = [r.get(f"{m}_ci95") or [None, None] for r in board][::-1]
        lo = np.array([v - c[0] if c[0] is not None else 0 for v, c in zip(vals, cis)], dtype=float)
        hi = np.array([c[1] - v if c[1] is not None else 0 for v, c in zip(vals, cis)], dtype=float)
        ax.barh(names, vals, xerr=np.vstack([np.clip(lo, 0, None), np.clip(hi, 0, None)]),
                color="#4C78A8", capsize=3)
        ax.set_xlim(max(0.0, np.nanmin(vals - lo) - 0.05) if np.isfinite(vals).any() else 0, 1.0)
        ax.set_title(METRIC_LABELS.get(m, m), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Out-of-fold metrics with 95% bootstrap intervals", fontsize=11)
    return _png(fig)


def figure_calibration(results: dict[str, Any]) -> bytes | None:
    """Reliability diagram: accuracy against mean confidence per confidence bin, a line per pipeline."""
    lines = []
    for r in results.get("leaderboard") or []:
        bins = ((results["pipelines"][r["pipeline"]].get("calibration") or {}).get("bins")) or {}
        pts = [(c, a) for c, a in zip(bins.get("confidence", []), bins.get("accuracy", [])) if c is not None]
        if pts:
            lines.append((r["pipeline"], r.get("ece"), np.array(pts, dtype=float)))
    if not lines:
        return None
    fig = _new_figure(5.2, 4.6)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="calibrated")
    for name, ece, pts in lines:
        ax.plot(pts[:, 0], pts[:, 1], marker="o", ms=3, lw=1.4, label=f"{name} (ECE {_num(ece)})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("mean confidence (top-label, 10 bins)")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability (out-of-fold)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _png(fig)


def figure_confusion(name: str, p: dict[str, Any], key: str = "confusion") -> bytes | None:
    """Confusion matrix: colour = row-normalised recall, text = counts."""
    cm = np.asarray(p.get(key) or [], dtype=float)
    if cm.size == 0:
        return None
    classes = p["classes"]
    k = len(classes)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = max(3.2, 0.55 * k + 1.8)
    fig = _new_figure(side + 0.8, side)
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{name}: confusion (colour = row %)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _png(fig)


def figure_roc(name: str, p: dict[str, Any]) -> bytes | None:
    """One-vs-rest ROC curves per class (binary: the positive class), AUC in the legend."""
    roc = p.get("roc") or {}
    if not roc:
        return None
    fig = _new_figure(5.2, 4.4)
    ax = fig.subplots()
    for cls, c in roc.items():
        auc = c.get("auc")
        ax.plot(c["fpr"], c["tpr"], lw=1.4, label=f"{cls} ({_num(auc)})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{name}: ROC (one-vs-rest, out-of-fold)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return _png(fig)


def figure_pca(name: str, p: dict[str, Any]) -> bytes | None:
    """Cumulative explained variance of each block's PCA (one line per fold)."""
    blocks = {b: r for b, r in (p.get("blocks") or {}).items()
              if any(e for e in r.get("explained_variance_ratio") or [])}
    if not blocks:
        return None
    fig = _new_figure(3.4 * len(blocks) + 0.6, 3.2)
    axes = fig.subplots(1, len(blocks), squeeze=False)[0]
    for ax, (block, r) in zip(axes, blocks.items()):
        for k, evr in enumerate(r["explained_variance_ratio"]):
            if not evr:
                continue
            cum = np.cumsum(evr)
            ax.plot(np.arange(1, len(cum) + 1), cum, marker="o" if len(cum) < 30 else None, ms=3,
                    lw=1.2, alpha=0.8, label=f"fold {k + 1}")
        comps = [c for c in r.get("n_components", []) if c is not None]
        ax.set_title(f"{block}: {r.get('n_features_in')} → {_range(comps)} comp.", fontsize=9)
        ax.set_xlabel("components")
        ax.set_ylabel("cumulative explained variance")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{name}: PCA per block (fitted in each training fold)", fontsize=10)
    return _png(fig)


def figure_top_features(name: str, p: dict[str, Any], n: int = 15) -> bytes | None:
    """Horizontal bars of the most important features (first importance column)."""
    top = p.get("top_features") or []
    cols = _value_cols(top)
    if not top or not cols:
        return None
    top = top[:n][::-1]
    fig = _new_figure(6.0, 0.28 * len(top) + 1.0)
    ax = fig.subplots()
    ax.barh([t["feature"] for t in top], [t[cols[0]] for t in top], color="#F58518")
    ax.set_xlabel(cols[0])
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"{name}: top features", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _value_cols(top: list[dict[str, Any]] | None) -> list[str]:
    """Numeric columns of the top-features rows (``feature`` and ``method`` are labels)."""
    return [c for c in (top[0] if top else {}) if c not in ("feature", "method")]


def _method(top: list[dict[str, Any]] | None) -> str:
    return str(top[0].get("method", "")) if top else ""


def _range(values: list[Any]) -> str:
    if not values:
        return "?"
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}–{hi}"


def make_figures(results: dict[str, Any]) -> dict[str, bytes]:
    """Every figure of the report, by file name (``.png``); a figure that fails is skipped."""
    out: dict[str, bytes] = {}

    def add(fname: str, fn: Callable[[], bytes | None]) -> None:
        try:
            data = fn()
        except Exception as exc:  # noqa: BLE001 - a bad figure must not lose the report
            results.setdefault("report_warnings", []).append(f"figure {fname}: {type(exc).__name__}: {exc}")
            return
        if data:
            out[fname] = data

    add("leaderboard.png", lambda: figure_leaderboard(results))
    add("calibration.png", lambda: figure_calibration(results))
    for name, p in results["pipelines"].items():
        if p.get("status") != "ok":
            continue
        s = _slug(name)
        add(f"{s}-confusion.png", lambda n=name, q=p: figure_confusion(n, q))
        add(f"{s}-roc.png", lambda n=name, q=p: figure_roc(n, q))
        add(f"{s}-pca.png", lambda n=name, q=p: figure_pca(n, q))
        add(f"{s}-top-features.png", lambda n=name, q=p: figure_top_features(n, q))
        if p.get("holdout"):
            add(f"{s}-holdout-confusion.png",
                lambda n=name, q=p: figure_confusion(f"{n} (held-out)", {**q, **q["holdout"]}))
        if (p.get("test") or {}).get("confusion"):
            add(f"{s}-test-confusion.png",
                lambda n=name, q=p: figure_confusion(f"{n} (external test)", {**q, **q["test"]}))
    return out


# ---- tables (shared by markdown and html) -----------------------------------------------------

BOARD_NOTE = ("Brier and ECE: calibration, lower is better. vs best: Holm-adjusted McNemar p against the best; "
              "≈ best = not significantly worse (paired comparisons below).")


def _gap(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{float(v):+.3f}"


def _has_test(results: dict[str, Any]) -> bool:
    return any("metrics" in (p.get("test") or {}) for p in results["pipelines"].values())


def leaderboard_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """CV metrics per pipeline; with an external test set, its first metric and the gap beside them."""
    metrics = [m for m in results["settings"].get("metrics", METRICS) if m in METRICS]
    first = metrics[0] if metrics else "accuracy"
    test = _has_test(results)
    header = ["#", "pipeline", *[f"CV {METRIC_LABELS.get(m, m)}" if test else METRIC_LABELS.get(m, m)
                                 for m in metrics]]
    if test:
        header += [f"test {METRIC_LABELS.get(first, first)}", "gap (test - CV)"]
    header += ["Brier", "ECE", "vs best", "fit / fold", "predict img/s"]
    rows = []
    for i, r in enumerate(results.get("leaderboard") or [], 1):
        cells = [str(i), r["pipeline"]]
        for m in metrics:
            ci = _ci(r.get(f"{m}_ci95"))
            cells.append(f"{_num(r.get(m))} {ci}".strip())
        if test:
            cells += [f"{_num(r.get(f'test_{first}'))} {_ci(r.get(f'test_{first}_ci95'))}".strip(),
                      _gap(r.get(f"gap_{first}"))]
        cells += [f"{_num(r.get('brier'))} {_ci(r.get('brier_ci95'))}".strip(),
                  f"{_num(r.get('ece'))} {_ci(r.get('ece_ci95'))}".strip(), vs_best_text(r, i == 1)]
        ips = r.get("predict_images_per_second")
        cells += [_seconds(r.get("fit_seconds_mean")), f"{ips:.0f}" if ips else "–"]
        rows.append(cells)
    return header, rows


def _p(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return "<0.001" if v < 0.001 else f"{float(v):.3f}"


def vs_best_text(row: dict[str, Any], first: bool) -> str:
    """Leaderboard mark: ``best``, ``≈ best (p …)`` when not significantly worse, ``worse (p …)``."""
    if first:
        return "best"
    if "not_worse_than_best" not in row:
        return "–"
    p = f" (p {_p(row.get('p_vs_best'))})" if row.get("p_vs_best") is not None else ""
    return ("≈ best" if row["not_worse_than_best"] else "worse") + p


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _diff(v: Any, ci: Any) -> str:
    return f"{_gap(v)} {_ci(ci)}".strip()


def paired_rows(results: dict[str, Any], key: str = "cv") -> tuple[list[str], list[list[str]]]:
    """One row per pair A - B (A ranked above B): differences with paired intervals, McNemar, Holm."""
    from .paired import PAIRED_METRICS

    sec = (results.get("paired") or {}).get(key) or {}
    header = ["A - B", "n", *[f"Δ {METRIC_LABELS[m]} [95% CI]" for m in PAIRED_METRICS],
              "discordant (A only / B only)", "McNemar p", "Holm p", "significant"]
    rows = []
    for p in sec.get("pairs") or []:
        mc = p.get("mcnemar") or {}
        rows.append([f"{p['a']} - {p['b']}", str(p["n"]),
                     *[_diff(p["diff"].get(m), p["ci95"].get(m)) for m in PAIRED_METRICS],
                     f"{mc.get('a_only', '–')} / {mc.get('b_only', '–')}", _p(mc.get("p")), _p(p.get("p_holm")),
                     "yes" if p.get("significant") else "no"])
    return header, rows


def paired_intro(results: dict[str, Any], key: str = "cv") -> str:
    sec = (results.get("paired") or {}).get(key) or {}
    if sec.get("status") != "ok":
        return f"Paired comparison not available: {sec.get('reason') or 'not computed'}."
    where = "external test-set predictions" if key == "test" else "out-of-fold predictions"
    resample = "whole groups (patients/smears)" if sec.get("grouped") else "samples"
    return (f"Every pair on the {where} of the samples both scored. Δ = A - B (A ranked above B); the 95% interval "
            f"is a paired bootstrap ({sec.get('n_boot')} resamples of {resample}, the same resamples for both "
            f"pipelines). McNemar's exact test on the discordant predictions (it treats samples as independent), "
            f"Holm-adjusted across {_count(len(sec.get('pairs') or []), 'pair')}. Not significantly worse than the best "
            f"({sec.get('best')}): {', '.join(sec.get('not_worse_than_best') or [])} (Holm p ≥ {sec.get('alpha')}).")


def calibration_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Brier score and ECE per pipeline (CV, and the external test set when there is one)."""
    test = _has_test(results)
    header = ["pipeline", "Brier [95% CI]", "ECE [95% CI]"] + (["test Brier", "test ECE"] if test else [])
    rows = []
    for r in results.get("leaderboard") or []:
        cal = results["pipelines"][r["pipeline"]].get("calibration") or {}
        ci = cal.get("ci95") or {}
        cells = [r["pipeline"], f"{_num(cal.get('brier'))} {_ci(ci.get('brier'))}".strip(),
                 f"{_num(cal.get('ece'))} {_ci(ci.get('ece'))}".strip()]
        if test:
            tc = (results["pipelines"][r["pipeline"]].get("test") or {}).get("calibration") or {}
            cells += [_num(tc.get("brier")), _num(tc.get("ece"))]
        rows.append(cells)
    return header, rows


def test_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Every metric of every pipeline on CV and on the external test set, with intervals and the gap."""
    header = ["pipeline", "metric", "CV", "CV 95% CI", "test", "test 95% CI", "gap (test - CV)"]
    rows = []
    for r in results.get("leaderboard") or []:
        p = results["pipelines"][r["pipeline"]]
        t = p.get("test") or {}
        if "metrics" not in t:
            continue
        for m in METRICS:
            rows.append([r["pipeline"], METRIC_LABELS[m], _num(p["metrics"][m]), _ci(p["ci95"].get(m)),
                         _num(t["metrics"][m]), _ci(t["ci95"].get(m)), _gap(t["gap"].get(m))])
    return header, rows


def shortcut_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per shortcut baseline: its features, CV (and test) accuracy with intervals."""
    sc = results.get("shortcuts") or {}
    test = any("test" in b for b in (sc.get("baselines") or {}).values())
    header = ["baseline", "features", "CV accuracy", "CV balanced acc."]
    if test:
        header += ["test accuracy"]
    rows = []
    for name, b in (sc.get("baselines") or {}).items():
        feats = sc.get("features", {}).get(name) or []
        shown = ", ".join(feats) if len(feats) <= 8 else f"{len(feats)} descriptors"
        if b.get("status") != "ok":
            rows.append([name, shown, b.get("reason", "skipped"), ""] + [""] * test)
            continue
        cells = [name, shown, f"{_num(b['metrics']['accuracy'])} {_ci(b['ci95'].get('accuracy'))}".strip(),
                 f"{_num(b['metrics']['balanced_accuracy'])} {_ci(b['ci95'].get('balanced_accuracy'))}".strip()]
        if test:
            t = b.get("test")
            cells.append(f"{_num(t['metrics']['accuracy'])} {_ci(t['ci95'].get('accuracy'))}".strip() if t else "–")
        rows.append(cells)
    return header, rows


def shortcut_intro(results: dict[str, Any]) -> str:
    sc = results.get("shortcuts") or {}
    if sc.get("status") == "ok":
        return (f"Plain logistic regression (standardised) on what the acquisition leaks rather than the biology, "
                f"on the same folds{' and test set' if _has_test(results) else ''}; chance (majority class) "
                f"{_num(sc.get('chance'))}. The study is flagged when a baseline comes within "
                f"{sc.get('margin', 0.05):g} accuracy of the best pipeline or reaches {sc.get('separable', 0.95):g}.")
    if sc.get("status") == "off":
        return "Shortcut baselines were turned off (evaluation.shortcuts = false or --no-shortcuts)."
    return f"Shortcut baselines {sc.get('status', 'not run')}: {sc.get('reason') or sc.get('error') or ''}"


def reported_rows(results: dict[str, Any]) -> list[list[str]]:
    rep = results["study"].get("reported") or {}
    return [[str(k), str(v)] for k, v in rep.items()]


def fold_rows(p: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["metric", "pooled out-of-fold", "95% CI", "fold mean ± sd", *[f"fold {f['fold']}" for f in p["folds"]]]
    rows = []
    for m in METRICS:
        fs = p["fold_summary"][m]
        rows.append([METRIC_LABELS[m], _num(p["metrics"][m]), _ci(p["ci95"].get(m)),
                     f"{_num(fs['mean'])} ± {_num(fs['sd'])}", *[_num(f[m]) for f in p["folds"]]])
    return header, rows


def per_class_rows(p: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Precision, recall, F1 (with 95% bootstrap intervals when computed) and support per class."""
    header = ["class", "precision", "recall", "F1", "support"]
    cis = p.get("per_class_ci95") or {}
    rows = [[c, *[f"{_num(v[k])} {_ci((cis.get(c) or {}).get(k))}".strip() for k in ("precision", "recall", "f1")],
             str(v["support"])] for c, v in p["per_class"].items()]
    return header, rows


def block_rows(p: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["block", "features in", "components kept (per fold)", "explained variance (mean)"]
    rows = []
    for b, r in (p.get("blocks") or {}).items():
        ev = [e for e in r.get("explained_variance", []) if e is not None]
        comps = r.get("n_components", [])
        rows.append([b, _num(r.get("n_features_in")), ", ".join("–" if c is None else str(c) for c in comps),
                     _num(float(np.mean(ev))) if ev else "no PCA"])
    return header, rows


def reliability_rows(p: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """``combine = "select"``: each part's weight per fold (and in the fit scored on the test
    set), its out-of-fold accuracy alone inside the training fold, and how often it was kept."""
    fits = list(p.get("reliability") or [])
    if (p.get("test") or {}).get("reliability"):
        fits.append(p["test"]["reliability"] | {"fold": "test fit"})
    header = ["part", "weight per fit (" + ", ".join(str(f.get("fold")) for f in fits) + ")",
              "inner out-of-fold accuracy alone (mean)", "kept"]
    rows = []
    for j, part in enumerate(fits[0]["parts"] if fits else []):
        parts = [f["parts"][j] for f in fits]
        rows.append([part["name"], ", ".join(_num(q["weight"]) for q in parts),
                     _num(float(np.mean([q["oof_accuracy"] for q in parts]))),
                     f"{sum(q['kept'] for q in parts)}/{len(parts)}"])
    return header, rows


def timing_rows(p: dict[str, Any]) -> list[list[str]]:
    t = p.get("timing", {})
    rows = [["materialize (decode, transforms, masks, prepare)", _seconds(t.get("materialize_seconds"))],
            ["fit per fold (mean)", _seconds(t.get("fit_seconds_mean"))],
            ["predict, all folds", _seconds(t.get("predict_seconds_total"))],
            ["predict images / second", _num(t.get("predict_images_per_second"), 1)]]
    if t.get("cache"):
        rows.append(["feature cache", ", ".join(f"{k} {v}" for k, v in t["cache"].items())])
    if t.get("top_features_seconds") is not None:
        rows.append(["feature importance", _seconds(t.get("top_features_seconds"))])
    rows.append(["total", _seconds(t.get("total_seconds"))])
    return rows


def data_lines(results: dict[str, Any]) -> list[str]:
    d = results["data"]
    s = results["splits"]
    lines = [f"Loader `{d['loader']}` {json.dumps(d.get('loader_params') or {})}: {d['n_loaded']} samples loaded, "
             f"{d['n_selected']} evaluated, {len(d['classes'])} classes"
             + (f", {d['n_groups']} groups (patients/smears)" if s.get("grouped") and d.get("n_groups") else "")
             + ".",
             "Per class: " + ", ".join(f"{k} {v}" for k, v in d["class_counts"].items()) + ".",
             f"Exact duplicates removed before splitting: {d['duplicates_removed']}"
             f"; identical content with conflicting labels removed: {d['label_conflicts_removed']}.",
             f"Splits: {s['method']}, {s['folds']} folds (sizes {', '.join(map(str, s['fold_sizes']))})"
             + (f"; evaluated: {cv_text(s)}" if s.get("run_folds", s["folds"]) < s["folds"] else "")
             + (f"; held-out {s['holdout']} samples ({s['holdout_method']})" if s.get("holdout") else "") + ".",
             "Leakage check: " + ("no content hash or group on both sides of any split"
                                  if s["leakage"].get("ok") else
                                  f"{s['leakage']['shared_sha1']} content hashes and "
                                  f"{s['leakage']['shared_groups']} groups on both sides: "
                                  + "; ".join(s["leakage"].get("examples", []))) + "."]
    t = d.get("test")
    if t:
        lines.append(f"External test set ({t['source']}): {t['n_loaded']} samples set apart before selection and "
                     f"splits, {t['n_selected']} scored (" + ", ".join(f"{k} {v}" for k, v in t["class_counts"].items())
                     + f"); {t['duplicates_of_development']} duplicates of development images dropped from it"
                     + (f" (e.g. {'; '.join(t['duplicate_examples'][:3])})" if t.get("duplicate_examples") else "")
                     + (f"; {t['duplicates_removed']} exact duplicates within it removed" if t.get("duplicates_removed")
                        else "")
                     + (f"; capped: removed {sum(t['capped'].values())}" if t.get("capped") else "")
                     + (f"; classes absent from it: {', '.join(t['missing_classes'])}" if t.get("missing_classes")
                        else "") + ".")
    if d.get("capped"):
        lines.append("Capped per class (max_per_class): removed " + ", ".join(f"{k} {v}" for k, v in d["capped"].items())
                     + ".")
    lines += s.get("warnings", [])
    rep = d.get("report") or {}
    lines += [str(x) for x in rep.get("summary_lines", [])]
    return lines


def warning_lines(results: dict[str, Any]) -> list[str]:
    """The study's shortcut warnings (empty when not flagged)."""
    return list((results.get("shortcuts") or {}).get("warnings") or [])


def test_lines(p: dict[str, Any]) -> list[str]:
    """A pipeline's external-test summary (and its failures) as markdown lines."""
    t = p.get("test")
    if not t:
        return []
    if "metrics" not in t:
        return [f"External test set: {t.get('error', 'not scored')} ({t.get('n_failed', 0)} failed).", ""]
    out = [f"External test set ({t['n']} samples, fitted on {t.get('n_fit', '?')} development samples): " + ", ".join(
        f"{METRIC_LABELS[m]} {_num(t['metrics'][m])} {_ci(t['ci95'].get(m))} (gap {_gap(t['gap'].get(m))})"
        for m in METRICS), ""]
    if t.get("n_failed"):
        out += [f"{t['n_failed']} test samples could not be prepared (counted as failures, not scored):", ""]
        out += [f"- `{r['id']}` {r['path']}: {r['error']}" for r in t.get("failed", [])[:20]] + [""]
    return out


# ---- markdown ---------------------------------------------------------------------------------

def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(c: str) -> str:
        return str(c).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(out)


def render_markdown(results: dict[str, Any], figures: dict[str, bytes]) -> str:
    st = results["study"]
    out = [f"# medfuse report: {st['name']}", ""]
    if st.get("description"):
        out += [st["description"], ""]
    out += [f"Created {results.get('created', '')} · seed {results['settings']['seed']} · "
            f"{cv_text(results['settings'])} · {results['settings']['bootstrap']} bootstrap resamples", ""]
    out += [f"> **SHORTCUT WARNING:** {w}" for w in warning_lines(results)]
    out += [""] if warning_lines(results) else []
    out += ["## Leaderboard", "", "Pooled out-of-fold predictions; brackets: 95% bootstrap interval"
            + ("; test: fitted on all development data, scored on the external test set" if _has_test(results)
               else "") + ". " + BOARD_NOTE, ""]
    out += [_md_table(*leaderboard_rows(results)), ""]
    if "leaderboard.png" in figures:
        out += ["![leaderboard](figures/leaderboard.png)", ""]
    out += ["## Paired comparisons", "", paired_intro(results), ""]
    if paired_rows(results)[1]:
        out += [_md_table(*paired_rows(results)), ""]
    if (results.get("paired") or {}).get("test"):
        out += ["External test set:", "", paired_intro(results, "test"), "", _md_table(*paired_rows(results, "test")),
                ""]
    out += ["## Calibration", "", CALIBRATION_DEFINITION, "", _md_table(*calibration_rows(results)), ""]
    if "calibration.png" in figures:
        out += ["![calibration](figures/calibration.png)", ""]
    if _has_test(results):
        out += ["## CV vs external test set", "", _md_table(*test_rows(results)), ""]
    out += ["## Shortcut baselines", "", shortcut_intro(results), ""]
    if (results.get("shortcuts") or {}).get("status") == "ok":
        out += [_md_table(*shortcut_rows(results)), ""]
    if reported_rows(results):
        out += ["Published figures of the original study (for comparison, not reproduced here):", "",
                _md_table(["key", "value"], reported_rows(results)), ""]
    failed = {n: p for n, p in results["pipelines"].items() if p["status"] != "ok"}
    if failed:
        out += ["## Failed pipelines", ""] + [f"- **{n}**: `{p['error']}`" for n, p in failed.items()] + [""]
    out += ["## Data", ""] + [f"- {line}" for line in data_lines(results)] + [""]
    for name, p in results["pipelines"].items():
        if p["status"] != "ok":
            continue
        s = _slug(name)
        out += [f"## Pipeline `{name}`", "", _md_table(*fold_rows(p)), "", "Per class (95% bootstrap intervals):", "",
                _md_table(*per_class_rows(p)), ""]
        if p.get("holdout"):
            h = p["holdout"]
            out += [f"Held-out ({h['n']} samples): " + ", ".join(
                f"{METRIC_LABELS[m]} {_num(h['metrics'][m])} {_ci(h['ci95'].get(m))}" for m in METRICS), ""]
        out += [f"{line}" for line in test_lines(p)]
        if p.get("blocks"):
            out += [_md_table(*block_rows(p)), ""]
        if p.get("reliability"):
            out += ["Per-part reliability (`combine = \"select\"`, learnt inside each training fold):", "",
                    _md_table(*reliability_rows(p)), ""]
        for kind in ("confusion", "roc", "pca", "top-features", "holdout-confusion", "test-confusion"):
            f = f"{s}-{kind}.png"
            if f in figures:
                out += [f"![{name} {kind}](figures/{f})", ""]
        if p.get("top_features"):
            cols = _value_cols(p["top_features"])
            out += [f"Top features ({_method(p['top_features']) or 'importance'}, "
                    f"from {p.get('top_features_folds', 1)} fold(s)):", "",
                    _md_table(["feature", *cols], [[t["feature"], *[_num(t[c], 4) for c in cols]]
                                                   for t in p["top_features"][:20]]), ""]
        out += [_md_table(["timing", "value"], timing_rows(p)), ""]
        if p.get("n_failed"):
            out += [f"{p['n_failed']} samples could not be prepared and were left out:", ""]
            out += [f"- `{r['id']}` {r['path']}: {r['error']}" for r in p["failed"][:20]] + [""]
    out += ["## Settings", "", "```json", json.dumps(to_jsonable(results["settings"]), indent=1), "```", "",
            "## Versions", "", _md_table(["package", "version"], [[k, v] for k, v in results["versions"].items()]),
            ""]
    return "\n".join(out)


# ---- html -------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:1.2em;
color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #4C78A8;padding-bottom:.15em;margin-top:1.6em}
h3{margin-top:1.2em}table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}th{background:#eef2f7}
td:first-child,th:first-child,td.l{text-align:left}tr:nth-child(even) td{background:#fafafa}
.meta{color:#555;font-size:.9em}.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.figs img{max-width:100%;border:1px solid #ddd}.err{color:#a00;white-space:pre-wrap;font-family:monospace;
font-size:.85em}code,pre{background:#f4f4f4;padding:.1em .3em}pre{padding:.6em;overflow:auto;font-size:.8em}
.best td{font-weight:600}.warn{background:#fdecea;border-left:4px solid #c0392b;padding:.4em .7em}
"""


def _html_table(header: list[str], rows: list[list[str]], first_best: bool = False) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = []
    for i, r in enumerate(rows):
        cls = ' class="best"' if first_best and i == 0 else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
    return f"<table><thead><tr>{h}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(figures: dict[str, bytes], fname: str, alt: str) -> str:
    data = figures.get(fname)
    if not data:
        return ""
    b64 = base64.b64encode(data).decode()
    return f'<img src="data:image/png;base64,{b64}" alt="{html.escape(alt)}">'


def render_html(results: dict[str, Any], figures: dict[str, bytes]) -> str:
    st = results["study"]
    e = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>medfuse: {e(st['name'])}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>medfuse report: {e(st['name'])}</h1>"]
    parts += [f"<p class='warn'><b>SHORTCUT WARNING:</b> {e(w)}</p>" for w in warning_lines(results)]
    if st.get("description"):
        parts.append(f"<p>{e(st['description'])}</p>")
    s = results["settings"]
    parts.append(f"<p class='meta'>Created {e(str(results.get('created', '')))} · seed {s['seed']} · "
                 f"{cv_text(s)} · {s['bootstrap']} bootstrap resamples · "
                 f"study source {e(str(st.get('source', '')))}</p>")
    parts += ["<h2>Leaderboard</h2>",
              "<p>Metrics of the pooled out-of-fold predictions; brackets: 95% bootstrap interval "
              "(resampling groups when the data has them). " + e(BOARD_NOTE) + " Fit time per fold; prediction speed over "
              "all folds.</p>",
              _html_table(*leaderboard_rows(results), first_best=True),
              f"<div class='figs'>{_img(figures, 'leaderboard.png', 'leaderboard')}</div>"]
    parts += ["<h2>Paired comparisons</h2>", f"<p>{e(paired_intro(results))}</p>"]
    if paired_rows(results)[1]:
        parts.append(_html_table(*paired_rows(results)))
    if (results.get("paired") or {}).get("test"):
        parts += ["<h3>External test set</h3>", f"<p>{e(paired_intro(results, 'test'))}</p>",
                  _html_table(*paired_rows(results, "test"))]
    parts += ["<h2>Calibration</h2>", f"<p>{e(CALIBRATION_DEFINITION)}</p>", _html_table(*calibration_rows(results)),
              f"<div class='figs'>{_img(figures, 'calibration.png', 'reliability diagram')}</div>"]
    if _has_test(results):
        parts += ["<h2>CV vs external test set</h2>",
                  "<p>Each pipeline fitted on all development data and scored on the external test set, beside "
                  "its cross-validated figure; gap = test - CV.</p>", _html_table(*test_rows(results))]
    parts += ["<h2>Shortcut baselines</h2>", f"<p>{e(shortcut_intro(results))}</p>"]
    if (results.get("shortcuts") or {}).get("status") == "ok":
        parts.append(_html_table(*shortcut_rows(results)))
    if reported_rows(results):
        parts += ["<p>Published figures of the original study (not reproduced here):</p>",
                  _html_table(["key", "value"], reported_rows(results))]
    failed = {n: p for n, p in results["pipelines"].items() if p["status"] != "ok"}
    if failed:
        parts.append("<h2>Failed pipelines</h2>")
        for n, p in failed.items():
            parts.append(f"<h3>{e(n)}</h3><div class='err'>{e(p.get('error', ''))}</div>"
                         f"<details><summary>traceback</summary><pre>{e(p.get('traceback', ''))}</pre></details>")
    parts.append("<h2>Data</h2><ul>" + "".join(f"<li>{e(line)}</li>" for line in data_lines(results)) + "</ul>")
    dups = results["data"].get("duplicate_groups") or []
    if dups:
        parts.append(f"<details><summary>{len(dups)} duplicate groups (ids sharing content)</summary><ul>"
                     + "".join(f"<li>{e(', '.join(g))}</li>" for g in dups) + "</ul></details>")
    rep = results["data"].get("report")
    if rep:
        rep_json = json.dumps(to_jsonable({k: v for k, v in rep.items() if k != "summary_lines"}), indent=1)
        parts.append(f"<details><summary>data report (full)</summary><pre>{e(rep_json[:200_000])}</pre></details>")
    for name, p in results["pipelines"].items():
        if p["status"] != "ok":
            continue
        sl = _slug(name)
        parts.append(f"<h2>Pipeline <code>{e(name)}</code></h2>")
        parts.append(f"<p class='meta'>{p['n_evaluated']} samples evaluated"
                     + (f", {p['n_failed']} could not be prepared" if p.get("n_failed") else "") + "</p>")
        parts.append(_html_table(*fold_rows(p)))
        parts.append("<div class='figs'>" + _img(figures, f"{sl}-confusion.png", f"{name} confusion")
                     + _img(figures, f"{sl}-roc.png", f"{name} ROC") + "</div>")
        parts.append("<h3>Per class (95% bootstrap intervals)</h3>" + _html_table(*per_class_rows(p)))
        if p.get("holdout"):
            h = p["holdout"]
            rows = [[METRIC_LABELS[m], _num(h["metrics"][m]), _ci(h["ci95"].get(m))] for m in METRICS]
            parts.append(f"<h3>Held-out set ({h['n']} samples)</h3>" + _html_table(["metric", "value", "95% CI"], rows)
                         + f"<div class='figs'>{_img(figures, f'{sl}-holdout-confusion.png', 'held-out confusion')}</div>")
        t = p.get("test")
        if t and "metrics" in t:
            rows = [[METRIC_LABELS[m], _num(p["metrics"][m]), _num(t["metrics"][m]), _ci(t["ci95"].get(m)),
                     _gap(t["gap"].get(m))] for m in METRICS]
            parts.append(f"<h3>External test set ({t['n']} samples)</h3>"
                         + _html_table(["metric", "CV", "test", "test 95% CI", "gap"], rows)
                         + f"<div class='figs'>{_img(figures, f'{sl}-test-confusion.png', 'test confusion')}</div>")
        if t and (t.get("n_failed") or "metrics" not in t):
            parts.append(f"<details><summary>{t.get('n_failed', 0)} test samples could not be prepared</summary>"
                         + _html_table(["id", "path", "error"], [[r["id"], r["path"], r["error"]]
                                                                 for r in t.get("failed", [])]) + "</details>")
        if p.get("reliability"):
            parts.append("<h3>Per-part reliability (learnt inside each training fold)</h3>"
                         + _html_table(*reliability_rows(p)))
        if p.get("blocks"):
            parts.append("<h3>Feature blocks</h3>" + _html_table(*block_rows(p))
                         + f"<div class='figs'>{_img(figures, f'{sl}-pca.png', f'{name} PCA')}</div>")
        if p.get("top_features"):
            cols = _value_cols(p["top_features"])
            rows = [[t["feature"], *[_num(t[c], 4) for c in cols]] for t in p["top_features"][:20]]
            parts.append(f"<h3>Top features ({e(_method(p['top_features']) or 'importance')}, "
                         f"from {p.get('top_features_folds', 1)} fold(s))</h3><div class='figs'>"
                         + _html_table(["feature", *cols], rows) + _img(figures, f"{sl}-top-features.png", f"{name} top features")
                         + "</div>")
        elif p.get("top_features_error"):
            parts.append(f"<p class='meta'>Feature importance not available: {e(p['top_features_error'])}</p>")
        parts.append("<h3>Timing</h3>" + _html_table(["step", "time"], timing_rows(p)))
        if p.get("n_failed"):
            parts.append(f"<details><summary>{p['n_failed']} samples left out</summary>"
                         + _html_table(["id", "path", "error"], [[r["id"], r["path"], r["error"]] for r in p["failed"]])
                         + "</details>")
        if p.get("spec"):
            parts.append("<details><summary>pipeline spec (plugins, versions, params)</summary>"
                         f"<pre>{e(json.dumps(to_jsonable(p['spec']), indent=1))}</pre></details>")
    parts += ["<h2>Settings</h2>", f"<pre>{e(json.dumps(to_jsonable(results['settings']), indent=1))}</pre>",
              "<h2>Versions</h2>", _html_table(["package", "version"], [[k, v] for k, v in results["versions"].items()])]
    if results.get("report_warnings"):
        parts.append("<p class='meta'>Report warnings: " + e("; ".join(results["report_warnings"])) + "</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---- the folder -------------------------------------------------------------------------------

def write_report(result: StudyResult | dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write the report folder, each file atomically; return the main files by role (``json``,
    ``md``, ``html``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(result, StudyResult):
        results, predictions = result.results, result.predictions
    else:
        results, predictions = result, {}
    results = to_jsonable(results)
    figures = make_figures(results)
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    for fname, data in figures.items():
        write_bytes(fig_dir / fname, data)
    test_predictions = result.test_predictions if isinstance(result, StudyResult) else {}
    for sub, frames in (("predictions", predictions), ("predictions/test", test_predictions)):
        if not frames:
            continue
        pred_dir = out / sub
        pred_dir.mkdir(parents=True, exist_ok=True)
        for name, frame in frames.items():
            with atomic_output(pred_dir / f"{_slug(name)}.csv") as tmp:
                frame.to_csv(tmp, index=False)
    paths = {"json": write_results_json(results, out / "results.json"),
             "md": out / "report.md", "html": out / "report.html"}
    write_text(paths["md"], render_markdown(results, figures))
    write_text(paths["html"], render_html(results, figures))
    return paths
