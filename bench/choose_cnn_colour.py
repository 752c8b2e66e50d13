"""CNN colour augmentation for all-subtypes-blocked, chosen on inner blocked folds (nested).

Usage (one command, seed fixed; 33 min on 2 shared cores; add ``--candidates none,brightness`` for the
second round, 22 min; figures and reading in bench/results/cnn-colour-all-subtypes-blocked.md)::

    PYTHONPATH=$PWD/core:$PWD/plugins nice -n 5 python bench/choose_cnn_colour.py \\
        --data /work/shared/datasets --cache runs/studies-cnncolour/cache

The study's own selection and outer folds (``select_samples``, ``make_splits``: 5 stratified
folds grouped by blocks of 40 file numbers, seed 0) are rebuilt as ``compare`` builds them, as in
``bench/choose_colour_norm.py``. Each outer fold's *training* rows are split again into
``--inner`` (4) stratified folds grouped by the same blocks (seed 0); to fit the CPU budget (one
CNN training on ~1,400 images at 64 px takes several minutes on 2 shared cores) only the first of
them is used (``--inner-used 1``): each candidate is trained on the other three quarters and
scored on that quarter's held-out blocks. The evaluated pipeline is the study's ``deep``
(``cnn_classifier`` on the ``cnn`` block's recipe, TTA on), with the candidate's ``colour`` set.

Candidates, fixed before any evaluation: ``none`` (colour 0, the study as it is) and ``colour``
0.1 (each channel's gain U(0.9, 1.1) per training image). The value is the usual "light" colour
augmentation of stain-augmentation practice (Tellez et al. 2019, Med. Image Anal. 58: HED-light
jitters each stain channel by about +-5%, HED-strong by +-20%; RGB/HSV-light in the same range) and
the +-10% this project's CNN uses for its other intensity augmentations (zoom, brightness
defaults); it was not tuned on any image of this study.

Second round (``--candidates none,brightness``), added after the first round had shown colour 0.1
losing on the inner splits of 4 of 5 outer folds: ``brightness`` 0.1 (the plugin's default, Keras'
``RandomBrightness`` factor: one additive shift per image, the same on all three channels, so the
hue that separates the subtypes is kept while the lightness varies, as between Pre's first block and
the rest of its class; the all-subtypes recipe had turned it off on a per-image split). It is
judged by the same rule on the same inner splits; its out-of-order addition is said with its figures.

Rule (as ``choose_colour_norm``): per outer fold the candidate with the higher inner accuracy
(ties: the first, ``none``); a candidate goes into the registry only if every outer fold chose it. The outer
test folds are never read here.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STUDY = "all-subtypes-blocked"
PIPELINE = "deep"
BLOCK = "cnn"
# name -> CNN recipe options (set on the cnn block); "none" and "colour" fixed before any evaluation (see the
# docstring); "brightness" added after that first round (second round, see the docstring)
CANDIDATES: dict[str, dict[str, float]] = {"none": {}, "colour": {"colour": 0.1}, "brightness": {"brightness": 0.1}}
FIRST_ROUND = "none,colour"
OUT = Path("runs") / "choose-cnn-colour"  # one table per candidate list; the hand-written reading is in
# bench/results/cnn-colour-all-subtypes-blocked.md


def variant(study, options: dict[str, float]):
    """The study with ``options`` set on the ``cnn`` block (and the ``deep`` classifier, resolved from it)."""
    out = copy.deepcopy(study)
    out.blocks[BLOCK].params.update(options)
    ref = out.pipelines[PIPELINE].classifier
    if ref is None or ref.network != BLOCK:
        sys.exit(f"{STUDY}: pipeline {PIPELINE!r} no longer trains the {BLOCK!r} block's network")
    ref.params.update(options)
    return out


def choose(acc: dict[str, list[float]], names: list[str]) -> list[str]:
    """Per outer fold the candidate with the best inner accuracy; ties go to the earlier (``none``)."""
    n = len(acc[names[0]])
    return [max(names, key=lambda c, k=k: (acc[c][k], -names.index(c))) for k in range(n)]


def table(acc: dict[str, list[float]], errors: dict[str, list[str]], minutes: dict[str, list[float]],
          chosen: list[str]) -> str:
    """Markdown: inner accuracy (errors) per outer fold per candidate, training minutes, the choice."""
    n = len(chosen)
    head = "| candidate | " + " | ".join(f"outer {k + 1}" for k in range(n)) + " | mean | minutes per training |"
    lines = [head, "|---|" + "---|" * (n + 2)]
    for c, a in acc.items():
        cells = " | ".join(f"{v:.4f} ({e})" for v, e in zip(a, errors[c]))
        lines.append(f"| {c} ({_options(c)}) | {cells} | {np.mean(a):.4f} | "
                     + " ".join(f"{m:.1f}" for m in minutes[c]) + " |")
    lines.append("| chosen | " + " | ".join(chosen) + " | | |")
    return "\n".join(lines)


def _options(name: str) -> str:
    return ", ".join(f"{k} {v}" for k, v in CANDIDATES[name].items()) or "the study's recipe"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("MEDFUSE_DATA", "/work/shared/datasets"))
    ap.add_argument("--cache", type=Path, required=True, help="block cache folder")
    ap.add_argument("--inner", type=int, default=4, help="inner blocked folds per outer training part")
    ap.add_argument("--inner-used", type=int, default=1, help="how many of them are evaluated (the first ones)")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--outer-folds", help="comma-separated outer folds (1-based) to run (default: all; a "
                                          "partial run makes no choice)")
    ap.add_argument("--candidates", default=FIRST_ROUND,
                    help=f"comma-separated, the first one the reference (among {', '.join(CANDIDATES)}; "
                         f"default: {FIRST_ROUND}, the first round)")
    ap.add_argument("--out", type=Path, help=f"markdown table written here (default: {OUT}/CANDIDATES.md)")
    args = ap.parse_args()
    names = args.candidates.split(",")
    if unknown := [n for n in names if n not in CANDIDATES]:
        sys.exit(f"--candidates: unknown {unknown}; known: {', '.join(CANDIDATES)}")

    from medfuse.splits import make_splits
    from study_folds import candidate_runners, outer_folds  # bench/study_folds.py (this folder is on sys.path)

    t_all = time.perf_counter()
    study, host, kept, outer = outer_folds(STUDY, args.data, args.jobs)
    ev, seed = study.evaluation, study.evaluation.seed
    run = [int(k) - 1 for k in args.outer_folds.split(",")] if args.outer_folds else list(range(outer.n_run))
    print(f"{STUDY}: {len(kept)} samples, {outer.method} {ev.folds} folds (seed {seed}); inner: first "
          f"{args.inner_used} of {args.inner} blocked folds of each outer training part; pipeline {PIPELINE!r}; "
          f"candidates {({n: CANDIDATES[n] for n in names})}", flush=True)

    runners, prepared, folds = candidate_runners({n: variant(study, CANDIDATES[n]) for n in names}, PIPELINE, kept,
                                                 outer, host, args.cache, args.jobs)

    y = np.asarray(prepared[names[0]].y).astype(str)
    acc = {c: [] for c in names}
    errors = {c: [] for c in names}
    minutes = {c: [] for c in names}
    for k in run:
        train, _test = folds[k]  # the outer test rows are never used here
        inner = make_splits(prepared[names[0]].samples.iloc[train], args.inner, seed).folds()[:args.inner_used]
        for name in names:
            t = time.perf_counter()
            right = total = 0
            for tr, va in inner:
                fitted = runners[name].fit(prepared[name], train[tr], seed)
                pred = np.asarray(fitted.predict(prepared[name], train[va])).astype(str)
                right, total = right + int((pred == y[train[va]]).sum()), total + len(va)
            acc[name].append(right / total)
            errors[name].append(f"{total - right}/{total}")
            minutes[name].append((time.perf_counter() - t) / 60 / len(inner))
            print(f"outer fold {k + 1}, {name}: inner accuracy {right / total:.4f} ({total - right} errors of "
                  f"{total}; {minutes[name][-1]:.1f} min per training; {(time.perf_counter() - t_all) / 60:.0f} "
                  f"min so far)", flush=True)

    chosen = choose(acc, names)
    md = table(acc, errors, minutes, chosen)
    print("\n" + md)
    if len(run) < outer.n_run:
        verdict = f"partial run (outer folds {', '.join(str(k + 1) for k in run)}): no choice is made"
    elif len(set(chosen)) == 1 and chosen[0] != "none":
        verdict = f"every outer fold chose {chosen[0]!r}: set {_options(chosen[0])} in the study"
    elif set(chosen) == {names[0]}:
        verdict = f"every outer fold chose {names[0]}: leave the study unchanged"
    else:
        verdict = "the outer folds chose differently: not adopted"
    total = (time.perf_counter() - t_all) / 60
    print(f"verdict: {verdict}\ntotal {total:.1f} min", flush=True)
    out = args.out or OUT / f"{'-'.join(names)}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"#### CNN colour augmentation for {STUDY} (issue #18), chosen on inner blocked folds\n\n"
        f"`{' '.join(['python', 'bench/choose_cnn_colour.py', *sys.argv[1:]])}` ({total:.0f} min on 2 shared CPU "
        f"cores). Pipeline `{PIPELINE}`; per outer training part the first of {args.inner} inner folds grouped "
        f"by the study's blocks (seed {seed}); inner accuracy (errors/images) of each candidate:\n\n{md}\n\n"
        f"Verdict: {verdict}.\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
