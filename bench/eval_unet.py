"""Evaluate the ``unet`` mask maker on real segmentation sets with held-out images.

* ``anerbc``: 13 full-field smears 1224x960 with RBC masks; k-fold over images (every image is
  scored once by a model that did not train on it). Dice and Hausdorff (95th pct, max) in px.
* ``wbc_seg``: 300 single-cell images 120x120 with cytoplasm/nucleus masks; one held-out split.

Usage (data from $MEDFUSE_DATA or ../shared/datasets)::

    nice -n 10 python bench/eval_unet.py anerbc --folds 3 --epochs 25 --steps 30
    nice -n 10 python bench/eval_unet.py wbc_seg --test-fraction 0.3 --epochs 15 --keep-largest
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from medfuse.imageio import read_image, read_mask  # noqa: E402
from medfuse.segmetrics import score_table  # noqa: E402
from medfuse_plugins.unet import UNetMask  # noqa: E402


def data_root() -> Path:
    env = os.environ.get("MEDFUSE_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    if not root.is_dir():
        sys.exit(f"datasets not found at {root}: set MEDFUSE_DATA")
    return root


def load_anerbc(root: Path) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    ids, ims, ms = [], [], []
    for img in sorted((root / "anerbc" / "images").glob("*/*.jpg")):
        mask = root / "anerbc" / "masks" / img.parent.name / (img.stem + ".png")
        ids.append(f"{img.parent.name}/{img.stem}")
        ims.append(read_image(img))
        ms.append(read_mask(mask))
    return ids, ims, ms


def load_wbc(root: Path) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    ids, ims, ms = [], [], []
    for img in sorted((root / "wbc_seg" / "images").glob("*.png")):
        ids.append(img.stem)
        ims.append(read_image(img))
        ms.append(read_mask(root / "wbc_seg" / "masks" / img.name))
    return ids, ims, ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=["anerbc", "wbc_seg"])
    ap.add_argument("--folds", type=int, default=3, help="anerbc: image folds (every image scored once)")
    ap.add_argument("--max-folds", type=int, default=None, help="run only the first N folds (time cap)")
    ap.add_argument("--test-fraction", type=float, default=0.3, help="wbc_seg: share of images held out")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--steps", type=int, default=40, help="steps per epoch")
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-largest", action="store_true", help="keep the largest cell (single-cell images)")
    ap.add_argument("--out", type=Path, default=None, help="write the per-image table (CSV) here")
    args = ap.parse_args()

    root = data_root()
    t0 = time.perf_counter()
    ids, ims, ms = (load_anerbc if args.dataset == "anerbc" else load_wbc)(root)
    print(f"{args.dataset}: {len(ids)} images, shape of first {ims[0].shape}, loaded in "
          f"{time.perf_counter() - t0:.1f}s", flush=True)
    n_classes = 2 if args.dataset == "anerbc" else 3
    regions = ("cell",) if n_classes == 2 else ("cell", "nucleus")
    params = dict(n_classes=n_classes, patch_size=args.patch, width=args.width, depth=args.depth,
                  epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch, scale=args.scale,
                  random_state=args.seed, keep_largest=args.keep_largest)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(ids))
    if args.dataset == "anerbc":
        folds = [order[i::args.folds] for i in range(args.folds)]
    else:
        n_test = int(round(len(ids) * args.test_fraction))
        folds = [order[:n_test]]
    if args.max_folds:
        folds = folds[: args.max_folds]
    preds: dict[int, np.ndarray] = {}
    for f, test in enumerate(folds):
        train = np.setdiff1d(np.arange(len(ids)), test)
        t = time.perf_counter()
        unet = UNetMask(**params).fit([ims[i] for i in train], [ms[i] for i in train])
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        for i in test:
            preds[i] = unet.predict_mask(ims[i])
        pred_s = time.perf_counter() - t
        h = unet.history_
        print(f"fold {f}: train {len(train)} images, test {len(test)}; {h['epochs_run']} epochs, "
              f"best val loss {min(h['val_loss']):.4f}; fit {fit_s:.0f}s, predict {pred_s / len(test):.2f}s/image; "
              f"params {unet.n_params_}", flush=True)
    done = sorted(preds)
    table = score_table([preds[i] for i in done], [ms[i] for i in done], [ids[i] for i in done], regions)
    with np.printoptions(precision=4):
        print(table.round(4).to_string())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"settings: {params}; folds run {len(folds)}; peak RSS {peak:.0f} MiB; "
          f"total {time.perf_counter() - t0:.0f}s")
    if args.out:
        table.to_csv(args.out)


if __name__ == "__main__":
    main()
