"""Ablation of CNN recipe options, chosen on a validation split the reported figures never use.

Protocol (issue #18: selection never sees the reported folds or the external test set):

1. The study's data are loaded exactly as ``medfuse compare`` loads them (its loader, its external
   test set split off and never read again, duplicates removed), and its own CV splits are made
   (``evaluation.folds`` and ``seed``).
2. Only the **training part of fold 1** is used here. RESULTS.md reports fold 1 of 5 for the CNN
   studies, so the images it scores played no part in any choice made with this script.
3. That training part is split once, with a fixed seed, into a development part (networks are
   trained on it) and a validation part (recipes are scored on it): stratified, and grouped
   (StratifiedGroupKFold, 1 of ``--val-folds``) when the loader gives groups (patients, slides,
   ``group_block``); PBC and PneumoniaMNIST have none, so there it is a stratified image split.
4. ``--dev-per-class`` / ``--val-per-class`` subsample both parts (seeded) to fit the CPU budget;
   the table says so.

Steps are greedy and cumulative: the first row is the study pipeline's CNN as the registry sets it;
each next row adds one option to the best recipe so far, and the option is kept when validation
accuracy rises by more than ``--keep-threshold`` (else the next row starts from the recipe without
it). Every row reports validation accuracy and macro-F1 (with the study's ``tta`` setting), training
minutes on this machine, and the gain against the recipe it was added to.

Usage (data from ``--data``, $MEDFUSE_DATA or ../shared/datasets)::

    TF_CPP_MIN_LOG_LEVEL=2 nice -n 5 python bench/ablate_cnn.py pbc-cells --dev-per-class 150 \\
        --val-per-class 100 --epochs 15
    TF_CPP_MIN_LOG_LEVEL=2 nice -n 5 python bench/ablate_cnn.py cxr-pneumonia --steps resnet,warmup,intensity
    python bench/ablate_cnn.py --list-steps

The markdown table goes to ``bench/results/ablation-<study>.md`` (``--out``), a JSON twin beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# name -> (what it adds, parameters merged into the recipe)
STEPS: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet": ("residual architecture with batch normalisation", {"arch": "resnet"}),
    "warmup": ("1 epoch of linear learning-rate warm-up before the cosine decay", {"warmup_epochs": 1.0}),
    "smoothing": ("label smoothing 0.1", {"label_smoothing": 0.1}),
    "mixup": ("mixup, Beta(0.2, 0.2)", {"mixup": 0.2}),
    "cutmix": ("cutmix, Beta(1, 1)", {"cutmix": 1.0}),
    "ema": ("exponential moving average of the weights, momentum 0.99 per step", {"ema": 0.99}),
    "intensity": ("contrast 0.3 + gamma 0.3 + brightness 0.2 augmentation (scanner shift)",
                  {"contrast": 0.3, "gamma": 0.3, "brightness": 0.2}),
    "unweighted": ("no class weights (the default weighs classes by inverse frequency)", {"class_weight": None}),
    "size96": ("input 96 px instead of the study's size", {"size": 96}),
    "seeds2": ("2 seeds, softmax averaged", {"n_seeds": 2}),
    "epochs25": ("25 epochs (longer cosine schedule)", {"epochs": 25}),
    # for a lent GPU (with --profile gpu, or on the CPU budget's recipe when time allows)
    "size128": ("input 128 px instead of the study's size", {"size": 128}),
    "epochs40": ("40 epochs (longer cosine schedule)", {"epochs": 40}),
}
# the metric a step must raise to be kept: macro-F1 where one class dominates the validation part
KEEP_METRIC = {"cxr-pneumonia": "macro_f1"}
DEFAULT_STEPS = {
    "pbc-cells": ["resnet", "warmup", "smoothing", "mixup", "ema", "size96"],
    "cxr-pneumonia": ["resnet", "warmup", "smoothing", "mixup", "ema", "intensity", "seeds2"],
}


def selection_split(study_name: str, root: Path, val_folds: int, dev_per_class: int, val_per_class: int
                    ) -> tuple[Any, Any, np.ndarray, np.ndarray, dict[str, Any]]:
    """``(study, samples, dev_rows, val_rows, info)``: the development/validation split inside the
    training part of the study's CV fold 1 (module docstring), rows of ``samples``."""
    from medfuse.host import get_host
    from medfuse.splits import make_splits, select_samples
    from medfuse.study import resolve_study
    from medfuse.testset import split_test
    from sklearn.model_selection import StratifiedGroupKFold

    study = resolve_study(study_name)
    host = get_host()
    loader = host.create(study.dataset.loader, study.dataset.params, kind="loader")
    data = loader.load(root)
    if study.test is not None and study.test.loader is not None:
        raise SystemExit(f"{study_name}: a test set with its own loader is not read here (nothing to split off)")
    dev_data, _, _ = split_test(study, data, None)  # the external test set is dropped here, never read
    kept = select_samples(dev_data, dedupe=study.evaluation.dedupe, max_per_class=0, seed=study.evaluation.seed).data
    samples = kept.samples.reset_index(drop=True)
    splits = make_splits(samples.drop(columns=["split"], errors="ignore"), study.evaluation.folds,
                         study.evaluation.seed, 0.0, 1)
    train, test = splits.folds()[0]
    y = samples["label"].astype(str).to_numpy()
    groups = samples["group"].astype(str).to_numpy()
    grouped = len(np.unique(groups[train])) < len(train)
    splitter = StratifiedGroupKFold(val_folds, shuffle=True, random_state=study.evaluation.seed)
    d, v = next(splitter.split(np.zeros(len(train)), y[train], groups[train]))
    dev, val = train[d], train[v]
    rng = np.random.default_rng(study.evaluation.seed)

    def cap(rows: np.ndarray, n: int) -> np.ndarray:
        if n <= 0:
            return rows
        return np.sort(np.concatenate([rng.permutation(rows[y[rows] == c])[:n] for c in np.unique(y[rows])]))

    dev, val = cap(dev, dev_per_class), cap(val, val_per_class)
    assert not set(dev) & set(test) and not set(val) & set(test)
    info = {"n_study": len(samples), "fold1_train": len(train), "fold1_test_never_used": len(test),
            "grouped": bool(grouped), "split": f"StratifiedGroupKFold 1 of {val_folds} of fold 1's training part"
            + (" (grouped)" if grouped else " (no groups: one group per image)"),
            "dev_per_class": dev_per_class or "all", "val_per_class": val_per_class or "all",
            "n_dev": len(dev), "n_val": len(val),
            "external_test": study.test.describe() if study.test is not None else None}
    return study, samples, dev, val, info


