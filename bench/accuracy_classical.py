"""Cross-validated accuracy of the classical pipeline, and the CBC columns the selectors keep.

Usage::

    python bench/accuracy_classical.py pbc  [--features pbc.parquet] [--max-per-class 0]
    python bench/accuracy_classical.py all  [--features all.parquet]
    python bench/accuracy_classical.py cbc

``pbc`` / ``all``: features of ``medfuse extract`` (morphology + texture + colour on the
``otsu_cell`` mask; extracted here when ``--features`` does not exist yet), then a stratified
5-fold CV of ``median impute -> standard scale -> PCA -> classifier`` for XGBoost and an RBF
SVM, everything fitted inside the training folds. Prints accuracy and macro-F1 (mean and std
over folds). The label is the image's class folder.

``cbc``: ``select_tree``, ``select_chi2`` and ``select_rfe`` (k = 5) on
``anerbc/cbc.csv`` (label ``Cohort``; the ``*_abnormal`` flags are left out because they are
derived from the values), printing every column's score and the kept ones.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
IMAGES = {"pbc": "pbc", "all": "all/images"}


def data_root(arg: str | None) -> Path:
    for cand in (arg, os.environ.get("MEDFUSE_DATA"), str(REPO.parent / "shared" / "datasets")):
        if cand and Path(cand).is_dir():
            return Path(cand)
    sys.exit("datasets not found: pass --data ROOT or set MEDFUSE_DATA")


def load_features(dataset: str, root: Path, path: Path, jobs: int) -> pd.DataFrame:
    if not path.exists():
        from medfuse.extract import extract_table, write_table
        from medfuse.host import get_host

        host = get_host()
        ex = [(n, host.create(n)) for n in ("morphology", "texture", "colour")]
        df, prov = extract_table(root / IMAGES[dataset], ex, mask=host.create("otsu_cell"), jobs=jobs)
        write_table(df, path, prov)
        print(f"extracted {len(df)} images in {prov['seconds']:.0f} s -> {path}")
    return pd.read_parquet(path)


def cv_scores(X: np.ndarray, y: np.ndarray, model: str, pca: float | None, folds: int, seed: int):
    from sklearn.decomposition import PCA
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import LabelEncoder, StandardScaler
    from sklearn.svm import SVC

    codes = LabelEncoder().fit_transform(y)
    accs, f1s = [], []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, codes):
        steps = [SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()]
        if pca:
            steps.append(PCA(n_components=pca, random_state=seed))
        if model == "xgboost":
            from xgboost import XGBClassifier

            clf = XGBClassifier(n_estimators=300, learning_rate=0.1, max_depth=6, subsample=0.8,
                                colsample_bytree=0.5, tree_method="hist", n_jobs=2, random_state=seed)
        else:
            clf = SVC(C=10.0, gamma="scale")
        pipe = make_pipeline(*steps, clf).fit(X[train], codes[train])
        pred = pipe.predict(X[test])
        accs.append(accuracy_score(codes[test], pred))
        f1s.append(f1_score(codes[test], pred, average="macro"))
    return np.asarray(accs), np.asarray(f1s)


def run_images(args) -> None:
    root = data_root(args.data)
    path = Path(args.features or f"{args.dataset}_classical.parquet")
    df = load_features(args.dataset, root, path, args.jobs)
    df = df[df["error"].fillna("") == ""].copy()
    df["label"] = df["path"].map(lambda p: Path(p).parent.name)
    if args.max_per_class:
        keep = [g.sample(min(len(g), args.max_per_class), random_state=0).index for _, g in df.groupby("label")]
        df = df.loc[np.concatenate(keep)]
    feats = [c for c in df.columns if "." in c]
    X = df[feats].to_numpy(np.float32)
    y = df["label"].to_numpy()
    counts = pd.Series(y).value_counts().sort_index()
    print(f"{args.dataset}: {len(df)} images, {len(feats)} features, classes: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"mask found (morphology.valid = 1): {df['morphology.valid'].eq(1).mean():.1%} of images")
    for model in args.models.split(","):
        for pca in ([None, 0.99] if model == "svm" else [None]):
            t0 = time.perf_counter()
            acc, f1 = cv_scores(X, y, model, pca, args.folds, args.seed)
            label = f"{model}" + (f" + PCA({pca})" if pca else "")
            print(f"  {label:<20} {args.folds}-fold CV: accuracy {acc.mean():.4f} +- {acc.std():.4f}, "
                  f"macro-F1 {f1.mean():.4f} +- {f1.std():.4f}  ({time.perf_counter() - t0:.0f} s)")


def run_cbc(args) -> None:
    from medfuse_plugins.tabular import SelectChi2, SelectRfe, SelectTree

    root = data_root(args.data)
    df = pd.read_csv(root / "anerbc" / "cbc.csv")
    y = df["Cohort"].to_numpy()
    X = df.drop(columns=["id", "Cohort", *[c for c in df.columns if c.endswith("_abnormal")]])
    print(f"anerbc/cbc.csv: {len(df)} rows, columns {list(X.columns)}, labels "
          + ", ".join(f"{k} {v}" for k, v in pd.Series(y).value_counts().items()))
    print("missing values: " + ", ".join(f"{c} {n}" for c, n in X.isna().sum().items() if n))
    for cls in (SelectTree, SelectChi2, SelectRfe):
        sel = cls(k=5).fit(X, y)
        rep = sel.report()
        print(f"\n{cls.name} (k=5): kept {sel.selected_}")
        print(rep.round(4).to_string())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", choices=["pbc", "all", "cbc"])
    ap.add_argument("--data", help="data root (default: $MEDFUSE_DATA or ../shared/datasets)")
    ap.add_argument("--features", help="feature table (.parquet) to read, or to write when missing")
    ap.add_argument("--max-per-class", type=int, default=0, help="cap images per class (0 = all)")
    ap.add_argument("--models", default="xgboost,svm", help="comma-separated: xgboost, svm")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="processes for feature extraction")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.dataset == "cbc":
        run_cbc(args)
    else:
        run_images(args)


if __name__ == "__main__":
    main()
