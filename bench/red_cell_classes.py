"""Red-cell features of the cells found in each AneRBC smear, by anemia class (a sanity check of
``red_cell`` on real cells, not a study): per smear the median and the share of hypochromic /
target cells, then the mean of those per-smear values per class.

    PYTHONPATH=core:plugins python bench/red_cell_classes.py [--data ../shared/datasets/anerbc/images]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from medfuse.imageio import read_image
from medfuse_plugins._cellsummary import CellSummary

FEATURES = ["red_cell.area", "red_cell.od_mean", "red_cell.od_total", "red_cell.centre_rim_ratio",
            "red_cell.pallor_area_ratio", "red_cell.pallor_diameter_ratio", "red_cell.target_index"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared/datasets/anerbc/images"))
    args = ap.parse_args()
    ex = CellSummary(features=FEATURES, relative=[], shares=[])
    rows = []
    for path in sorted(Path(args.data).glob("*/*.jpg")):
        values, counts = ex.per_cell(read_image(path))
        cols = [f.split(".")[1] for f in FEATURES]
        v = pd.DataFrame(values, columns=cols)
        rows.append({"smear": path.stem, "class": path.parent.name, "cells": int(counts["measured"]),
                     **{f"median_{c}": float(v[c].median()) for c in cols},
                     "share_pallor_d_gt_0.5": float((v["pallor_diameter_ratio"] > 0.5).mean()),
                     "share_target_gt_0.1": float((v["target_index"] > 0.1).mean())})
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(df.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(df.drop(columns="smear").groupby("class").agg(["mean", "std"]).T.to_string(float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