def cnn_spec(study: Any, pipeline: str) -> tuple[list[Any], dict[str, Any]]:
    """The pipeline's transforms and its ``cnn_classifier`` parameters."""
    spec = study.pipelines.get(pipeline)
    if spec is None or spec.classifier is None or spec.classifier.plugin != "cnn_classifier":
        raise SystemExit(f"{study.name}: pipeline {pipeline!r} is not a cnn_classifier pipeline")
    return spec.transforms, dict(spec.classifier.params)


def load_images(samples: Any, rows: np.ndarray, transforms: list[Any], size: int) -> list[np.ndarray]:
    """Decoded images of ``rows``, with the pipeline's transforms applied (not yet resized)."""
    from medfuse.host import get_host
    from medfuse.imageio import read_image

    host = get_host()
    made = [host.create(t.plugin, t.params, kind="transform") for t in transforms]
    out = []
    for path in samples["path"].to_numpy()[rows]:
        image = read_image(path, min_side=size)
        for t in made:
            image = t.apply(image)
            image = image[0] if isinstance(image, tuple) else image
        out.append(np.asarray(image))
    return out


def evaluate(params: dict[str, Any], images: dict[str, list[np.ndarray]], y: dict[str, np.ndarray]
             ) -> dict[str, Any]:
    """Train ``cnn_classifier(**params)`` on the development images, score the validation images."""
    from medfuse_plugins.cnn import CNNClassifier
    from sklearn.metrics import accuracy_score, f1_score

    clf = CNNClassifier(**params)
    Pd = np.stack([clf.prepare(im) for im in images["dev"]])
    Pv = np.stack([clf.prepare(im) for im in images["val"]])
    t0, c0 = time.perf_counter(), time.process_time()
    clf.fit(Pd, y["dev"])
    minutes, cpu_minutes = (time.perf_counter() - t0) / 60, (time.process_time() - c0) / 60
    pred = clf.predict(Pv)
    return {"accuracy": float(accuracy_score(y["val"], pred)), "correct": (pred == y["val"]).tolist(),
            "macro_f1": float(f1_score(y["val"], pred, average="macro")), "train_minutes": minutes,
            "train_cpu_minutes": cpu_minutes,
            "epochs_run": int(clf.history_["epochs_run"]), "n_params": int(clf.n_params_)}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| step | recipe (added to the kept recipe) | val accuracy | val macro-F1 | train CPU min (wall) | gain vs kept (acc / F1) | McNemar p vs kept | kept |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gain = "–" if r["gain_acc"] is None else f"{r['gain_acc']:+.3f} / {r['gain_f1']:+.3f}"
        kept = "baseline" if r["gain_acc"] is None else ("yes" if r["kept"] else "no")
        p = "–" if r.get("mcnemar") is None else f"{r['mcnemar']['p']:.3f} ({r['mcnemar']['a_only']} / {r['mcnemar']['b_only']})"
        lines.append(f"| {r['step']}{'*' if r.get('reused') else ''} | {r['what']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | "
                     f"{r['train_cpu_minutes']:.1f} ({r['train_minutes']:.1f}) | {gain} | {p} | {kept} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", nargs="?", help="registry study name (e.g. pbc-cells, cxr-pneumonia)")
    ap.add_argument("--pipeline", default="deep", help="the study's cnn_classifier pipeline (default: deep)")
    ap.add_argument("--steps", default="", help=f"comma-separated steps in order (default per study: "
                    f"{DEFAULT_STEPS}); see --list-steps")
    ap.add_argument("--list-steps", action="store_true", help="print the steps and exit")
    ap.add_argument("--data", default="", help="data root (default: $MEDFUSE_DATA or ../shared/datasets)")
    ap.add_argument("--val-folds", type=int, default=5, help="the validation part is 1/N of fold 1's training part")
    ap.add_argument("--dev-per-class", type=int, default=0, help="cap development images per class (0: all)")
    ap.add_argument("--val-per-class", type=int, default=0, help="cap validation images per class (0: all)")
    ap.add_argument("--epochs", type=int, default=0, help="override the recipe's epochs (0: the registry's)")
    ap.add_argument("--keep-threshold", type=float, default=0.003,
                    help="keep a step when the validation metric rises by more than this (default 0.003)")
    ap.add_argument("--keep-metric", choices=["accuracy", "macro_f1"], default="",
                    help=f"the metric a step must raise (default: accuracy; per study {KEEP_METRIC})")
    ap.add_argument("--reuse", default="", help="JSON of an earlier run: rows with the same parameters (and the "
                    "same split) are taken from it instead of trained again, except the steps named in --rerun")
    ap.add_argument("--rerun", default="", help="comma-separated steps to train again even when --reuse has them")
    ap.add_argument("--out", default="", help="markdown output (default bench/results/ablation-<study>.md, "
                    "with --profile NAME ablation-<study>-NAME.md)")
    ap.add_argument("--profile", default=None, metavar="NAME",
                    help="start from the study's registry profile NAME (e.g. gpu: a larger recipe for a lent GPU) "
                         "instead of the study as written; a profile requiring a GPU is refused without one")
    ap.add_argument("--allow-cpu", action="store_true", help="with --profile: run a GPU profile on the CPU anyway")
    args = ap.parse_args(argv)
    from medfuse.paired import mcnemar_exact

    if args.list_steps or not args.study:
        for name, (what, params) in STEPS.items():
            print(f"{name:11s} {what}: {params}")
        return 0 if args.list_steps else 2
    metric = args.keep_metric or KEEP_METRIC.get(args.study, "accuracy")
    steps = [s for s in args.steps.split(",") if s] or DEFAULT_STEPS.get(args.study, list(STEPS))
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise SystemExit(f"unknown step {unknown[0]!r}; known: {', '.join(STEPS)}")
    env = os.environ.get("MEDFUSE_DATA")
    root = Path(args.data or env or Path(__file__).resolve().parents[1].parent / "shared" / "datasets")
    if not root.is_dir():
        raise SystemExit(f"data root {root} not found: pass --data or set MEDFUSE_DATA")

    profiled = None  # the study with --profile applied (its CNN recipe is the baseline); data and folds are the study's
    if args.profile:  # refused before any data is read: an unknown name, or a GPU profile without a GPU
        from medfuse.devices import check_profile_devices
        from medfuse.errors import MedfuseError
        from medfuse.study import apply_profile, resolve_study

        try:
            profiled = apply_profile(resolve_study(args.study), args.profile)
            check_profile_devices(profiled, args.allow_cpu)
        except MedfuseError as exc:  # a message, not a traceback
            raise SystemExit(str(exc)) from None
    t0 = time.perf_counter()
    study, samples, dev, val, info = selection_split(args.study, root, args.val_folds, args.dev_per_class,
                                                     args.val_per_class)
    transforms, base = cnn_spec(profiled or study, args.pipeline)
    if args.epochs:
        base["epochs"] = args.epochs
    print(f"{args.study}: {info}", flush=True)
    y = {"dev": samples["label"].astype(str).to_numpy()[dev], "val": samples["label"].astype(str).to_numpy()[val]}
    max_size = max([int(base.get("size", 64))] + [int(STEPS[s][1].get("size", 0)) for s in steps])
    images = {"dev": load_images(samples, dev, transforms, max_size),
              "val": load_images(samples, val, transforms, max_size)}
    print(f"decoded {len(dev) + len(val)} images in {time.perf_counter() - t0:.0f}s", flush=True)

    cache: dict[str, dict[str, Any]] = {}
    if args.reuse:
        old = json.loads(Path(args.reuse).read_text())
        if old["info"] != json.loads(json.dumps(info, default=str)):
            raise SystemExit(f"--reuse {args.reuse}: its split differs from this one ({old['info']} vs {info})")
        rerun = set(args.rerun.split(","))
        cache = {json.dumps(r["params"], sort_keys=True): r for r in old["rows"] if r["step"] not in rerun}
    keys = ("accuracy", "macro_f1", "train_minutes", "train_cpu_minutes", "epochs_run", "n_params", "correct")

    def run(params: dict[str, Any]) -> dict[str, Any]:
        hit = cache.get(json.dumps(params, sort_keys=True))
        return {k: hit.get(k) for k in keys} | {"reused": True} if hit else evaluate(params, images, y)

    rows: list[dict[str, Any]] = []
    kept_params = dict(base)
    best = run(kept_params)
    origin = f"registry `{args.pipeline}` CNN" + (f" with profile `{args.profile}`" if args.profile else "")
    rows.append({"step": "baseline", "what": f"{origin}: {base}", "params": dict(kept_params),
                 **best, "gain_acc": None, "gain_f1": None, "kept": True})
    print(table(rows).splitlines()[-1], flush=True)
    for step in steps:
        what, extra = STEPS[step]
        params = {**kept_params, **extra}
        res = run(params)
        gain_acc, gain_f1 = res["accuracy"] - best["accuracy"], res["macro_f1"] - best["macro_f1"]
        kept = res[metric] - best[metric] > args.keep_threshold
        paired = (mcnemar_exact(np.asarray(res["correct"]), np.asarray(best["correct"]))
                  if res.get("correct") is not None and best.get("correct") is not None else None)
        rows.append({"step": step, "what": what, "params": params, **res, "gain_acc": gain_acc,
                     "gain_f1": gain_f1, "mcnemar": paired, "kept": kept})
        if kept:
            kept_params, best = params, res
        print(table(rows).splitlines()[-1], flush=True)

    se = float(np.sqrt(best["accuracy"] * (1 - best["accuracy"]) / len(val)))
    total = (time.perf_counter() - t0) / 60
    suffix = f"-{args.profile}" if args.profile else ""
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"ablation-{args.study}{suffix}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = "python bench/ablate_cnn.py " + " ".join(sys.argv[1:] if argv is None else argv)
    scale = "all development images" if info["dev_per_class"] == "all" else f"development images capped at {info['dev_per_class']} per class"
    text = (f"#### CNN ablation: {args.study} (`{args.pipeline}` pipeline, {scale})\n\n"
            f"Selection split: {info['split']}; {info['n_dev']} development images "
            f"(cap {info['dev_per_class']} per class), {info['n_val']} validation images (cap "
            f"{info['val_per_class']} per class); fold 1's {info['fold1_test_never_used']} test images "
            f"(the reported fold) and the external test set ({info['external_test'] or 'none'}) were never read. "
            f"Validation accuracy has a binomial standard error of about {se:.3f} here, so gains below "
            f"about {2 * se:.3f} are within noise; McNemar's exact test on the same validation images (step only / kept "
            f"recipe only right) is the paired check. A step is kept when validation {metric.replace('_', '-')} "
            f"rises by more than {args.keep_threshold}. "
            f"Training time: CPU minutes of the process (all threads; what the fit costs) and, in brackets, wall "
            f"minutes on {os.cpu_count()} CPU cores ({platform.machine()}) shared with other jobs (load-dependent); "
            f"{total:.0f} wall minutes in all.\n\n"
            f"Command: `{cmd}`" + (f" (rows marked * were taken from the earlier run {args.reuse}, same split "
                                    f"and parameters)" if cache else "") + f"\n\n{table(rows)}\n\n"
            f"Greedy recipe (what the keep rule collected; adopted only where it clears the noise): `{ {k: v for k, v in kept_params.items() if base.get(k) != v} or 'the baseline'}`\n")
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"info": info, "rows": rows, "command": cmd,
                                                    "total_minutes": total}, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
