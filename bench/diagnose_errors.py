"""Where a study's out-of-fold errors fall: per fold, per class, confusions, shared errors and blocks.

Reads the ``predictions/*.csv`` of a report folder written by ``medfuse compare`` / ``bench/run_studies.py``::

    python bench/diagnose_errors.py runs/studies/all-subtypes-blocked --block 40

``--block N``: also count errors per run of N consecutive file numbers of a class (the folder loader's
``group_block`` rule). The mean of several pipelines' probabilities is printed as a diagnostic of how
far their errors overlap, not as a pipeline: it was not chosen beforehand.
"""

from __future__ import annotations

import argparse
import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path, help="a report folder holding predictions/*.csv")
    ap.add_argument("--block", type=int, default=0, help="count errors per run of N file numbers per class")
    args = ap.parse_args()
    preds = {p.stem: pd.read_csv(p) for p in sorted((args.report / "predictions").glob("*.csv"))}
    if not preds:
        raise SystemExit(f"{args.report / 'predictions'}: no *.csv; give a report folder of medfuse compare")
    for name, df in preds.items():
        ok = df["pred"] == df["label"]
        print(f"== {name}: accuracy {ok.mean():.4f} ({(~ok).sum()} errors of {len(df)})")
        print("  per fold:", " ".join(f"{f}:{g.mean():.3f}" for f, g in ok.groupby(df["fold"])))
        print("  recall per class:", " ".join(f"{c}:{g.mean():.3f}" for c, g in ok.groupby(df["label"])))
        print("  confusions (true, predicted):", df[~ok].groupby(["label", "pred"]).size().to_dict())
        if args.block:
            number = df["id"].map(lambda s: int(m.group(1)) // args.block if (m := re.search(r"(\d+)$", s)) else -1)
            bad = (~ok).groupby(df["label"] + "#" + number.astype(str)).agg(["sum", "size"])
            worst = bad[bad["sum"] > 0].sort_values("sum", ascending=False)
            print(f"  errors in {len(worst)} of {len(bad)} blocks; worst:",
                  ", ".join(f"{b} {s}/{n}" for b, (s, n) in worst.head(6).iterrows()))
    wrong = {n: set(df.loc[df["pred"] != df["label"], "id"]) for n, df in preds.items()}
    for a, b in combinations(preds, 2):
        print(f"errors of {a} / {b}: {len(wrong[a])} / {len(wrong[b])}, shared {len(wrong[a] & wrong[b])}")
    base = next(iter(preds.values())).set_index("id")
    cols = [c for c in base.columns if c.startswith("proba.")]
    classes = np.array([c.removeprefix("proba.") for c in cols])
    y = base["label"].to_numpy()
    if len(preds) > 1:
        P = sum(df.set_index("id").loc[base.index, cols].to_numpy() for df in preds.values()) / len(preds)
        print(f"diagnostic only: mean of all {len(preds)} pipelines' probabilities: "
              f"{np.mean(classes[P.argmax(1)] == y):.4f}")


if __name__ == "__main__":
    main()
