"""The report folder of a study run: ``results.json``, ``report.md``, ``report.html``, figures, predictions.

Everything is rendered from the JSON-ready ``results`` dict of :func:`medfuse.evaluation.run_study`,
so a report can be rebuilt from ``results.json`` alone (``write_report(json.load(...), out)``).

* ``results.json``: every number (NaN written as ``null``).
* ``report.html``: self-contained (inline CSS, figures as base64 PNG/JPEG): leaderboard with 95%
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

* Diagnostics (:mod:`medfuse.diagnostics`, collected at fit time): learning curves of every network
  trained (per fold, training vs validation), a gallery of the most confident misclassified images
  (:mod:`medfuse.gallery` makes the thumbnails from the sample files), Grad-CAM overlays for CNN
  pipelines, and permutation importance on the raw block features pooled over every fold.

report.html and report.md are rendered from the Jinja2 templates in ``medfuse/templates`` (shipped as
package data) from one context (:func:`report_context`): tables are built here, layout lives there.
report.html is self-contained (images as ``data:`` URIs, no network), readable at phone width
(viewport meta, tables scroll sideways, the gallery wraps) and kept under :data:`MAX_HTML_BYTES` by
shrinking the gallery (:func:`fit_html`). Figures are palette-quantised PNGs.

Figures use matplotlib's object API with the Agg canvas (no display, no global pyplot state).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import DEFINITION as CALIBRATION_DEFINITION
from .evaluation import StudyResult
from .gallery import gallery_images
from .metrics import METRICS
from .outputs import atomic_output, write_bytes, write_text
from .splits import cv_text
from .util import jsonable
from .util.formatting import fmt_interval, fmt_number, fmt_p, fmt_signed

METRIC_LABELS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced acc.", "f1_macro": "Macro F1",
                 "f1_weighted": "Weighted F1", "roc_auc_ovr": "ROC AUC (OvR)"}


# ---- JSON -------------------------------------------------------------------------------------

to_jsonable = functools.partial(jsonable.to_jsonable, finite=True)
"""Plain JSON types for results.json (``allow_nan=False``): NaN/inf as ``None``, see :mod:`medfuse.util.jsonable`."""


def write_results_json(results: dict[str, Any], path: Path) -> Path:
    return write_text(path, json.dumps(to_jsonable(results), indent=1, allow_nan=False) + "\n")


# ---- file names and durations ----------------------------------------------------------------


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
    """The figure as a PNG quantised to a 256-colour palette (plots lose nothing visible; the file
    is 2-3x smaller, which keeps a report with many pipelines small)."""
    from PIL import Image

    canvas = fig.canvas
    canvas.draw()  # one draw (the constrained layout fits everything), pixels taken as they are: one encode
    width, height = canvas.get_width_height(physical=True)
    img = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1).convert("RGB")
    out = io.BytesIO()
    img.quantize(256, method=Image.Quantize.FASTOCTREE).save(out, format="PNG", compress_level=9)
    return out.getvalue()


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
        ax.plot(pts[:, 0], pts[:, 1], marker="o", ms=3, lw=1.4, label=f"{name} (ECE {fmt_number(ece)})")
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
        ax.plot(c["fpr"], c["tpr"], lw=1.4, label=f"{cls} ({fmt_number(auc)})")
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


def figure_learning(name: str, slot: str, runs: list[dict[str, Any]]) -> bytes | None:
    """Loss and accuracy per epoch of one network over the folds: training solid, validation dashed."""
    if not runs:
        return None
    fig = _new_figure(8.0, 3.0)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    colours = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D"]
    for r in runs:
        c = colours[(r["fold"] - 1) % len(colours)]
        for ax, key in zip(axes, ("loss", "accuracy")):
            for k, ls in ((key, "-"), (f"val_{key}", "--")):
                v = r.get(k) or []
                if v:
                    ax.plot(np.arange(1, len(v) + 1), v, ls=ls, color=c, lw=1.2,
                            label=f"fold {r['fold']}{' val' if ls == '--' else ''}")
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6, ncol=2, loc="lower right")
    fig.suptitle(f"{name}: {slot} ({runs[0].get('plugin', '')}) training (solid) vs validation (dashed)", fontsize=9)
    return _png(fig)


def figure_raw_importance(name: str, p: dict[str, Any], n: int = 15) -> bytes | None:
    """Bars of the most important raw features with their sd over folds, coloured by block."""
    feats = ((p.get("raw_importance") or {}).get("features") or [])[:n][::-1]
    if not feats:
        return None
    blocks = list(dict.fromkeys(f["block"] for f in feats))
    palette = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2"]
    fig = _new_figure(6.0, 0.28 * len(feats) + 1.0)
    ax = fig.subplots()
    ax.barh([f["feature"] for f in feats], [f["importance"] for f in feats],
            xerr=[f.get("sd") or 0 for f in feats], capsize=2,
            color=[palette[blocks.index(f["block"]) % len(palette)] for f in feats])
    if len(blocks) > 1:
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=palette[i % len(palette)], label=b) for i, b in enumerate(blocks)],
                  fontsize=7, loc="lower right")
    ax.set_xlabel("drop in accuracy when shuffled (mean over folds)")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"{name}: raw features", fontsize=10)
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
        add(f"{s}-raw-importance.png", lambda n=name, q=p: figure_raw_importance(n, q))
        for slot, runs in (p.get("learning_curves") or {}).items():
            add(f"{s}-learning-{_slug(slot)}.png", lambda n=name, sl=slot, r=runs: figure_learning(n, sl, r))
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
            ci = fmt_interval(r.get(f"{m}_ci95"))
            cells.append(f"{fmt_number(r.get(m))} {ci}".strip())
        if test:
            cells += [f"{fmt_number(r.get(f'test_{first}'))} {fmt_interval(r.get(f'test_{first}_ci95'))}".strip(),
                      fmt_signed(r.get(f"gap_{first}"))]
        cells += [f"{fmt_number(r.get('brier'))} {fmt_interval(r.get('brier_ci95'))}".strip(),
                  f"{fmt_number(r.get('ece'))} {fmt_interval(r.get('ece_ci95'))}".strip(), vs_best_text(r, i == 1)]
        ips = r.get("predict_images_per_second")
        cells += [_seconds(r.get("fit_seconds_mean")), f"{ips:.0f}" if ips else "–"]
        rows.append(cells)
    return header, rows


def vs_best_text(row: dict[str, Any], first: bool) -> str:
    """Leaderboard mark: ``best``, ``≈ best (p …)`` when not significantly worse, ``worse (p …)``."""
    if first:
        return "best"
    if "not_worse_than_best" not in row:
        return "–"
    p = f" (p {fmt_p(row.get('p_vs_best'))})" if row.get("p_vs_best") is not None else ""
    return ("≈ best" if row["not_worse_than_best"] else "worse") + p


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _diff(v: Any, ci: Any) -> str:
    return f"{fmt_signed(v)} {fmt_interval(ci)}".strip()


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
                     f"{mc.get('a_only', '–')} / {mc.get('b_only', '–')}", fmt_p(mc.get("p")), fmt_p(p.get("p_holm")),
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
        cells = [r["pipeline"], f"{fmt_number(cal.get('brier'))} {fmt_interval(ci.get('brier'))}".strip(),
                 f"{fmt_number(cal.get('ece'))} {fmt_interval(ci.get('ece'))}".strip()]
        if test:
            tc = (results["pipelines"][r["pipeline"]].get("test") or {}).get("calibration") or {}
            cells += [fmt_number(tc.get("brier")), fmt_number(tc.get("ece"))]
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
            rows.append([r["pipeline"], METRIC_LABELS[m], fmt_number(p["metrics"][m]), fmt_interval(p["ci95"].get(m)),
                         fmt_number(t["metrics"][m]), fmt_interval(t["ci95"].get(m)), fmt_signed(t["gap"].get(m))])
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
        cells = [name, shown, f"{fmt_number(b['metrics']['accuracy'])} {fmt_interval(b['ci95'].get('accuracy'))}".strip(),
                 f"{fmt_number(b['metrics']['balanced_accuracy'])} {fmt_interval(b['ci95'].get('balanced_accuracy'))}".strip()]
        if test:
            t = b.get("test")
            cells.append(f"{fmt_number(t['metrics']['accuracy'])} {fmt_interval(t['ci95'].get('accuracy'))}".strip() if t else "–")
        rows.append(cells)
    return header, rows


def shortcut_intro(results: dict[str, Any]) -> str:
    sc = results.get("shortcuts") or {}
    if sc.get("status") == "ok":
        return (f"Plain logistic regression (standardised) on what the acquisition leaks rather than the biology, "
                f"on the same folds{' and test set' if _has_test(results) else ''}; chance (majority class) "
                f"{fmt_number(sc.get('chance'))}. The study is flagged when a baseline comes within "
                f"{sc.get('margin', 0.05):g} accuracy of the best pipeline or reaches {sc.get('separable', 0.95):g}.")
    if sc.get("status") == "off":
        return "Shortcut baselines were turned off (evaluation.shortcuts = false or --no-shortcuts)."
    return f"Shortcut baselines {sc.get('status', 'not run')}: {sc.get('reason') or sc.get('error') or ''}"


def reported_rows(results: dict[str, Any]) -> list[list[str]]:
    rep = results["study"].get("reported") or {}
    return [[str(k), str(v)] for k, v in rep.items()]


def per_fold_rows(p: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per metric: pooled out-of-fold value, its 95% interval, fold mean ± sd and each fold's value."""
    header = ["metric", "pooled out-of-fold", "95% CI", "fold mean ± sd", *[f"fold {f['fold']}" for f in p["folds"]]]
    rows = []
    for m in METRICS:
        fs = p["fold_summary"][m]
        rows.append([METRIC_LABELS[m], fmt_number(p["metrics"][m]), fmt_interval(p["ci95"].get(m)),
                     f"{fmt_number(fs['mean'])} ± {fmt_number(fs['sd'])}", *[fmt_number(f[m]) for f in p["folds"]]])
    return header, rows


