"""The notebook API (docs/api.md) on generated cells, in about half a minute on a laptop core.

    python examples/notebook_api.py [OUT]      # OUT defaults to runs/notebook-api

Cells of three shapes are generated (medfuse.synthetic), then:
1. ``medfuse.extract``: the feature table of ``medfuse extract`` as a DataFrame;
2. ``medfuse.ImageFeatures``: the same features inside a scikit-learn pipeline, cross-validated;
3. ``medfuse.compare``: a two-pipeline study with its leaderboard, paired comparison, per-class
   table, out-of-fold predictions (with image paths) and report;
4. ``medfuse.runs``: the run just made, found again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import medfuse
import pandas as pd
from medfuse.synthetic import study_toml, write_dataset
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

STUDY = study_toml("notebook", description="generated cells: shape features alone, or with colour",
                   folds=3, bootstrap=100, shortcuts=False, colour_pca=0.9, fused="shape_colour")


def main(out: Path) -> medfuse.Results:
    data = out / "data"
    if not (data / "table.csv").exists():
        write_dataset(data, n_per_class=8, size=32, seed=0)

    # 1. a feature table, as `medfuse extract data/images --blocks morphology,colour` writes it
    table = medfuse.extract(data / "images", blocks=["morphology", "colour"], params={"colour": {"bins": 8}})
    print(f"extract: {len(table)} images x {table.shape[1] - 2} features, {int((table['error'] != '').sum())} errors")

    # 2. the same features as a scikit-learn step: on image paths (or arrays), here with the mask files
    images = pd.DataFrame({"path": table["path"], "mask": table["path"].str.replace("/images/", "/masks/")})
    labels = images["path"].map(lambda p: Path(p).parent.name)
    patients = pd.read_csv(data / "table.csv").set_index("id")["patient"]
    groups = images["path"].map(lambda p: patients[Path(p).stem])
    pipe = make_pipeline(medfuse.ImageFeatures(blocks=["morphology"], mask="file"), StandardScaler(),
                         LogisticRegression(max_iter=1000))
    scores = cross_val_score(pipe, images, labels, groups=groups, cv=GroupKFold(3))
    print(f"ImageFeatures + LogisticRegression: accuracy {scores.mean():.3f} over {len(scores)} grouped folds")
    print(f"  first features: {list(pipe.fit(images, labels)[0].get_feature_names_out()[:3])}")

    # 3. a study: both pipelines on the same folds, one report
    study = out / "notebook.toml"
    study.write_text(STUDY)
    res = medfuse.compare(str(study), data=data, out=out / "report")
    cols = ["pipeline", "accuracy", "accuracy_ci95", "not_worse_than_best"]
    print(res.leaderboard[cols].to_string(index=False))
    print(res.paired[["a", "b", "diff_accuracy", "diff_accuracy_ci95", "p_holm"]].to_string(index=False))
    worst = res.per_class.sort_values("f1").iloc[0]
    print(f"hardest class: {worst['class']} (F1 {worst['f1']:.3f}, {worst['pipeline']})")
    wrong = res.predictions[res.predictions["pred"] != res.predictions["label"]]
    print(f"{len(wrong)} out-of-fold errors, e.g. {wrong['path'].head(1).tolist()}")
    print(f"report: {res.report_path} ({len(res.figures)} figures)")

    # 4. runs found again (the run index, and runs/ in the working folder)
    print(medfuse.runs(study="notebook")[["created", "best", "score", "path"]].head(3).to_string(index=False))
    return res


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs") / "notebook-api")
