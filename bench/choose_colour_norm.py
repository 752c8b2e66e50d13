"""Colour normalisation for all-subtypes-blocked, chosen on inner blocked folds (nested).

Usage (one command, seed fixed; 44 min on 2 shared cores at load 8, features cached in ``--cache``)::

    PYTHONPATH=$PWD/core:$PWD/plugins nice -n 5 python bench/choose_colour_norm.py \\
        --data /work/shared/datasets --cache runs/studies-colournorm/cache

The study's own selection and outer folds (``select_samples``, ``make_splits``: 5 stratified
folds grouped by blocks of 40 file numbers, seed 0) are rebuilt as ``compare`` builds them. For
every outer fold, its *training* rows are split again into ``--inner`` stratified folds grouped by
the same blocks (seed 0). Each candidate (the ``classical`` pipeline with one colour transform
in front, or none) is fitted on each inner training part and scored on the inner held-out
blocks; its inner accuracy for that outer fold is pooled over the inner folds. Per outer fold the
best candidate (ties: the earlier one in ``CANDIDATES``, ``none`` first) is fitted on the whole
outer training part and scored on the outer test fold: that nested figure never served a choice.
A candidate goes into the registry only if every outer fold chose it (otherwise the choice would
rest on rows that are some fold's test rows). The plain outer figure of ``none`` is printed for
reference.

``--plain`` (a diagnostic, run after the choice and never used for it): each candidate fitted on
every outer training part and scored on its outer test fold, with its errors in the blocks that
the study's diagnosis named (the first 40 files of Pre and of Pro).
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
PIPELINE = "classical"
# name -> transforms put in front of the classical pipeline's; fixed before any evaluation
CANDIDATES: dict[str, list[dict]] = {
    "none": [],
    "reinhard": [{"plugin": "stain_normalize", "params": {"method": "reinhard"}}],
    "macenko": [{"plugin": "stain_normalize", "params": {"method": "macenko"}}],
    "greyworld": [{"plugin": "colour_normalize", "params": {"method": "greyworld"}}],
    "white_patch": [{"plugin": "colour_normalize", "params": {"method": "white_patch"}}],
}


def _variant(study, transforms: list[dict]):
    """The study with ``transforms`` put in front of the classical pipeline's own."""
    from medfuse.study import PluginRef

    out = copy.deepcopy(study)
    spec = out.pipelines[PIPELINE]
    spec.transforms = [PluginRef(t["plugin"], dict(t.get("params", {}))) for t in transforms] + spec.transforms
    return out