def per_class_rows(p: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Precision, recall, F1 (with 95% bootstrap intervals when computed) and support per class."""
    header = ["class", "precision", "recall", "F1", "support"]
    cis = p.get("per_class_ci95") or {}
    rows = [[c, *[f"{fmt_number(v[k])} {fmt_interval((cis.get(c) or {}).get(k))}".strip() for k in ("precision", "recall", "f1")],
             str(v["support"])] for c, v in p["per_class"].items()]
    return header, rows


def block_rows(p: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["block", "features in", "components kept (per fold)", "explained variance (mean)"]
    rows = []
    for b, r in (p.get("blocks") or {}).items():
        ev = [e for e in r.get("explained_variance", []) if e is not None]
        comps = r.get("n_components", [])
        rows.append([b, fmt_number(r.get("n_features_in")), ", ".join("–" if c is None else str(c) for c in comps),
                     fmt_number(float(np.mean(ev))) if ev else "no PCA"])
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
        rows.append([part["name"], ", ".join(fmt_number(q["weight"]) for q in parts),
                     fmt_number(float(np.mean([q["oof_accuracy"] for q in parts]))),
                     f"{sum(q['kept'] for q in parts)}/{len(parts)}"])
    return header, rows


def timing_rows(p: dict[str, Any]) -> list[list[str]]:
    t = p.get("timing", {})
    rows = [["materialize (decode, transforms, masks, prepare)", _seconds(t.get("materialize_seconds"))],
            ["fit per fold (mean)", _seconds(t.get("fit_seconds_mean"))],
            ["predict, all folds", _seconds(t.get("predict_seconds_total"))],
            ["predict images / second", fmt_number(t.get("predict_images_per_second"), 1)]]
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


def profile_line(results: dict[str, Any]) -> str | None:
    """Which study profile ran (``--profile``: its name, description, parameter changes and the GPUs
    seen), so that a profile's figures are never taken for the study's default ones; None without one."""
    p = results["settings"].get("profile")
    if not p:
        return None
    changes = [f"{what[:-1]} {name}: " + ", ".join(f"{k} = {v!r}" for k, v in params.items())
               for what in ("blocks", "pipelines") for name, params in (p.get(what) or {}).items()]
    text = f"profile {p['name']!r}" + (f" ({p['description']})" if p.get("description") else "")
    text += f"; changes {'; '.join(changes)}" if changes else "; changes nothing"
    if p.get("requires") == "gpu":
        text += (f"; GPUs seen: {', '.join(p.get('gpus') or []) or 'none'}"
                 + (" (run on the CPU with --allow-cpu)" if p.get("allow_cpu") and not p.get("gpus") else ""))
    return text + ". These are not the figures of the study as written (run without --profile for those)."


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
        f"{METRIC_LABELS[m]} {fmt_number(t['metrics'][m])} {fmt_interval(t['ci95'].get(m))} (gap {fmt_signed(t['gap'].get(m))})"
        for m in METRICS), ""]
    if t.get("n_failed"):
        out += [f"{t['n_failed']} test samples could not be prepared (counted as failures, not scored):", ""]
        out += [f"- `{r['id']}` {r['path']}: {r['error']}" for r in t.get("failed", [])[:20]] + [""]
    return out


# ---- diagnostics tables (shared by markdown and html) -----------------------------------------

def learning_rows(p: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per network and fold: epochs run, final and best losses, final accuracies."""
    header = ["network", "fold", "epochs", "train loss (last)", "val loss (best)", "train acc. (last)",
              "val acc. (last)", "note"]
    rows = []
    for slot, runs in (p.get("learning_curves") or {}).items():
        for r in runs:
            val = r.get("val_loss") or []
            rows.append([f"{slot} ({r.get('plugin', '')})", str(r["fold"]), str(r.get("epochs_run", len(r["loss"]))),
                         fmt_number(r["loss"][-1]), fmt_number(min(val)) if val else "–",
                         fmt_number((r.get("accuracy") or [None])[-1]), fmt_number((r.get("val_accuracy") or [None])[-1]),
                         "reused" if r.get("reused") else ""])
    return header, rows


def gallery_intro(p: dict[str, Any], shown: int) -> str:
    m = p.get("misclassified") or {}
    return (f"{m.get('n_wrong', 0)} of {m.get('n', 0)} out-of-fold predictions are wrong; the {shown} most "
            f"confident wrong ones are shown (thumbnail, true class, predicted class and its probability).")


def gallery_rows(p: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    return [{**g, "p_pred": fmt_number(g["p_pred"]), "p_true": fmt_number(g["p_true"])}
            for g in ((p.get("misclassified") or {}).get("samples") or [])[:limit]]


def raw_importance_rows(p: dict[str, Any], n: int = 20) -> tuple[list[str], list[list[str]]]:
    raw = p.get("raw_importance") or {}
    header = ["raw feature", "block", "drop in accuracy (mean)", "sd over folds"]
    return header, [[f["feature"], f["block"], fmt_number(f["importance"], 4), fmt_number(f.get("sd"), 4)]
                    for f in (raw.get("features") or [])[:n]]


def raw_importance_intro(p: dict[str, Any]) -> str:
    raw = p.get("raw_importance") or {}
    share = ", ".join(f"{b} {100 * v:.0f}%" for b, v in (raw.get("block_share") or {}).items())
    return (f"Each of the {raw.get('n_features', 0)} raw block features (before impute, scale and PCA) shuffled in "
            f"each test fold, the fold's fitted pipeline re-scored; mean drop in accuracy over folds"
            + (f". Share of the positive importance by block: {share}." if share else "."))


def saliency_intro(p: dict[str, Any]) -> str:
    s = p.get("saliency") or {}
    return (f"{s.get('method', 'Saliency')} of the network of {s.get('slot', '')} ({s.get('plugin', '')}) towards the "
            f"predicted class, on the most confident wrong (red) and correct (green) images of fold {s.get('fold')}, "
            f"shown on the network's own input image.")


# ---- rendering (Jinja2 templates in medfuse/templates) ----------------------------------------

_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:1.2em;
color:#222;line-height:1.4;overflow-wrap:anywhere}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #4C78A8;padding-bottom:.15em;margin-top:1.6em}
h3{margin-top:1.2em}.scroll{overflow-x:auto;max-width:100%;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right;overflow-wrap:normal}th{background:#eef2f7}
td:first-child,th:first-child,td.l{text-align:left}tr:nth-child(even) td{background:#fafafa}
.meta{color:#555;font-size:.9em}.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.figs img{max-width:100%;height:auto;border:1px solid #ddd}.err{color:#a00;white-space:pre-wrap;font-family:monospace;
font-size:.85em}code,pre{background:#f4f4f4;padding:.1em .3em}pre{padding:.6em;overflow:auto;font-size:.8em}
.best td{font-weight:600}.warn{background:#fdecea;border-left:4px solid #c0392b;padding:.4em .7em}
.toc{font-size:.85em}.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(104px,1fr));gap:.5em}
.gallery figure{margin:0;font-size:.72em;border:1px solid #ddd;padding:3px;border-top:3px solid #c0392b}
.gallery figure.ok{border-top-color:#2e8b57}.gallery img{width:100%;height:auto;display:block;image-rendering:auto}
.noimg{aspect-ratio:1;background:#eee;color:#888;display:flex;align-items:center;justify-content:center}
@media (max-width:600px){body{padding:.5em;font-size:15px}h1{font-size:1.3em}table{font-size:.8em}}
"""


def _md_table(t: tuple[list[str], list[list[str]]] | list, rows: list[list[str]] | None = None) -> str:
    header, rows = (t, rows) if rows is not None else t

    def esc(c: str) -> str:
        return str(c).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(out)


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(loader=PackageLoader("medfuse", "templates"), autoescape=select_autoescape(["html"]),
                       trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=StrictUndefined)


_ENV: Any = None


def _template(name: str):
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    return _ENV.get_template(name)


def _data_uri(fname: str, data: bytes) -> str:
    mime = "image/jpeg" if fname.endswith((".jpg", ".jpeg")) else "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _pipeline_context(name: str, p: dict[str, Any], figures: dict[str, bytes], html: bool,
                      gallery_limit: int) -> dict[str, Any]:
    """What the templates show of one pipeline that ran (tables as ``(header, rows)``)."""
    s = _slug(name)
    out: dict[str, Any] = {"name": name, "slug": s, "n_evaluated": p["n_evaluated"], "n_failed": p.get("n_failed"),
                           "folds": per_fold_rows(p), "per_class": per_class_rows(p),
                           "blocks": block_rows(p) if p.get("blocks") else None, "timing": (["step", "time"]
                                                                                             if html else ["timing", "value"],
                                                                                             timing_rows(p)),
                           "test_lines": test_lines(p), "holdout": None, "test": None, "test_failed": None,
                           "failed_rows": p.get("failed") or [], "diagnostics_errors": p.get("diagnostics_errors"),
                           "warnings": p.get("warnings") or []}
    out["failed"] = (["id", "path", "error"], [[r["id"], r["path"], r["error"]] for r in p.get("failed") or []]) \
        if p.get("n_failed") else None
    out["spec"] = json.dumps(to_jsonable(p["spec"]), indent=1) if p.get("spec") else None
    out["reliability"] = reliability_rows(p) if p.get("reliability") else None
    if p.get("holdout"):
        h = p["holdout"]
        out["holdout"] = {"n": h["n"], "table": (["metric", "value", "95% CI"], [
            [METRIC_LABELS[m], fmt_number(h["metrics"][m]), fmt_interval(h["ci95"].get(m))] for m in METRICS]),
            "line": f"Held-out ({h['n']} samples): " + ", ".join(
                f"{METRIC_LABELS[m]} {fmt_number(h['metrics'][m])} {fmt_interval(h['ci95'].get(m))}" for m in METRICS)}
    t = p.get("test")
    if t and "metrics" in t:
        out["test"] = {"n": t["n"], "table": (["metric", "CV", "test", "test 95% CI", "gap"], [
            [METRIC_LABELS[m], fmt_number(p["metrics"][m]), fmt_number(t["metrics"][m]), fmt_interval(t["ci95"].get(m)),
             fmt_signed(t["gap"].get(m))] for m in METRICS])}
    if t and (t.get("n_failed") or "metrics" not in t):
        out["test_failed"] = {"n": t.get("n_failed", 0), "table": (["id", "path", "error"], [
            [r["id"], r["path"], r["error"]] for r in t.get("failed", [])])}
    top = p.get("top_features")
    out["top"] = None
    if top:
        cols = _value_cols(top)
        out["top"] = {"method": _method(top) or "importance", "folds": p.get("top_features_folds", 1),
                      "table": (["feature", *cols], [[r["feature"], *[fmt_number(r[c], 4) for c in cols]] for r in top[:20]])}
    out["top_error"] = p.get("top_features_error")
    out["raw"] = None
    if (p.get("raw_importance") or {}).get("features"):
        raw = p["raw_importance"]
        out["raw"] = {"method": raw["method"], "folds": raw["folds"], "intro": raw_importance_intro(p),
                      "table": raw_importance_rows(p)}
    curves = p.get("learning_curves") or {}
    out["learning"] = [(f"{s}-learning-{_slug(slot)}.png", f"{name} {slot} learning curves") for slot in curves
                       if f"{s}-learning-{_slug(slot)}.png" in figures]
    out["learning_table"] = learning_rows(p)
    out["learning_reused"] = any(r.get("reused") for runs in curves.values() for r in runs)
    mis = p.get("misclassified")
    out["gallery"] = None
    if mis is not None:
        rows = gallery_rows(p, gallery_limit)
        for i, g in enumerate(rows):
            f = f"gallery/{s}-wrong-{i}.jpg"
            g["src"] = (_data_uri(f, figures[f]) if html else f"figures/{f}") if f in figures else ""
        out["gallery"] = rows
        out["gallery_intro"] = gallery_intro(p, len(rows))
        out["gallery_table"] = (["image", "id", "true", "predicted", "p(predicted)", "p(true)", "fold"], [
            [f"![{g['id']}]({g['src']})" if g["src"] else "", g["id"], g["label"], g["pred"], g["p_pred"], g["p_true"],
             str(g["fold"])] for g in rows])
    sal = p.get("saliency")
    out["saliency"] = None
    if sal and sal.get("samples"):
        items = []
        for i, g in enumerate(sal["samples"]):
            f = f"gallery/{s}-saliency-{i}.jpg"
            if f in figures:
                items.append({**g, "p_pred": fmt_number(g["p_pred"]), "src": _data_uri(f, figures[f]) if html
                              else f"figures/{f}"})
        if items:
            out["saliency"] = {"title": f"{sal.get('method', 'Saliency')} on correct and wrong images",
                               "intro": saliency_intro(p), "cards": items,
                               "table": (["overlay", "id", "true", "predicted", "p", "correct"], [
                                   [f"![{g['id']}]({g['src']})", g["id"], g["label"], g["pred"], g["p_pred"],
                                    "yes" if g["correct"] else "no"] for g in items])}
    return out


def report_context(results: dict[str, Any], figures: dict[str, bytes], html: bool = True,
                   gallery_limit: int = 24) -> dict[str, Any]:
    """Everything the report templates show, computed once (tables as ``(header, rows)``, text as str)."""
    st = results["study"]
    rep = results["data"].get("report")
    data_report = None
    if rep:
        data_report = json.dumps(to_jsonable({k: v for k, v in rep.items() if k != "summary_lines"}), indent=1)[:200_000]
    paired_test = (results.get("paired") or {}).get("test")
    return {
        "study": st, "created": str(results.get("created", "")), "settings": results["settings"],
        "cv": cv_text(results["settings"]), "warnings": warning_lines(results), "board_note": BOARD_NOTE,
        "profile": profile_line(results),
        "leaderboard": leaderboard_rows(results), "paired": paired_rows(results), "paired_intro": paired_intro(results),
        "paired_test": paired_rows(results, "test") if paired_test else None,
        "paired_test_intro": paired_intro(results, "test") if paired_test else "",
        "calibration_definition": CALIBRATION_DEFINITION, "calibration": calibration_rows(results),
        "test_table": test_rows(results) if _has_test(results) else None,
        "shortcut_intro": shortcut_intro(results),
        "shortcuts": shortcut_rows(results) if (results.get("shortcuts") or {}).get("status") == "ok" else None,
        "reported": (["key", "value"], reported_rows(results)),
        "failed": [{"name": n, "error": p.get("error", ""), "traceback": p.get("traceback", "")}
                   for n, p in results["pipelines"].items() if p["status"] != "ok"],
        "data_lines": data_lines(results), "duplicate_groups": results["data"].get("duplicate_groups") or [],
        "data_report": data_report,
        "pipelines": [_pipeline_context(n, p, figures, html, gallery_limit)
                      for n, p in results["pipelines"].items() if p["status"] == "ok"],
        "settings_json": json.dumps(to_jsonable(results["settings"]), indent=1),
        "versions": (["package", "version"], [[k, v] for k, v in results["versions"].items()]),
        "report_warnings": results.get("report_warnings") or [],
    }


def render_markdown(results: dict[str, Any], figures: dict[str, bytes], gallery_limit: int = 24) -> str:
    """``report.md`` from ``templates/report.md.j2`` (figures linked from ``figures/``)."""
    ctx = report_context(results, figures, html=False, gallery_limit=gallery_limit)
    return _template("report.md.j2").render(**ctx, md_table=_md_table, has=figures.__contains__)


def render_html(results: dict[str, Any], figures: dict[str, bytes], gallery_limit: int = 24) -> str:
    """``report.html`` from ``templates/report.html.j2``: one self-contained page (figures inline)."""
    from markupsafe import Markup, escape

    def img(fname: str, alt: str) -> Markup:
        data = figures.get(fname)
        return Markup(f'<img src="{_data_uri(fname, data)}" alt="{escape(alt)}">') if data else Markup("")

    ctx = report_context(results, figures, html=True, gallery_limit=gallery_limit)
    return _template("report.html.j2").render(**ctx, css=Markup(_CSS), img=img)


# ---- the folder -------------------------------------------------------------------------------

MAX_HTML_BYTES = 5_000_000
"""report.html stays under this size: the gallery shrinks (smaller, fewer thumbnails) until it does."""
GALLERY_STEPS = ((96, 24), (72, 16), (56, 8), (40, 4), (0, 0))
"""(thumbnail side in pixels, thumbnails per pipeline) tried in turn by :func:`write_report`."""


def fit_html(results: dict[str, Any], figures: dict[str, bytes],
             max_bytes: int = MAX_HTML_BYTES) -> tuple[str, dict[str, bytes], int]:
    """Render report.html with the largest gallery (:data:`GALLERY_STEPS`) that keeps it under
    ``max_bytes``; returns the page, the gallery images used and the per-pipeline limit. When even
    no gallery is too large, a report warning says so."""
    def warn(text: str) -> None:  # once, also when the report is rebuilt from its results.json
        notes = results.setdefault("report_warnings", [])
        if text not in notes:
            notes.append(text)

    page, gallery, limit = "", {}, 0
    for side, limit in GALLERY_STEPS:
        gallery = gallery_images(results, _slug, side, limit)
        page = render_html(results, {**figures, **gallery}, gallery_limit=limit)
        if len(page.encode()) <= max_bytes - 1000:  # room for the note below
            if limit < GALLERY_STEPS[0][1]:
                warn(f"gallery reduced to {limit} thumbnails of {side} px per pipeline to keep report.html under "
                     f"{max_bytes / 1e6:g} MB")
                page = render_html(results, {**figures, **gallery}, gallery_limit=limit)
            return page, gallery, limit
    warn(f"report.html is {len(page.encode()) / 1e6:.1f} MB without any gallery (cap {max_bytes / 1e6:g} MB)")
    return render_html(results, figures, gallery_limit=0), {}, 0


def write_report(result: StudyResult | dict[str, Any], out_dir: str | Path,
                 max_html_bytes: int = MAX_HTML_BYTES) -> dict[str, Path]:
    """Write the report folder, each file atomically; return the main files by role (``json``,
    ``md``, ``html``). Gallery pictures go to ``figures/gallery/``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(result, StudyResult):
        results, predictions = result.results, result.predictions
    else:
        results, predictions = result, {}
    results = to_jsonable(results)
    figures = make_figures(results)
    page, gallery, limit = fit_html(results, figures, max_html_bytes)
    for fname, data in {**figures, **gallery}.items():
        (out / "figures" / fname).parent.mkdir(parents=True, exist_ok=True)
        write_bytes(out / "figures" / fname, data)
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
    write_text(paths["md"], render_markdown(results, {**figures, **gallery}, gallery_limit=limit))
    write_text(paths["html"], page)
    return paths
