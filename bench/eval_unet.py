"""Evaluate the ``unet`` mask maker on real segmentation sets with held-out images.

* ``anerbc``: 13 full-field smears 1224x960 with RBC masks; k-fold over images (every image is
  scored once by a model that did not train on it). Dice and Hausdorff (95th pct, max) in px.
* ``wbc_seg``: 300 single-cell images 120x120 with cytoplasm/nucleus masks; one held-out split.

``--method`` scores a classical mask plugin on the same held-out images instead (``otsu_cell``
for single cells, ``rbc_watershed`` for smears; nothing is trained), for the comparison.

Usage (data from $MEDFUSE_DATA or ../shared/datasets)::

    nice -n 10 python bench/eval_unet.py anerbc --folds 3 --epochs 25 --steps 30
    nice -n 10 python bench/eval_unet.py wbc_seg --test-fraction 0.3 --epochs 15 --keep-largest
    nice -n 10 python bench/eval_unet.py wbc_seg --method otsu_cell
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from medfuse.datapath import resolve_data_root  # noqa: E402
from medfuse.errors import MedfuseError  # noqa: E402
from medfuse.imageio import read_image, read_mask  # noqa: E402
from medfuse.segmetrics import score_table  # noqa: E402
from medfuse.trained import TrainedCache, for_run  # noqa: E402
from medfuse_plugins.segmentation import OtsuCell, RbcWatershed  # noqa: E402
from medfuse_plugins.unet import UNetMask  # noqa: E402

CLASSICAL = {"otsu_cell": OtsuCell, "rbc_watershed": RbcWatershed}


def data_root() -> Path:
    try:
        return resolve_data_root()
    except MedfuseError as exc:
        sys.exit(str(exc))


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


def held_out_folds(n: int, dataset: str, folds: int, test_fraction: float, seed: int) -> list[np.ndarray]:
    """anerbc: ``folds`` image folds (every image scored once); wbc_seg: one held-out part."""
    order = np.random.default_rng(seed).permutation(n)
    if dataset == "anerbc":
        return [order[i::folds] for i in range(folds)]
    return [order[: int(round(n * test_fraction))]]


def folds_from_predictions(csv: Path, ids: list[str]) -> list[np.ndarray]:
    """The held-out images of each fold of a study run, from its ``predictions/<pipeline>.csv``
    (columns ``id`` and ``fold``), as indices into ``ids`` (matched on the file stem)."""
    table = pd.read_csv(csv, dtype={"id": str})
    where = {i.rsplit("/", 1)[-1]: k for k, i in enumerate(ids)}
    missing = sorted(set(table["id"]) - set(where))
    if missing or len(table) != len(ids):
        raise MedfuseError(f"{csv}: ids do not match the {len(ids)} images (unknown: {missing[:5]})")
    return [np.sort([where[i] for i in part["id"]]) for _, part in table.groupby("fold", sort=True)]


def evaluate(dataset: str, root: Path, method: str = "unet", folds: int = 3, max_folds: int | None = None,
             test_fraction: float = 0.3, seed: int = 0, log=print, parts: list[np.ndarray] | None = None,
             trained: TrainedCache | None = None, **unet_params) -> tuple[pd.DataFrame, dict]:
    """Score ``method`` on held-out images of ``dataset``: per-image table (``mean`` row last) and info.

    ``unet_params`` go to :class:`UNetMask` (``n_classes`` and ``random_state`` are set here).
    Classical methods see the same held-out images and train nothing. ``parts`` (held-out indices
    per fold, e.g. from :func:`folds_from_predictions`) replaces the folds drawn here. U-Nets are
    trained through ``trained`` (default: the ``with cache.shared()`` one of the caller, see
    :mod:`medfuse.trained`), so a network a study already trained on the same fold is reused.
    """
    trained = for_run(trained)
    t0 = time.perf_counter()
    ids, ims, ms = (load_anerbc if dataset == "anerbc" else load_wbc)(root)
    log(f"{dataset}: {len(ids)} images, shape of first {ims[0].shape}, loaded in {time.perf_counter() - t0:.1f}s")
    n_classes = 2 if dataset == "anerbc" else 3
    regions = ("cell",) if n_classes == 2 else ("cell", "nucleus")
    params = dict(unet_params, n_classes=n_classes, random_state=seed)
    if parts is None:
        parts = held_out_folds(len(ids), dataset, folds, test_fraction, seed)
    parts = parts[: max_folds or None]
    preds: dict[int, np.ndarray] = {}
    fit_total = pred_total = 0.0
    reused = 0
    for f, test in enumerate(parts):
        train = np.setdiff1d(np.arange(len(ids)), test)
        t = time.perf_counter()
        if method == "unet":
            model = trained.fit(UNetMask(**params), [ims[i] for i in train], [ms[i] for i in train])
        else:
            model = CLASSICAL[method]()
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        for i in test:
            pred = model.predict_mask(ims[i])
            preds[i] = pred if n_classes == 3 else (pred > 0).astype(np.uint8)
        pred_s = time.perf_counter() - t
        fit_total += fit_s
        pred_total += pred_s
        if method == "unet":
            h = model.history_
            reused += bool(h.get("reused"))
            best = f"best val loss {min(h['val_loss']):.4f}; " if h.get("val_loss") else ""
            how = "network reused from this run's earlier training" if h.get("reused") else f"fit {fit_s:.0f}s"
            log(f"fold {f}: train {len(train)} images, test {len(test)}; {h['epochs_run']} epochs, {best}"
                f"{how}, predict {pred_s / len(test):.2f}s/image; params {model.n_params_}")
    done = sorted(preds)
    table = score_table([preds[i] for i in done], [ms[i] for i in done], [ids[i] for i in done], regions)
    info = {"dataset": dataset, "method": method, "params": params if method == "unet" else {},
            "folds_run": len(parts), "n_scored": len(done), "fit_seconds": fit_total, "folds_reused": reused,
            "predict_seconds_per_image": pred_total / max(1, len(done)),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "seconds": time.perf_counter() - t0}
    return table, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=["anerbc", "wbc_seg"])
    ap.add_argument("--method", choices=["unet", *CLASSICAL], default="unet")
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
    ap.add_argument("--tta", action="store_true", help="average the maps over the 8 flips/transposes")
    ap.add_argument("--out", type=Path, default=None, help="write the per-image table (CSV) here")
    args = ap.parse_args()

    table, info = evaluate(args.dataset, data_root(), args.method, args.folds, args.max_folds, args.test_fraction,
                           args.seed, log=lambda m: print(m, flush=True), patch_size=args.patch, width=args.width,
                           depth=args.depth, epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch,
                           scale=args.scale, keep_largest=args.keep_largest, tta=args.tta)
    print(table.round(4).to_string())
    print(f"{info['method']} settings: {info['params']}; folds run {info['folds_run']}; "
          f"peak RSS {info['peak_rss_mib']:.0f} MiB; total {info['seconds']:.0f}s")
    if args.out:
        table.to_csv(args.out)


if __name__ == "__main__":
    main()