def _accuracy(runner, prepared, train: np.ndarray, test: np.ndarray, seed: int) -> tuple[int, int]:
    fitted = runner.fit(prepared, train, seed)
    pred = np.asarray(fitted.predict(prepared, test)).astype(str)
    return int((pred == np.asarray(prepared.y).astype(str)[test]).sum()), len(test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("MEDFUSE_DATA", "/work/shared/datasets"))
    ap.add_argument("--cache", type=Path, required=True, help="block cache folder (reused by a later study run)")
    ap.add_argument("--inner", type=int, default=3, help="inner blocked folds per outer training part")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--candidates", help=f"comma-separated, among {', '.join(CANDIDATES)} (default: all)")
    ap.add_argument("--plain", action="store_true",
                    help="diagnostic only: every candidate on the outer folds (no choice is made from it)")
    args = ap.parse_args()
    names = args.candidates.split(",") if args.candidates else list(CANDIDATES)
    if unknown := [n for n in names if n not in CANDIDATES]:
        sys.exit(f"--candidates: unknown {unknown}; known: {', '.join(CANDIDATES)}")

    from medfuse.splits import make_splits
    from study_folds import candidate_runners, outer_folds  # bench/study_folds.py (this folder is on sys.path)

    t_all = time.perf_counter()
    study, host, kept, outer = outer_folds(STUDY, args.data, args.jobs)
    ev, seed = study.evaluation, study.evaluation.seed
    print(f"{STUDY}: {len(kept)} samples, {outer.method} {ev.folds} folds (seed {seed}); inner: "
          f"{args.inner} blocked folds of each outer training part; pipeline {PIPELINE!r}", flush=True)

    if args.plain:
        _plain(study, names, host, args, kept, outer)
        return
    inner_acc: dict[str, list[float]] = {n: [] for n in names}
    runners, prepared, folds = candidate_runners({n: _variant(study, CANDIDATES[n]) for n in names}, PIPELINE,
                                                 kept, outer, host, args.cache, args.jobs)
    for name in names:
        t, prep = time.perf_counter(), prepared[name]
        for k, (train, _test) in enumerate(folds):
            sub = prep.samples.iloc[train]
            inner = make_splits(sub, args.inner, seed)
            right = total = 0
            for tr, va in inner.folds():
                r, n = _accuracy(runners[name], prep, train[tr], train[va], seed)
                right, total = right + r, total + n
            inner_acc[name].append(right / total)
            print(f"  {name}, outer fold {k + 1}: inner accuracy {right / total:.4f} ({total - right} errors of {total}; "
                  f"{time.perf_counter() - t:.0f} s so far)", flush=True)

    print("\ninner blocked-fold accuracy (pooled over the inner folds) per outer training part:")
    print("| candidate | " + " | ".join(f"outer {k + 1}" for k in range(len(folds))) + " | mean |")
    print("|---|" + "---|" * (len(folds) + 1))
    for n in names:
        a = inner_acc[n]
        print(f"| {n} | " + " | ".join(f"{v:.4f}" for v in a) + f" | {np.mean(a):.4f} |")
    chosen = [max(names, key=lambda n, k=k: (inner_acc[n][k], -names.index(n))) for k in range(len(folds))]
    print("chosen per outer fold: " + ", ".join(chosen), flush=True)

    ys = np.asarray(prepared[names[0]].y).astype(str)
    nested, base = [], []
    for k, (train, test) in enumerate(folds):
        r, n = _accuracy(runners[chosen[k]], prepared[chosen[k]], train, test, seed)
        nested.append((r, n))
        if chosen[k] == "none":
            base.append((r, n))
        elif "none" in runners:
            base.append(_accuracy(runners["none"], prepared["none"], train, test, seed))
        print(f"outer fold {k + 1}: {chosen[k]} {r / n:.4f}"
              + (f"; none {base[-1][0] / base[-1][1]:.4f}" if base else ""), flush=True)
    acc = sum(r for r, _ in nested) / len(ys)
    print(f"\nnested outer accuracy of {PIPELINE} (each fold's choice made on its inner folds): {acc:.4f} "
          f"(folds {' '.join(f'{r / n:.4f}' for r, n in nested)})")
    if len(base) == len(folds):
        print(f"outer accuracy of {PIPELINE} without colour normalisation: "
              f"{sum(r for r, _ in base) / len(ys):.4f} (folds {' '.join(f'{r / n:.4f}' for r, n in base)})")
    verdict = chosen[0] if len(set(chosen)) == 1 else None
    if verdict and verdict != "none":
        print(f"verdict: every outer fold chose {verdict!r}: add {CANDIDATES[verdict]} to the study")
    elif verdict == "none":
        print("verdict: every outer fold chose no colour normalisation: leave the study unchanged")
    else:
        print("verdict: the outer folds chose differently: no single candidate is adopted; only the nested "
              "figure above is honest")
    print(f"total {(time.perf_counter() - t_all) / 60:.1f} min")


WATCHED = ("Pre#0", "Pro#0")  # the blocks the study's diagnosis named (bench/diagnose_errors.py --block 40)


def _plain(study, names: list[str], host, args: argparse.Namespace, kept, outer) -> None:
    """Diagnostic: each candidate's outer-fold accuracy and its errors in the :data:`WATCHED` blocks."""
    from medfuse.evaluation import default_runner_factory
    from medfuse.splits import rows_by_fold

    print("DIAGNOSTIC ONLY (outer folds; not used for any choice):")
    print("| candidate | " + " | ".join(f"fold {k + 1}" for k in range(outer.n_run)) + " | all | errors "
          + " | errors ".join(WATCHED) + " |")
    print("|---|" + "---|" * (outer.n_run + 1 + len(WATCHED)))
    for name in names:
        runner = default_runner_factory(host=host, cache_dir=args.cache, jobs=args.jobs)(
            _variant(study, CANDIDATES[name]), PIPELINE)
        prep = runner.materialize(kept)
        ids = prep.samples["id"].astype(str).to_numpy()
        y = np.asarray(prep.y).astype(str)
        block = prep.samples["group"].astype(str).to_numpy()  # the study's blocks: <class folder>#<number // 40>
        wrong = np.zeros(len(ids), bool)
        accs = []
        for train, test in rows_by_fold(outer, ids)[0]:
            pred = np.asarray(runner.fit(prep, train, study.evaluation.seed).predict(prep, test)).astype(str)
            wrong[test] = pred != y[test]
            accs.append(1 - wrong[test].mean())
        watched = [f"{wrong[block == b].sum()}/{(block == b).sum()}" for b in WATCHED]
        print(f"| {name} | " + " | ".join(f"{a:.4f}" for a in accs) + f" | {1 - wrong.mean():.4f} | "
              + " | ".join(watched) + " |", flush=True)


if __name__ == "__main__":
    main()
