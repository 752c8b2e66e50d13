"""Held-out quality of the compact CNN (``cnn_classifier``; ``cnn_embedding`` + logistic regression).

Not for choosing recipes: its split is drawn from all images, so it overlaps the studies' reported
folds (issue #18). Compare recipes with ``bench/ablate_cnn.py``, which scores them on a validation
split inside the training part of fold 1 (the development fold; pbc-cells and all-subtypes report
fold 2, whose test images that training part holds: see their ``[selection]`` tables).

A stratified split of the images (``--test-fraction``) is never seen in training (the inner
early-stopping split is taken from the training part). ``cnn_embedding`` trains exactly the same
network with the same seed, so its embedding is read from the fitted classifier's penultimate
layer and scored with a logistic regression fitted on the training embeddings.

Usage (data from $MEDFUSE_DATA or ../shared/datasets)::

    TF_CPP_MIN_LOG_LEVEL=2 nice -n 10 python bench/eval_cnn.py pbc --size 64 --epochs 30
    TF_CPP_MIN_LOG_LEVEL=2 nice -n 10 python bench/eval_cnn.py all --size 64 --epochs 30
    TF_CPP_MIN_LOG_LEVEL=2 nice -n 10 python bench/eval_cnn.py all --block 40   # blocked split (below)

``--block N`` keeps runs of N consecutive file numbers of a class (``WBC-Malignant-Pro-0123``:
number 123) on one side of the split (StratifiedGroupKFold, first fold). Sets without patient ids
(ALL) often number the images of one slide consecutively, so this is a pessimistic proxy for a
patient-level split: a model that recognises a slide rather than a cell scores lower here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from medfuse.imageio import read_image  # noqa: E402
from medfuse_plugins._keras import batched_predict  # noqa: E402
from medfuse_plugins.cnn import CNNClassifier  # noqa: E402
from medfuse_plugins.loaders import block_group  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402
from sklearn.model_selection import StratifiedGroupKFold, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

LAYOUT = {"pbc": "pbc/*/*.jpg", "all": "all/images/*/*.jpg"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(LAYOUT))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--per-class", type=int, default=0, help="cap images per class (0: all)")
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--block", type=int, default=0,
                    help="keep runs of N consecutive file numbers per class on one side of the split (0: off)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="any other cnn_classifier parameter, e.g. --param zoom=0 --param class_weight=None "
                         "(values parsed as Python literals)")
    args = ap.parse_args()
    extra = dict(_parse_param(text) for text in args.param)
    env = os.environ.get("MEDFUSE_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    paths = sorted(root.glob(LAYOUT[args.dataset]))
    if not paths:
        sys.exit(f"no images for {args.dataset} under {root}")
    labels = np.asarray([p.parent.name for p in paths], dtype=object)
    if args.per_class:
        rng = np.random.default_rng(args.seed)
        keep = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: args.per_class]
                               for c in np.unique(labels)])
        paths, labels = [paths[i] for i in np.sort(keep)], labels[np.sort(keep)]
    clf = CNNClassifier(size=args.size, epochs=args.epochs, width=args.width, random_state=args.seed, verbose=0,
                        **extra)
    t = time.perf_counter()
    P = np.stack([clf.prepare(read_image(p, min_side=args.size)) for p in paths])
    print(f"{args.dataset}: {len(P)} images, {len(np.unique(labels))} classes, prepared at {args.size}px in "
          f"{time.perf_counter() - t:.0f}s", flush=True)
    if args.block:
        groups = [block_group(lab, p.stem, args.block) for lab, p in zip(labels, paths)]
        unnumbered = [p.name for p, g in zip(paths, groups) if g is None]
        if unnumbered:
            sys.exit(f"--block needs numbered file names; {unnumbered[0]} has no trailing number")
        splitter = StratifiedGroupKFold(int(round(1 / args.test_fraction)), shuffle=True, random_state=args.seed)
        tr, te = next(splitter.split(P, labels, groups))
        print(f"blocked split: {len(set(groups))} blocks of {args.block} file numbers; "
              f"{len(tr)} training, {len(te)} held-out images", flush=True)
    else:
        tr, te = train_test_split(np.arange(len(P)), test_size=args.test_fraction, stratify=labels,
                                  random_state=args.seed)
    t = time.perf_counter()
    clf.fit(P[tr], labels[tr])
    fit_s = time.perf_counter() - t
    h = clf.history_
    pred = clf.predict(P[te])
    print(f"cnn_classifier: {clf.n_params_} params; {h['epochs_run']} epochs "
          f"(best val loss {min(h['val_loss']):.4f}); fit {fit_s:.0f}s "
          f"({np.mean(h['seconds_per_epoch'][1:] or h['seconds_per_epoch']):.0f}s/epoch); "
          f"held-out {len(te)} images: accuracy {accuracy_score(labels[te], pred):.4f}, "
          f"macro-F1 {f1_score(labels[te], pred, average='macro'):.4f}", flush=True)
    clf.tta = True
    pred_tta = clf.predict(P[te])
    clf.tta = False
    print(f"cnn_classifier with tta (mean over 8 flips/transposes): held-out accuracy "
          f"{accuracy_score(labels[te], pred_tta):.4f}, macro-F1 {f1_score(labels[te], pred_tta, average='macro'):.4f}",
          flush=True)
    if h.get("val_accuracy"):
        print("val accuracy per epoch: " + " ".join(f"{v:.3f}" for v in h["val_accuracy"]), flush=True)
    emb = clf._net("embedding")
    Etr, Ete = batched_predict(emb, P[tr]), batched_predict(emb, P[te])
    lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(Etr, labels[tr])
    pe = lr.predict(Ete)
    print(f"cnn_embedding ({Etr.shape[1]} dims) + logistic regression: held-out accuracy "
          f"{accuracy_score(labels[te], pe):.4f}, macro-F1 {f1_score(labels[te], pe, average='macro'):.4f}")
    print(f"settings: size {args.size}, width {args.width}, epochs {args.epochs}, per-class cap "
          f"{args.per_class or 'none'}, test fraction {args.test_fraction}, seed {args.seed}, "
          f"block {args.block or 'off'}, other {extra or 'none'}")



def _parse_param(text: str) -> tuple[str, object]:
    """``name=value`` with the value read as a Python literal (a plain string when it is not one)."""
    import ast

    name, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"--param expects NAME=VALUE, got {text!r}")
    try:
        return name.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name.strip(), value


if __name__ == "__main__":
    main()
