"""Simulated-shift check of the chest X-ray classical features, on development images only.

The cxr-pneumonia classical pipeline (texture LBP/GLCM + HOG -> per-block PCA 95% -> XGBoost) is
fitted on 75% of the development images (``train_*``; a stratified split, ``--seeds``) and scored
on the other 25% as they are and after each of these changes of the input: gamma 0.6 and 1.6,
contrast x0.6 and x1.4 (around the image mean), brightness +30, Gaussian blur (sigma 0.6 px) and
Gaussian noise (sd 6 grey levels). Mean and worst accuracy (and ROC AUC) over the shifts rank the
input normalisations: a selection signal that never looks at the external test set (``val_*``).

Variants (``--variants``, default all): ``current`` (the equalize transform, blocks as they were),
``plain`` (no normalisation), ``blocks-eq`` / ``blocks-stretch`` (the blocks' own
``normalize``), with ``-sS`` for ``smooth = S``, and ``eq+`` for the equalize transform in front
(what the fused pipeline's blocks see, the transform being shared with the CNN).

``--test`` (once, after the choice): fit on all development images and score the external test set
(``val_*``, without the files whose bytes equal a development image's) under the same shifts.

Usage::

    python bench/xray_shift.py --data ../shared/datasets --seeds 1,2,3 --jobs 2
    python bench/xray_shift.py --variants current,blocks-eq-s1.0 --seeds 1
    python bench/xray_shift.py --variants current,blocks-eq-s1.0 --test
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import time
from pathlib import Path

import numpy as np

SHIFTS = ("none", "gamma0.6", "gamma1.6", "contrast0.6", "contrast1.4", "bright+30", "blur0.6", "noise6")
VARIANTS = ("current", "plain", "blocks-eq", "blocks-eq-s0.3", "blocks-eq-s0.5", "blocks-eq-s0.7", "blocks-eq-s1.0",
            "blocks-eq-s1.5", "blocks-eq-s2.0", "eq+blocks-eq-s0.5", "eq+blocks-eq-s0.7", "eq+blocks-eq-s1.0",
            "eq+blocks-eq-s1.5", "blocks-stretch", "blocks-stretch-s0.5", "blocks-stretch-s1.0",
            "eq+blocks-stretch-s0.5")


def _u8(a: np.ndarray) -> np.ndarray:
    return np.clip(a + 0.5, 0, 255).astype(np.uint8)


def shift(image: np.ndarray, name: str, seed: int) -> np.ndarray:
    """``image`` (uint8 RGB) after the change ``name`` (one of :data:`SHIFTS`)."""
    from scipy.ndimage import gaussian_filter

    f = image.astype(np.float32)
    if name == "none":
        return image
    if name.startswith("gamma"):
        return _u8(255 * (f / 255.0) ** float(name[5:]))
    if name.startswith("contrast"):
        return _u8((f - f.mean()) * float(name[8:]) + f.mean())
    if name.startswith("bright"):
        return _u8(f + float(name[6:]))
    if name.startswith("blur"):
        s = float(name[4:])
        return _u8(gaussian_filter(f, (s, s, 0)))
    if name.startswith("noise"):
        return _u8(f + np.random.default_rng(seed).normal(0, float(name[5:]), f.shape))
    raise ValueError(f"unknown shift {name!r}")


def parse_variant(name: str) -> tuple[bool, dict]:
    """(equalize transform first?, the blocks' normalisation parameters) of a variant name."""
    if name == "current":
        return True, {}
    if name == "plain":
        return False, {}
    m = re.fullmatch(r"(eq\+)?blocks-(eq|stretch)(?:-s([0-9.]+))?", name)
    if not m:
        raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    params = {"normalize": "equalize" if m.group(2) == "eq" else "stretch"}
    if m.group(3):
        params["smooth"] = float(m.group(3))
    return bool(m.group(1)), params


def _split(root: str, seed: int | None) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Paths, labels, fit rows and scored rows: a 75/25 split of ``train_*`` (``seed``), or (``seed``
    None) all ``train_*`` then the ``val_*`` files whose bytes are not those of a ``train_*`` file."""
    import hashlib

    from sklearn.model_selection import StratifiedShuffleSplit

    dev = sorted(glob.glob(os.path.join(root, "cxr_pneumonia", "*", "train_*.png")))
    if not dev:
        raise SystemExit(f"{root}/cxr_pneumonia: no train_*.png images (pass --data, the shared/datasets folder)")
    if seed is not None:
        y = np.array([Path(p).parent.name for p in dev])
        tr, te = next(StratifiedShuffleSplit(1, test_size=0.25, random_state=seed).split(y, y))
        return dev, y, tr, te

    def sha(p: str) -> str:
        return hashlib.sha1(Path(p).read_bytes()).hexdigest()

    seen = {sha(p) for p in dev}
    test = [p for p in sorted(glob.glob(os.path.join(root, "cxr_pneumonia", "*", "val_*.png"))) if sha(p) not in seen]
    paths = dev + test
    y = np.array([Path(p).parent.name for p in paths])
    return paths, y, np.arange(len(dev)), np.arange(len(dev), len(paths))


def run_variant(root: str, variant: str, seed: int | None) -> str:
    """One line: accuracy / ROC AUC per shift, their mean and worst, for ``variant`` on split ``seed``
    (None: fitted on all development images, scored on the external test set)."""
    from medfuse.fusion import BlockPreparer, early_concat
    from medfuse.imageio import read_image
    from medfuse_plugins.classifiers import XGBoost
    from medfuse_plugins.gradients import Hog
    from medfuse_plugins.segmentation import WholeImage
    from medfuse_plugins.texture import Texture
    from medfuse_plugins.transforms import Equalize
    from sklearn.metrics import accuracy_score, roc_auc_score

    t0 = time.perf_counter()
    paths, y, tr, te = _split(root, seed)
    images = [read_image(p) for p in paths]
    pre_eq, norm = parse_variant(variant)
    equalize, whole = Equalize(), WholeImage()
    blocks = [Texture(lbp=[[8, 1], [16, 2]], distances=[1, 2], **norm), Hog(size=28, pixels_per_cell=7, **norm)]

    def features(ims: list[np.ndarray]) -> list[np.ndarray]:
        out: list[list[np.ndarray]] = [[] for _ in blocks]
        for im in ims:
            if pre_eq:
                im = equalize.apply(im, None)[0]
            mask = whole.predict_mask(im)
            for k, b in enumerate(blocks):
                out[k].append(b.prepare(im, mask))
        return [b.transform(np.stack(o)) for b, o in zip(blocks, out)]

    F = features([images[i] for i in tr])
    preps = [BlockPreparer(pca=0.95, block=str(k)).fit(X) for k, X in enumerate(F)]
    clf = XGBoost().fit(early_concat([p.transform(X) for p, X in zip(preps, F)]), y[tr])
    pos = list(clf.classes_).index("pneumonia")
    accs, aucs = [], []
    for s in SHIFTS:
        F = features([shift(images[i], s, int(i)) for i in te])
        p = clf.predict_proba(early_concat([pr.transform(X) for pr, X in zip(preps, F)]))
        accs.append(accuracy_score(y[te], clf.classes_[p.argmax(1)]))
        aucs.append(roc_auc_score(y[te] == "pneumonia", p[:, pos]))
    cells = " ".join(f"{s}:{a:.3f}/{u:.3f}" for s, a, u in zip(SHIFTS, accs, aucs))
    where = f"seed{seed}" if seed is not None else f"test({len(te)})"
    return (f"{where} {variant:24s} {cells} | worst acc {min(accs):.3f} mean {np.mean(accs):.3f} "
            f"worst auc {min(aucs):.3f} mean auc {np.mean(aucs):.3f} ({time.perf_counter() - t0:.0f}s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("MEDFUSE_DATA", str(Path(__file__).resolve().parents[2]
                                                                        / "shared" / "datasets")))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", default="1,2,3", help="split seeds (75/25 of train_*)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--test", action="store_true", help="fit on all train_*, score the val_* test set (once)")
    args = ap.parse_args()
    from joblib import Parallel, delayed

    seeds: list[int | None] = [None] if args.test else [int(s) for s in args.seeds.split(",")]
    todo = [(v, s) for s in seeds for v in args.variants.split(",")]
    for v, _ in todo:
        parse_variant(v)
    for line in Parallel(n_jobs=args.jobs, return_as="generator")(delayed(run_variant)(args.data, v, s) for v, s in todo):
        print(line, flush=True)


if __name__ == "__main__":
    main()
