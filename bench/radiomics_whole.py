"""PyRadiomics over a CSV manifest (``path,mask``) as one script, one process, one job: the
reference side of ``bench/bench_classical.py``'s whole-process comparison.

Each image is decoded by SimpleITK, turned grey (Rec. 601, as ``medfuse_plugins.transforms.to_gray``),
its mask file read and binarised (``mask > 0``: cell and nucleus, as medfuse's ``mask > 0``),
and first order + shape 2D + GLCM + GLRLM + GLSZM computed with ``force2D`` and default settings.
The features go to ``OUT`` (CSV). Run with a Python that has ``pyradiomics`` and ``SimpleITK``::

    /work/radvenv/bin/python bench/radiomics_whole.py MANIFEST.csv OUT.csv
"""

from __future__ import annotations

import csv
import logging
import sys

import numpy as np
import radiomics
import SimpleITK as sitk
from radiomics import featureextractor

FAMILIES = ("firstorder", "shape2D", "glcm", "glrlm", "glszm")


def main(manifest: str, out: str) -> None:
    radiomics.logger.setLevel(logging.ERROR)
    ex = featureextractor.RadiomicsFeatureExtractor(force2D=True)
    ex.disableAllFeatures()
    for family in FAMILIES:
        ex.enableFeatureClassByName(family)
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    names: list[str] = []
    table: list[list[object]] = []
    skipped = 0
    for row in rows:
        rgb = sitk.GetArrayFromImage(sitk.ReadImage(row["path"])).astype(np.float32)
        grey = (rgb[..., 0] * np.float32(0.299) + rgb[..., 1] * np.float32(0.587)
                + rgb[..., 2] * np.float32(0.114) + 0.5).astype(np.uint8)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(row["mask"])) > 0
        if mask.ndim == 3:
            mask = mask.any(axis=2)
        if int(mask.sum()) <= 1:  # PyRadiomics refuses a mask of one pixel
            skipped += 1
            continue
        result = ex.execute(sitk.GetImageFromArray(grey[None].astype(np.float32)),
                            sitk.GetImageFromArray(mask.astype(np.uint8)[None]))
        feats = {k: v for k, v in result.items() if not k.startswith("diagnostics")}
        names = names or list(feats)
        table.append([row["path"], *(float(feats[n]) for n in names)])
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", *names])
        writer.writerows(table)
    print(f"pyradiomics {radiomics.__version__}: {len(table)} images, {len(names)} features, "
          f"{skipped} skipped (mask of <= 1 pixel)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
